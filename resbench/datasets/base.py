"""What every dataset plugin returns, the options all datasets share, and the split helpers."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from pydantic import Field
from torch.utils.data import Dataset, Subset, TensorDataset

from resbench.options import Options

__all__ = [
    "DatasetOptions",
    "DatasetSplits",
    "limit_test",
    "normalize",
    "random_subset",
    "stratified_split",
]


@dataclass
class DatasetSplits:
    """Train, validation and test splits of one dataset, with what a model needs to adapt to it.

    ``validation`` is carved from the training data, so thresholds and bounds tuned on it never see the
    test split. ``key`` is everything that determines the training data (name and options, without
    evaluation-only options such as ``test_limit``): baselines are cached under it.
    """

    name: str
    train: Dataset[Any]
    validation: Dataset[Any]
    test: Dataset[Any]
    image_shape: tuple[int, int, int]
    num_classes: int
    key: dict[str, Any] = field(default_factory=dict)


class DatasetOptions(Options):
    """Options every dataset takes."""

    test_limit: int | None = Field(
        default=None, ge=1, description="evaluate on the first N test images only (quick runs)"
    )
    validation_fraction: float = Field(
        default=0.1, gt=0.0, lt=1.0, description="share of the training data carved out for validation"
    )
    split_seed: int = Field(default=0, ge=0, description="seed of the stratified train/validation split")


# Options that only change what is evaluated, never what a model is trained on.
EVALUATION_ONLY_OPTIONS = frozenset({"test_limit"})


def stratified_split(
    labels: Sequence[int] | np.ndarray | torch.Tensor, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Split indices into (kept, carved) with ``fraction`` of every class carved out, deterministically.

    Each class is shuffled with its own generator derived from ``seed``, and at least one sample per class
    goes each way when the class has two or more. Both index arrays come back sorted.
    """
    labels_array = np.asarray(labels.tolist() if isinstance(labels, torch.Tensor) else labels)
    kept: list[np.ndarray] = []
    carved: list[np.ndarray] = []
    for label in np.unique(labels_array):
        members = np.flatnonzero(labels_array == label)
        order = np.random.default_rng([seed, int(label)]).permutation(members)
        count = round(len(order) * fraction)
        if len(order) >= 2:
            count = min(max(count, 1), len(order) - 1)
        carved.append(order[:count])
        kept.append(order[count:])
    return np.sort(np.concatenate(kept)), np.sort(np.concatenate(carved))


def random_subset(dataset: Dataset[Any], size: int | None, seed: int) -> Dataset[Any]:
    """A seeded uniform random sample of ``size`` items of ``dataset`` (all of it when ``size`` is None or
    at least its length), in dataset order. Splits may be ordered by class, so never take the first N."""
    total = len(dataset)  # type: ignore[arg-type]
    if size is None or size >= total:
        return dataset
    chosen = np.sort(np.random.default_rng([seed, total, size]).choice(total, size=size, replace=False))
    if isinstance(dataset, TensorDataset):
        index = torch.from_numpy(chosen)
        return TensorDataset(*(tensor[index] for tensor in dataset.tensors))
    return Subset(dataset, chosen.tolist())


def normalize(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Standardize images (N, C, H, W) per channel, as torchvision's ``Normalize`` does."""
    mean_tensor = torch.tensor(mean, dtype=images.dtype).view(1, -1, 1, 1)
    std_tensor = torch.tensor(std, dtype=images.dtype).view(1, -1, 1, 1)
    return (images - mean_tensor) / std_tensor


def limit_test(test: Dataset[Any], limit: int | None) -> Dataset[Any]:
    """The first ``limit`` test images (all of them when ``limit`` is None or larger than the split)."""
    size = len(test)  # type: ignore[arg-type]
    if limit is None or limit >= size:
        return test
    if isinstance(test, TensorDataset):
        return TensorDataset(*(tensor[:limit] for tensor in test.tensors))
    return Subset(test, range(limit))


def tensor_splits(
    images: torch.Tensor, labels: torch.Tensor, indices: Sequence[np.ndarray]
) -> list[TensorDataset]:
    """One TensorDataset per index array."""
    return [TensorDataset(images[index].contiguous(), labels[index].contiguous()) for index in indices]
