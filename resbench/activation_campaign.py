"""The trial loop of transient activation faults: one deployed model, one activation fault model.

A trial is one pass over the evaluation set in which every image gets its own faults (see
:mod:`resbench.activation_faults`). For each trial index the fault model samples the sites of every
image for every cell at once (``act-bitflip``: nested over the BER sweep; ``act-single``: one cell).
Images with no fault keep their fault-free logits without a forward pass; a trial with no fault at all
reuses the fault-free result. The metrics are those of weight trials (:func:`trial_metrics`), over
the whole evaluation set. Completed trials stored earlier are skipped, so an interrupted campaign resumes.

The fault-free reference is the deployed model with the hooks installed and no fault: in ``fp32``
exactly the deployed model's logits, in other formats those of the model computing in the format.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from resbench.activation_faults import ActivationFaultModel, ImageFaults
from resbench.activation_injection import ActivationInjector
from resbench.campaign import FLUSH_SECONDS, CampaignPlan, CleanReference, trials_needed
from resbench.datasets.base import random_subset
from resbench.datasets.loading import iterate_batches
from resbench.errors import blame_plugin
from resbench.evaluation import EvaluationData, predict_logits, predictions_of, trial_metrics
from resbench.store import ResultStore, TrialRow

__all__ = ["ActivationCampaign", "prepare_activation_campaign", "run_activation_campaign"]


@dataclass(frozen=True)
class ActivationCampaign:
    """A deployed model with activation hooks installed, its fault model and its fault-free reference."""

    injector: ActivationInjector
    fault_model: ActivationFaultModel
    data: EvaluationData
    clean: CleanReference
    clean_logits: torch.Tensor

    def trial_faults(self, bers: list[float], trial_seed: int) -> list[ImageFaults]:
        """The sites of every image of one trial, one entry per BER of ``bers``."""
        return self.fault_model.sample_images(self.injector.layout, bers, trial_seed, self.data.size)

    def close(self) -> None:
        """Remove the hooks: the model computes as it did before the campaign."""
        self.injector.remove()


def prepare_activation_campaign(
    model: nn.Module, fault_model: ActivationFaultModel, data: EvaluationData, train: Dataset[Any] | None, seed: int
) -> ActivationCampaign:
    """Install the hooks on ``model``, profile ranges of a scaled format on a seeded random sample of the
    training split ``train`` (the test split is never used for it) and record the fault-free reference."""
    injector = ActivationInjector(model, fault_model, data.images[:1])
    if injector.format.scaled:
        if train is None:
            raise ValueError(f"format {injector.format.name} needs training data to profile activation ranges")
        sample = random_subset(train, fault_model.options.range_samples, seed)
        injector.profile_ranges(images for images, _ in iterate_batches(sample, data.batch_size))
    clean_logits = predict_logits(injector.model, data)
    predictions, _ = predictions_of(clean_logits)
    clean = CleanReference(predictions, trial_metrics(clean_logits, data.labels, predictions))
    return ActivationCampaign(injector, fault_model, data, clean, clean_logits)


def _trial_row(campaign: ActivationCampaign, faults: ImageFaults, cell_id: str, trial: int, seed: int) -> TrialRow:
    started = time.perf_counter()
    reused = faults.num_flips == 0
    if reused:
        metrics = campaign.clean.metrics
    else:
        logits = campaign.injector.faulty_logits(campaign.data, faults, campaign.clean_logits)
        metrics = trial_metrics(logits, campaign.data.labels, campaign.clean.predictions)
    record = faults.record()
    return TrialRow(cell_id=cell_id, trial=trial, seed=seed, accuracy=metrics.accuracy, sdc_rate=metrics.sdc_rate,
                    critical_sdc_rate=metrics.critical_sdc_rate, due_rate=metrics.due_rate, flips=record.num_flips,
                    reused=reused, seconds=time.perf_counter() - started, flips_per_bit=tuple(record.per_bit),
                    flips_per_tensor=record.per_tensor)


def _trial_rows(
    campaign: ActivationCampaign, plan: CampaignPlan, done: dict[str, dict[int, float]]
) -> Iterator[TrialRow]:
    trial = 0
    while True:
        needing = [index for index, cell_id in enumerate(plan.cell_ids)
                   if trials_needed(list(done[cell_id].values()), plan.policy)]
        if not needing:
            return
        pending = [index for index in needing if trial not in done[plan.cell_ids[index]]]
        if pending:
            seed = plan.trial_seed(trial)
            with blame_plugin(*plan.fault_model_item, "sample"):
                all_faults = campaign.trial_faults(plan.bers, seed)
            for index in pending:
                row = _trial_row(campaign, all_faults[index], plan.cell_ids[index], trial, seed)
                done[row.cell_id][trial] = row.accuracy
                yield row
        trial += 1


def run_activation_campaign(
    campaign: ActivationCampaign,
    plan: CampaignPlan,
    store: ResultStore,
    run_id: int,
    on_trial: Callable[[], None] | None = None,
) -> int:
    """Run the trials ``plan`` still needs, writing them to ``store`` in transactions; returns how many ran."""
    done = store.trial_accuracies(plan.cell_ids)
    buffer: list[TrialRow] = []
    last_flush = time.monotonic()
    count = 0
    try:
        for row in _trial_rows(campaign, plan, done):
            buffer.append(row)
            count += 1
            if on_trial is not None:
                on_trial()
            if time.monotonic() - last_flush > FLUSH_SECONDS:
                store.add_trials(buffer, run_id)
                buffer.clear()
                last_flush = time.monotonic()
    finally:
        store.add_trials(buffer, run_id)
    return count

