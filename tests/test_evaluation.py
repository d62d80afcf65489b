"""Per-trial metrics on a hand-built case with known predictions."""

from __future__ import annotations

import math

import pytest
import torch

from resbench.evaluation import predictions_of, trial_metrics


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
