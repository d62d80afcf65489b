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
    "TEST_SUBSET",
    "DatasetOptions",
    "DatasetSplits",
    "limit_test",
    "normalize",
    "random_subset",
    "stratified_sample",
    "stratified_split",
]


@dataclass
class DatasetSplits:
    """Train, validation and test splits of one dataset, with what a model needs to adapt to it.

    ``validation`` is carved from the training data, so thresholds and bounds tuned on it never see the
    test split. ``key`` is everything that determines the training data (name and options, without
    evaluation-only options such as ``test_limit``): baselines are cached under it, with the version of the
    plugin providing the dataset, which :func:`resbench.datasets.load_dataset` adds. ``train_plain`` is
    the training part with the evaluation transforms (no augmentation) where ``train`` is augmented;
    profiling reads it (:attr:`profiling`), so bounds do not depend on random crops and flips.
    """

    name: str
    train: Dataset[Any]
    validation: Dataset[Any]
    test: Dataset[Any]
    image_shape: tuple[int, int, int]
    num_classes: int
    key: dict[str, Any] = field(default_factory=dict)
    train_plain: Dataset[Any] | None = None

    @property
    def profiling(self) -> Dataset[Any]:
        """The training part as profiling reads it: with the evaluation transforms."""
        return self.train if self.train_plain is None else self.train_plain


class DatasetOptions(Options):
    """Options every dataset takes."""

    test_limit: int | None = Field(
        default=None, ge=1,
        description="evaluate on N test images only (quick runs): a class-stratified sample drawn with split_seed",
    )
    validation_fraction: float = Field(
        default=0.1, gt=0.0, lt=1.0, description="share of the training data carved out for validation"
    )
    split_seed: int = Field(
        default=0, ge=0, description="seed of the stratified train/validation split and of the test_limit sample"
    )


# Options that only change what is evaluated, never what a model is trained on.
EVALUATION_ONLY_OPTIONS = frozenset({"test_limit"})
# How ``test_limit`` picks its images; cells that use it record this in their definition.
TEST_SUBSET = "class-stratified sample, proportional allocation by largest remainder, seeded by split_seed"


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


def stratified_sample(labels: np.ndarray, count: int, seed: int) -> np.ndarray:
    """``count`` indices, each class represented in proportion to its size (largest remainder), each
    class's members drawn by a generator seeded with ``(seed, label)``; sorted.

    Splits may be ordered by class, so a prefix would evaluate a few classes only.
    """
    classes, sizes = np.unique(labels, return_counts=True)
    quotas = sizes * count / labels.size
    allocation = np.floor(quotas).astype(np.int64)
    order = np.argsort(-(quotas - allocation), kind="stable")
    allocation[order[: count - int(allocation.sum())]] += 1
    chosen = [
        np.random.default_rng([seed, int(label)]).permutation(np.flatnonzero(labels == label))[:quota]
        for label, quota in zip(classes, allocation, strict=True)
    ]
    return np.sort(np.concatenate(chosen))


def _labels_of(test: Dataset[Any]) -> np.ndarray:
    if isinstance(test, TensorDataset):
        return np.asarray(test.tensors[1].tolist())
    targets = getattr(test, "targets", None)
    if targets is not None:
        return np.asarray(targets.tolist() if isinstance(targets, torch.Tensor) else list(targets))
    return np.asarray([int(test[index][1]) for index in range(len(test))])  # type: ignore[arg-type]


def limit_test(test: Dataset[Any], limit: int | None, seed: int = 0) -> Dataset[Any]:
    """A class-stratified sample of ``limit`` test images (:func:`stratified_sample`; the whole split
    when ``limit`` is None or not smaller than the split)."""
    size = len(test)  # type: ignore[arg-type]
    if limit is None or limit >= size:
        return test
    indices = torch.from_numpy(stratified_sample(_labels_of(test), limit, seed))
    if isinstance(test, TensorDataset):
        return TensorDataset(*(tensor[indices] for tensor in test.tensors))
    return Subset(test, indices.tolist())


def tensor_splits(
    images: torch.Tensor, labels: torch.Tensor, indices: Sequence[np.ndarray]
) -> list[TensorDataset]:
    """One TensorDataset per index array."""
    return [TensorDataset(images[index].contiguous(), labels[index].contiguous()) for index in indices]
