"""Profiling reads a seeded sample of the training split with the evaluation transforms: bounds reproduce."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

from resbench.datasets.base import DatasetOptions
from resbench.datasets.vision import _carve
from resbench.engine.formats import resolve_format
from resbench.errors import PluginError
from resbench.methods import PrepareContext, activation_call_sites, bounded_sites, components, set_profiled_bounds
from resbench.plugins import get_registries

IMAGES = torch.rand(120, 1, 8, 8, generator=torch.Generator().manual_seed(3))
LABELS = torch.arange(120) % 4


class Images(Dataset[Any]):
    """Fixed images; ``augment`` adds a random flip and noise from the global RNG, as torchvision's
    RandomHorizontalFlip and RandomCrop draw theirs."""

    def __init__(self, augment: bool) -> None:
        self.augment = augment
        self.targets = LABELS.tolist()

    def __len__(self) -> int:
        return len(IMAGES)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = IMAGES[index]
        if self.augment:
            if torch.rand(()) < 0.5:
                image = image.flip(-1)
            image = image + 0.5 * torch.rand(image.shape)
        return image, int(LABELS[index])


def _context() -> PrepareContext:
    train, validation, train_plain = _carve(Images(False), Images(True), LABELS.tolist(),
                                            DatasetOptions(validation_fraction=0.25))
    return PrepareContext(train=train, validation=validation, image_shape=(1, 8, 8), num_classes=4,
                          device=torch.device("cpu"), seed=5, number_format=resolve_format("fp32"),
                          batch_size=16, train_plain=train_plain)


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(144, 4), nn.ReLU()).eval()


def _bounds(model: nn.Module) -> list[torch.Tensor]:
    return [module.bound.detach().clone() for module in bounded_sites(model, activation_call_sites(model)).values()]


def test_the_training_part_with_evaluation_transforms_holds_the_same_images_as_the_augmented_one() -> None:
    context = _context()
    assert context.train_plain is not None and context.profiling is context.train_plain
    assert context.train.indices == context.train_plain.indices  # type: ignore[attr-defined]


def test_profiling_twice_with_the_same_seed_gives_identical_bounds_on_an_augmented_dataset() -> None:
    context = _context()
    method = get_registries().methods.build("recipe", {"activation": "zero-above", "optimizer": "profile-max",
                                                       "granularity": "channel"}).value
    built = method.build(_model(), context)
    sites = activation_call_sites(built)
    results = []
    for global_seed in (1, 2):  # the augmentation's random draws differ between the two profilings
        torch.manual_seed(global_seed)
        model = copy.deepcopy(built)
        set_profiled_bounds(model, sites, context, fraction=0.5)
        results.append(_bounds(model))
    assert all(torch.equal(first, second) for first, second in zip(*results, strict=True))
    assert all(torch.isfinite(bound).all() for bound in results[0])


class _Profiled(Exception):
    """Stops a fit once it has asked for a profile."""


@pytest.mark.parametrize("name", ["ranger", "clipact", "fitact", "proact"])
def test_every_bounding_method_profiles_the_training_split_without_augmentation(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    context = _context()
    seen: list[Any] = []

    def recording(model: nn.Module, data: Any, *arguments: Any, **keywords: Any) -> Any:
        seen.append(data)
        raise _Profiled

    monkeypatch.setattr(components, "profile_activations", recording)
    method = get_registries().methods.build(name).value
    model = method.build(_model(), context)
    with pytest.raises(PluginError) as raised:
        method.fit(model, context)
    assert isinstance(raised.value.__cause__, _Profiled)
    sample = seen[0]
    assert sample is context.train_plain or sample.dataset is context.train_plain
