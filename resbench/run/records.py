"""What the results store holds: its tables, and the records a run writes to them.

:data:`SCHEMA` creates the four tables (runs, cells, trials, failures; :data:`SCHEMA_VERSION` is kept in
SQLite's ``user_version``; a store of an older version gets the columns added since, with their defaults,
when a run opens it); :class:`CellRecord`, :class:`TrialRow` and :class:`CellFailure` are one row
of the cells, trials and failures tables. :mod:`resbench.run.store` reads and writes them.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SCHEMA", "SCHEMA_VERSION", "CellFailure", "CellRecord", "TrialRow"]

#: Version of the tables below, kept in SQLite's ``user_version``.
SCHEMA_VERSION = 2
SCHEMA = """
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
    timing TEXT NOT NULL DEFAULT '{}',
    strata_weights TEXT NOT NULL DEFAULT ''
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
    stratum INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (cell_id, trial)
);
CREATE TABLE IF NOT EXISTS failures (
    cell_id TEXT PRIMARY KEY,
    method TEXT NOT NULL,
    model TEXT NOT NULL,
    dataset TEXT NOT NULL,
    format TEXT NOT NULL,
    fault_model TEXT NOT NULL,
    ber REAL NOT NULL,
    phase TEXT NOT NULL,
    plugin TEXT NOT NULL,
    error TEXT NOT NULL,
    run_id INTEGER NOT NULL REFERENCES runs(run_id)
);
"""


@dataclass(frozen=True)
class CellRecord:
    """What a cell is (its definition) and what is known about it before any trial.

    ``fault_space`` lists the stored tensors faults may hit (JSON: name, kind, shape). ``sampling`` is
    the campaign design (:mod:`resbench.engine.estimator`): for ``conditional`` cells the stored trial
    accuracies are conditional on at least one flip and ``zero_flip_probability`` is P(K = 0); for
    ``critical-bits`` cells ``strata_weights`` holds the exact stratum probabilities (JSON list, the
    fault-free stratum first, :mod:`resbench.engine.strata`) and each trial row its stratum.
    ``chance_accuracy`` is the accuracy of always predicting the test split's most frequent class;
    ``baseline_checksum`` the SHA-256 of the trained baseline's weights; ``timing`` the interleaved
    clean-pass times (JSON: ``baseline`` and ``protected`` seconds, pass by pass), the ``conditions`` they
    were measured under and both models' ``operations`` per inference (:func:`resbench.run.measures.inference_cost`).
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
    strata_weights: str = ""


@dataclass(frozen=True)
class TrialRow:
    """One trial's outcome. Rates are percentages of the evaluated samples.

    ``flips`` counts sampled sites; ``effective_flips`` the bits that really changed (a legacy draw that
    hit a bit twice cancels, a stuck-at site already at its value changes nothing).
    ``flips_per_bit`` counts sites by bit position (LSB = 0); ``flips_per_tensor`` by stored tensor
    (non-zero counts only). ``stratum`` is the trial's critical-bit stratum (0 in unstratified cells).
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
    stratum: int = 0


@dataclass(frozen=True)
class CellFailure:
    """A cell that could not be measured: in which phase, blamed on which plugin, and the error.

    A rerun retries the cell; once it has its trials, the failure record is removed.
    """

    cell_id: str
    method: str
    model: str
    dataset: str
    format: str
    fault_model: str
    ber: float
    phase: str
    plugin: str
    error: str
