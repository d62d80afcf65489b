"""Jobs: picklable descriptions of a run's work, and the phase functions that do it.

Phases, for each dataset and model of the suite:

1. baseline (:class:`BaselineJob`, :func:`baseline`): train the model or load it from the artifact cache
   (or load the user's checkpoint);
2. prepare (:class:`PrepareJob`, :func:`prepare`): build each method's structure and fit it, or load
   the fitted state from the artifact cache;
3. deploy (:func:`deploy`): encode the fault space in each number format and record clean accuracy after
   encoding;
4. campaign (:func:`campaign`): for each fault model, the trial loop of :mod:`resbench.run.campaign`
   over the BER sweep.

A :class:`GroupJob` runs phases 3 and 4 for one group (method, model, dataset, format), taking the
baseline and the fitted method from the artifact cache, where the earlier jobs left them: each is
trained once, whichever process or machine runs the group. A job touches no store: calling it yields
outputs (:class:`CellsReady`, trial rows, :class:`PhaseTime`, :class:`Failed`) that the driver writes.
A failure is confined to the cells it touches and yields a :class:`Failed` naming the phase and the
plugin to blame; the other cells go on.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, cast

import torch
from torch import nn
from torch.utils.data import Dataset

from resbench.cache import ArtifactCache
from resbench.config import ComponentSpec, Suite
from resbench.datasets import DatasetSplits, load_dataset
from resbench.engine.activation_faults import ActivationFaultModel
from resbench.engine.allocator import keep_freed_memory
from resbench.engine.deployment import deploy_model
from resbench.engine.estimator import CellDesign, effective_sampling, zero_flip_probability
from resbench.engine.evaluation import (
    EvaluationData,
    load_evaluation_data,
    predict_logits,
    predictions_of,
    trial_metrics,
)
from resbench.engine.faults import FaultModel
from resbench.engine.faultspace import FaultSpace
from resbench.engine.formats import NumberFormat
from resbench.engine.injection import Injector
from resbench.engine.prefix_reuse import DEFAULT_REUSE_MEMORY, PrefixReuse
from resbench.engine.strata import CriticalBitStrata, StratifiedDesign
from resbench.errors import PluginError, blame_plugin
from resbench.methods.base import Method, PrepareContext, defines_fit
from resbench.methods.guards import check_clean_drop, check_finite
from resbench.models import build_model, load_checkpoint
from resbench.models.factory import model_checkpoint
from resbench.plugins import get_registries
from resbench.registry import Built
from resbench.run.activation_campaign import prepare_activation_campaign, run_activation_campaign
from resbench.run.campaign import CampaignPlan, CleanReference, TrialBatch, run_campaign
from resbench.run.cells import CellKeys, Group, StoredTrials
from resbench.run.failures import PHASE_FAMILY, Failed, failures
from resbench.run.measures import baseline_checksum, chance_accuracy, inference_cost, interleaved_timing
from resbench.run.store import CellRecord, TrialRow
from resbench.training import load_or_train_baseline

__all__ = [
    "BaselineJob",
    "CellsReady",
    "GroupJob",
    "Job",
    "JobContext",
    "JobOutput",
    "JobSettings",
    "PhaseTime",
    "PrepareJob",
    "baseline",
    "campaign",
    "checkpoint_of",
    "deploy",
    "prepare",
]


@dataclass(frozen=True)
class JobSettings:
    """Where a job reads its inputs and on which device it computes (absolute paths: workers may start
    in another folder or on another machine sharing the file system)."""

    device: str
    cache_dir: Path
    data_root: Path | None = None
    checkpoint: Path | None = None
    progress: bool = False
    #: Memory for prefix reuse's clean values per deployed model (bytes; 0: every trial runs the full pass).
    reuse_memory: int = DEFAULT_REUSE_MEMORY


@dataclass(frozen=True)
class JobContext:
    """What every job of a run shares: the suite, the settings and the cell identities."""

    suite: Suite
    settings: JobSettings
    keys: CellKeys

    @property
    def device(self) -> torch.device:
        return torch.device(self.settings.device)


# -- outputs --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CellsReady:
    """The cells of one fault model of a deployed group (clean cell first) and the clean cell's row."""

    cells: tuple[CellRecord, ...]
    clean_row: TrialRow


@dataclass(frozen=True)
class PhaseTime:
    """Seconds a job spent in one phase."""

    phase: str
    seconds: float


JobOutput = CellsReady | TrialRow | PhaseTime | Failed


# -- per-process memory: consecutive jobs of one worker reuse what they loaded --------------------------------

_loaded: dict[str, Any] = {}


def _remembered(kind: str, key: str, load: Any) -> Any:
    """The last value loaded for ``kind`` when its key matches, else ``load()`` (one value kept per kind)."""
    if _loaded.get(f"{kind}:key") != key:
        _loaded.pop(kind, None)
        _loaded.pop(f"{kind}:key", None)  # a load that raises leaves nothing remembered
        _loaded[kind] = load()
        _loaded[f"{kind}:key"] = key
    return _loaded[kind]


def _canonical(*parts: Any) -> str:
    return json.dumps(parts, sort_keys=True, default=str)


def _splits(context: JobContext, dataset_spec: ComponentSpec) -> DatasetSplits:
    key = _canonical(dataset_spec.model_dump(), context.settings.data_root)
    return _remembered("splits", key, lambda: load_dataset(dataset_spec.name, dataset_spec.options,
                                                            context.settings.data_root))


def _evaluation_data(context: JobContext, dataset_spec: ComponentSpec) -> EvaluationData:
    key = _canonical(dataset_spec.model_dump(), context.settings.data_root, context.settings.device)
    splits = _splits(context, dataset_spec)
    return _remembered("evaluation", key, lambda: load_evaluation_data(splits.test, context.device,
                                                                       context.suite.eval_batch_size))


# -- phases ---------------------------------------------------------------------------------------------------


def checkpoint_of(context: JobContext, model_spec: ComponentSpec) -> Path | None:
    """The weights a model is loaded from instead of being trained: ``--checkpoint``, or the checkpoint its
    suite entry names."""
    return context.settings.checkpoint or model_checkpoint(model_spec.name, model_spec.options)


def baseline(context: JobContext, model_spec: ComponentSpec, splits: DatasetSplits, *,
             made_earlier: bool = False) -> nn.Module:
    """The user's checkpoint when given (no training), else the trained (or cached) baseline.

    ``made_earlier``: a baseline job of this run trained it, so it must come from the cache (a worker that
    does not share the cache fails, naming it, rather than training again).
    """
    checkpoint = checkpoint_of(context, model_spec)
    key = _canonical(context.keys.model_identity(model_spec), splits.key, checkpoint, context.suite.seed,
                     context.suite.training, context.settings.cache_dir, context.settings.device)

    def load() -> nn.Module:
        if checkpoint is not None:
            model = build_model(model_spec.name, splits.image_shape, splits.num_classes, model_spec.options)
            load_checkpoint(model, checkpoint)
            return model.to(context.device).eval()
        trained = load_or_train_baseline(
            model_spec.name,
            model_spec.options,
            splits,
            seed=context.suite.seed,
            cache=ArtifactCache(context.settings.cache_dir, builds=not made_earlier),
            device=context.device,
            training_options=context.suite.training,
            progress=context.settings.progress,
        )
        return trained.model.eval()

    model: nn.Module = _remembered("baseline", key, load)
    return model


def resolve_method(spec: ComponentSpec) -> Built[Method]:
    """The method named by ``spec``, built with its options (with its registry entry and identity)."""
    return get_registries().methods.build(spec.name, spec.options, where=f"method {spec.label}")


def _prepare_context(context: JobContext, splits: DatasetSplits, number_format: NumberFormat) -> PrepareContext:
    """What a method sees while preparing: the training and validation splits, never the test split."""
    return PrepareContext(
        train=splits.train,
        validation=splits.validation,
        image_shape=splits.image_shape,
        num_classes=splits.num_classes,
        device=context.device,
        seed=context.suite.seed,
        number_format=number_format,
        fault_space=context.keys.space_options,
        batch_size=context.suite.eval_batch_size,
        progress=context.settings.progress,
        train_plain=splits.train_plain,
    )


def _method_key(context: JobContext, built: Built[Method], group: Group, splits: DatasetSplits) -> dict[str, Any]:
    """What determines a fitted method (its plugin's version included): the artifact cache's key for it."""
    method: Method = built.value
    plugin = built.entry.plugin
    return {
        "method": built.identity,
        "plugin": {"name": plugin, "version": get_registries().plugins[plugin].version},
        "components": method.cache_identity(),
        "model": context.keys.model_identity(group.model_spec),
        "dataset": splits.key,
        "seed": context.suite.seed,
        "format": group.format_spec.model_dump() if method.format_dependent else None,
        "fault_space": context.keys.space_options.model_dump(mode="json") if method.format_dependent else None,
        "training": context.suite.training,
        "checkpoint": context.keys.checkpoint_digest,
    }


def prepare(
    context: JobContext, built: Built[Method], group: Group, splits: DatasetSplits, baseline_model: nn.Module, *,
    made_earlier: bool = False,
) -> tuple[nn.Module, float]:
    """Build the method's structure on a copy of the baseline; fit it, or load the fitted state.

    The method sees the training and validation splits only. Its fitted state is cached under everything
    that determines it, its plugin's version included. Returns the prepared model and the seconds its
    preparation took (the fit's, when it was cached). ``made_earlier``: a preparation job of this run
    fitted it, so the fitted state must come from the cache.
    """
    started = time.perf_counter()
    method: Method = built.value
    number_format = context.keys.number_format(group.format_spec)
    prepare_context = _prepare_context(context, splits, number_format)
    plugin, item = built.entry.plugin, f"method {built.entry.name!r}"
    with blame_plugin(plugin, item, "build"):
        model = method.build(copy.deepcopy(baseline_model), prepare_context).to(context.device).eval()
    check_finite(model, plugin, item, "build", allow_unset=True)
    if not defines_fit(method):
        return model, time.perf_counter() - started

    def fit() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        fit_started = time.perf_counter()
        with blame_plugin(plugin, item, "fit"):
            metrics = method.fit(model, prepare_context)
        state = {name: tensor.detach().cpu() for name, tensor in model.state_dict().items()}
        return state, {**metrics, "prepare_seconds": time.perf_counter() - fit_started,
                       "stored_tensors": list(FaultSpace(model).names)}

    built_names = list(FaultSpace(model).names)
    cache = ArtifactCache(context.settings.cache_dir, builds=not made_earlier)
    state, metadata, _ = cache.load_or_build("method", _method_key(context, built, group, splits), fit)
    if metadata.get("stored_tensors", built_names) != built_names:
        raise PluginError(plugin, item, "fit", "fit() changed which tensors are stored (mark_stored); mark them "
                          "in build() or declare stored_tensors on the module class, so the cache keeps them")
    model.load_state_dict(state)
    model.eval()
    check_finite(model, plugin, item, "fit")
    return model, float(metadata.get("prepare_seconds", time.perf_counter() - started))


@dataclass(frozen=True)
class Deployed:
    """A prepared model encoded in one number format, with its fault space and clean reference."""

    model: nn.Module
    injector: Injector
    clean: CleanReference
    stored_bits: int
    #: Prefix reuse for weight-fault trials, built on first use (:meth:`prefix_reuse`).
    reuse_memory: int = 0
    _reuse: dict[str, PrefixReuse | None] = dataclasses.field(default_factory=dict, compare=False, repr=False)

    def prefix_reuse(self, data: EvaluationData) -> PrefixReuse | None:
        """Prefix reuse for trials on ``data`` (the data the clean reference was measured on); None when
        turned off or not possible for this model (trials then run the full pass)."""
        if self.reuse_memory <= 0:
            return None
        if "reuse" not in self._reuse:
            self._reuse["reuse"] = PrefixReuse.build(self.model, self.injector, data, self.reuse_memory)
        return self._reuse["reuse"]


def deploy(context: JobContext, prepared: nn.Module, number_format: NumberFormat, data: EvaluationData,
           calibration: Dataset[Any] | None = None) -> Deployed:
    """Encode the fault space of a copy of ``prepared`` in ``number_format``; measure it fault-free.
    ``calibration`` (the training split) calibrates a model that a format converts to real quantized kernels."""
    model, injector = deploy_model(copy.deepcopy(prepared).eval(), number_format, context.keys.space_options,
                                   calibration=calibration, seed=context.suite.seed)
    logits = predict_logits(model, data)
    predictions, _ = predictions_of(logits)
    clean = CleanReference(predictions, trial_metrics(logits, data.labels, predictions))
    return Deployed(model, injector, clean, injector.layout.total_bits, context.settings.reuse_memory)




def campaign(
    context: JobContext,
    group: Group,
    fault_spec: ComponentSpec,
    deployed: Deployed,
    data: EvaluationData,
    template: CellRecord | None,
    done: StoredTrials,
    train: Dataset[Any] | None = None,
    batch: TrialBatch | None = None,
) -> Iterator[JobOutput]:
    """The cells of one fault model (clean cell first, with its row), then a row per trial still needed.

    ``template`` (what the group's cells share) makes the campaign yield its cells first; without it the
    campaign yields rows only. ``batch``, when given, is the only trials to run (see :class:`GroupJob`).
    ``train`` (the training split) is where activation faults in a scaled format profile their ranges.
    """
    fault_model = context.keys.fault_model(fault_spec)
    fault_entry, _ = get_registries().faults.resolve(fault_spec.name)
    keys = context.keys
    bers = keys.bers(fault_spec)
    trials = _TRIAL_LOOPS[fault_model.target](deployed, fault_model, data, train, context.suite.seed)
    try:
        cell_ids = [keys.cell_id(group, fault_spec, ber) for ber in bers]
        sampling = effective_sampling(context.suite.trials.sampling, fault_model)
        strata = _strata(context, group, sampling, fault_model, deployed, bers)
        designs = _designs(sampling, fault_model, deployed, bers, strata)
        if template is not None:
            yield _cells_ready(context, group, fault_spec, template, sampling, designs, trials.clean)
        plan = CampaignPlan(bers, cell_ids, context.suite.trials, functools.partial(keys.trial_seed, group, fault_spec),
                            designs=designs, conditional=sampling == "conditional", strata=strata,
                            fault_model_item=(fault_entry.plugin, f"fault model {fault_entry.name!r}"), batch=batch)
        stored = {cell_id: dict(done.get(cell_id, {})) for cell_id in cell_ids}
        yield from trials.run(plan, stored)
    finally:
        trials.close()


class _WeightTrials:
    """The trial loop of weight faults (:mod:`resbench.run.campaign`): faults in the deployed stored tensors."""

    def __init__(self, deployed: Deployed, fault_model: FaultModel, data: EvaluationData,
                 train: Dataset[Any] | None, seed: int) -> None:
        self.deployed, self.fault_model, self.data = deployed, fault_model, data
        self.clean = deployed.clean

    def run(self, plan: CampaignPlan, stored: StoredTrials) -> Iterator[TrialRow]:
        deployed = self.deployed
        return run_campaign(deployed.model, deployed.injector, self.fault_model, self.data, deployed.clean, plan,
                            stored, deployed.prefix_reuse(self.data))

    def close(self) -> None:
        """Nothing to undo: every trial restores the bits it flipped."""


class _ActivationTrials:
    """The trial loop of activation faults (:mod:`resbench.run.activation_campaign`): hooks on operator
    outputs, faults drawn per image; the hooks go when the campaign closes."""

    def __init__(self, deployed: Deployed, fault_model: FaultModel, data: EvaluationData,
                 train: Dataset[Any] | None, seed: int) -> None:
        activation_model = cast(ActivationFaultModel, fault_model)  # its target says so
        self.campaign = prepare_activation_campaign(deployed.model, activation_model, data, train, seed)
        self.clean = self.campaign.clean

    def run(self, plan: CampaignPlan, stored: StoredTrials) -> Iterator[TrialRow]:
        return run_activation_campaign(self.campaign, plan, stored)

    def close(self) -> None:
        self.campaign.close()


#: The trial loop of each fault target.
_TRIAL_LOOPS: dict[str, type[_WeightTrials] | type[_ActivationTrials]] = {
    "weights": _WeightTrials, "activations": _ActivationTrials,
}


def _cells_ready(context: JobContext, group: Group, fault_spec: ComponentSpec, template: CellRecord, sampling: str,
                 designs: list[CellDesign | StratifiedDesign], clean: CleanReference) -> CellsReady:
    """The records of one fault model's cells (clean cell first) and the clean cell's row."""
    keys = context.keys
    clean_cell = dataclasses.replace(template, cell_id=keys.cell_id(group, fault_spec, 0.0),
                                     fault_model=fault_spec.label, ber=0.0, sampling=sampling,
                                     definition=keys.definition(group, fault_spec, 0.0))
    cells = [dataclasses.replace(clean_cell, cell_id=keys.cell_id(group, fault_spec, ber), ber=ber,
                                 definition=keys.definition(group, fault_spec, ber), sampling=sampling,
                                 **_design_fields(design))
             for ber, design in zip(keys.bers(fault_spec), designs, strict=True)]
    metrics = clean.metrics
    clean_row = TrialRow(clean_cell.cell_id, 0, 0, metrics.accuracy, 0.0, 0.0, metrics.due_rate, 0, True, 0.0, (), {})
    return CellsReady((clean_cell, *cells), clean_row)


def _design_fields(design: CellDesign | StratifiedDesign) -> dict[str, Any]:
    """What a cell record says of its design: P(K = 0), and the stratum weights of a stratified cell."""
    if isinstance(design, StratifiedDesign):
        return {"zero_flip_probability": design.weights[0], "strata_weights": json.dumps(list(design.weights))}
    return {"zero_flip_probability": design.zero_flip}


def _strata(context: JobContext, group: Group, sampling: str, fault_model: FaultModel, deployed: Deployed,
            bers: list[float]) -> list[CriticalBitStrata]:
    """Per BER, the critical-bit strata of a ``critical-bits`` campaign (none for other designs): the
    format's critical bits, or the suite's ``trials.critical_bits`` for it."""
    if sampling != "critical-bits":
        return []
    label = group.format_spec.label
    critical = context.suite.trials.critical_bits.get(label) or deployed.injector.format.critical_bits()
    return [CriticalBitStrata.of(fault_model, deployed.injector.layout, ber, critical) for ber in bers]


def _designs(sampling: str, fault_model: FaultModel, deployed: Deployed, bers: list[float],
             strata: list[CriticalBitStrata]) -> list[CellDesign | StratifiedDesign]:
    """Per BER, how trials become the estimate: P(K = 0) and the clean accuracy for conditional cells, the
    exact stratum weights for stratified ones."""
    clean = deployed.clean.metrics.accuracy
    if strata:
        return [StratifiedDesign(tuple(float(weight) for weight in cell_strata.weights()), clean)
                for cell_strata in strata]
    if sampling != "conditional":
        return [CellDesign() for _ in bers]
    layout = deployed.injector.layout
    bits = layout.total_elements * fault_model.allowed_bits(layout).size
    return [CellDesign(zero_flip_probability(bits, ber), clean) for ber in bers]


# -- jobs -----------------------------------------------------------------------------------------------------


class _Scheduled:
    """What every job tells a scheduler: one CPU, and one GPU when the run computes on CUDA."""

    context: JobContext

    @property
    def resources(self) -> dict[str, float]:
        """What the job asks of a scheduler (CPUs, GPUs)."""
        return {"num_cpus": 1, "num_gpus": 1 if self.context.device.type == "cuda" else 0}


@dataclass(frozen=True)
class _BeforeGroups(_Scheduled):
    """A job that makes an artifact (a baseline, a fitted method) for ``groups``; a failure fails their cells."""

    context: JobContext
    groups: tuple[Group, ...]
    #: The phase whose failure a lost worker counts as, and the plugin family blamed for it.
    lost_phase: ClassVar[str]

    def _failed(self, phase: str, error: BaseException) -> Iterator[JobOutput]:
        for group in self.groups:
            yield failures(self.context.keys, group, phase, error, PHASE_FAMILY[phase])

    def lost(self, reason: str) -> Iterator[JobOutput]:
        """Failures for every cell of the job, when its worker was lost for good."""
        yield from self._failed(self.lost_phase, RuntimeError(reason))


@dataclass(frozen=True)
class BaselineJob(_BeforeGroups):
    """Train (or load) the baseline of one model on one dataset, so that later jobs find it cached."""

    lost_phase: ClassVar[str] = "baseline"

    def __call__(self) -> Iterator[JobOutput]:
        keep_freed_memory()
        group = self.groups[0]
        phase = "load"
        try:
            splits = _splits(self.context, group.dataset_spec)
            phase = "baseline"
            started = time.perf_counter()
            baseline(self.context, group.model_spec, splits)
            yield PhaseTime("baseline", time.perf_counter() - started)
        except Exception as error:  # confined to this model's cells
            yield from self._failed(phase, error)


@dataclass(frozen=True)
class PrepareJob(_BeforeGroups):
    """Fit one method on one baseline (and format, for format-dependent methods) into the artifact cache."""

    lost_phase: ClassVar[str] = "prepare"

    def __call__(self) -> Iterator[JobOutput]:
        keep_freed_memory()
        group = self.groups[0]
        phase = "load"
        try:
            splits = _splits(self.context, group.dataset_spec)
            phase = "baseline"
            baseline_model = baseline(self.context, group.model_spec, splits, made_earlier=True)
            phase = "prepare"
            started = time.perf_counter()
            prepare(self.context, resolve_method(group.method_spec), group, splits, baseline_model)
            yield PhaseTime("prepare", time.perf_counter() - started)
        except Exception as error:  # confined to this method's cells
            yield from self._failed(phase, error)


@dataclass(frozen=True)
class GroupJob(_Scheduled):
    """Deploy one group and run its campaigns: the whole trial schedule, skipping the trials ``done`` holds,
    or only the trials of ``batches`` (per fault model label) when the driver splits the group's trials
    across several jobs (:mod:`resbench.run.batches`).

    ``describe``: the job yields the group's cells and measures their clean-inference timing first. Of
    the jobs of a split group, one does; the others yield trial rows only. A worker that runs several
    jobs of one group in a row deploys it once.
    """

    context: JobContext
    group: Group
    done: StoredTrials
    batches: dict[str, TrialBatch] | None = None
    describe: bool = True

    def __call__(self) -> Iterator[JobOutput]:
        keep_freed_memory()
        context, group = self.context, self.group
        phase = "load"
        try:
            splits = _splits(context, group.dataset_spec)
            data = _evaluation_data(context, group.dataset_spec)
            phase = "baseline"
            baseline_model = baseline(context, group.model_spec, splits, made_earlier=True)
            phase = "prepare"
            started = time.perf_counter()
            built = resolve_method(group.method_spec)
            key = _canonical(context.suite.model_dump(mode="json"), context.settings, context.keys.checkpoint_digest,
                             *(spec.model_dump() for spec in dataclasses.astuple(group)))
            deployment: dict[str, Any] = _remembered("deployment", key, dict)  # filled by an earlier job of the group
            if "prepared" not in deployment:
                deployment["prepared"] = prepare(context, built, group, splits, baseline_model, made_earlier=True)
            prepared, prepare_seconds = deployment["prepared"]
            yield PhaseTime("prepare", time.perf_counter() - started)
            phase = "deploy"
            started = time.perf_counter()
            number_format = context.keys.number_format(group.format_spec)
            if "deployed" not in deployment:
                with blame_plugin(built.entry.plugin, f"method {built.entry.name!r}", "clean evaluation"):
                    deployment["deployed"] = deploy(context, prepared, number_format, data, splits.profiling)
            deployed: Deployed = deployment["deployed"]
            unprotected = self._check_clean_drop(built, deployed, baseline_model, number_format, data,
                                                 splits.profiling)
            template = None
            if self.describe:  # against the unprotected model in the same format (and kernels)
                timing = interleaved_timing(unprotected.model, deployed.model, data)
                cost = inference_cost(unprotected.model, deployed.model, data)
                template = self._template(built, deployed, baseline_model, unprotected.stored_bits, data, timing,
                                          prepare_seconds, cost)
            yield PhaseTime("deploy", time.perf_counter() - started)
        except Exception as error:  # confined to this group's cells
            _loaded.pop("deployment", None)
            yield failures(context.keys, group, phase, error, PHASE_FAMILY[phase])
            return
        for fault_spec in context.suite.faults:
            batch = None if self.batches is None else self.batches.get(fault_spec.label, ())
            if batch == () and not self.describe:
                continue
            started = time.perf_counter()
            try:
                yield from campaign(context, group, fault_spec, deployed, data, template, self.done,
                                    splits.profiling, batch)
            except Exception as error:  # confined to this fault model's cells
                _loaded.pop("deployment", None)  # a model left mid-trial is deployed afresh by the next job
                yield failures(context.keys, group, "campaign", error, "methods", faults=[fault_spec])
            yield PhaseTime("campaign", time.perf_counter() - started)

    def _check_clean_drop(self, built: Built[Method], deployed: Deployed, baseline_model: nn.Module,
                          number_format: NumberFormat, data: EvaluationData, calibration: Dataset[Any]) -> Deployed:
        """Fail the group when its clean accuracy lies too far below the unprotected model's in the same
        format (:func:`resbench.methods.guards.check_clean_drop`); return the unprotected model so deployed."""
        context, group = self.context, self.group
        key = _canonical(context.suite.model_dump(mode="json"), context.settings, context.keys.checkpoint_digest,
                         group.model_spec.model_dump(), group.dataset_spec.model_dump(), group.format_spec.model_dump())
        unprotected: Deployed = _remembered("baseline_clean", key, lambda: deploy(
            context, baseline_model, number_format, data, calibration))
        reference = unprotected.clean.metrics.accuracy
        guards = context.suite.guards
        spec = group.method_spec
        check_clean_drop(deployed.clean.metrics.accuracy, reference, tolerance=guards.max_clean_drop,
                         accepted=bool({spec.label, spec.name} & set(guards.accept_clean_drop)),
                         plugin=built.entry.plugin, item=f"method {spec.label!r}",
                         where=f"in {group.format_spec.label}")
        return unprotected

    def _template(self, built: Built[Method], deployed: Deployed, baseline_model: nn.Module, baseline_bits: int,
                  data: EvaluationData, timing: dict[str, list[float]],
                  prepare_seconds: float, cost: dict[str, object]) -> CellRecord:
        """What every cell of the group shares; each cell adds its identity (see :func:`campaign`)."""
        group = self.group
        return CellRecord(
            cell_id="",
            method=group.method_spec.label,
            model=group.model_spec.label,
            dataset=group.dataset_spec.label,
            format=group.format_spec.label,
            fault_model="",
            ber=0.0,
            seed=self.context.suite.seed,
            definition="",
            method_plugin=built.entry.plugin,
            citation=built.value.citation_text(),
            notes=built.value.notes_text(),
            stored_bits=deployed.stored_bits,
            baseline_bits=baseline_bits,
            fault_space=json.dumps(deployed.injector.describe()),
            eval_samples=data.size,
            clean_eval_seconds=min(timing["protected"]),
            baseline_eval_seconds=min(timing["baseline"]),
            prepare_seconds=prepare_seconds,
            chance_accuracy=chance_accuracy(data.labels),
            baseline_checksum=baseline_checksum(baseline_model),
            timing=json.dumps({**timing, **cost}),
        )

    def lost(self, reason: str) -> Iterator[JobOutput]:
        """Failures for every cell of the job (of its batches' fault models), when its worker was lost for good."""
        faults = None
        if self.batches is not None and not self.describe:
            faults = [spec for spec in self.context.suite.faults if spec.label in self.batches]
        yield failures(self.context.keys, self.group, "campaign", RuntimeError(reason), "methods", faults=faults)


Job = BaselineJob | PrepareJob | GroupJob
