"""A hostile user and a crashing machine, third round: outputs that never clobber, stores that never
double-count, failures that are never lost, input that cannot exhaust memory."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from resbench import plugins
from resbench.cli import main
from resbench.errors import UsageError
from resbench.run.store import ResultStore
from tests.test_method_api import SUITE as TINY_SUITE
from tests.test_reliability import _one_line, _store
from tests.test_store import PROVENANCE, make_trial

# -- outputs that never clobber -----------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["leaderboard", "export"])
def test_output_to_a_device_is_refused_and_the_device_kept(command: str, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    store = _store(tmp_path)
    assert main([command, "--store", str(store), "--output", "/dev/null"]) == 2
    assert "--output /dev/null: is a character device, not a regular file" in _one_line(capsys)
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


@pytest.mark.parametrize("command", ["leaderboard", "export"])
def test_output_to_a_fifo_is_refused_and_the_fifo_kept(command: str, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    store = _store(tmp_path)
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    assert main([command, "--store", str(store), "--output", str(fifo)]) == 2
    assert f"--output {fifo}: is a FIFO (named pipe), not a regular file" in _one_line(capsys)
    assert stat.S_ISFIFO(fifo.stat().st_mode)


@pytest.mark.parametrize("command", ["leaderboard", "export"])
def test_output_through_a_symlink_writes_its_target(command: str, tmp_path: Path) -> None:
    store = _store(tmp_path)
    target = tmp_path / "kept" / "board.txt"
    target.parent.mkdir()
    target.write_text("old", encoding="utf-8")
    link = tmp_path / "board.txt"
    link.symlink_to(target)
    assert main([command, "--store", str(store), "--output", str(link)]) == 0
    assert link.is_symlink() and target.read_text(encoding="utf-8") not in ("", "old")


# -- stores that never double-count -------------------------------------------------------------------------


def _empty_trials_index(path: Path) -> None:
    """Damage the store as a bad sector would: the trials key index loses its entries, yet every page stays
    well formed (``PRAGMA quick_check`` passes)."""
    with sqlite3.connect(path) as connection:
        root, page_size = connection.execute(
            "SELECT rootpage, (SELECT page_size FROM pragma_page_size) FROM sqlite_master "
            "WHERE name = 'sqlite_autoindex_trials_1'").fetchone()
    connection.close()
    data = bytearray(path.read_bytes())
    header = (root - 1) * page_size
    assert data[header] == 0x0A, "the index must fit one leaf page"
    data[header + 1: header + 8] = b"\0\0\0\0" + page_size.to_bytes(2, "big") + b"\0"  # no cells, no free space
    path.write_bytes(bytes(data))
    with sqlite3.connect(path) as connection:
        assert connection.execute("PRAGMA quick_check").fetchone()[0] == "ok"
    connection.close()


def test_a_damaged_trials_index_is_rebuilt_before_a_run_writes(tmp_path: Path) -> None:
    path = _store(tmp_path)
    _empty_trials_index(path)
    with ResultStore(path, exclusive=True) as store:
        first = store.trials_frame().iloc[0]
        again = make_trial(str(first["cell_id"]), int(first["trial"]), 1.0)
        assert store.add_trials([again], store.start_run(PROVENANCE)) == 0  # already stored: not written twice
    with sqlite3.connect(path) as connection:
        assert connection.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        pairs = connection.execute("SELECT count(*), count(DISTINCT cell_id || '/' || trial) FROM trials").fetchone()
    connection.close()
    assert pairs[0] == pairs[1] == 20


def test_a_store_holding_a_trial_twice_is_refused(tmp_path: Path) -> None:
    path = _store(tmp_path)
    _empty_trials_index(path)
    with sqlite3.connect(path) as connection:  # what a run through the damaged index wrote
        connection.execute("INSERT INTO trials SELECT * FROM trials NOT INDEXED LIMIT 1")
    connection.close()
    before = path.read_bytes()
    with pytest.raises(UsageError, match=f"^{path}: the store is damaged \\(1 keys held by more than one row; "):
        ResultStore(path, exclusive=True)
    assert path.read_bytes() == before


def test_reports_refuse_a_store_whose_index_is_damaged(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _store(tmp_path)
    _empty_trials_index(path)
    assert main(["export", "--store", str(path)]) == 2
    assert f"{path}: the store is damaged (row 1 missing from index" in _one_line(capsys)


@pytest.fixture
def killed_run_on_read_only_media(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The files a killed run leaves (store, write-ahead log, no shared-memory file) on read-only media."""
    from resbench.run import store as store_module

    writer_folder, media = tmp_path / "writer", tmp_path / "media"
    media.mkdir()
    path = _store(writer_folder)
    writer = sqlite3.connect(path)
    writer.execute("PRAGMA journal_mode=WAL")
    writer.execute("PRAGMA wal_autocheckpoint=0")
    writer.execute("UPDATE trials SET accuracy = accuracy")
    with writer:
        writer.execute("INSERT INTO trials SELECT cell_id, trial + 100, seed, accuracy, sdc_rate, critical_sdc_rate, "
                       "due_rate, flips, reused, seconds, flips_per_bit, flips_per_tensor, run_id, effective_flips "
                       "FROM trials")
    for name in (path.name, f"{path.name}-wal"):  # copied while the writer holds them, as a kill leaves them
        (media / name).write_bytes((writer_folder / name).read_bytes())
    writer.close()
    connect = sqlite3.connect

    def read_only_media(database: str, *args: Any, **kwargs: Any) -> sqlite3.Connection:
        if str(media) in database and "mode=ro" in database:  # SQLite cannot create the -shm file there
            raise sqlite3.OperationalError("unable to open database file")
        return connect(database, *args, **kwargs)

    monkeypatch.setattr(store_module.sqlite3, "connect", read_only_media)
    monkeypatch.setattr(store_module.os, "access", lambda folder, mode: Path(folder) != media)
    return media / path.name


def test_a_killed_runs_log_on_read_only_media_is_never_ignored(killed_run_on_read_only_media: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    path = killed_run_on_read_only_media
    assert main(["export", "--store", str(path)]) == 2
    assert f"{path}: a run stopped before closing this store" in _one_line(capsys)


def test_an_unrelated_database_with_resbench_table_names_is_left_alone(tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "theirs.sqlite"
    with sqlite3.connect(path) as connection:
        connection.executescript("CREATE TABLE runs (id INTEGER); CREATE TABLE cells (x TEXT); "
                                 "CREATE TABLE trials (y REAL);")
    connection.close()
    before = path.read_bytes()
    with pytest.raises(UsageError, match="not a resbench store \\(it holds tables cells, runs, trials"):
        ResultStore(path, exclusive=True)
    assert path.read_bytes() == before


def test_an_empty_database_of_another_application_is_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "theirs.sqlite"
    with sqlite3.connect(path) as connection:
        connection.execute("PRAGMA user_version = 7")
    connection.close()
    before = path.read_bytes()
    with pytest.raises(UsageError, match="not a resbench store \\(a SQLite database of no tables, user version 7\\)"):
        ResultStore(path, exclusive=True)
    assert path.read_bytes() == before


def test_an_empty_file_becomes_a_store(tmp_path: Path) -> None:
    path = tmp_path / "r.sqlite"
    path.touch()
    with ResultStore(path, exclusive=True) as store:
        assert store.trials_frame().empty


# -- failures that are never lost ---------------------------------------------------------------------------


@pytest.fixture
def fails_mid_campaign(monkeypatch: pytest.MonkeyPatch) -> None:
    """A fault model (plugin ``resbench_flaky``) that raises on its third trial, after rows were computed."""
    from resbench.faults import BernoulliFaults, FaultModelOptions

    class Flaky(BernoulliFaults):
        calls = 0

        def sample_sites(self, *arguments: Any) -> Any:
            Flaky.calls += 1
            if Flaky.calls == 3:
                raise RuntimeError("device lost")
            return super().sample_sites(*arguments)

    module = ModuleType("resbench_flaky")
    module.register_fault_models = plugins.hookimpl(  # type: ignore[attr-defined]
        lambda register: register("flaky", Flaky, options=FaultModelOptions))
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setattr(plugins, "BUILTIN_PLUGINS", (*plugins.BUILTIN_PLUGINS, module.__name__))
    plugins.reset_registries()


@pytest.mark.usefixtures("fails_mid_campaign")
def test_every_failed_cell_stays_recorded_and_out_of_the_ranking(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    suite = tmp_path / "suite.yaml"
    suite.write_text(TINY_SUITE.replace("bers: [1.0e-3]", "bers: [1.0e-3, 1.0e-2]").replace("trials: 2", "trials: 4"),
                     encoding="utf-8")
    store = tmp_path / "r.sqlite"
    assert main(["run", str(suite), "--faults", "flaky", "--store", str(store), "--cache-dir", str(tmp_path / "c"),
                 "--report-dir", str(tmp_path / "reports"), "--no-progress"]) == 1
    assert "resbench: 3 cells failed" in capsys.readouterr().err
    with ResultStore.open_existing(store) as opened:
        failures, trials = opened.failures_frame(), opened.trials_frame()
    assert sorted(failures["ber"]) == [0.0, 1e-3, 1e-2]
    assert (trials["ber"] > 0).any(), "rows were computed before the failure"
    assert main(["leaderboard", "--store", str(store), "--format", "json"]) == 0
    rows = [row for table in json.loads(capsys.readouterr().out)["tables"] for row in table["rows"]]
    assert rows and all(row["score"] is None for row in rows)
