"""Baseline checksums, chance accuracy and the overhead interval."""

from __future__ import annotations

import json
import math

import pytest
import torch
from scipy import stats
from torch import nn

from resbench.measures import baseline_checksum, chance_accuracy, overhead_interval


def test_checksum_changes_with_any_weight_bit() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))  # a 0-d integer buffer too
    first = baseline_checksum(model)
    assert first == baseline_checksum(model)
    with torch.no_grad():
        model[0].weight.view(-1)[0] = torch.nextafter(model[0].weight.view(-1)[0], torch.tensor(10.0))
    assert baseline_checksum(model) != first


def test_chance_accuracy_is_the_most_frequent_class_share() -> None:
    assert chance_accuracy(torch.tensor([0, 1, 1, 2])) == 50.0


def test_overhead_is_the_median_paired_ratio_with_an_order_statistic_interval() -> None:
    baseline = [1.0] * 15
    protected = [1.0 + 0.01 * index for index in range(15)]  # ratios 0 %, 1 %, ..., 14 %
    median, low, high = overhead_interval(json.dumps({"baseline": baseline, "protected": protected}))
    assert median == pytest.approx(7.0)
    # n = 15: the 4th and 12th order statistics bracket the median with probability >= 95% (Conover).
    assert (low, high) == pytest.approx((3.0, 11.0))
    assert 1 - 2 * stats.binom.cdf(3, 15, 0.5) >= 0.95
    assert all(math.isnan(value) for value in overhead_interval("{}"))
    short = overhead_interval(json.dumps({"baseline": [1.0] * 5, "protected": [1.1] * 5}))
    assert short[0] == pytest.approx(10.0) and math.isnan(short[1])
