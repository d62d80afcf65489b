"""The trial loop of one deployed model under one fault model, across a BER sweep.

For each trial index the fault model samples fault sites from a seed that does not depend on the
method: under the ``conditional`` design (:mod:`resbench.engine.estimator`) each BER gets sites conditional on
at least one flip; under ``critical-bits`` (:mod:`resbench.engine.strata`) each cell's next trial goes to the
stratum its results so far call for, and the j-th trial of a stratum draws its sites from the j-th trial seed,
so methods are paired stratum by stratum; under the plain ``bernoulli`` design nested sites for the whole
sweep at once (the sites at a lower BER are a subset of those at a higher one). Each BER that still needs
trials gets: inject (XOR in place) -> evaluate -> restore (bit-exact). A trial with no flip reuses the fault-free
result without a forward pass; with prefix reuse, a trial with flips recomputes only from the first
operation that reads a flipped tensor, and stops where the fault was masked. Completed trials stored
earlier are skipped, so an interrupted campaign resumes where it stopped.

A campaign runs its whole schedule (:func:`scheduled_trials`: trial after trial until the trial policy
is met), or only the trials of a :data:`TrialBatch` that the driver chose when it splits a group's
trials across workers (:mod:`resbench.run.batches`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
from torch import nn

from resbench.config import TrialPolicy
from resbench.engine.estimator import CellDesign, sample_given_flips
from resbench.engine.evaluation import EvaluationData, TrialMetrics, predict_logits, trial_metrics
from resbench.engine.faults import FaultModel, FaultSites
from resbench.engine.injection import Injector
from resbench.engine.prefix_reuse import PrefixReuse
from resbench.engine.strata import CriticalBitStrata, StratifiedDesign
from resbench.errors import blame_plugin
from resbench.run.store import TrialRow

__all__ = ["CampaignPlan", "CleanReference", "TrialBatch", "run_campaign", "scheduled_trials", "trials_needed"]

#: Trials chosen by the driver for one campaign: ``(trial, indices of the cells that need it)`` pairs.
TrialBatch = tuple[tuple[int, tuple[int, ...]], ...]

@dataclass(frozen=True)
class CleanReference:
    """The deployed model's fault-free predictions and metrics (BER 0)."""

    predictions: torch.Tensor
    metrics: TrialMetrics


@dataclass(frozen=True)
class CampaignPlan:
    """What one campaign covers: the BER sweep, its cells, the trial policy and the trial seeds.

    ``designs`` (one per cell, empty for direct draws) say how a cell's trials become its estimate;
    ``conditional`` campaigns sample each BER conditional on at least one flip; ``strata`` (one per cell,
    empty unless stratified) draw the sites of critical-bit strata. ``batch``, when given, replaces the
    schedule: the campaign runs those trials and no others.
    """

    bers: list[float]
    cell_ids: list[str]
    policy: TrialPolicy
    trial_seed: Callable[[int], int]
    #: (plugin, item label) of the fault model, named when its sampling raises
    fault_model_item: tuple[str, str] = ("resbench.engine.faults", "fault model")
    designs: list[CellDesign | StratifiedDesign] = field(default_factory=list)
    conditional: bool = False
    strata: list[CriticalBitStrata] = field(default_factory=list)
    batch: TrialBatch | None = None

    def design(self, index: int) -> CellDesign | StratifiedDesign:
        """The design of cell ``index`` (direct draws when none is given)."""
        return self.designs[index] if self.designs else CellDesign()


def trials_needed(accuracies: list[float], policy: TrialPolicy,
                  design: CellDesign | StratifiedDesign | None = None) -> bool:
    """Whether a cell with these trial accuracies needs another trial under ``policy``.

    The adaptive rule asks the interval the leaderboard shows (the bounded bootstrap of the cell's
    estimate), which is never of zero width, so a cell never stops because its trials all agree.
    """
    if len(accuracies) < policy.trials:
        return True
    if not policy.adaptive or policy.max_trials is None or policy.ci_halfwidth is None:
        return False
    if len(accuracies) >= policy.max_trials:
        return False
    _, low, high = (design or CellDesign()).estimate(accuracies)
    return (high - low) / 2 > policy.ci_halfwidth


def _run_trial(
    model: nn.Module, injector: Injector, sites: FaultSites, data: EvaluationData, clean: CleanReference,
    reuse: PrefixReuse | None = None,
) -> tuple[TrialMetrics, bool]:
    if sites.num_flips == 0:
        injector.effective_flips = 0
        return clean.metrics, True
    with injector.injected(sites):
        logits = predict_logits(model, data) if reuse is None else reuse.logits(sites)
    return trial_metrics(logits, data.labels, clean.predictions), False


@dataclass(frozen=True)
class _Draw:
    """The sites of one trial of one cell, the seed they came from and their stratum (0: unstratified)."""

    sites: FaultSites
    seed: int
    stratum: int = 0


def _sites_for(
    fault_model: FaultModel, injector: Injector, plan: CampaignPlan, seed: int, pending: list[int],
    done: dict[str, dict[int, float]],
) -> dict[int, _Draw]:
    """The sites of one trial for each pending cell: in the stratum the cell's results call for,
    conditional per BER, or nested over the sweep."""
    if plan.strata:
        return {index: _stratified_draw(plan, index, _in_trial_order(done[plan.cell_ids[index]])) for index in pending}
    if plan.conditional:
        return {index: _Draw(sample_given_flips(fault_model, injector.layout, plan.bers[index], seed), seed)
                for index in pending}
    all_sites = fault_model.sample(injector.layout, plan.bers, seed)
    return {index: _Draw(all_sites[index], seed) for index in pending}


def _in_trial_order(accuracies: dict[int, float]) -> list[float]:
    """A cell's trial accuracies ordered by trial index (a stratified design replays them in that order)."""
    return [accuracies[trial] for trial in sorted(accuracies)]


def _stratified_draw(plan: CampaignPlan, index: int, accuracies: list[float]) -> _Draw:
    """The next trial of stratified cell ``index`` after ``accuracies`` (its trials so far, in order): the
    stratum its design picks, sites from the trial seed of the stratum's next trial."""
    design = plan.designs[index]
    assert isinstance(design, StratifiedDesign)  # stratified plans hold one per cell
    stratum, rank = design.next_trial(accuracies)
    seed = plan.trial_seed(rank)
    return _Draw(plan.strata[index].sample(stratum, seed), seed, stratum)


def scheduled_trials(plan: CampaignPlan, done: dict[str, dict[int, float]]) -> Iterator[tuple[int, int, list[int]]]:
    """``(trial, seed, cells)``: each trial index with its seed and the indices of the cells that still need
    it, until no cell needs another trial. Reads ``done`` afresh before each trial: callers record there the
    trials they complete (trial loops for every fault target share this schedule). A plan with a ``batch``
    yields the batch's trials that ``done`` lacks, and stops."""
    if plan.batch is not None:
        for trial, cells in plan.batch:
            pending = [index for index in cells if trial not in done[plan.cell_ids[index]]]
            if pending:
                yield trial, plan.trial_seed(trial), pending
        return
    trial = 0
    while True:
        needing = [index for index, cell_id in enumerate(plan.cell_ids)
                   if trials_needed(_in_trial_order(done[cell_id]), plan.policy, plan.design(index))]
        if not needing:
            return
        pending = [index for index in needing if trial not in done[plan.cell_ids[index]]]
        if pending:
            yield trial, plan.trial_seed(trial), pending
        trial += 1


def run_campaign(
    model: nn.Module,
    injector: Injector,
    fault_model: FaultModel,
    data: EvaluationData,
    clean: CleanReference,
    plan: CampaignPlan,
    done: dict[str, dict[int, float]],
    reuse: PrefixReuse | None = None,
) -> Iterator[TrialRow]:
    """Yield one row per trial that ``plan`` still needs, given the trials ``done`` (stored earlier).

    The campaign touches no store: whoever runs it (this process, a worker, a cluster node) hands the
    rows to the driver, which writes them. ``done`` is updated as trials complete. With ``reuse`` (built
    for this model, injector and data), a trial recomputes only what its faults reach
    (:mod:`resbench.engine.prefix_reuse`), with the same logits bit for bit.
    """
    for trial, seed, pending in scheduled_trials(plan, done):
        with blame_plugin(*plan.fault_model_item, "sample"):
            sites = _sites_for(fault_model, injector, plan, seed, pending, done)
        for index in pending:
            started = time.perf_counter()
            draw = sites[index]
            metrics, reused = _run_trial(model, injector, draw.sites, data, clean, reuse)
            cell_id = plan.cell_ids[index]
            done[cell_id][trial] = metrics.accuracy
            record = draw.sites.record()
            yield TrialRow(
                cell_id=cell_id,
                trial=trial,
                seed=draw.seed,
                accuracy=metrics.accuracy,
                sdc_rate=metrics.sdc_rate,
                critical_sdc_rate=metrics.critical_sdc_rate,
                due_rate=metrics.due_rate,
                flips=record.num_flips,
                effective_flips=injector.effective_flips,
                reused=reused,
                seconds=time.perf_counter() - started,
                flips_per_bit=tuple(record.per_bit),
                flips_per_tensor=record.per_tensor,
                stratum=draw.stratum,
            )
