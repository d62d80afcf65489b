"""The results store: one SQLite file holding cell definitions, every trial row and provenance.

Writes are transactional: a trial row is written whole or not at all, so an interrupted run loses
nothing it had finished and a rerun computes only what is missing. Several suites may share a store;
cells are identified by a hash of everything that determines their results.

The store's integrity is a checked promise:

* a resbench store carries resbench's SQLite ``application_id`` and its schema version in
  ``user_version``; any other SQLite file (or any other file) is refused, never adopted or altered;
* only ``resbench run`` writes (:class:`ResultStore`), and only to a new (empty) file or a resbench store;
  reports open the file read-only (:meth:`ResultStore.open_existing`), which also works on read-only media
  (a store a killed run left with its write-ahead log there is refused: SQLite cannot read that log);
* a run first checks the file for damage, its indexes included (a damaged index would let a (cell, trial)
  row be written twice; it is rebuilt when no key is stored twice), and holds an exclusive lock while it
  writes, so a second run on the same store is refused with a clear message rather than computing
  everything twice;
* SQLite failures (damage, a full disk, a locked file) surface as one line naming the file.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import json
import logging
import os
import sqlite3
import time
import urllib.parse
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pandas as pd

from resbench.errors import ResbenchError, UsageError
from resbench.run.records import SCHEMA, SCHEMA_VERSION, CellFailure, CellRecord, TrialRow

__all__ = ["APPLICATION_ID", "DEFAULT_STORE", "SCHEMA_VERSION", "CellFailure", "CellRecord", "ResultStore",
           "TrialRow"]

DEFAULT_STORE = Path("results/resbench.sqlite")
#: SQLite ``application_id`` of a resbench store ("RBst").
APPLICATION_ID = 0x52427374
_TABLES = ("runs", "cells", "trials", "failures")
#: Columns added to the tables since schema version 1 (a run adds them to an older store, with their defaults).
_ADDED_SINCE_FIRST_SCHEMA = {"cells": ("strata_weights",), "trials": ("stratum",)}
#: The key each keyed table promises to hold once per row.
_KEYS = {"cells": "cell_id", "trials": "cell_id, trial", "failures": "cell_id"}
_DAMAGED = "Restore it from a copy or pass another --store"
logger = logging.getLogger(__name__)
def _problem(path: Path, error: Exception) -> ResbenchError:
    """One line for a SQLite failure, naming the file; damage is bad input, the rest a failure."""
    message = str(error).splitlines()[0] if str(error) else type(error).__name__
    if isinstance(error, pd.errors.DatabaseError) and error.__cause__ is not None:
        message = str(error.__cause__)
    if "not a database" in message:
        return UsageError(f"{path}: not a resbench store ({message}); it was left as it is")
    if "unable to open" in message:
        return UsageError(f"{path}: cannot open the store ({message})")
    if "malformed" in message:
        return UsageError(f"{path}: the store is damaged ({message}); nothing was written. "
                          "Restore it from a copy or pass another --store")
    if "disk is full" in message:
        return ResbenchError(f"{path}: no space left on the device ({message}); completed trials are stored, "
                             "free some space and run the same command again to resume")
    if "locked" in message or "busy" in message:
        return ResbenchError(f"{path}: the store is locked by another process ({message}); try again")
    if "readonly" in message:
        return UsageError(f"{path}: cannot write the store ({message}): it is read-only; pass another --store")
    return ResbenchError(f"{path}: {message}")


def _check_name(path: Path) -> None:
    """A path the file system refuses (a name too long) is bad input, said as such."""
    try:
        os.stat(path)
    except FileNotFoundError:
        return
    except OSError as error:
        if error.errno in (errno.ENAMETOOLONG, errno.ENOTDIR, errno.ELOOP):
            raise UsageError(f"{path}: {error.strerror}") from None
        raise


def _read_only_connection(path: Path) -> sqlite3.Connection:
    """Open ``path`` without ever writing it; on read-only media SQLite cannot make its shared-memory file,
    so the file is then opened as immutable (nobody can be writing it there)."""
    uri = f"file:{urllib.parse.quote(str(path.resolve()))}"
    try:
        connection = sqlite3.connect(f"{uri}?mode=ro", uri=True)
        connection.execute("SELECT count(*) FROM sqlite_master").fetchone()
        return connection
    except sqlite3.OperationalError:
        if os.access(path.parent, os.W_OK):
            raise
    log = path.with_name(f"{path.name}-wal")
    if log.is_file() and log.stat().st_size > 0:
        raise UsageError(f"{path}: a run stopped before closing this store, and SQLite cannot read the trials it left "
                         f"in {log.name} on read-only media; copy both files to a writable folder and read them there")
    return sqlite3.connect(f"{uri}?immutable=1", uri=True)


@functools.cache
def _schema_columns() -> dict[str, tuple[str, ...]]:
    """The column names of each resbench table, as :data:`~resbench.run.records.SCHEMA` creates them."""
    connection = sqlite3.connect(":memory:")
    try:
        connection.executescript(SCHEMA)
        return {table: _columns(connection, table) for table in _TABLES}
    finally:
        connection.close()


def _first_schema_columns(table: str) -> tuple[str, ...]:
    """The columns of ``table`` in the first stamped schema (version 1): those of today less the added ones."""
    return tuple(name for name in _schema_columns()[table] if name not in _ADDED_SINCE_FIRST_SCHEMA.get(table, ()))


def _columns(connection: sqlite3.Connection, table: str) -> tuple[str, ...]:
    return tuple(row[1] for row in connection.execute(f"PRAGMA table_info({table})"))


class ResultStore:
    """A SQLite file of runs, cells and trials."""

    def __init__(self, path: Path, *, read_only: bool = False, exclusive: bool = False) -> None:
        """Open the store at ``path`` for writing (created when absent), or ``read_only`` for reports.

        A file that is not a resbench store, a damaged store and a store written by a newer resbench are
        refused (:class:`UsageError`) before anything is written. ``exclusive`` (a run) holds the store
        until :meth:`close`, taken before the file is read: another run holding it is refused.
        """
        self.path = Path(path)
        self.read_only = read_only
        self._lock: int | None = None
        self._connection: sqlite3.Connection  # opened below
        self._writable = False  # set once the file is known to be a resbench store open for writing
        _check_name(self.path)
        self._new = not read_only and (not self.path.exists() or self.path.stat().st_size == 0)
        if self.path.is_dir():
            raise UsageError(f"{self.path}: the store must be a file, not a directory")
        try:
            if read_only:
                self._connection = _read_only_connection(self.path)
                self._check_format(new_allowed=False)
                self._check_integrity(repair=False)
            else:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._connection = sqlite3.connect(self.path, timeout=30.0)  # creates the file when absent
                if exclusive:
                    self._hold()
                self._open_for_writing()
                self._writable = True
        except sqlite3.Error as error:
            self.close()
            raise _problem(self.path, error) from None
        except UsageError:
            self.close()
            raise

    def _open_for_writing(self) -> None:
        """Check the file, create the tables of a new store, then switch to write-ahead logging.

        The tables and the stamp come first, in one transaction: a file without them is never resbench's.
        """
        if not self._check_format(new_allowed=True):
            self._check_integrity(repair=True)
        with self._connection:
            self._connection.execute("BEGIN IMMEDIATE")
            if self._check_format(new_allowed=True) or self._version() < SCHEMA_VERSION:
                for statement in SCHEMA.split(";"):
                    if statement.strip():
                        self._connection.execute(statement)
                self._add_missing_columns()
                self._connection.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                self._connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        self._connection.execute("PRAGMA journal_mode=WAL")
        self._connection.execute("PRAGMA synchronous=NORMAL")

    def _add_missing_columns(self) -> None:
        """Bring a store of an older schema up to date: the columns added since, with their defaults (older
        rows read as what the older resbench meant: unstratified cells and trials)."""
        reference = sqlite3.connect(":memory:")
        try:
            reference.executescript(SCHEMA)
            for table in _TABLES:
                present = set(_columns(self._connection, table))
                for _, name, kind, not_null, default, _ in reference.execute(f"PRAGMA table_info({table})"):
                    if name not in present:
                        constraint = f" NOT NULL DEFAULT {default}" if not_null else ""
                        self._connection.execute(f"ALTER TABLE {table} ADD COLUMN {name} {kind}{constraint}")
        finally:
            reference.close()

    def _integrity_problem(self) -> str | None:
        """SQLite's first complaint about the file (pages, records, indexes), or None when it is sound."""
        result = next(iter(self._connection.execute("PRAGMA integrity_check").fetchall()), None)
        if result is None:
            return "no answer"
        return None if result[0] == "ok" else str(result[0]).splitlines()[-1]  # past "*** in database main ***"

    def _keys_stored_twice(self) -> int:
        """Keys that rows of a keyed table share, read without any index (a damaged one hides them)."""
        tables = [table for table in _KEYS if table in self._tables()]
        return sum(self._connection.execute(
            f"SELECT count(*) FROM (SELECT 1 FROM {table} NOT INDEXED GROUP BY {_KEYS[table]} HAVING count(*) > 1)"
        ).fetchone()[0] for table in tables)

    def _check_integrity(self, repair: bool) -> None:
        """Refuse a damaged store; with ``repair`` (a run), rebuild damaged indexes when no key is stored twice.

        ``PRAGMA quick_check`` alone would miss an index that disagrees with its table, through which a run
        writes a (cell, trial) row twice and a report drops rows.
        """
        problem = self._integrity_problem()
        if problem is None:
            return
        action = "nothing was written" if repair else "nothing was read"
        if twice := self._keys_stored_twice():
            raise UsageError(f"{self.path}: the store is damaged ({twice} keys held by more than one row; {problem}); "
                             f"{action}. {_DAMAGED}")
        if "index" not in problem:
            raise UsageError(f"{self.path}: the store is damaged ({problem}); {action}. {_DAMAGED}")
        if not repair:
            raise UsageError(f"{self.path}: the store is damaged ({problem}); {action}. The run that wrote it, run "
                             "again, rebuilds its damaged index")
        with self._connection:
            self._connection.execute("REINDEX")
        if (after := self._integrity_problem()) is not None:
            raise UsageError(f"{self.path}: the store is damaged ({after}); {action}. {_DAMAGED}")
        logger.warning("%s: rebuilt the store's damaged indexes (%s); no row was lost", self.path, problem)

    def _version(self) -> int:
        return int(self._connection.execute("PRAGMA user_version").fetchone()[0])

    def _tables(self) -> list[str]:
        return sorted(row[0] for row in self._connection.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"))

    def _check_format(self, new_allowed: bool) -> bool:
        """Refuse a file that is not a resbench store; True for a new store (a file that was absent or empty).

        A SQLite file of no tables that was not empty before this run is someone else's: it is refused too.
        """
        application_id = int(self._connection.execute("PRAGMA application_id").fetchone()[0])
        tables = self._tables()
        if application_id == APPLICATION_ID:
            if self._version() > SCHEMA_VERSION:
                raise UsageError(f"{self.path}: written by a newer resbench (store schema {self._version()}, "
                                 f"this resbench reads up to {SCHEMA_VERSION}); upgrade resbench")
            return False
        if application_id == 0 and not tables:
            if new_allowed and self._new:
                return True
            if not new_allowed:
                raise UsageError(f"{self.path}: not a resbench store (an empty database); run 'resbench run' first")
            raise UsageError(f"{self.path}: not a resbench store (a SQLite database of no tables, user version "
                             f"{self._version()}); it was left as it is")
        if application_id == 0 and self._legacy_store(tables):
            return False  # a store written before stores carried their schema version
        held = f"tables {', '.join(tables)}" if tables else "no tables"
        raise UsageError(f"{self.path}: not a resbench store (it holds {held}, application id {application_id}); "
                         "it was left as it is")

    def _legacy_store(self, tables: list[str]) -> bool:
        """Whether the tables are exactly resbench's, column for column (a store older than its stamp)."""
        if not set(tables) >= {"runs", "cells", "trials"} or not set(tables) <= set(_TABLES):
            return False
        return all(_columns(self._connection, table) in (_schema_columns()[table], _first_schema_columns(table))
                   for table in tables)

    @classmethod
    def open_existing(cls, path: Path) -> ResultStore:
        """Open a store read-only, for reports; a missing file is bad input."""
        _check_name(Path(path))
        if Path(path).is_dir():
            raise UsageError(f"{path}: is a folder; --store names the store file")
        if not Path(path).is_file():
            raise UsageError(f"{path}: no results store here; run 'resbench run' first or pass --store")
        return cls(path, read_only=True)

    def _hold(self) -> None:
        """Hold this store exclusively until :meth:`close`; another run holding it is refused.

        The lock is the operating system's (``flock`` on the store file), so it ends with the process, a
        killed one included.
        """
        descriptor = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(descriptor)
            raise UsageError(f"{self.path}: another resbench run is writing this store; wait for it to finish "
                             "(then run again: finished cells are skipped) or pass another --store") from None
        self._lock = descriptor

    @contextlib.contextmanager
    def _guard(self) -> Iterator[None]:
        """SQLite and pandas failures as one line naming the store."""
        try:
            yield
        except (sqlite3.Error, pd.errors.DatabaseError) as error:
            raise _problem(self.path, error) from None

    def close(self) -> None:
        """Close the database connection and release the run's lock.

        A writer leaves the file in rollback-journal mode, so that readers (which may sit on read-only
        media) need no write-ahead log or shared-memory file beside it.
        """
        connection = getattr(self, "_connection", None)  # none when the file could not be opened
        if connection is not None:
            if self._writable:
                with contextlib.suppress(sqlite3.Error):  # another connection still reading: it stays in WAL mode
                    connection.execute("PRAGMA journal_mode=DELETE")
            connection.close()
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None

    def __enter__(self) -> ResultStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        if self.read_only:
            raise RuntimeError(f"{self.path} was opened read-only")
        with self._guard(), self._connection:
            yield self._connection

    def start_run(self, provenance: dict[str, Any]) -> int:
        """Record a run's provenance; returns its id."""
        record = {**provenance, "plugins": json.dumps(provenance["plugins"], sort_keys=True)}
        columns = ", ".join(record)
        marks = ", ".join("?" for _ in record)
        with self._transaction() as connection:
            cursor = connection.execute(f"INSERT INTO runs ({columns}) VALUES ({marks})", tuple(record.values()))
        return int(cursor.lastrowid or 0)

    def finish_run(self, run_id: int) -> None:
        """Mark a run finished."""
        with self._transaction() as connection:
            connection.execute(
                "UPDATE runs SET finished = ? WHERE run_id = ?", (time.strftime("%Y-%m-%dT%H:%M:%S%z"), run_id)
            )

    def upsert_cell(self, cell: CellRecord, run_id: int) -> None:
        """Record a cell definition; an existing cell keeps its first record."""
        record = {**asdict(cell), "run_id": run_id}
        columns = ", ".join(record)
        marks = ", ".join("?" for _ in record)
        with self._transaction() as connection:
            connection.execute(
                f"INSERT INTO cells ({columns}) VALUES ({marks}) ON CONFLICT (cell_id) DO NOTHING",
                tuple(record.values()),
            )

    def add_trials(self, rows: Sequence[TrialRow], run_id: int) -> int:
        """Write trial rows in one transaction (all or none); returns how many were new.

        A row already stored (same cell and trial) is kept as it is: a trial is written once, whoever
        computed it. Rows clear the failure an earlier run recorded for their cell, never one of this run
        (a cell that failed after some of its rows were computed stays failed).
        """
        if not rows:
            return 0
        values = [
            (
                row.cell_id,
                row.trial,
                row.seed,
                row.accuracy,
                row.sdc_rate,
                row.critical_sdc_rate,
                row.due_rate,
                row.flips,
                int(row.reused),
                row.seconds,
                json.dumps(list(row.flips_per_bit)),
                json.dumps(row.flips_per_tensor, sort_keys=True),
                run_id,
                row.effective_flips,
                row.stratum,
            )
            for row in rows
        ]
        with self._transaction() as connection:
            before = connection.total_changes
            columns = _schema_columns()["trials"]
            connection.executemany(
                f"INSERT INTO trials ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))}) "
                "ON CONFLICT (cell_id, trial) DO NOTHING",
                values,
            )
            added = connection.total_changes - before
            cell_ids = sorted({row.cell_id for row in rows})
            marks = ", ".join("?" * len(cell_ids))
            connection.execute(f"DELETE FROM failures WHERE run_id != ? AND cell_id IN ({marks})", [run_id, *cell_ids])
        return added

    def record_failures(self, failures: Sequence[CellFailure], run_id: int) -> None:
        """Record cells that failed (the latest failure of a cell replaces an earlier one)."""
        records = [(*asdict(failure).values(), run_id) for failure in failures]
        with self._transaction() as connection:
            connection.executemany(
                "INSERT OR REPLACE INTO failures VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", records
            )

    def delete_cells(self, cell_ids: Iterable[str]) -> int:
        """Remove cells with their trial rows and failure records, in one transaction (``resbench run
        --rerun``); returns how many trial rows went."""
        ids = sorted(set(cell_ids))
        if not ids:
            return 0
        with self._transaction() as connection:
            before = connection.total_changes
            connection.executemany("DELETE FROM trials WHERE cell_id = ?", [(cell_id,) for cell_id in ids])
            removed = connection.total_changes - before
            for table in ("cells", "failures"):
                connection.executemany(f"DELETE FROM {table} WHERE cell_id = ?", [(cell_id,) for cell_id in ids])
        return removed

    def failures_frame(self) -> pd.DataFrame:
        """Cells whose latest attempt failed (a later run that added trials to the cell cleared its failure)."""
        with self._guard():
            return pd.read_sql_query("SELECT * FROM failures ORDER BY dataset, model, method, format", self._connection)

    def trial_accuracies(self, cell_ids: Iterable[str]) -> dict[str, dict[int, float]]:
        """Stored accuracy per trial index for each cell (the trials a rerun skips)."""
        found: dict[str, dict[int, float]] = {}
        with self._guard():
            for cell_id in cell_ids:
                rows = self._connection.execute(
                    "SELECT trial, accuracy FROM trials WHERE cell_id = ? ORDER BY trial", (cell_id,)
                ).fetchall()
                found[cell_id] = {int(trial): float(accuracy) for trial, accuracy in rows}
        return found

    def zero_flip_probabilities(self, cell_ids: Iterable[str]) -> dict[str, float]:
        """P(K = 0) of the stored cells among ``cell_ids`` (0 for cells sampled directly)."""
        found = {}
        with self._guard():
            for cell_id in cell_ids:
                row = self._connection.execute(
                    "SELECT zero_flip_probability FROM cells WHERE cell_id = ?", (cell_id,)
                ).fetchone()
                if row is not None:
                    found[cell_id] = float(row[0])
        return found

    def cells_frame(self) -> pd.DataFrame:
        """Every cell definition as a data frame."""
        with self._guard():
            return pd.read_sql_query("SELECT * FROM cells", self._connection)

    def trials_frame(self) -> pd.DataFrame:
        """Every trial joined with its cell, one row per trial."""
        with self._guard():
            stratified = "strata_weights" in _columns(self._connection, "cells")
            weights = "c.strata_weights" if stratified else "'' AS strata_weights"
            frame = pd.read_sql_query(
                "SELECT c.method, c.model, c.dataset, c.format, c.fault_model, c.ber, c.seed AS base_seed, "
                f"c.sampling, c.zero_flip_probability, {weights}, t.* "
                "FROM trials t JOIN cells c USING (cell_id) ORDER BY c.dataset, c.model, c.format, "
                "c.fault_model, c.method, c.ber, t.trial",
                self._connection,
            )
        if "stratum" not in frame:  # a store of schema version 1, read as it is
            frame["stratum"] = 0
        return frame

    def runs_frame(self) -> pd.DataFrame:
        """Every run's provenance."""
        with self._guard():
            return pd.read_sql_query("SELECT * FROM runs ORDER BY run_id", self._connection)
