"""Activation profiling checked against a hand computation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from resbench.methods.profiling import profile_activations
from resbench.models import build_model
from resbench.models.callsites import rewrite_activation_call_sites


class TwoSites(nn.Module):
    """conv -> relu (C,H,W site) -> flatten -> linear -> relu (feature site)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, padding=1)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(2 * 4 * 4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.fc(self.relu(self.conv(x)).flatten(1)))


def _data() -> TensorDataset:
    generator = torch.Generator().manual_seed(0)
    return TensorDataset(torch.randn(37, 1, 4, 4, generator=generator), torch.zeros(37, dtype=torch.int64))


def test_profile_matches_hand_computation() -> None:
    torch.manual_seed(0)
    model = TwoSites().eval()
    data = _data()
    profiles = profile_activations(model, data, "cpu", batch_size=10, quantiles=(0.5, 0.9))
    assert list(profiles) == ["relu", "relu_1"]
    with torch.no_grad():
        conv_out = torch.relu(model.conv(data.tensors[0]))
        fc_out = torch.relu(model.fc(conv_out.flatten(1)))
    for name, expected in (("relu", conv_out), ("relu_1", fc_out)):
        profile = profiles[name]
        per_image = expected.flatten(1).amax(1)
        assert profile.images == 37
        assert torch.equal(profile.per_image_max, per_image)
        assert profile.max == float(expected.max())
        assert torch.equal(profile.neuron_max, expected.amax(0))
        channels = expected.transpose(0, 1).reshape(expected.shape[1], -1).amax(1)
        assert torch.equal(profile.channel_max, channels)
        for q in (0.5, 0.9):
            assert profile.image_max_quantiles[q] == pytest.approx(np.quantile(per_image.numpy(), q), rel=1e-6)
            assert profile.value_quantiles[q] == pytest.approx(np.quantile(expected.numpy(), q), rel=1e-6, abs=1e-7)
    assert profiles["relu"].neuron_max.shape == (2, 4, 4) and profiles["relu_1"].neuron_max.shape == (5,)


def test_value_sample_is_bounded_seeded_and_unbiased() -> None:
    model = TwoSites().eval()
    first = profile_activations(model, _data(), "cpu", value_samples=100, batch_size=8)["relu"]
    second = profile_activations(model, _data(), "cpu", value_samples=100, batch_size=8)["relu"]
    assert len(first.value_sample) == 100 and torch.equal(first.value_sample, second.value_sample)
    assert first.value_sample.max() <= first.max


def test_limit_loader_and_rewritten_model() -> None:
    model = build_model("test-cnn", (1, 8, 8), 10).eval()
    rewritten = rewrite_activation_call_sites(model)
    data = TensorDataset(torch.randn(50, 1, 8, 8), torch.zeros(50, dtype=torch.int64))
    from_loader = profile_activations(rewritten, DataLoader(data, batch_size=16), "cpu", samples=20)
    first_twenty = profile_activations(model, TensorDataset(*data[:20]), "cpu", batch_size=7)
    assert list(from_loader) == list(first_twenty) and len(from_loader) == 7
    for name, profile in from_loader.items():
        assert profile.images == 20
        assert torch.allclose(profile.per_image_max, first_twenty[name].per_image_max)
    assert from_loader["act6"].max <= 6.0 and from_loader["block.relu_1"].channel_max.shape == (8,)


def test_a_dataset_is_profiled_on_a_seeded_random_sample_not_its_first_images() -> None:
    """Splits may be ordered by class: profiling the first N images of a sorted split sees one class only."""
    model = nn.Sequential(nn.Flatten(), nn.ReLU())
    # Image i holds the value i; the first 40 are class 0, the last 40 class 1: sorted by class.
    images = torch.arange(80, dtype=torch.float32).view(80, 1, 1, 1).expand(80, 1, 2, 2).contiguous()
    data = TensorDataset(images, (torch.arange(80) >= 40).long())
    sampled = profile_activations(model, data, "cpu", samples=20, seed=3)["1"]
    assert sampled.images == 20 and sampled.max >= 40  # the sample reaches the second class
    assert len(set(sampled.per_image_max.tolist())) == 20  # 20 distinct images
    again = profile_activations(model, data, "cpu", samples=20, seed=3)["1"]
    assert torch.equal(sampled.per_image_max, again.per_image_max)  # seeded: the same sample
    other = profile_activations(model, data, "cpu", samples=20, seed=4)["1"]
    assert not torch.equal(sampled.per_image_max, other.per_image_max)
