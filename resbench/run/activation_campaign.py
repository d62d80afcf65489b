"""The trial loop of transient activation faults: one deployed model, one activation fault model.

A trial is one pass over the evaluation set in which every image gets its own faults (see
:mod:`resbench.engine.activation_faults`). For each trial index the fault model samples the sites of every
image for every cell at once (``act-bitflip``: nested over the BER sweep; ``act-single``: one cell).
Images with no fault keep their fault-free logits without a forward pass; a trial with no fault at all
reuses the fault-free result. The metrics are those of weight trials (:func:`trial_metrics`), over
the whole evaluation set. Trials ``done`` earlier are skipped, so an interrupted campaign resumes; like
the weight campaign, this touches no store: it yields rows for the driver to write.

The fault-free reference is the deployed model with the hooks installed and no fault: in ``fp32``
exactly the deployed model's logits, in other formats those of the model computing in the format.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from resbench.datasets.base import random_subset
from resbench.datasets.loading import iterate_batches
from resbench.engine.activation_faults import ActivationFaultModel, ImageFaults
from resbench.engine.activation_injection import ActivationInjector
from resbench.engine.evaluation import EvaluationData, predict_logits, predictions_of, trial_metrics
from resbench.errors import blame_plugin
from resbench.run.campaign import CampaignPlan, CleanReference, scheduled_trials
from resbench.run.store import TrialRow

__all__ = ["ActivationCampaign", "faulty_logits", "prepare_activation_campaign", "run_activation_campaign"]


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


@torch.inference_mode()
def faulty_logits(
    injector: ActivationInjector, data: EvaluationData, faults: ImageFaults, clean_logits: torch.Tensor
) -> torch.Tensor:
    """Logits of every image under ``faults``: images without a fault keep their fault-free logits, the
    others are evaluated in batches of the data's batch size (gathered when some images have no fault)."""
    rows = np.unique(faults.images)
    logits = clean_logits.clone()
    if rows.size == 0:
        return logits
    whole = rows.size == data.size
    index = torch.from_numpy(rows).to(data.images.device)
    for start in range(0, rows.size, data.batch_size):
        stop = min(start + data.batch_size, rows.size)
        images = data.images[start:stop] if whole else data.images.index_select(0, index[start:stop])
        injector.plan = injector.batch_plan(faults, rows, start, stop)
        try:
            batch_logits = injector.model(images).float()
        finally:
            injector.plan = {}
        if whole:
            logits[start:stop] = batch_logits
        else:
            logits.index_copy_(0, index[start:stop], batch_logits)
    return logits


def _trial_row(campaign: ActivationCampaign, faults: ImageFaults, cell_id: str, trial: int, seed: int) -> TrialRow:
    started = time.perf_counter()
    reused = faults.num_flips == 0
    if reused:
        metrics = campaign.clean.metrics
    else:
        logits = faulty_logits(campaign.injector, campaign.data, faults, campaign.clean_logits)
        metrics = trial_metrics(logits, campaign.data.labels, campaign.clean.predictions)
    record = faults.record()
    return TrialRow(cell_id=cell_id, trial=trial, seed=seed, accuracy=metrics.accuracy, sdc_rate=metrics.sdc_rate,
                    critical_sdc_rate=metrics.critical_sdc_rate, due_rate=metrics.due_rate, flips=record.num_flips,
                    reused=reused, seconds=time.perf_counter() - started, flips_per_bit=tuple(record.per_bit),
                    flips_per_tensor=record.per_tensor)


def run_activation_campaign(
    campaign: ActivationCampaign, plan: CampaignPlan, done: dict[str, dict[int, float]]
) -> Iterator[TrialRow]:
    """Yield one row per trial that ``plan`` still needs, given the trials ``done`` (updated as trials
    complete); the hooks are removed when the campaign ends, however it ends."""
    try:
        for trial, seed, pending in scheduled_trials(plan, done):
            with blame_plugin(*plan.fault_model_item, "sample"):
                all_faults = campaign.trial_faults(plan.bers, seed)
            for index in pending:
                row = _trial_row(campaign, all_faults[index], plan.cell_ids[index], trial, seed)
                done[row.cell_id][trial] = row.accuracy
                yield row
    finally:
        campaign.close()
