"""Leaderboard tables: one per (dataset, model, format, fault model), one row per method.

Columns (``results/README.md`` explains each for readers; every interval is 95%):

* ``rank``: position by resilience score; methods whose paired score difference to the best of their
  group is not significant (Bonferroni-corrected over the table's comparisons) share a rank, marked ``=``.
* ``clean_accuracy``: accuracy after encoding in the number format, with no fault (the BER-0 row).
* ``acc@BER`` with ``ci_low@BER``, ``ci_high@BER``: the estimate of mean accuracy under faults and its
  bounded Bayesian-bootstrap interval (:mod:`resbench.statistics`); for conditional cells the exact
  mixture of clean accuracy and trials given at least one flip (:mod:`resbench.engine.estimator`).
  ``median@``, ``p05@``: median and 5th percentile of trial accuracy; ``catastrophic@``: share of
  trials (%) below :data:`CATASTROPHE_LEVEL` of the way from chance to clean accuracy.
* ``score`` with ``score_low``, ``score_high``: the resilience score (:mod:`resbench.report.score`) over
  ``score_range``, every method normalized by the *reference* clean accuracy of its seed: that of
  ``none`` in the same setup, or without ``none`` the best of the table (:func:`_reference_clean`), so a
  method that costs clean accuracy pays for it and a weak model cannot win; ``score_seed_sd``: its
  standard deviation between seeds (trained models), and ``score_seeds_low``/``score_seeds_high`` a t
  interval over seeds, when the suite lists several.
* ``tolerable_ber``: the largest BER of the grid at which the estimated mean accuracy, and that at
  every smaller BER, stays within :data:`TOLERANCE_POINTS` of the reference clean accuracy (the
  score's), counting only cells with at least :data:`MIN_FLIP_TRIALS` trials that flipped a bit; 0 when
  the smallest BER already fails, NaN when it has too few such trials. ``tolerable_ber_low`` and
  ``tolerable_ber_high``: the same rule applied to the lower and to the upper interval bounds (the BER
  the intervals guarantee, and the largest they allow).
* ``diff@BER`` with ``diff_low@``, ``diff_high@``, ``p_holm@``: paired difference to ``none`` on the
  trials with the same index (same fault sites where the fault spaces agree), its interval and the
  Holm-adjusted p-value of the paired randomization test over all of the table's comparisons. The
  interval is the bounded bootstrap of the per-trial differences, its pseudo-trials at the ends of the
  difference's range: an unseen fault pattern that is a catastrophe in either method alone.
* ``added_values``: stored values the method adds to the fault space (bounds, thresholds);
  ``added_bits``, ``added_bits_pct``: the stored bits they add.
* ``overhead_pct`` with ``overhead_low``, ``overhead_high``: median of the paired ratios of interleaved
  clean passes and its distribution-free interval (:mod:`resbench.run.measures`); ``overhead_conditions``:
  what it was measured under; ``overhead_wide``: its interval is wider than :data:`WIDE_OVERHEAD_POINTS`
  (or missing), too wide to read. ``added_multiply_adds``, ``added_elementwise``: operations per inference
  the method adds (NaN for cells stored before they were counted).
* ``prepare_s``; ``trials_min``, ``trials_max``; ``flip_trials_min``: the fewest trials with a flip
  behind any BER; ``sdc@BER``, ``due_trials@BER`` with ``due_low@``, ``due_high@`` (Wilson).

Cells are grouped by their *setup* (everything in a cell's definition but the method, the BER and the
seed), so suites sharing a store never pool different setups; several seeds of one setup are pooled
into one row: the estimate is the mean over seeds, its interval the fault-trial interval given the
trained models.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from resbench.engine.strata import STRATA
from resbench.plugins import BUILTIN_PLUGINS
from resbench.report.activation_rates import activation_columns, rank_single_fault_rows
from resbench.report.keys import format_ber
from resbench.report.score import REFERENCE_RANGE, covered_range, resilience_score
from resbench.statistics import (
    LEVEL,
    SIDES,
    TrialWeights,
    difference_draws,
    holm_adjust,
    overhead_interval,
    quantile_interval,
    sign_flip_pvalue,
    weighted_quantile,
    wilson_interval,
)

__all__ = [
    "CATASTROPHE_LEVEL",
    "MIN_FLIP_TRIALS",
    "TOLERANCE_POINTS",
    "LeaderboardTable",
    "build_leaderboard",
]

TOLERANCE_POINTS = 1.0
MIN_FLIP_TRIALS = 20
CATASTROPHE_LEVEL = 0.5
REFERENCE_METHOD = "none"
GROUP_COLUMNS = ["dataset", "model", "format", "fault_model"]


@dataclass(frozen=True)
class LeaderboardTable:
    """One leaderboard: the group it covers, its BER grid and one row per method (sorted by score)."""

    dataset: str
    model: str
    format: str
    fault_model: str
    bers: list[float]
    rows: pd.DataFrame
    cell_ids: tuple[str, ...] = ()
    setup: str = ""
    #: Where the results come from (versions, suites, seeds, dates), for page footers; filled by the caller.
    provenance: dict[str, Any] = field(default_factory=dict)
    seeds: tuple[int, ...] = (0,)
    notes: tuple[str, ...] = field(default=())
    setup_id: str = ""

    @property
    def description(self) -> str:
        """What the table's figures estimate, in one paragraph (shown above or under it)."""
        ranges = sorted({str(value) for value in self.rows.get("score_range", pd.Series(dtype=str)) if value})
        seeds = ", ".join(str(seed) for seed in self.seeds)
        reference = f"{format_ber(REFERENCE_RANGE[0])}..{format_ber(REFERENCE_RANGE[1])}"
        if ranges:
            score = (f"Score: chance-corrected accuracy averaged over log10 BER {', '.join(ranges)} (0 = chance, "
                     "1 = no loss).")
        elif len(self.bers) < 2:
            score = ("Score: none (it averages chance-corrected accuracy over a span of log10 BER, and the sweep "
                     f"has {len(self.bers)} BER).")
        else:
            score = f"Score: none (the sweep spans no part of the reference range {reference})."
        text = (f"Accuracy (%): estimated mean over fault patterns [95% interval]. {score} Seeds: {seeds}. Rank: "
                "methods marked = are statistically tied.")
        return " ".join([text, *self.notes])
    #: what the faults hit: ``weights`` or ``activations`` (see :mod:`resbench.report.activation_rates`)
    target: str = "weights"

    @property
    def method_notes(self) -> list[tuple[str, str]]:
        """(method, how its setting differs from its paper's) for every row with notes, in row order."""
        notes = self.rows.get("notes", pd.Series(dtype=str))
        return [(str(method), str(text)) for method, text in zip(self.rows["method"], notes, strict=False) if text]

    @property
    def per_inference(self) -> bool:
        """Whether the table reports one fault per inference (``act-single``) rather than a BER sweep."""
        return self.target == "activations" and not self.bers

    @property
    def title(self) -> str:
        """``dataset / model / format / fault model / target``, plus ``setup X`` where names alone are ambiguous."""
        title = f"{self.dataset} / {self.model} / {self.format} / {self.fault_model} / faults in {self.target}"
        return f"{title} / setup {self.setup}" if self.setup else title


def _plugins_of(definition: str) -> str:
    """The plugin versions a cell's definition records (``name version, ...``), or ``unrecorded``."""
    method = json.loads(definition).get("method", {})
    versions = method.get("plugins", {}) if isinstance(method, dict) else {}
    return ", ".join(f"{plugin} {version}" for plugin, version in sorted(versions.items())) or "unrecorded"


def _setup_plugins_of(definition: str) -> str:
    """The third-party plugins (``name version, ...``) providing a cell's model, dataset, format or fault model:
    the built-in ones come with resbench."""
    versions = json.loads(definition).get("plugins", {})
    return ", ".join(f"{plugin} {version}" for plugin, version in sorted(versions.items())
                     if plugin not in BUILTIN_PLUGINS)


def _split_versions(cells: pd.DataFrame, trials: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A method whose cells of one table come from several plugin versions gets a row per version, labelled
    with them, never one row pooling them."""
    versions = cells.groupby("method")["plugins"].nunique()
    mixed = set(versions[versions > 1].index)
    if not mixed:
        return cells, trials
    labels = {cell_id: f"{method} ({plugins})" if method in mixed else str(method)
              for cell_id, method, plugins in zip(cells["cell_id"], cells["method"], cells["plugins"], strict=True)}
    return cells.assign(method=cells["cell_id"].map(labels)), trials.assign(method=trials["cell_id"].map(labels))


def _setup_of(definition: str) -> str:
    """A short id of everything in a cell's definition but the method, the BER and the seed."""
    setup = {key: value for key, value in json.loads(definition).items() if key not in ("method", "ber", "seed")}
    return hashlib.blake2b(json.dumps(setup, sort_keys=True).encode(), digest_size=3).hexdigest()


@dataclass
class _Cell:
    """One (method, seed, BER) cell's trials as the estimator sees them, every design as strata.

    Stratum 0 is fault-free (weight ``weights[0]``, accuracy ``clean``, never sampled); the trials of stratum
    ``h >= 1`` estimate its mean, and the cell's estimate is ``sum_h weights[h] * mean_h``. Direct draws are
    one stratum of weight 1; conditional cells ``P(K = 0)`` and one stratum of the rest; critical-bits cells
    their stored stratum weights (:mod:`resbench.engine.strata`).
    """

    trials: np.ndarray  # pairing keys (:func:`_pair_keys`): trial index, or stratum and rank in it
    accuracies: np.ndarray  # stored accuracies (given the stratum: at least one flip for conditional cells)
    strata: np.ndarray  # stratum of each trial
    weights: np.ndarray  # exact probability of each stratum, the fault-free one first
    clean: float
    frame: pd.DataFrame

    @property
    def sampled(self) -> list[int]:
        """The strata with trials."""
        return sorted({int(stratum) for stratum in self.strata})

    @property
    def fault_free(self) -> float:
        """The fault-free stratum's share of the estimate."""
        return float(self.weights[0] * self.clean) if self.weights[0] else 0.0

    @property
    def bounds(self) -> tuple[float, float]:
        """The range of the estimate: every sampled trial at 0, or every one at 100."""
        return self.fault_free, self.fault_free + 100.0 * (1 - float(self.weights[0]))

    def mean(self) -> float:
        return self.fault_free + sum(float(self.weights[h]) * float(self.accuracies[self.strata == h].mean())
                                     for h in self.sampled)

    def draws(self, weights: TrialWeights) -> np.ndarray:
        """Draws of the estimate: each stratum's bounded bootstrap, paired by trial key, weighted exactly, the
        cell's one pseudo-trial shared by the strata in proportion to their trials."""
        total = np.full((SIDES, weights.count), self.fault_free)
        for h in self.sampled:
            mask = self.strata == h
            total = total + float(self.weights[h]) * weights.mean_draws(
                self.trials[mask], self.accuracies[mask], 0.0, 100.0, pseudo=float(mask.mean()))
        return total

    def masses(self) -> np.ndarray:
        """Each trial's share of the cell's probability: its stratum's weight over the stratum's trials."""
        counts = {h: int((self.strata == h).sum()) for h in self.sampled}
        return np.array([float(self.weights[h]) / counts[int(h)] for h in self.strata])

    def stratum_mean(self, column: str, h: int) -> float:
        return float(self.frame[column].to_numpy(dtype=float)[self.strata == h].mean())


@dataclass
class _SeedCurve:
    """One method under one seed: clean accuracy and a cell per BER (None where missing)."""

    clean: float
    chance: float
    cells: list[_Cell | None]
    weights: TrialWeights

    def draws(self) -> np.ndarray:
        """Draws of mean accuracy, shape ``(SIDES, draws, BERs)`` (NaN where a cell is missing)."""
        weights = self.weights
        columns = [cell.draws(weights) if cell is not None and cell.trials.size else weights.missing()
                   for cell in self.cells]
        return np.stack(columns, axis=-1) if columns else np.zeros((SIDES, weights.count, 0))

    def means(self) -> np.ndarray:
        return np.array([cell.mean() if cell is not None and cell.trials.size else math.nan for cell in self.cells])


def _stratum_weights(trials: pd.DataFrame) -> np.ndarray:
    """The exact stratum probabilities of a cell (fault-free first), from its design (:class:`_Cell`)."""
    first = trials.iloc[0]
    stored = str(first.get("strata_weights", "") or "")
    if stored:
        return np.asarray(json.loads(stored), dtype=float)
    zero_flip = float(first["zero_flip_probability"]) if str(first["sampling"]) == "conditional" else 0.0
    return np.array([zero_flip, 1.0 - zero_flip])


def _cell_of(trials: pd.DataFrame, clean: float) -> _Cell:
    strata = trials["stratum"].to_numpy(dtype=np.int64) if "stratum" in trials else np.zeros(len(trials), np.int64)
    strata = np.where(strata > 0, strata, 1)  # unstratified trials: the one sampled stratum
    return _Cell(trials["pair"].to_numpy(dtype=np.int64), trials["accuracy"].to_numpy(dtype=float), strata,
                 _stratum_weights(trials), clean, trials)


def _pair_keys(trials: pd.DataFrame) -> pd.Series:
    """The key that pairs trials across methods (and indexes the bootstrap weights): the trial index, or in
    stratified cells ``(len(STRATA) - 1) * rank + stratum - 1``, ``rank`` counting the cell's earlier trials in
    the same stratum: the trials that drew their sites from the same seed (:mod:`resbench.run.campaign`)."""
    if "stratum" not in trials or not (trials["stratum"] > 0).any():
        return trials["trial"].astype(np.int64)
    ordered = trials.sort_values(["cell_id", "trial"], kind="stable")
    rank = ordered.groupby(["cell_id", "stratum"], sort=False).cumcount()
    keys = np.where(ordered["stratum"] > 0, (len(STRATA) - 1) * rank + ordered["stratum"] - 1, ordered["trial"])
    return pd.Series(keys.astype(np.int64), index=ordered.index).reindex(trials.index)


def _seed_curves(
    method_trials: pd.DataFrame, method_cells: pd.DataFrame, bers: list[float], weights: dict[int, TrialWeights]
) -> dict[int, _SeedCurve]:
    curves = {}
    for seed, seed_cells in method_cells.groupby("seed", sort=True):
        seed_trials = method_trials[method_trials["cell_id"].isin(seed_cells["cell_id"])]
        clean_rows = seed_trials[seed_trials["ber"] == 0]["accuracy"]
        clean = float(clean_rows.mean()) if len(clean_rows) else math.nan
        chance_values = seed_cells["chance_accuracy"].dropna()
        chance = float(chance_values.iloc[0]) if len(chance_values) else math.nan
        cells: list[_Cell | None] = []
        for ber in bers:
            found = seed_trials[np.isclose(seed_trials["ber"], ber, rtol=1e-9, atol=0)]
            cells.append(_cell_of(found, clean) if len(found) else None)
        curves[int(seed)] = _SeedCurve(clean, chance, cells, weights[int(seed)])
    return curves


def _pooled_cell_columns(key: str, cells: list[_Cell], clean: float, chance: float) -> dict[str, float]:
    """Median, 5th percentile, catastrophic share, SDC and DUE shares of one BER, over seeds."""
    values, masses, sdc, due_share = [], [], [], []
    due_counts: dict[int, list[int]] = {}
    due_weights: dict[int, list[float]] = {}
    for cell in cells:
        values += cell.accuracies.tolist()
        masses += cell.masses().tolist()
        if cell.weights[0]:  # the fault-free share: trials that would have kept clean accuracy
            values.append(cell.clean)
            masses.append(float(cell.weights[0]))
        due = (cell.frame["due_rate"].to_numpy(dtype=float) > 0)
        sdc.append(sum(float(cell.weights[h]) * cell.stratum_mean("sdc_rate", h) for h in cell.sampled))
        due_share.append(sum(float(cell.weights[h]) * float(due[cell.strata == h].mean()) for h in cell.sampled))
        for h in cell.sampled:
            found, total = due_counts.setdefault(h, [0, 0]), int((cell.strata == h).sum())
            found[0], found[1] = found[0] + int(due[cell.strata == h].sum()), found[1] + total
            due_weights.setdefault(h, []).append(float(cell.weights[h]))
    threshold = chance + CATASTROPHE_LEVEL * (clean - chance) if clean > chance else -math.inf
    accuracy, mass = np.asarray(values), np.asarray(masses)
    due_low = due_high = 0.0
    for h, (found_due, total) in due_counts.items():  # each stratum's Wilson bounds, weighted exactly
        low, high = wilson_interval(found_due, total)
        due_low += float(np.mean(due_weights[h])) * low
        due_high += float(np.mean(due_weights[h])) * high
    return {
        f"median@{key}": weighted_quantile(accuracy, mass, 0.5),
        f"p05@{key}": weighted_quantile(accuracy, mass, 0.05),
        f"catastrophic@{key}": 100 * float(mass[accuracy < threshold].sum() / mass.sum()),
        f"sdc@{key}": float(np.mean(sdc)),
        f"due_trials@{key}": 100 * float(np.mean(due_share)),
        f"due_low@{key}": 100 * due_low,
        f"due_high@{key}": 100 * due_high,
    }


def _flip_count(frame: pd.DataFrame) -> int:
    flips = frame["effective_flips"].fillna(frame["flips"]) if "effective_flips" in frame else frame["flips"]
    return int((flips > 0).sum())


def _tolerable_ber(bers: list[float], accuracies: list[float], flip_trials: list[int], clean: float) -> float:
    """The largest BER up to which ``accuracies`` stay within :data:`TOLERANCE_POINTS` of ``clean`` (the
    reference clean accuracy of the table, :func:`_reference_clean`): 0 when the first BER fails, NaN when
    the first BER has too few trials with a flip to tell."""
    tolerable = math.nan
    if math.isnan(clean):
        return tolerable
    for ber, accuracy, flipped in zip(bers, accuracies, flip_trials, strict=True):
        if math.isnan(accuracy) or flipped < MIN_FLIP_TRIALS:
            break
        if accuracy < clean - TOLERANCE_POINTS:
            return tolerable if not math.isnan(tolerable) else 0.0
        tolerable = ber
    return tolerable


@dataclass
class _MethodResult:
    row: dict[str, object]
    curves: dict[int, _SeedCurve]
    score_draws: np.ndarray


def _scores(
    curves: dict[int, _SeedCurve], bers: list[float], reference: dict[int, float]
) -> tuple[np.ndarray, list[float]]:
    """Score draws pooled over seeds (mean of each seed's draws) and each seed's score, every seed's curve
    normalized by that seed's reference clean accuracy (:func:`_reference_clean`)."""
    per_seed_draws, per_seed = [], []
    for seed, curve in curves.items():
        clean = _seed_reference(curve, seed, reference)
        per_seed_draws.append(resilience_score(bers, curve.draws(), clean, curve.chance))
        per_seed.append(float(resilience_score(bers, curve.means()[None, :], clean, curve.chance)[0]))
    return np.mean(per_seed_draws, axis=0), per_seed


def _seed_reference(curve: _SeedCurve, seed: int, reference: dict[int, float]) -> float:
    """The reference clean accuracy of one seed's curve; NaN when the curve lacks its own clean row (an
    incomplete run)."""
    return math.nan if math.isnan(curve.clean) else reference.get(seed, math.nan)


def _reference_clean(group_cells: pd.DataFrame, group_trials: pd.DataFrame) -> dict[int, float]:
    """Per seed, the clean accuracy that scores and tolerable BERs of the table are measured against: the
    unprotected model's (``none``) of the same setup, or without ``none`` the best clean accuracy of the
    table. A method whose clean accuracy is lower pays for it at every BER, so a weak model that has
    little left to lose cannot outrank a trained one."""
    clean_cells = group_cells[group_cells["ber"] == 0]
    accuracies = group_trials.groupby("cell_id")["accuracy"].mean()
    reference = {}
    for seed, seed_cells in clean_cells.groupby("seed"):
        by_method = {str(cell["method"]): float(accuracies.get(cell["cell_id"], math.nan))
                     for _, cell in seed_cells.iterrows()}
        unprotected = by_method.get(REFERENCE_METHOD, math.nan)
        found = [value for value in by_method.values() if not math.isnan(value)]
        reference[int(seed)] = unprotected if not math.isnan(unprotected) else max(found, default=math.nan)
    return reference


def _target_of(definition: str) -> str:
    """The fault target a cell's definition names (weight cells predate the key)."""
    return str(json.loads(definition).get("fault_target", "weights"))


def _seed_columns(per_seed: list[float]) -> dict[str, float]:
    from scipy import stats

    if len(per_seed) < 2 or any(math.isnan(score) for score in per_seed):
        return {"score_seed_sd": math.nan, "score_seeds_low": math.nan, "score_seeds_high": math.nan}
    spread = float(np.std(per_seed, ddof=1))
    half = float(stats.t.ppf((1 + LEVEL) / 2, len(per_seed) - 1)) * spread / math.sqrt(len(per_seed))
    centre = float(np.mean(per_seed))
    return {"score_seed_sd": spread, "score_seeds_low": max(0.0, centre - half),
            "score_seeds_high": min(1.0, centre + half)}


def _method_result(
    method: str, cells: pd.DataFrame, trials: pd.DataFrame, bers: list[float], weights: dict[int, TrialWeights],
    reference: dict[int, float],
) -> _MethodResult:
    first = cells.iloc[0]
    curves = _seed_curves(trials, cells, bers, weights)
    clean = float(np.mean([curve.clean for curve in curves.values()]))
    reference_clean = float(np.mean([_seed_reference(curve, seed, reference) for seed, curve in curves.items()]))
    chance = float(np.mean([curve.chance for curve in curves.values()]))
    row: dict[str, object] = {"method": method, "clean_accuracy": clean, "chance_accuracy": chance,
                              "seeds": len(curves)}
    pooled_draws = np.mean([curve.draws() for curve in curves.values()], axis=0)
    pooled_means = np.mean([curve.means() for curve in curves.values()], axis=0)
    means, lows, highs, flip_trials = [], [], [], []
    counts: list[int] = []  # the trials of each cell (seed and BER)
    for index, ber in enumerate(bers):
        key = format_ber(ber)
        present = [curve.cells[index] for curve in curves.values() if curve.cells[index] is not None]
        if len(present) < len(curves) or not present:
            means.append(math.nan)
            lows.append(math.nan)
            highs.append(math.nan)
            flip_trials.append(0)
            for prefix in ("acc", "ci_low", "ci_high", "median", "p05", "catastrophic", "sdc", "due_trials",
                           "due_low", "due_high"):
                row[f"{prefix}@{key}"] = math.nan
            continue
        cells_here = [cell for cell in present if cell is not None]
        low, high = quantile_interval(pooled_draws[..., index])
        mean = float(pooled_means[index])
        row[f"acc@{key}"] = mean
        row[f"ci_low@{key}"] = min(low, mean)
        row[f"ci_high@{key}"] = max(high, mean)
        row.update(_pooled_cell_columns(key, cells_here, clean, chance))
        means.append(mean)
        lows.append(min(low, mean))
        highs.append(max(high, mean))
        counts.extend(cell.accuracies.size for cell in cells_here)
        flip_trials.append(min(_flip_count(cell.frame) for cell in cells_here))
    score_draws, per_seed = _scores(curves, bers, reference)
    span = covered_range(bers) if bers else None
    row["score"] = float(np.mean(per_seed))
    row["score_low"], row["score_high"] = (quantile_interval(score_draws) if not np.isnan(score_draws).any()
                                           else (math.nan, math.nan))
    row["score_range"] = f"{format_ber(span[0])}..{format_ber(span[1])}" if span else ""
    row.update(_seed_columns(per_seed))
    for column, accuracies in (("tolerable_ber", means), ("tolerable_ber_low", lows), ("tolerable_ber_high", highs)):
        row[column] = _tolerable_ber(bers, accuracies, flip_trials, reference_clean)
    baseline_bits = int(first["baseline_bits"])
    added_bits = int(first["stored_bits"]) - baseline_bits
    row["added_values"] = _added_values(str(first["fault_space"]))
    row["added_bits"] = added_bits
    row["added_bits_pct"] = 100 * added_bits / baseline_bits if baseline_bits else 0.0
    row["overhead_pct"], row["overhead_low"], row["overhead_high"] = overhead_interval(str(first.get("timing", "{}")))
    row.update(_inference_cost_columns(str(first.get("timing", "{}"))))
    row["prepare_s"] = float(first["prepare_seconds"])
    row["trials_min"] = min(counts) if counts else 0
    row["trials_max"] = max(counts) if counts else 0
    row["flip_trials_min"] = min(flip_trials) if flip_trials else 0  # a missing BER counts as none
    row["citation"] = str(first["citation"])
    row["plugins"] = str(first["plugins"])
    row["setup_plugins"] = str(first["setup_plugins"])
    row["notes"] = str(first["notes"])
    checksums = sorted({str(value) for value in cells.get("baseline_checksum", pd.Series(dtype=str)) if value})
    row["baseline_checksum"] = ",".join(checksum[:12] for checksum in checksums)
    return _MethodResult(row, curves, score_draws)


#: An overhead interval wider than this many points is marked too wide to read.
WIDE_OVERHEAD_POINTS = 20.0


def _inference_cost_columns(timing: str) -> dict[str, object]:
    """Added operations per inference, the timing's conditions and whether its interval is too wide to read,
    from a cell's ``timing`` record (:func:`resbench.run.measures.inference_cost`)."""
    record = json.loads(timing or "{}")
    operations = record.get("operations", {})
    added = {key: operations["protected"][key] - operations["baseline"][key] if operations else math.nan
             for key in ("multiply_adds", "elementwise")}
    conditions = record.get("conditions")
    _, low, high = overhead_interval(timing)
    return {
        "added_multiply_adds": added["multiply_adds"],
        "added_elementwise": added["elementwise"],
        "overhead_conditions": ", ".join([f"{conditions['device']}", f"{conditions['threads']} threads",
                                          f"batch {conditions['batch_size']}", f"{conditions['images']} images",
                                          *_allocator(conditions)]) if conditions else "",
        "overhead_wide": not (high - low <= WIDE_OVERHEAD_POINTS),
    }


def _allocator(conditions: dict[str, Any]) -> list[str]:
    """How freed memory was handled while timing (:mod:`resbench.engine.allocator`), where the record says."""
    allocator = conditions.get("allocator")
    return [] if allocator is None else ["freed memory kept" if allocator == "freed memory kept" else "system malloc"]


def _added_values(fault_space: str) -> int:
    """Stored values the method adds (its tensors in the cell's fault space: bounds, thresholds)."""
    return sum(math.prod(entry["shape"]) for entry in json.loads(fault_space) if entry["kind"] == "method")


def _paired(first: _SeedCurve, second: _SeedCurve, index: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-trial contributions to the difference (first - second) on the pairing keys both cells hold, whose
    mean is the estimated difference, and the paired draws of that difference: per stratum, the bounded
    bootstrap of the weighted differences themselves, whose pseudo-trials sit at the ends of the difference's
    range (a catastrophe in either method alone, ``[-100, 100]`` for direct draws), so a sample with no
    difference yet cannot rule one out."""
    one, two = first.cells[index], second.cells[index]
    if one is None or two is None:
        return np.zeros(0), first.weights.missing()
    common, in_one, in_two = np.intersect1d(one.trials, two.trials, return_indices=True)
    if common.size == 0:
        return np.zeros(0), first.weights.missing()
    strata = one.strata[in_one]
    draws = np.full((SIDES, first.weights.count), one.fault_free - two.fault_free)
    contributions = np.full(common.size, one.fault_free - two.fault_free)
    for h in sorted(set(strata.tolist())):
        mask = strata == h
        weight_one, weight_two = float(one.weights[h]), float(two.weights[h])
        differences = weight_one * one.accuracies[in_one][mask] - weight_two * two.accuracies[in_two][mask]
        draws = draws + first.weights.mean_draws(common[mask], differences, -100.0 * weight_two, 100.0 * weight_one,
                                                 pseudo=float(mask.mean()))
        contributions[mask] += differences * common.size / int(mask.sum())
    return contributions, draws


def _differences(results: dict[str, _MethodResult], bers: list[float]) -> None:
    """``diff@``, ``diff_low@``, ``diff_high@`` and Holm-adjusted ``p_holm@`` of each method against none."""
    reference = results.get(REFERENCE_METHOD)
    tests: list[tuple[str, str, float]] = []
    for method, result in results.items():
        for index, ber in enumerate(bers):
            key = format_ber(ber)
            if reference is None or method == REFERENCE_METHOD:
                result.row.update({f"diff@{key}": math.nan, f"diff_low@{key}": math.nan,
                                   f"diff_high@{key}": math.nan, f"p_holm@{key}": math.nan})
                continue
            pairs = [_paired(result.curves[seed], reference.curves[seed], index)
                     for seed in result.curves if seed in reference.curves]
            differences = np.concatenate([pair[0] for pair in pairs]) if pairs else np.zeros(0)
            draws = np.mean([pair[1] for pair in pairs], axis=0) if pairs else np.full((SIDES, 1), math.nan)
            if differences.size == 0 or np.isnan(draws).any():
                result.row.update({f"diff@{key}": math.nan, f"diff_low@{key}": math.nan,
                                   f"diff_high@{key}": math.nan, f"p_holm@{key}": math.nan})
                continue
            low, high = quantile_interval(draws)
            centre = float(np.mean([pair[0].mean() for pair in pairs]))
            result.row.update({f"diff@{key}": centre, f"diff_low@{key}": min(low, centre),
                               f"diff_high@{key}": max(high, centre)})
            tests.append((method, key, sign_flip_pvalue(differences)))
    for (method, key, _), adjusted in zip(tests, holm_adjust([test[2] for test in tests]), strict=True):
        results[method].row[f"p_holm@{key}"] = adjusted


def _ranks(results: dict[str, _MethodResult], order: list[str]) -> dict[str, str]:
    """Rank labels: a method is tied (``=``) with the leader of its group when the paired score difference
    has a Bonferroni-corrected interval containing 0; otherwise it leads a new group."""
    comparisons = max(1, len(order) - 1)
    level = 1 - (1 - LEVEL) / comparisons
    groups: list[list[str]] = []
    for method in order:
        draws = results[method].score_draws
        if groups and not np.isnan(draws).any():
            leader = results[groups[-1][0]].score_draws
            low, high = quantile_interval(difference_draws(leader, draws), level)
            if low <= 0 <= high:
                groups[-1].append(method)
                continue
        groups.append([method])
    labels, position = {}, 1
    for group in groups:
        for method in group:
            labels[method] = f"{position}=" if len(group) > 1 else str(position)
        position += len(group)
    return labels


def _table_weights(cells: pd.DataFrame, trials: pd.DataFrame) -> dict[int, TrialWeights]:
    """One weight matrix per seed, shared by every BER and method of the table (paired draws), indexed by
    pairing key (:func:`_pair_keys`)."""
    weights = {}
    for seed, seed_cells in cells.groupby("seed"):
        seed_trials = trials[trials["cell_id"].isin(seed_cells["cell_id"])]
        count = int(seed_trials["pair"].max()) + 1 if len(seed_trials) else 0
        weights[int(seed)] = TrialWeights.draw(count, seed=int(seed) % 2**32)
    return weights


def _table_frame(group_cells: pd.DataFrame, group_trials: pd.DataFrame, bers: list[float]) -> pd.DataFrame:
    group_trials = group_trials.assign(pair=_pair_keys(group_trials))
    weights = _table_weights(group_cells, group_trials)
    reference = _reference_clean(group_cells, group_trials)
    results = {
        str(method): _method_result(str(method), method_cells, group_trials[group_trials["method"] == method],
                                    bers, weights, reference)
        for method, method_cells in group_cells.groupby("method", sort=True)
    }
    _differences(results, bers)
    frame = pd.DataFrame([result.row for result in results.values()])
    unprotected = results.get(REFERENCE_METHOD)
    frame["clean_vs_none"] = (frame["clean_accuracy"] - unprotected.row["clean_accuracy"] if unprotected is not None
                              else math.nan)
    frame = frame.sort_values("score", ascending=False, na_position="last", kind="stable").reset_index(drop=True)
    ranks = _ranks(results, [str(method) for method in frame["method"]])
    frame.insert(0, "rank", [ranks[str(method)] for method in frame["method"]])
    frame["tied_with_best"] = [len(frame) > 1 and ranks[str(method)] == "1=" for method in frame["method"]]
    return frame


def _notes(fault_model: str, group_cells: pd.DataFrame) -> tuple[str, ...]:
    notes = []
    if fault_model.startswith("bitflip-count") and group_cells["stored_bits"].nunique() > 1:
        notes.append("bitflip-count draws its sites over the whole fault space, so a method that adds stored "
                     "tensors sees different sites from the unprotected model: comparisons are unpaired.")
    if set(group_cells["sampling"]) == {"bernoulli"}:
        notes.append("plain Bernoulli campaign: trials at low BER may have no flip.")
    if set(group_cells["sampling"]) == {"critical-bits"}:
        notes.append("Critical-bit strata: trials drawn per stratum of flips in the format's critical bits and "
                     "weighted by the strata's exact probabilities; trial counts are per cell, over all strata.")
    return tuple(notes)


def _with_activation_columns(
    frame: pd.DataFrame, cells: pd.DataFrame, trials: pd.DataFrame, bers: list[float]
) -> pd.DataFrame:
    """Rows of an activation-fault table with per-inference rates and their Wilson intervals."""
    samples = int(cells["eval_samples"].iloc[0])
    extra = pd.DataFrame([
        {"method": method, **activation_columns(trials[(trials["method"] == method) & (trials["ber"] != 0)],
                                                samples, bers)}
        for method in frame["method"]
    ])
    merged = frame.merge(extra, on="method", how="left")
    if bers:
        return merged
    counts = trials[trials["ber"] != 0].groupby("method")["trial"].count()
    merged["trials_min"] = merged["trials_max"] = [int(counts.get(method, 0)) for method in merged["method"]]
    ranked = rank_single_fault_rows(merged)
    ranked["rank"] = [str(position) for position in range(1, len(ranked) + 1)]  # by accuracy under faults
    ranked["tied_with_best"] = False
    return ranked


def _weight_columns(
    frame: pd.DataFrame, cells: pd.DataFrame, trials: pd.DataFrame, bers: list[float]
) -> pd.DataFrame:
    """Rows of a weight-fault table: the common columns are all there is."""
    return frame


#: What each fault target adds to the common columns of a table.
_TARGET_COLUMNS = {"weights": _weight_columns, "activations": _with_activation_columns}


def build_leaderboard(cells: pd.DataFrame, trials: pd.DataFrame) -> list[LeaderboardTable]:
    """Leaderboard tables from the store's cell frame and its trial frame (trials joined with cells)."""
    tables: list[LeaderboardTable] = []
    if cells.empty:
        return tables
    cells = cells.assign(setup=cells["definition"].map(_setup_of), plugins=cells["definition"].map(_plugins_of),
                         setup_plugins=cells["definition"].map(_setup_plugins_of))
    setups_per_name = cells.groupby(GROUP_COLUMNS)["setup"].nunique()
    for key, group_cells in cells.groupby([*GROUP_COLUMNS, "setup"], sort=True):
        dataset, model, number_format, fault_model, setup = (str(part) for part in key)
        bers = sorted(float(ber) for ber in group_cells["ber"].unique() if ber > 0)
        group_cells, group_trials = _split_versions(group_cells, trials[trials["cell_id"].isin(group_cells["cell_id"])])
        frame = _table_frame(group_cells, group_trials, bers)
        target = _target_of(str(group_cells["definition"].iloc[0]))
        frame = _TARGET_COLUMNS[target](frame, group_cells, group_trials, bers)
        shown_setup = setup if setups_per_name[tuple(key[:4])] > 1 else ""
        seeds = tuple(sorted(int(seed) for seed in group_cells["seed"].unique()))
        tables.append(LeaderboardTable(dataset, model, number_format, fault_model, bers, frame,
                                       tuple(group_cells["cell_id"]), shown_setup, seeds=seeds,
                                       notes=_notes(fault_model, group_cells), setup_id=setup, target=target))
    return tables

