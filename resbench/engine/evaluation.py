"""Evaluation of a model on preloaded data and the per-trial metrics.

Non-finite logits are never a crash: such a sample counts as wrong and as a detected unrecoverable
error (DUE). Rates are percentages of the evaluated samples.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils import parametrize
from torch.utils.data import Dataset

from resbench.datasets import tensor_view
from resbench.errors import UsageError

__all__ = [
    "MAX_EVALUATION_BYTES",
    "EvaluationData",
    "TrialMetrics",
    "load_evaluation_data",
    "predict_logits",
    "predictions_of",
    "trial_metrics",
]


MAX_EVALUATION_BYTES = 16 * 2**30


@dataclass(frozen=True)
class EvaluationData:
    """Evaluation images and labels, loaded once onto the device."""

    images: torch.Tensor
    labels: torch.Tensor
    batch_size: int

    @property
    def size(self) -> int:
        """Number of samples."""
        return int(self.labels.shape[0])


@dataclass(frozen=True)
class TrialMetrics:
    """Outcome of one evaluation under faults, in percent of samples."""

    accuracy: float
    sdc_rate: float
    critical_sdc_rate: float
    due_rate: float


def load_evaluation_data(
    dataset: Dataset, device: torch.device, batch_size: int, max_bytes: int = MAX_EVALUATION_BYTES
) -> EvaluationData:
    """Stack a dataset of ``(image, label)`` pairs into two tensors on ``device``, loaded once per run.

    Every trial evaluates the whole set, so it stays in memory; a set larger than ``max_bytes`` is
    refused with a hint to evaluate on the first N test images (``test_limit``).
    """
    if len(dataset) == 0:  # type: ignore[arg-type]
        raise UsageError("the test split is empty: there is nothing to evaluate")
    first_image = torch.as_tensor(dataset[0][0])
    needed = len(dataset) * first_image.numel() * 4  # type: ignore[arg-type]
    if needed > max_bytes:
        raise UsageError(
            f"the test split ({len(dataset)} images) would take {needed / 2**30:.1f} GiB as float32, more than "  # type: ignore[arg-type]
            f"{max_bytes / 2**30:.0f} GiB; evaluate on fewer images with the dataset option test_limit"
        )
    view = tensor_view(dataset)
    if view is not None:
        images, labels = view
    else:
        pairs = [dataset[index] for index in range(len(dataset))]  # type: ignore[arg-type]
        images = torch.stack([torch.as_tensor(image) for image, _ in pairs])
        labels = torch.as_tensor([int(label) for _, label in pairs])
    return EvaluationData(images.to(device, torch.float32), labels.to(device, torch.int64), batch_size)


@torch.inference_mode()
def predict_logits(model: nn.Module, data: EvaluationData) -> torch.Tensor:
    """Logits for every evaluation sample, in large batches under inference mode.

    A weight stored through a transform (a parametrization: SAF's ``tau(W)``, scaling's ``W / c``) is read
    back once per pass, not once per batch: the stored values cannot change during a pass.
    """
    with parametrize.cached():
        outputs = [model(data.images[start : start + data.batch_size])
                   for start in range(0, data.size, data.batch_size)]
    return torch.cat(outputs).float()


def predictions_of(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Predicted classes (``-1`` where a row has a NaN or Inf) and the mask of non-finite rows."""
    non_finite = ~torch.isfinite(logits).all(dim=1)
    predictions = torch.where(non_finite, torch.full_like(logits[:, 0], -1, dtype=torch.int64),
                              logits.nan_to_num(0.0).argmax(dim=1))
    return predictions, non_finite


def trial_metrics(logits: torch.Tensor, labels: torch.Tensor, clean_predictions: torch.Tensor) -> TrialMetrics:
    """Accuracy, SDC, critical SDC and DUE rates of one faulty evaluation.

    * SDC: a finite prediction that differs from the fault-free prediction (silent data corruption).
    * critical SDC: an SDC on a sample the fault-free model classified correctly, now wrong.
    * DUE: non-finite logits (detected unrecoverable error); counted as wrong, not as SDC.
    """
    predictions, non_finite = predictions_of(logits)
    clean_correct = clean_predictions == labels
    changed = (predictions != clean_predictions) & ~non_finite
    counts = torch.stack(
        [
            (predictions == labels).sum(),
            changed.sum(),
            (changed & clean_correct & (predictions != labels)).sum(),
            non_finite.sum(),
        ]
    ).tolist()
    scale = 100.0 / labels.shape[0]
    return TrialMetrics(*(count * scale for count in counts))
