"""Baseline checksums, chance accuracy and the overhead interval."""

from __future__ import annotations

import torch
from torch import nn

from resbench.run.measures import baseline_checksum, chance_accuracy


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
