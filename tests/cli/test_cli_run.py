"""``resbench run``, ``leaderboard``, ``plot`` and ``export`` through the command line."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest

from resbench.cli import main
from tests.helpers import TINY_SUITE as SUITE


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("run")
    suite = folder / "suite.yaml"
    suite.write_text(SUITE, encoding="utf-8")
    status = main(["run", str(suite), "--store", str(folder / "r.sqlite"), "--cache-dir", str(folder / "cache"),
                   "--no-progress", "--device", "cpu"])
    assert status == 0
    return folder


def test_run_writes_store_leaderboard_and_figures(finished_run: Path) -> None:
    assert (finished_run / "r.sqlite").is_file()
    markdown = (finished_run / "leaderboard.md").read_text(encoding="utf-8")
    assert "## synthetic" in markdown and "| none |" in markdown
    assert (finished_run / "leaderboard.html").read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    figures = sorted(path.name for path in (finished_run / "figures").iterdir())
    assert len(figures) == 4 and any(name.endswith(".svg") for name in figures)


def test_leaderboard_formats(finished_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = str(finished_run / "r.sqlite")
    assert main(["leaderboard", "--store", store, "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    [table] = data["tables"]
    assert table["bers"] == [1e-3, 1e-2] and table["rows"][0]["method"] == "none"
    output = finished_run / "board.tex"
    assert main(["leaderboard", "--store", store, "--format", "latex", "--output", str(output)]) == 0
    assert "\\begin{tabular}" in output.read_text(encoding="utf-8")


def test_export_one_row_per_trial(finished_run: Path) -> None:
    output = finished_run / "trials.csv"
    assert main(["export", "--store", str(finished_run / "r.sqlite"), "--output", str(output)]) == 0
    trials = pd.read_csv(output)
    assert len(trials) == 2 * 3 + 1
    assert {"accuracy", "sdc_rate", "critical_sdc_rate", "due_rate", "flips", "seed", "flips_per_bit",
            "flips_per_tensor"} <= set(
        trials.columns)


def test_second_run_skips_everything(finished_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    suite = finished_run / "suite.yaml"
    status = main(["run", str(suite), "--store", str(finished_run / "r.sqlite"), "--cache-dir",
                   str(finished_run / "cache"), "--no-progress", "--report-dir", str(finished_run / "again")])
    assert status == 0
    assert "0 trials run, 6 already stored" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["run", "--methods", "nonne"], "did you mean 'none'"),
        (["run", "--bers", "1e-5,abc"], "--bers"),
        (["run", "--bers", "2"], "(0, 1]"),
        (["run", "--trials", "0"], "trials"),
        (["run", "--formats", "fp33"], "fp32"),
        (["run", "--device", "tpu:9"], "--device"),
        (["run", "--checkpoint", "/nonexistent/model.pt"], "no such file"),
        (["run", "--datasets", "cifar10"], "--data-root"),
        (["run", "--workers", "4"], "--workers: the local executor does not take it; it is for --executor process"),
        (["run", "--executor", "process", "--address", "127.0.0.3:6393"],
         "--address: the process executor does not take it; it is for --executor ray"),
        (["leaderboard", "--store", "/nonexistent/r.sqlite"], "no results store"),
        (["export", "--store", "/nonexistent/r.sqlite"], "no results store"),
    ],
)
def test_bad_input_exits_2_with_one_line(
    arguments: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = ["--store", str(tmp_path / "r.sqlite")] if arguments[0] == "run" else []
    assert main([*arguments, *store]) == 2
    error = capsys.readouterr().err
    assert message in error
    assert "Traceback" not in error
    assert not (tmp_path / "r.sqlite").exists()


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["leaderboard", "--output", "{folder}"], "is a folder; name a file"),
        (["export", "--output", "{folder}"], "is a folder; name a file"),
        (["leaderboard", "--output", "{file}/board.md"], "is a file, not a folder"),
        (["plot", "--output", "{file}"], "is a file, not a folder"),
        (["plot", "--output", "{file}/figures"], "cannot be created"),
    ],
)
def test_unusable_output_path_exits_2_and_writes_nothing(
    arguments: list[str], message: str, finished_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "folder").mkdir()
    (tmp_path / "file").write_text("mine\n", encoding="utf-8")
    paths = {"folder": tmp_path / "folder", "file": tmp_path / "file"}
    argv = [argument.format(**paths) for argument in arguments]
    assert main([*argv, "--store", str(finished_run / "r.sqlite")]) == 2
    error = capsys.readouterr().err
    assert message in error and error.count("\n") == 1 and "Traceback" not in error
    assert sorted(path.name for path in tmp_path.iterdir()) == ["file", "folder"]
    assert not any((tmp_path / "folder").iterdir())


@pytest.mark.parametrize("flag", ["--store", "--report-dir", "--cache-dir"])
def test_run_with_an_output_folder_on_a_file_exits_2_before_any_work(
    flag: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    suite = tmp_path / "suite.yaml"
    suite.write_text(SUITE, encoding="utf-8")
    blocker = tmp_path / "blocker"
    blocker.write_text("", encoding="utf-8")
    paths = {"--store": blocker / "r.sqlite", "--report-dir": blocker, "--cache-dir": blocker}
    defaults = {"--store": tmp_path / "r.sqlite", "--report-dir": tmp_path / "reports", "--cache-dir": tmp_path / "c"}
    argv = [str(part) for name, path in {**defaults, flag: paths[flag]}.items() for part in (name, path)]
    assert main(["run", str(suite), *argv, "--no-progress", "--device", "cpu"]) == 2
    error = capsys.readouterr().err
    assert f"{flag} " in error and "is a file, not a folder" in error and error.count("\n") == 1
    assert sorted(path.name for path in tmp_path.iterdir()) == ["blocker", "suite.yaml"]


def test_reports_are_readable_by_others(finished_run: Path) -> None:
    """Reports are written through a temporary file, whose private mode must not stick to the report."""
    mode = (finished_run / "leaderboard.md").stat().st_mode & 0o777
    assert mode == 0o666 & ~_umask()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_checkpoint_that_does_not_fit_is_refused_before_the_store_exists(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import torch

    checkpoint = tmp_path / "model.pt"
    torch.save({"fc1.weight": torch.zeros(3, 3)}, checkpoint)
    status = main(["run", "--models", "test-mlp", "--checkpoint", str(checkpoint), "--store",
                   str(tmp_path / "r.sqlite"), "--no-progress"])
    assert status == 2
    assert "wrong shapes: fc1.weight" in capsys.readouterr().err
    assert not (tmp_path / "r.sqlite").exists()


def test_a_suite_file_with_several_seeds_runs_and_seed_on_the_command_line_picks_one(tmp_path: Path) -> None:
    from resbench.run.store import ResultStore

    suite = tmp_path / "seeds.yaml"
    suite.write_text(SUITE.replace("trials: 3\n", "trials: 2\nseeds: [1, 2]\n"), encoding="utf-8")
    common = ["--cache-dir", str(tmp_path / "cache"), "--no-progress", "--device", "cpu"]
    assert main(["run", str(suite), "--store", str(tmp_path / "both.sqlite"), "--report-dir",
                 str(tmp_path / "both"), *common]) == 0
    assert main(["run", str(suite), "--seed", "7", "--store", str(tmp_path / "one.sqlite"), "--report-dir",
                 str(tmp_path / "one"), *common]) == 0
    with ResultStore(tmp_path / "both.sqlite") as both, ResultStore(tmp_path / "one.sqlite") as one:
        assert sorted(set(both.cells_frame()["seed"])) == [1, 2]
        assert sorted(set(one.cells_frame()["seed"])) == [7]
