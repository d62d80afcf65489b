"""What a sceptical user tries: foreign and damaged stores, full disks, odd values. One line, the right status,
nothing written where nothing should be."""

from __future__ import annotations

import errno
import os
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from resbench.cli import main
from tests.helpers import TINY_SUITE as SUITE
from tests.helpers import one_line_error, small_store


def _state(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` with its bytes: what a command must leave unchanged."""
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


@pytest.fixture
def foreign(tmp_path: Path) -> Path:
    """An SQLite file that belongs to someone else."""
    path = tmp_path / "mine.sqlite"
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE notes (body TEXT)")
    connection.close()
    return path


@pytest.fixture
def empty(tmp_path: Path) -> Path:
    path = tmp_path / "empty.sqlite"
    path.touch()
    return path


@pytest.mark.parametrize("command", ["leaderboard", "plot", "export"])
@pytest.mark.parametrize("kind", ["foreign", "empty"])
def test_read_only_commands_never_turn_a_file_into_a_store(
    command: str, kind: str, request: pytest.FixtureRequest, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path: Path = request.getfixturevalue(kind)
    before = _state(tmp_path)
    extra = ["--output", str(tmp_path / "figures")] if command == "plot" else []
    assert main([command, "--store", str(path), *extra]) == 2
    assert f"{path}: not a resbench store" in one_line_error(capsys)
    assert _state(tmp_path) == before


def test_run_refuses_an_unrelated_sqlite_file(
    foreign: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    suite = tmp_path / "suite.yaml"
    suite.write_text(SUITE, encoding="utf-8")
    before = _state(tmp_path)
    status = main(["run", str(suite), "--store", str(foreign), "--cache-dir", str(tmp_path / "cache"),
                   "--report-dir", str(tmp_path / "reports"), "--no-progress", "--device", "cpu"])
    assert status == 2
    assert "not a resbench store (it holds tables notes" in one_line_error(capsys)
    assert _state(tmp_path) == before


def test_run_on_a_damaged_store_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    suite = tmp_path / "suite.yaml"
    suite.write_text(SUITE, encoding="utf-8")
    argv = ["run", str(suite), "--store", str(tmp_path / "r.sqlite"), "--cache-dir", str(tmp_path / "cache"),
            "--no-progress", "--device", "cpu"]
    assert main(argv) == 0
    capsys.readouterr()
    store = tmp_path / "r.sqlite"
    data = bytearray(store.read_bytes())
    data[5 * 4096: 6 * 4096] = b"\xff" * 4096  # the root page of the trials table
    store.write_bytes(bytes(data))
    before = store.read_bytes()
    assert main(argv) == 2
    assert f"{store}: the store is damaged" in one_line_error(capsys)
    assert store.read_bytes() == before
    assert main(["leaderboard", "--store", str(store)]) == 2
    assert f"{store}: the store is damaged" in one_line_error(capsys)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--bers", "-1e-5"], "each BER must lie in (0, 1], got -1e-05"),
        (["--bers", "1e-5,-1e-4"], "each BER must lie in (0, 1], got -0.0001"),
        (["--formats", "q0.0"], "no value bit"),
        (["--report-dir", "{tmp}/" + "r" * 300], "File name too long"),
        (["--store", "{tmp}/" + "s" * 300 + ".sqlite"], "File name too long"),
    ],
)
def test_odd_values_are_bad_input_in_one_line(
    arguments: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [argument.format(tmp=tmp_path) for argument in arguments]
    defaults = ["--store", str(tmp_path / "r.sqlite")] if "--store" not in arguments else []
    assert main(["run", *argv, *defaults, "--cache-dir", str(tmp_path / "cache"), "--no-progress"]) == 2
    assert message in one_line_error(capsys)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n# and another\n"])
@pytest.mark.parametrize("command", ["run", "validate"])
def test_an_empty_suite_file_is_refused(
    text: str, command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    suite = tmp_path / "suite.yaml"
    suite.write_text(text, encoding="utf-8")
    extra = ["--store", str(tmp_path / "r.sqlite"), "--no-progress"] if command == "run" else []
    assert main([command, str(suite), *extra]) == 2
    assert "the suite file is empty" in one_line_error(capsys)
    assert [path.name for path in tmp_path.iterdir()] == ["suite.yaml"]


def test_a_random_bytes_checkpoint_is_not_said_to_hold_python_objects(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    checkpoint = tmp_path / "model.pt"
    checkpoint.write_bytes(bytes(range(1, 256)) * 8)  # not a zip archive, not a pickle
    status = main(["run", "--models", "test-mlp", "--checkpoint", str(checkpoint), "--store",
                   str(tmp_path / "r.sqlite"), "--no-progress"])
    assert status == 2
    error = one_line_error(capsys)
    assert "not a file written by torch.save" in error and "Python objects" not in error


def test_a_model_saved_whole_is_said_to_hold_python_objects(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    checkpoint = tmp_path / "model.pt"
    torch.save(torch.nn.Linear(2, 2), checkpoint)
    status = main(["run", "--models", "test-mlp", "--checkpoint", str(checkpoint), "--store",
                   str(tmp_path / "r.sqlite"), "--no-progress"])
    assert status == 2
    assert "Python objects" in one_line_error(capsys)




def _disk_full(*args: Any, **kwargs: Any) -> Any:
    """A file handle on /dev/full: every write fails with 'No space left on device' and names no file."""
    os.close(args[0])
    return open("/dev/full", "w", encoding="utf-8")


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux)")
def test_a_full_disk_names_the_file_and_leaves_the_previous_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from resbench import files

    store = small_store(tmp_path)
    board = tmp_path / "board.md"
    assert main(["leaderboard", "--store", str(store), "--output", str(board)]) == 0
    previous = board.read_bytes()
    monkeypatch.setattr(files.os, "fdopen", _disk_full)
    assert main(["leaderboard", "--store", str(store), "--format", "csv", "--output", str(board)]) == 1
    assert f"No space left on device: '{board}'" in one_line_error(capsys)
    assert board.read_bytes() == previous
    assert not list(tmp_path.glob(".board.md.*"))


def test_figures_are_replaced_atomically(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A figure interrupted while being drawn (a kill, a full disk) leaves the previous good one in place."""
    from matplotlib.figure import Figure

    from resbench.report.plots import write_figures
    from resbench.report.tables import build_leaderboard
    from resbench.run.store import ResultStore

    with ResultStore.open_existing(small_store(tmp_path)) as store:
        cells, trials = store.cells_frame(), store.trials_frame()
    tables = build_leaderboard(cells, trials)
    output = tmp_path / "figures"
    written = write_figures(tables, trials, output)
    before = {path: path.read_bytes() for path in written}
    assert all(before.values())

    def interrupted(self: Figure, target: Any, **kwargs: Any) -> None:
        Path(target).write_bytes(b"<svg")  # half a figure, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Figure, "savefig", interrupted)
    with pytest.raises(OSError, match=f"No space left on device: '{output}/"):
        write_figures(tables, trials, output)
    assert {path: path.read_bytes() for path in written} == before
    assert sorted(output.iterdir()) == sorted(written)  # no temporary file left behind
