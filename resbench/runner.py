"""``resbench run`` end to end: baselines, method preparation, deployment, campaigns, the store.

Phases, for each dataset and model of the suite:

1. baseline: train the model or load it from the artifact cache (or load the user's checkpoint);
2. prepare: apply each method (build its structure, fit it or load the fitted state from the cache);
3. deploy: encode the fault space in each number format and record clean accuracy after encoding;
4. campaign: for each fault model, the trial loop of :mod:`resbench.campaign` over the BER sweep.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn
from tqdm import tqdm

from resbench.cache import ArtifactCache
from resbench.campaign import CampaignPlan, CleanReference, run_campaign, trials_needed
from resbench.config import ComponentSpec, Suite, check_suite_names
from resbench.datasets import TEST_SUBSET, DatasetSplits, load_dataset
from resbench.errors import PluginError, UsageError, blame_plugin
from resbench.estimator import CellDesign, effective_sampling, zero_flip_probability
from resbench.evaluation import (
    EvaluationData,
    load_evaluation_data,
    predict_logits,
    predictions_of,
    trial_metrics,
)
from resbench.faults import FaultModel, resolve_fault_model
from resbench.faultspace import FaultSpace, FaultSpaceLayout, FaultSpaceOptions
from resbench.formats import NumberFormat, resolve_format
from resbench.injection import Injector
from resbench.measures import baseline_checksum, chance_accuracy, interleaved_timing
from resbench.methods.base import Method, PrepareContext, defines_fit
from resbench.models import build_model, load_checkpoint
from resbench.options import validate_options
from resbench.plugins import get_registries
from resbench.provenance import collect_provenance
from resbench.registry import Built
from resbench.seeds import derive_seed
from resbench.store import CellRecord, ResultStore, TrialRow
from resbench.training import load_or_train_baseline

__all__ = ["RunSettings", "RunSummary", "check_fault_formats", "run_suite"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunSettings:
    """Where a run reads and writes, and on which device it computes."""

    store: Path
    device: torch.device
    data_root: Path | None = None
    cache_dir: Path | None = None
    checkpoint: Path | None = None
    progress: bool = True


@dataclass
class RunSummary:
    """What a run did."""

    run_id: int
    cells: int = 0
    trials_run: int = 0
    trials_skipped: int = 0
    seconds: float = 0.0
    phases: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class _Deployed:
    """A prepared model encoded in one number format, with its fault space and clean reference."""

    model: nn.Module
    injector: Injector
    clean: CleanReference
    stored_bits: int


@dataclass(frozen=True)
class _Group:
    """(method, model, dataset, format): the cells that share one prepared and deployed model."""

    method: Built[Method]
    method_spec: ComponentSpec
    model_spec: ComponentSpec
    dataset_spec: ComponentSpec
    format_spec: ComponentSpec


def _file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class _Runner:
    def __init__(self, suite: Suite, settings: RunSettings) -> None:
        self.suite = suite
        self.settings = settings
        self.registries = get_registries()
        self.cache = ArtifactCache(settings.cache_dir) if settings.cache_dir else ArtifactCache()
        space_options = validate_options(FaultSpaceOptions, suite.fault_space, "fault_space")
        self.space_options = cast(FaultSpaceOptions, space_options)
        self.store: ResultStore  # opened by run(), once the input has been checked
        self.summary = RunSummary(run_id=0)
        self.progress: tqdm[Any] | None = None
        self.checkpoint_digest = _file_digest(settings.checkpoint) if settings.checkpoint else None

    # -- phases -------------------------------------------------------------------------------------------

    def run(self) -> RunSummary:
        started = time.perf_counter()
        datasets = self._load_datasets()
        self.store = ResultStore(self.settings.store)  # only once bad input could no longer be found
        provenance = collect_provenance(self.suite.name, self.suite.version, self.settings.device)
        self.summary.run_id = self.store.start_run(provenance)
        try:
            for _ in self._executor().map(self._model_jobs(datasets)):
                continue
            self.store.finish_run(self.summary.run_id)
        finally:
            if self.progress is not None:
                self.progress.close()
            self.store.close()
        self.summary.seconds = time.perf_counter() - started
        return self.summary

    def _executor(self) -> Any:
        spec = self.suite.executor
        return self.registries.executors.build(spec.name, spec.options, where="executor").value

    def _load_datasets(self) -> list[tuple[ComponentSpec, DatasetSplits]]:
        """Every dataset's splits (a missing data root is found here) and, given a checkpoint, a check
        that it fits every model on every dataset: bad input surfaces before the store is touched."""
        datasets = []
        for dataset_spec in self.suite.datasets:
            splits = load_dataset(dataset_spec.name, dataset_spec.options, self.settings.data_root)
            if self.settings.checkpoint is not None:
                for model_spec in self.suite.models:
                    self._baseline(model_spec, splits)
            datasets.append((dataset_spec, splits))
        return datasets

    def _model_jobs(self, datasets: list[tuple[ComponentSpec, DatasetSplits]]) -> Iterator[Callable[[], None]]:
        """One job per (dataset, model); a dataset's evaluation data is loaded when its first job is due."""
        for dataset_spec, splits in datasets:
            data = load_evaluation_data(splits.test, self.settings.device, self.suite.eval_batch_size)
            for model_spec in self.suite.models:
                yield functools.partial(self._run_model, model_spec, dataset_spec, splits, data)

    def _phase(self, name: str, seconds: float) -> None:
        self.summary.phases[name] = self.summary.phases.get(name, 0.0) + seconds

    def _run_model(
        self, model_spec: ComponentSpec, dataset_spec: ComponentSpec, splits: DatasetSplits, data: EvaluationData
    ) -> None:
        started = time.perf_counter()
        baseline = self._baseline(model_spec, splits)
        self._phase("baseline", time.perf_counter() - started)
        for method_spec in self.suite.methods:
            built = self._method(method_spec)
            method: Method = built.value
            prepared_once: tuple[nn.Module, float] | None = None
            for format_spec in self.suite.formats:
                group = _Group(built, method_spec, model_spec, dataset_spec, format_spec)
                if self._complete(group):
                    continue
                number_format = resolve_format(format_spec.name, format_spec.options)
                if prepared_once is None or method.format_dependent:
                    prepared_once = self._prepare(group, splits, baseline, number_format)
                prepared, prepare_seconds = prepared_once
                started = time.perf_counter()
                with blame_plugin(built.entry.plugin, f"method {built.entry.name!r}", "clean evaluation"):
                    deployed = self._deploy(prepared, number_format, data)
                self._phase("deploy", time.perf_counter() - started)
                timing = interleaved_timing(baseline, deployed.model, data)
                # What every cell of the group shares; each cell adds its identity (see _cell).
                template = CellRecord(
                    cell_id="",
                    method=method_spec.label,
                    model=model_spec.label,
                    dataset=dataset_spec.label,
                    format=format_spec.label,
                    fault_model="",
                    ber=0.0,
                    seed=self.suite.seed,
                    definition="",
                    method_plugin=built.entry.plugin,
                    citation=str(method.citation),
                    notes=method.notes,
                    stored_bits=deployed.stored_bits,
                    baseline_bits=FaultSpace(baseline, self.space_options).total_bits(number_format),
                    fault_space=json.dumps(deployed.injector.space.describe()),
                    eval_samples=data.size,
                    clean_eval_seconds=min(timing["protected"]),
                    baseline_eval_seconds=min(timing["baseline"]),
                    prepare_seconds=prepare_seconds,
                    chance_accuracy=chance_accuracy(data.labels),
                    baseline_checksum=baseline_checksum(baseline),
                    timing=json.dumps(timing),
                )
                for fault_spec in self.suite.faults:
                    started = time.perf_counter()
                    self._campaign(deployed, data, group, fault_spec, template)
                    self._phase("campaign", time.perf_counter() - started)

    def _baseline(self, model_spec: ComponentSpec, splits: DatasetSplits) -> nn.Module:
        """The user's checkpoint when given (no training), else the trained (or cached) baseline."""
        if self.settings.checkpoint is not None:
            model = build_model(model_spec.name, splits.image_shape, splits.num_classes, model_spec.options)
            load_checkpoint(model, self.settings.checkpoint)
            return model.to(self.settings.device).eval()
        baseline = load_or_train_baseline(
            model_spec.name,
            model_spec.options,
            splits,
            seed=self.suite.seed,
            cache=self.cache,
            device=self.settings.device,
            training_options=self.suite.training,
            progress=self.settings.progress,
        )
        return baseline.model.eval()

    def _method(self, spec: ComponentSpec) -> Built[Method]:
        return self.registries.methods.build(spec.name, spec.options, where=f"method {spec.label}")

    def _prepare(
        self, group: _Group, splits: DatasetSplits, baseline: nn.Module, number_format: NumberFormat
    ) -> tuple[nn.Module, float]:
        """Build the method's structure on a copy of the baseline; fit it, or load the fitted state.

        The method sees the training and validation splits only. Its fitted state is cached under
        everything that determines it, its plugin's version included.
        """
        started = time.perf_counter()
        method: Method = group.method.value
        context = PrepareContext(
            train=splits.train,
            validation=splits.validation,
            image_shape=splits.image_shape,
            num_classes=splits.num_classes,
            device=self.settings.device,
            seed=self.suite.seed,
            number_format=number_format,
            fault_space=self.space_options,
            batch_size=self.suite.eval_batch_size,
            progress=self.settings.progress,
        )
        plugin, item = group.method.entry.plugin, f"method {group.method.entry.name!r}"
        with blame_plugin(plugin, item, "build"):
            model = method.build(copy.deepcopy(baseline), context).to(self.settings.device).eval()
        if not defines_fit(method):
            return model, time.perf_counter() - started
        key = {
            "method": group.method.identity,
            "plugin": {"name": plugin, "version": self.registries.plugins[plugin].version},
            "components": method.cache_identity(),
            "model": group.model_spec.model_dump(),
            "dataset": splits.key,
            "seed": self.suite.seed,
            "format": group.format_spec.model_dump() if method.format_dependent else None,
            "fault_space": self.space_options.model_dump(mode="json") if method.format_dependent else None,
            "training": self.suite.training,
            "checkpoint": self.checkpoint_digest,
        }

        def fit() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
            fit_started = time.perf_counter()
            with blame_plugin(plugin, item, "fit"):
                metrics = method.fit(model, context)
            state = {name: tensor.detach().cpu() for name, tensor in model.state_dict().items()}
            return state, {**metrics, "prepare_seconds": time.perf_counter() - fit_started,
                           "stored_tensors": list(FaultSpace(model).names)}

        built_names = list(FaultSpace(model).names)
        state, metadata, _ = self.cache.load_or_build("method", key, fit)
        if metadata.get("stored_tensors", built_names) != built_names:
            raise PluginError(plugin, item, "fit", "fit() changed which tensors are stored (mark_stored); mark them "
                              "in build() or declare stored_tensors on the module class, so the cache keeps them")
        model.load_state_dict(state)
        model.eval()
        seconds = float(metadata.get("prepare_seconds", time.perf_counter() - started))
        self._phase("prepare", time.perf_counter() - started)
        return model, seconds

    def _deploy(self, prepared: nn.Module, number_format: NumberFormat, data: EvaluationData) -> _Deployed:
        model = copy.deepcopy(prepared).eval()
        injector = Injector.deploy(model, number_format, self.space_options)
        logits = predict_logits(model, data)
        predictions, _ = predictions_of(logits)
        clean = CleanReference(predictions, trial_metrics(logits, data.labels, predictions))
        return _Deployed(model, injector, clean, injector.layout.total_bits)

    # -- campaign -----------------------------------------------------------------------------------------

    def _cell_definition(self, group: _Group, fault_spec: ComponentSpec, ber: float) -> str:
        """Everything that determines a cell's results, as canonical JSON; its hash is the cell id."""
        return json.dumps(
            {
                "method": group.method.identity,
                "model": group.model_spec.model_dump(),
                "dataset": group.dataset_spec.model_dump(),
                "format": group.format_spec.model_dump(),
                "fault_model": fault_spec.model_dump(),
                "fault_space": self.space_options.model_dump(),
                "ber": ber,
                # Sites at every BER of a trial are thinned from a sample at the sweep's largest BER.
                "sweep_max_ber": max(self.suite.bers),
                "seed": self.suite.seed,
                "training": self.suite.training,
                "checkpoint": self.checkpoint_digest,
                "sampling": effective_sampling(self.suite.trials.sampling,
                                               resolve_fault_model(fault_spec.name, fault_spec.options)),
                "test_subset": TEST_SUBSET if "test_limit" in group.dataset_spec.options else None,
            },
            sort_keys=True,
            default=str,
        )

    def _cell_id(self, group: _Group, fault_spec: ComponentSpec, ber: float) -> str:
        return str(derive_seed(self._cell_definition(group, fault_spec, ber)))

    def _complete(self, group: _Group) -> bool:
        """Whether the store already holds every trial of ``group`` (a rerun then skips it whole)."""
        faulty = {self._cell_id(group, fault, ber): self._cell_id(group, fault, 0.0)
                  for fault in self.suite.faults for ber in self.suite.bers}
        clean = [self._cell_id(group, fault, 0.0) for fault in self.suite.faults]
        stored = self.store.trial_accuracies([*faulty, *clean])
        if any(not stored[cell_id] for cell_id in clean):
            return False
        zero_flip = self.store.zero_flip_probabilities(faulty)
        for cell_id, clean_id in faulty.items():
            design = CellDesign(zero_flip.get(cell_id, 0.0), stored[clean_id][0])
            if trials_needed(list(stored[cell_id].values()), self.suite.trials, design):
                return False
        self.summary.cells += len(faulty) + len(clean)
        self.summary.trials_skipped += sum(len(stored[cell_id]) for cell_id in faulty)
        return True

    def _cell(self, group: _Group, fault_spec: ComponentSpec, ber: float, template: CellRecord) -> CellRecord:
        """The group's template record with this cell's identity."""
        definition = self._cell_definition(group, fault_spec, ber)
        return dataclasses.replace(
            template, cell_id=str(derive_seed(definition)), fault_model=fault_spec.label, ber=ber, definition=definition
        )

    def _trial_seed(self, group: _Group, fault_spec: ComponentSpec) -> Callable[[int], int]:
        """Trial seeds from (base seed, model, dataset, format, fault model, trial): never the method."""
        parts = (self.suite.seed, group.model_spec.label, group.dataset_spec.label, group.format_spec.label,
                 fault_spec.label)
        return lambda trial: derive_seed(*parts, trial)

    def _campaign(
        self, deployed: _Deployed, data: EvaluationData, group: _Group, fault_spec: ComponentSpec, template: CellRecord
    ) -> None:
        fault_model = resolve_fault_model(fault_spec.name, fault_spec.options)
        clean_cell = self._cell(group, fault_spec, 0.0, template)
        sampling = effective_sampling(self.suite.trials.sampling, fault_model)
        designs = _designs(sampling, fault_model, deployed, self.suite.bers)
        cells = [dataclasses.replace(self._cell(group, fault_spec, ber, template), sampling=sampling,
                                     zero_flip_probability=design.zero_flip)
                 for ber, design in zip(self.suite.bers, designs, strict=True)]
        for cell in [clean_cell, *cells]:
            self.store.upsert_cell(cell, self.summary.run_id)
        metrics = deployed.clean.metrics
        self.store.add_trials(
            [TrialRow(clean_cell.cell_id, 0, 0, metrics.accuracy, 0.0, 0.0, metrics.due_rate, 0, True, 0.0, (), {})],
            self.summary.run_id,
        )
        fault_entry, _ = self.registries.faults.resolve(fault_spec.name)
        plan = CampaignPlan(list(self.suite.bers), [c.cell_id for c in cells], self.suite.trials,
                            self._trial_seed(group, fault_spec), designs=designs,
                            conditional=sampling == "conditional",
                            fault_model_item=(fault_entry.plugin, f"fault model {fault_entry.name!r}"))
        self.summary.cells += len(cells) + 1
        stored = self.store.trial_accuracies(plan.cell_ids)
        self.summary.trials_skipped += sum(len(found) for found in stored.values())
        self._extend_progress(stored, f"{group.method_spec.label} {group.format_spec.label} {fault_spec.label}")
        self.summary.trials_run += run_campaign(
            deployed.model, deployed.injector, fault_model, data, deployed.clean, plan,
            self.store, self.summary.run_id, on_trial=self._advance,
        )

    def _extend_progress(self, stored: dict[str, dict[int, float]], label: str) -> None:
        """Add a campaign's planned trials (the minimum per cell) to the trial progress bar."""
        if self.progress is None:
            self.progress = tqdm(desc="trials", unit="trial", disable=not self.settings.progress, dynamic_ncols=True)
        planned = sum(max(0, self.suite.trials.trials - len(found)) for found in stored.values())
        self.progress.total = (self.progress.total or 0) + planned
        self.progress.set_postfix_str(label)
        self.progress.refresh()

    def _advance(self) -> None:
        assert self.progress is not None
        if self.progress.total is not None and self.progress.n >= self.progress.total:
            self.progress.total = self.progress.n + 1
        self.progress.update(1)


def _designs(sampling: str, fault_model: FaultModel, deployed: _Deployed, bers: list[float]) -> list[CellDesign]:
    """Per BER, how trials become the estimate: P(K = 0) and the clean accuracy for conditional cells."""
    if sampling != "conditional":
        return [CellDesign() for _ in bers]
    layout = deployed.injector.layout
    bits = layout.total_elements * fault_model.allowed_bits(layout).size
    clean = deployed.clean.metrics.accuracy
    return [CellDesign(zero_flip_probability(bits, ber), clean) for ber in bers]


def check_fault_formats(suite: Suite, source: str) -> None:
    """Check each fault model against each number format (bit fields, positions) before any work."""
    registries = get_registries()
    for format_spec in suite.formats:
        number_format = resolve_format(format_spec.name, format_spec.options)
        layout = FaultSpaceLayout(("probe",), (1,), number_format.bits_per_element, number_format.bit_fields())
        for fault_spec in suite.faults:
            fault_model = registries.faults.build(fault_spec.name, fault_spec.options, where=source).value
            try:
                fault_model.allowed_bits(layout)
            except UsageError as error:
                raise UsageError(f"{source}: with format {format_spec.label}: {error}") from None


def run_suite(suite: Suite, settings: RunSettings, source: str = "suite") -> RunSummary:
    """Run every cell of ``suite`` that the store does not hold yet; returns what was done."""
    check_suite_names(suite, source)
    check_fault_formats(suite, source)
    if not suite.seeds:
        return _Runner(suite, settings).run()
    summaries = [_Runner(suite.model_copy(update={"seed": seed, "seeds": []}), settings).run() for seed in suite.seeds]
    return _merged(summaries)


def _merged(summaries: list[RunSummary]) -> RunSummary:
    """One summary for the runs of a suite with several seeds (the last run's id)."""
    merged = RunSummary(run_id=summaries[-1].run_id)
    for summary in summaries:
        merged.cells += summary.cells
        merged.trials_run += summary.trials_run
        merged.trials_skipped += summary.trials_skipped
        merged.seconds += summary.seconds
        for name, seconds in summary.phases.items():
            merged.phases[name] = merged.phases.get(name, 0.0) + seconds
    return merged
