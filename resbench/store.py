"""The results store: one SQLite file holding cell definitions, every trial row and provenance.

Writes are transactional: a trial row is written whole or not at all, so an interrupted run loses
nothing it had finished and a rerun computes only what is missing. Several suites may share a store;
cells are identified by a hash of everything that determines their results.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from resbench.errors import UsageError

__all__ = ["DEFAULT_STORE", "CellRecord", "ResultStore", "TrialRow"]

DEFAULT_STORE = Path("results/resbench.sqlite")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id INTEGER PRIMARY KEY AUTOINCREMENT,
    suite TEXT NOT NULL,
    suite_version INTEGER NOT NULL,
    started TEXT NOT NULL,
    finished TEXT,
    resbench_version TEXT NOT NULL,
    plugins TEXT NOT NULL,
    git_revision TEXT,
    torch_version TEXT NOT NULL,
    device TEXT NOT NULL,
    command TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS cells (
    cell_id TEXT PRIMARY KEY,
    method TEXT NOT NULL,
    model TEXT NOT NULL,
    dataset TEXT NOT NULL,
    format TEXT NOT NULL,
    fault_model TEXT NOT NULL,
    ber REAL NOT NULL,
    seed INTEGER NOT NULL,
    definition TEXT NOT NULL,
    method_plugin TEXT NOT NULL,
    citation TEXT NOT NULL,
    notes TEXT NOT NULL,
    stored_bits INTEGER NOT NULL,
    baseline_bits INTEGER NOT NULL,
    fault_space TEXT NOT NULL,
    eval_samples INTEGER NOT NULL,
    clean_eval_seconds REAL NOT NULL,
    baseline_eval_seconds REAL NOT NULL,
    prepare_seconds REAL NOT NULL,
    run_id INTEGER NOT NULL REFERENCES runs(run_id),
    sampling TEXT NOT NULL DEFAULT 'bernoulli',
    zero_flip_probability REAL NOT NULL DEFAULT 0,
    chance_accuracy REAL,
    baseline_checksum TEXT NOT NULL DEFAULT '',
    timing TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS trials (
    cell_id TEXT NOT NULL REFERENCES cells(cell_id),
    trial INTEGER NOT NULL,
    seed INTEGER NOT NULL,
    accuracy REAL NOT NULL,
    sdc_rate REAL NOT NULL,
    critical_sdc_rate REAL NOT NULL,
    due_rate REAL NOT NULL,
    flips INTEGER NOT NULL,
    reused INTEGER NOT NULL,
    seconds REAL NOT NULL,
    flips_per_bit TEXT NOT NULL,
    flips_per_tensor TEXT NOT NULL,
    run_id INTEGER NOT NULL REFERENCES runs(run_id),
    effective_flips INTEGER,
    PRIMARY KEY (cell_id, trial)
);
"""

# Columns added since the first schema: a store written before gets them (with these defaults) on open.
_ADDED_COLUMNS = {
    "cells": {
        "sampling": "TEXT NOT NULL DEFAULT 'bernoulli'",
        "zero_flip_probability": "REAL NOT NULL DEFAULT 0",
        "chance_accuracy": "REAL",
        "baseline_checksum": "TEXT NOT NULL DEFAULT ''",
        "timing": "TEXT NOT NULL DEFAULT '{}'",
    },
    "trials": {"effective_flips": "INTEGER"},
}


@dataclass(frozen=True)
class CellRecord:
    """What a cell is (its definition) and what is known about it before any trial.

    ``fault_space`` lists the stored tensors faults may hit (JSON: name, kind, shape). ``sampling`` is
    the campaign design (:mod:`resbench.estimator`): for ``conditional`` cells the stored trial
    accuracies are conditional on at least one flip and ``zero_flip_probability`` is P(K = 0).
    ``chance_accuracy`` is the accuracy of always predicting the test split's most frequent class;
    ``baseline_checksum`` the SHA-256 of the trained baseline's weights; ``timing`` the interleaved
    clean-pass times (JSON: ``baseline`` and ``protected`` seconds, pass by pass).
    """

    cell_id: str
    method: str
    model: str
    dataset: str
    format: str
    fault_model: str
    ber: float
    seed: int
    definition: str
    method_plugin: str
    citation: str
    notes: str
    stored_bits: int
    baseline_bits: int
    fault_space: str
    eval_samples: int
    clean_eval_seconds: float
    baseline_eval_seconds: float
    prepare_seconds: float
    sampling: str = "bernoulli"
    zero_flip_probability: float = 0.0
    chance_accuracy: float | None = None
    baseline_checksum: str = ""
    timing: str = "{}"


@dataclass(frozen=True)
class TrialRow:
    """One trial's outcome. Rates are percentages of the evaluated samples.

    ``flips`` counts sampled sites; ``effective_flips`` the bits that really changed (a legacy draw that
    hit a bit twice cancels, a stuck-at site already at its value changes nothing).
    ``flips_per_bit`` counts sites by bit position (LSB = 0); ``flips_per_tensor`` by stored tensor
    (non-zero counts only).
    """

    cell_id: str
    trial: int
    seed: int
    accuracy: float
    sdc_rate: float
    critical_sdc_rate: float
    due_rate: float
    flips: int
    reused: bool
    seconds: float
    flips_per_bit: tuple[int, ...]
    flips_per_tensor: dict[str, int]
    effective_flips: int | None = None


class ResultStore:
    """A SQLite file of runs, cells and trials."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        if self.path.exists() and self.path.is_dir():
            raise UsageError(f"{self.path}: the store must be a file, not a directory")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._connection = sqlite3.connect(self.path)
            self._connection.execute("PRAGMA journal_mode=WAL")
            self._connection.execute("PRAGMA synchronous=NORMAL")
            self._connection.executescript(_SCHEMA)
            self._add_missing_columns()
        except sqlite3.DatabaseError as error:
            raise UsageError(f"{self.path}: not a resbench store: {error}") from None

    def _add_missing_columns(self) -> None:
        for table, columns in _ADDED_COLUMNS.items():
            present = {row[1] for row in self._connection.execute(f"PRAGMA table_info({table})")}
            for name, declaration in columns.items():
                if name not in present:
                    with self._connection:
                        self._connection.execute(f"ALTER TABLE {table} ADD COLUMN {name} {declaration}")

    @classmethod
    def open_existing(cls, path: Path) -> ResultStore:
        """Open a store for reading; a missing file is bad input."""
        if not Path(path).is_file():
            raise UsageError(f"{path}: no results store here; run 'resbench run' first or pass --store")
        return cls(path)

    def close(self) -> None:
        """Close the database connection."""
        self._connection.close()

    def __enter__(self) -> ResultStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._connection:
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

    def add_trials(self, rows: Sequence[TrialRow], run_id: int) -> None:
        """Write trial rows in one transaction (all or none)."""
        if not rows:
            return
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
            )
            for row in rows
        ]
        columns = ("cell_id, trial, seed, accuracy, sdc_rate, critical_sdc_rate, due_rate, flips, reused, seconds, "
                   "flips_per_bit, flips_per_tensor, run_id, effective_flips")
        with self._transaction() as connection:
            connection.executemany(
                f"INSERT INTO trials ({columns}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (cell_id, trial) DO NOTHING",
                values,
            )

    def trial_accuracies(self, cell_ids: Iterable[str]) -> dict[str, dict[int, float]]:
        """Stored accuracy per trial index for each cell (the trials a rerun skips)."""
        found: dict[str, dict[int, float]] = {}
        for cell_id in cell_ids:
            rows = self._connection.execute(
                "SELECT trial, accuracy FROM trials WHERE cell_id = ?", (cell_id,)
            ).fetchall()
            found[cell_id] = {int(trial): float(accuracy) for trial, accuracy in rows}
        return found

    def zero_flip_probabilities(self, cell_ids: Iterable[str]) -> dict[str, float]:
        """P(K = 0) of the stored cells among ``cell_ids`` (0 for cells sampled directly)."""
        found = {}
        for cell_id in cell_ids:
            row = self._connection.execute(
                "SELECT zero_flip_probability FROM cells WHERE cell_id = ?", (cell_id,)
            ).fetchone()
            if row is not None:
                found[cell_id] = float(row[0])
        return found

    def cells_frame(self) -> pd.DataFrame:
        """Every cell definition as a data frame."""
        return pd.read_sql_query("SELECT * FROM cells", self._connection)

    def trials_frame(self) -> pd.DataFrame:
        """Every trial joined with its cell, one row per trial."""
        return pd.read_sql_query(
            "SELECT c.method, c.model, c.dataset, c.format, c.fault_model, c.ber, c.seed AS base_seed, "
            "c.sampling, c.zero_flip_probability, t.* "
            "FROM trials t JOIN cells c USING (cell_id) ORDER BY c.dataset, c.model, c.format, "
            "c.fault_model, c.method, c.ber, t.trial",
            self._connection,
        )

    def runs_frame(self) -> pd.DataFrame:
        """Every run's provenance."""
        return pd.read_sql_query("SELECT * FROM runs ORDER BY run_id", self._connection)
