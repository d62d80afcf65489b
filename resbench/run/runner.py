"""``resbench run`` end to end: the driver that plans a run's jobs, hands them to an executor and writes
what they yield.

Phases (the functions of :mod:`resbench.run.jobs`), for each dataset and model of the suite:

1. baseline: train the model or load it from the artifact cache (or load the user's checkpoint);
2. prepare: apply each method (build its structure, fit it or load the fitted state from the cache);
3. deploy: encode the fault space in each number format and record clean accuracy after encoding;
4. campaign: for each fault model, the trial loop of :mod:`resbench.run.campaign` over the BER sweep.

The driver reads the store once per group to learn what is still needed (:mod:`resbench.run.cells`),
runs baseline jobs, then preparation jobs, then one job per group that still needs trials, or, with an
executor that declares a ``trial_batch``, jobs of that many trials of a group (:mod:`resbench.run.batches`).
It is the only writer of the store: cell records as groups are deployed, trial rows in a transaction
every couple of seconds, failed cells with their phase, plugin and error. A killed run loses at most the
rows of its last seconds; the same command resumes it.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import torch
from tqdm import tqdm

from resbench.cache import ArtifactCache
from resbench.config import Suite
from resbench.datasets import DatasetSplits, iterate_batches, load_dataset
from resbench.engine.faultspace import FaultSpaceOptions
from resbench.engine.prefix_reuse import DEFAULT_REUSE_MEMORY
from resbench.methods.base import Method, defines_fit
from resbench.models import build_model
from resbench.models.factory import FACTORY_MODEL, check_fits
from resbench.options import validate_options
from resbench.plugins import get_registries
from resbench.run.batches import TrialBatches
from resbench.run.cells import CellKeys, Group, StoredTrials
from resbench.run.failures import Failed
from resbench.run.jobs import (
    BaselineJob,
    CellsReady,
    GroupJob,
    Job,
    JobContext,
    JobOutput,
    JobSettings,
    PhaseTime,
    PrepareJob,
    baseline,
    checkpoint_of,
    resolve_method,
)
from resbench.run.provenance import collect_provenance
from resbench.run.rerun import cells_to_replace, check_rerun
from resbench.run.store import CellFailure, ResultStore, TrialRow
from resbench.run.validation import check_operator_choice, check_suite

__all__ = ["RunSettings", "RunSummary", "run_suite"]

logger = logging.getLogger(__name__)
FLUSH_SECONDS = 2.0


@dataclass(frozen=True)
class RunSettings:
    """Where a run reads and writes, and on which device it computes."""

    store: Path
    device: torch.device
    data_root: Path | None = None
    cache_dir: Path | None = None
    checkpoint: Path | None = None
    progress: bool = True
    #: Stored cells to replace (:mod:`resbench.run.rerun`): ``failed``, ``stale``, methods, cell ids.
    rerun: tuple[str, ...] = ()
    #: Memory (bytes) for the clean values prefix reuse keeps per deployed model; 0 turns it off.
    reuse_memory: int = DEFAULT_REUSE_MEMORY


@dataclass
class RunSummary:
    """What a run did. ``trials_run`` counts rows this run added to the store; ``trials_discarded`` the
    trials computed ahead in trial batches and not needed (see :mod:`resbench.run.batches`)."""

    run_id: int
    cells: int = 0
    trials_run: int = 0
    trials_skipped: int = 0
    trials_discarded: int = 0
    #: Stored trial rows that ``--rerun`` removed before the run computed them again.
    trials_replaced: int = 0
    seconds: float = 0.0
    phases: dict[str, float] = field(default_factory=dict)
    failures: list[CellFailure] = field(default_factory=list)
    #: The tracebacks behind the failures (``resbench -v`` prints them).
    failure_details: list[str] = field(default_factory=list)


def _file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _absolute(path: Path | None) -> Path | None:
    return path.resolve() if path is not None else None


class _Driver:
    """Plans the jobs, runs them through the executor, writes what they yield."""

    def __init__(self, suite: Suite, settings: RunSettings) -> None:
        self.suite = suite
        self.settings = settings
        self.registries = get_registries()
        space_options = cast(FaultSpaceOptions, validate_options(FaultSpaceOptions, suite.fault_space, "fault_space"))
        digest = _file_digest(settings.checkpoint) if settings.checkpoint else None
        job_settings = JobSettings(
            device=str(settings.device),
            cache_dir=(settings.cache_dir or ArtifactCache().root).resolve(),
            data_root=_absolute(settings.data_root),
            checkpoint=_absolute(settings.checkpoint),
            progress=settings.progress,
            reuse_memory=settings.reuse_memory,
        )
        self.context = JobContext(suite, job_settings, CellKeys(suite, space_options, digest))
        self.store: ResultStore  # opened by run(), once the input has been checked
        self.summary = RunSummary(run_id=0)
        self.progress: tqdm[Any] | None = None
        self.buffer: list[TrialRow] = []
        self.last_flush = time.monotonic()
        self.failed_cells: set[str] = set()

    # -- planning -------------------------------------------------------------------------------------------

    def run(self) -> RunSummary:
        started = time.perf_counter()
        self.executor = self._executor()  # bad executor options are bad input, found before any work
        self._check_datasets()
        check_rerun(self.settings.rerun, self.context.keys, self._groups())
        self.store = ResultStore(self.settings.store, exclusive=True)  # once bad input could no longer be found
        try:
            replaced = cells_to_replace(self.settings.rerun, self.store, self.context.keys, self._groups())
            self.summary.trials_replaced = self.store.delete_cells(replaced)
            provenance = collect_provenance(self.suite.name, self.suite.version, self.settings.device)
            self.summary.run_id = self.store.start_run(provenance)
            self._run_phases()
            self.store.finish_run(self.summary.run_id)
        finally:
            try:
                self._flush()
            finally:
                if self.progress is not None:
                    self.progress.close()
                self.store.close()
        self.summary.seconds = time.perf_counter() - started
        return self.summary

    def _check_datasets(self) -> None:
        """Every dataset's splits (a missing data root is found here), the operators activation fault models
        choose in every model and, for a model loaded from a checkpoint or built by a user's factory, a probe
        forward pass on every dataset: bad input surfaces before the store is touched."""
        for dataset_spec in self.suite.datasets:
            splits: DatasetSplits = load_dataset(dataset_spec.name, dataset_spec.options, self.settings.data_root)
            check_operator_choice(self.suite, splits, "suite")
            probe = next(iterate_batches(splits.train, batch_size=2))[0]
            for model_spec in self.suite.models:
                if checkpoint_of(self.context, model_spec) is not None:
                    model = baseline(self.context, model_spec, splits)
                elif model_spec.name == FACTORY_MODEL:
                    model = build_model(model_spec.name, splits.image_shape, splits.num_classes, model_spec.options)
                else:
                    continue
                check_fits(model, probe, splits.num_classes, model_spec.label, dataset_spec.label)

    def _groups(self) -> list[Group]:
        return [Group(method, model, dataset, number_format)
                for dataset in self.suite.datasets for model in self.suite.models
                for method in self.suite.methods for number_format in self.suite.formats]

    def _pending(self) -> list[tuple[Group, StoredTrials]]:
        """Groups that still need trials, with what the store holds of them (read once per group)."""
        keys = self.context.keys
        pending = []
        for group in self._groups():
            stored = self.store.trial_accuracies(keys.all_cell_ids(group))
            self.summary.cells += len(stored)
            self.summary.trials_skipped += sum(len(stored[cell_id]) for cell_id in keys.faulty_cell_ids(group))
            if not keys.complete(group, stored, self.store.zero_flip_probabilities(keys.faulty_cell_ids(group))):
                pending.append((group, stored))
        return pending

    def _run_phases(self) -> None:
        pending = self._pending()
        if not pending:
            return
        executor = self.executor
        try:
            jobs = self._baseline_jobs([group for group, _ in pending])
            for job_list in (jobs, self._prepare_jobs([group for group, _ in pending])):
                self._consume(executor.map(job_list))
            failed = {failure.cell_id for failure in self.summary.failures}
            keys = self.context.keys
            runnable = [(group, stored) for group, stored in pending
                        if not failed.intersection(keys.all_cell_ids(group))]
            self._extend_progress(sum(keys.planned_trials(group, stored) for group, stored in runnable))
            self._run_campaigns(runnable)
        finally:
            close = getattr(executor, "close", None)
            if close is not None:
                close()

    def _run_campaigns(self, runnable: list[tuple[Group, StoredTrials]]) -> None:
        """One job per group, or rounds of trial-batch jobs when the executor declares a ``trial_batch``.

        ``critical-bits`` campaigns run one job per group: each trial's stratum follows the results of the
        cell's trials before it (:mod:`resbench.engine.strata`), so they cannot be computed ahead.
        """
        trial_batch = getattr(self.executor, "trial_batch", None)
        if not trial_batch or self.suite.trials.sampling == "critical-bits":
            self._consume(self.executor.map([GroupJob(self.context, group, stored) for group, stored in runnable]))
            return
        batches = TrialBatches(self.context, trial_batch)
        for group, stored in runnable:
            batches.add(group, stored)
        while jobs := batches.next_round():
            self._consume(self.executor.map(jobs), batches)
        self.summary.trials_discarded += batches.discarded

    def _baseline_jobs(self, groups: list[Group]) -> list[Job]:
        """One per (model, dataset) that a pending group needs; none where a checkpoint replaces training."""
        by_baseline: dict[tuple[str, str], list[Group]] = {}
        for group in groups:
            if checkpoint_of(self.context, group.model_spec) is not None:
                continue
            key = (group.model_spec.model_dump_json(), group.dataset_spec.model_dump_json())
            by_baseline.setdefault(key, []).append(group)
        return [BaselineJob(self.context, tuple(members)) for members in by_baseline.values()]

    def _prepare_jobs(self, groups: list[Group]) -> list[Job]:
        """One per fitted method a pending group needs (per format only for format-dependent methods)."""
        by_fit: dict[tuple[str, ...], list[Group]] = {}
        for group in groups:
            method: Method = resolve_method(group.method_spec).value
            if not defines_fit(method):
                continue
            key = (group.method_spec.model_dump_json(), group.model_spec.model_dump_json(),
                   group.dataset_spec.model_dump_json(),
                   group.format_spec.model_dump_json() if method.format_dependent else "")
            by_fit.setdefault(key, []).append(group)
        return [PrepareJob(self.context, tuple(members)) for members in by_fit.values()]

    def _executor(self) -> Any:
        spec = self.suite.executor
        return self.registries.executors.build(spec.name, spec.options, where="executor").value

    # -- writing --------------------------------------------------------------------------------------------

    def _consume(self, outputs: Iterable[JobOutput], batches: TrialBatches | None = None) -> None:
        """Write every output of the jobs as it arrives; rows in a transaction every couple of seconds.

        With ``batches``, rows are written in trial order per cell, as far as the cell needs them.
        """
        for output in outputs:
            if isinstance(output, TrialRow):
                self._write_rows(batches.offer(output) if batches is not None else [output])
            elif isinstance(output, CellsReady):
                for cell in output.cells:
                    self.store.upsert_cell(cell, self.summary.run_id)
                self.store.add_trials([output.clean_row], self.summary.run_id)
                self._describe(output.cells[0])
                if batches is not None:
                    self._write_rows(batches.ready(output))
            elif isinstance(output, PhaseTime):
                self.summary.phases[output.phase] = self.summary.phases.get(output.phase, 0.0) + output.seconds
            elif isinstance(output, Failed):
                failures = [failure for failure in output.failures if failure.cell_id not in self.failed_cells]
                if batches is not None:
                    batches.failed(failures)
                if not failures:  # another job of the same group already failed these cells
                    continue
                self.failed_cells.update(failure.cell_id for failure in failures)
                self.store.record_failures(failures, self.summary.run_id)
                self.summary.failures.extend(failures)
                first = failures[0]
                logger.info("%s on %s/%s, format %s: %s failed (plugin %s): %s", first.method, first.model,
                               first.dataset, first.format, first.phase, first.plugin, first.error)
                if output.details:
                    self.summary.failure_details.append(output.details)
            else:
                raise TypeError(f"a job yielded {type(output).__name__}, which resbench does not know")
        self._flush()

    def _write_rows(self, rows: list[TrialRow]) -> None:
        for _ in rows:
            self._advance()
        self.buffer.extend(rows)
        if time.monotonic() - self.last_flush > FLUSH_SECONDS:
            self._flush()

    def _flush(self) -> None:
        rows, self.buffer = self.buffer, []
        self.summary.trials_run += self.store.add_trials(rows, self.summary.run_id)
        self.last_flush = time.monotonic()

    # -- progress -------------------------------------------------------------------------------------------

    def _extend_progress(self, planned: int) -> None:
        """The trial progress bar, sized by the minimum number of trials still due."""
        if self.progress is None:
            self.progress = tqdm(desc="trials", unit="trial", disable=not self.settings.progress, dynamic_ncols=True)
        self.progress.total = (self.progress.total or 0) + planned
        self.progress.refresh()

    def _describe(self, cell: Any) -> None:
        if self.progress is not None:
            self.progress.set_postfix_str(f"{cell.method} {cell.format} {cell.fault_model}")

    def _advance(self) -> None:
        if self.progress is None:
            return
        if self.progress.total is not None and self.progress.n >= self.progress.total:
            self.progress.total = self.progress.n + 1
        self.progress.update(1)


def run_suite(suite: Suite, settings: RunSettings, source: str = "suite") -> RunSummary:
    """Run every cell of ``suite`` that the store does not hold yet; returns what was done."""
    check_suite(suite, source, settings.device)
    if not suite.seeds:
        return _Driver(suite, settings).run()
    # Several seeds: each trains its own baseline and prepares its own methods; trials pair within a seed.
    summaries = [_Driver(suite.model_copy(update={"seed": seed, "seeds": []}), settings).run() for seed in suite.seeds]
    return _merged(summaries)


def _merged(summaries: list[RunSummary]) -> RunSummary:
    """One summary for the runs of a suite with several seeds (the last run's id)."""
    merged = RunSummary(run_id=summaries[-1].run_id)
    for summary in summaries:
        merged.cells += summary.cells
        merged.trials_run += summary.trials_run
        merged.trials_skipped += summary.trials_skipped
        merged.trials_discarded += summary.trials_discarded
        merged.trials_replaced += summary.trials_replaced
        merged.seconds += summary.seconds
        for name, seconds in summary.phases.items():
            merged.phases[name] = merged.phases.get(name, 0.0) + seconds
        merged.failures += summary.failures
        merged.failure_details += summary.failure_details
    return merged
