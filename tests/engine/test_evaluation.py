"""Per-trial metrics on a hand-built case with known predictions."""

from __future__ import annotations

import math

import pytest
import torch

from resbench.engine.evaluation import load_evaluation_data, predictions_of, trial_metrics
from resbench.errors import UsageError


def _logits(predictions: list[int], classes: int = 3) -> torch.Tensor:
    logits = torch.zeros(len(predictions), classes)
    for row, label in enumerate(predictions):
        logits[row, label] = 1.0
    return logits


def test_metrics_of_known_predictions() -> None:
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2, 0])
    clean = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 0, 0])  # 9 of 10 correct
    faulty = _logits([0, 2, 2, 0, 1, 2, 1, 1, 0, 0])  # samples 1 and 6 flipped to wrong
    faulty[9] = math.nan  # sample 9 detected (DUE)
    metrics = trial_metrics(faulty, labels, clean)
    assert metrics.accuracy == pytest.approx(60.0)  # 0,2,3,4,5,7 correct
    assert metrics.sdc_rate == pytest.approx(20.0)  # 1 and 6 differ from clean; 9 is a DUE, not an SDC
    assert metrics.critical_sdc_rate == pytest.approx(20.0)
    assert metrics.due_rate == pytest.approx(10.0)


def test_change_on_a_sample_clean_got_wrong_is_sdc_but_not_critical() -> None:
    labels = torch.tensor([0, 1])
    clean = torch.tensor([2, 1])
    metrics = trial_metrics(_logits([1, 1]), labels, clean)
    assert metrics.sdc_rate == pytest.approx(50.0)
    assert metrics.critical_sdc_rate == 0.0
    assert metrics.accuracy == pytest.approx(50.0)


def test_infinite_logits_count_as_wrong() -> None:
    logits = torch.tensor([[math.inf, 0.0], [0.0, 1.0]])
    predictions, non_finite = predictions_of(logits)
    assert predictions.tolist() == [-1, 1]
    assert non_finite.tolist() == [True, False]


class _HugeImages(torch.utils.data.Dataset):  # type: ignore[type-arg]
    """Ten million 3x224x224 images that are never materialized."""

    def __len__(self) -> int:
        return 10_000_000

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return torch.zeros(3, 224, 224), 0


def test_an_evaluation_set_too_large_for_memory_is_refused_with_a_hint() -> None:
    with pytest.raises(UsageError, match="test_limit"):
        load_evaluation_data(_HugeImages(), torch.device("cpu"), 256)


def test_evaluation_data_from_a_subset_keeps_its_order() -> None:
    images = torch.arange(20, dtype=torch.float32).reshape(5, 1, 2, 2)
    subset = torch.utils.data.Subset(torch.utils.data.TensorDataset(images, torch.arange(5)), [3, 1])
    data = load_evaluation_data(subset, torch.device("cpu"), 2)
    assert data.labels.tolist() == [3, 1]
    assert torch.equal(data.images, images[[3, 1]])
