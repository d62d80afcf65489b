"""The SQLite store: transactional rows, skipping completed trials, frames for reports."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from resbench.errors import ResbenchError, UsageError
from resbench.run.store import APPLICATION_ID, SCHEMA_VERSION, CellFailure, ResultStore, TrialRow
from tests.helpers import PROVENANCE, make_cell, make_trial


def test_trials_round_trip_and_rerun_sees_completed_ones(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "r.sqlite"
    with ResultStore(path) as store:
        run_id = store.start_run(PROVENANCE)
        store.upsert_cell(make_cell("a"), run_id)
        store.add_trials([make_trial("a", 0, 90.0), make_trial("a", 1, 80.0)], run_id)
    with ResultStore(path) as store:
        assert store.trial_accuracies(["a", "b"]) == {"a": {0: 90.0, 1: 80.0}, "b": {}}
        frame = store.trials_frame()
        assert list(frame["accuracy"]) == [90.0, 80.0]
        assert set(frame["method"]) == {"none"}
        assert store.runs_frame()["device"].tolist() == ["cpu"]


def test_a_failing_batch_writes_nothing(tmp_path: Path) -> None:
    with ResultStore(tmp_path / "r.sqlite") as store:
        run_id = store.start_run(PROVENANCE)
        store.upsert_cell(make_cell("a"), run_id)
        bad = TrialRow("a", 1, 0, None, 0.0, 0.0, 0.0, 0, False, 0.0, (), {})  # type: ignore[arg-type]
        with pytest.raises(ResbenchError, match=f"{tmp_path / 'r.sqlite'}: NOT NULL constraint failed"):
            store.add_trials([make_trial("a", 0, 90.0), bad], run_id)
        assert store.trial_accuracies(["a"]) == {"a": {}}


def test_cell_keeps_its_first_definition(tmp_path: Path) -> None:
    with ResultStore(tmp_path / "r.sqlite") as store:
        run_id = store.start_run(PROVENANCE)
        store.upsert_cell(make_cell("a", prepare_seconds=1.0), run_id)
        store.upsert_cell(make_cell("a", prepare_seconds=9.0), run_id)
        assert store.cells_frame()["prepare_seconds"].tolist() == [1.0]


def test_missing_or_foreign_store_is_bad_input(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no results store"):
        ResultStore.open_existing(tmp_path / "absent.sqlite")
    with pytest.raises(UsageError, match="is a folder; --store names the store file"):  # as `run` says
        ResultStore.open_existing(tmp_path)
    foreign = tmp_path / "foreign.sqlite"
    foreign.write_text("this is not a database at all, just text " * 50)
    with pytest.raises(UsageError, match="not a resbench store"):
        ResultStore(foreign)


def _file_state(path: Path) -> tuple[bytes, list[str]]:
    """The file's bytes and the names beside it (a -wal or -shm file appears when SQLite writes)."""
    return path.read_bytes(), sorted(entry.name for entry in path.parent.iterdir())


def _foreign_database(path: Path) -> Path:
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE notes (body TEXT)")
        connection.execute("INSERT INTO notes VALUES ('mine')")
    connection.close()
    return path


def test_a_new_store_carries_its_application_id_and_schema_version(tmp_path: Path) -> None:
    ResultStore(tmp_path / "r.sqlite").close()
    with sqlite3.connect(tmp_path / "r.sqlite") as connection:
        assert connection.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
        assert connection.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    connection.close()


def test_an_unrelated_sqlite_file_is_refused_and_left_untouched(tmp_path: Path) -> None:
    foreign = _foreign_database(tmp_path / "mine.sqlite")
    before = _file_state(foreign)
    for read_only in (False, True):
        with pytest.raises(UsageError, match=r"not a resbench store .*tables notes"):
            ResultStore(foreign, read_only=read_only)
    assert _file_state(foreign) == before


def test_reading_an_empty_file_never_turns_it_into_a_store(tmp_path: Path) -> None:
    empty = tmp_path / "empty.sqlite"
    empty.touch()
    with pytest.raises(UsageError, match="not a resbench store"):
        ResultStore.open_existing(empty)
    assert empty.read_bytes() == b"" and sorted(p.name for p in tmp_path.iterdir()) == ["empty.sqlite"]


def test_reading_a_store_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "r.sqlite"
    with ResultStore(path) as store:
        store.upsert_cell(make_cell("a"), store.start_run(PROVENANCE))
    before = _file_state(path)
    with ResultStore.open_existing(path) as store:
        assert len(store.cells_frame()) == 1
        with pytest.raises(RuntimeError, match="read-only"):
            store.start_run(PROVENANCE)
    assert _file_state(path) == before


def test_a_store_on_read_only_media_can_be_read(tmp_path: Path) -> None:
    folder = tmp_path / "media"
    folder.mkdir()
    with ResultStore(folder / "r.sqlite") as store:
        store.upsert_cell(make_cell("a"), store.start_run(PROVENANCE))
    (folder / "r.sqlite").chmod(0o444)
    folder.chmod(0o555)
    try:
        if os.access(folder, os.W_OK):
            pytest.skip("running as a user who can write anywhere (root)")
        with ResultStore.open_existing(folder / "r.sqlite") as store:
            assert store.cells_frame()["cell_id"].tolist() == ["a"]
    finally:
        folder.chmod(0o755)


def test_a_store_from_a_newer_resbench_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "r.sqlite"
    ResultStore(path).close()
    with sqlite3.connect(path) as connection:
        connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    connection.close()
    with pytest.raises(UsageError, match="newer resbench"):
        ResultStore(path)


def test_a_store_written_before_schema_versions_is_adopted(tmp_path: Path) -> None:
    from resbench.run.records import SCHEMA

    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as connection:
        legacy = SCHEMA.split("CREATE TABLE IF NOT EXISTS failures")[0]
        connection.executescript(legacy)
    connection.close()
    with ResultStore.open_existing(path) as store:
        assert store.cells_frame().empty
    with ResultStore(path) as store:
        store.record_failures([], store.start_run(PROVENANCE))
    with sqlite3.connect(path) as connection:
        assert connection.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    connection.close()


def test_a_damaged_store_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    path = tmp_path / "r.sqlite"
    with ResultStore(path) as store:
        run_id = store.start_run(PROVENANCE)
        store.upsert_cell(make_cell("a"), run_id)
        store.add_trials([make_trial("a", trial, 90.0) for trial in range(400)], run_id)
    data = bytearray(path.read_bytes())
    data[5 * 4096: 6 * 4096] = b"\xff" * 4096  # scribble over page 6, the root of the trials table
    path.write_bytes(bytes(data))
    before = _file_state(path)
    with pytest.raises(UsageError, match=f"{path}: the store is damaged"):
        ResultStore(path)
    assert _file_state(path) == before


def test_sqlite_failures_are_one_line_naming_the_store(tmp_path: Path) -> None:
    from resbench.run.store import _problem

    path = tmp_path / "r.sqlite"
    full = _problem(path, sqlite3.OperationalError("database or disk is full"))
    assert type(full) is ResbenchError and str(full).startswith(f"{path}: no space left")
    damaged = _problem(path, sqlite3.DatabaseError("database disk image is malformed"))
    assert isinstance(damaged, UsageError) and "damaged" in str(damaged)


def test_a_second_writer_is_refused_while_the_first_holds_the_store(tmp_path: Path) -> None:
    path = tmp_path / "r.sqlite"
    with ResultStore(path, exclusive=True):
        with pytest.raises(UsageError, match="another resbench run is writing this store"):
            ResultStore(path, exclusive=True)
        with ResultStore(path, read_only=True) as reader:  # reports still read it
            assert reader.trials_frame().empty
    ResultStore(path, exclusive=True).close()  # released with the first


def test_failures_are_recorded_and_cleared_by_trials(tmp_path: Path) -> None:
    with ResultStore(tmp_path / "r.sqlite") as store:
        run_id = store.start_run(PROVENANCE)
        failure = CellFailure("a", "none", "m", "d", "fp32", "bitflip", 1e-5, "prepare", "plug", "ValueError: no")
        store.record_failures([failure], run_id)
        assert store.failures_frame()["phase"].tolist() == ["prepare"]
        store.upsert_cell(make_cell("a"), run_id)
        rerun = store.start_run(PROVENANCE)
        assert store.add_trials([make_trial("a", 0, 90.0)], rerun) == 1
        assert store.add_trials([make_trial("a", 0, 90.0)], rerun) == 0  # written once
        assert store.failures_frame().empty


def test_a_too_long_store_name_is_bad_input(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="File name too long"):
        ResultStore(tmp_path / ("x" * 300 + ".sqlite"))
