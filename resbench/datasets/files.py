"""A dataset from the user's own files, without a plugin: arrays in a ``.npz`` file or tensors in a ``.pt`` file.

The file holds named arrays (``numpy.savez`` names, or the keys of a dict saved with ``torch.save``):

* the split given: ``x_train``, ``y_train``, ``x_test``, ``y_test`` and optionally ``x_val``, ``y_val``
  (without them, validation is carved from the training data, stratified, by ``validation_fraction``);
* the split stated: ``x`` and ``y``, from which ``test_fraction`` is carved for test, then
  ``validation_fraction`` of the rest for validation (both stratified and seeded by ``split_seed``).

Images are ``(N, C, H, W)`` (``layout: NHWC`` for channels last) or ``(N, H, W)`` (one channel); labels are
integers ``0 .. K-1``. ``uint8`` images are scaled to [0, 1]; with ``standardize`` each channel is
standardized with the mean and standard deviation of the training split only. A suite may name the file
instead of the dataset: ``datasets: [data/digits.npz]``. The file's SHA-256 is part of the dataset's
identity (cells and cached baselines). Every problem with the file is bad input, one line naming it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field

from resbench.datasets.base import DatasetOptions, DatasetSplits, limit_test, stratified_split, tensor_splits
from resbench.errors import UsageError
from resbench.models.factory import file_digest

__all__ = ["FILE_DATASET", "FILE_SUFFIXES", "FilesOptions", "dataset_file_identity", "files"]

#: The registered name of the dataset read from a file, and the file suffixes it reads.
FILE_DATASET = "files"
FILE_SUFFIXES = (".npz", ".pt")
_GIVEN = ("x_train", "y_train", "x_test", "y_test")
_POOLED = ("x", "y")


class FilesOptions(DatasetOptions):
    """Options of ``files``."""

    path: Path = Field(description="a .npz (numpy.savez) or .pt (torch.save of a dict of tensors) file")
    test_fraction: float = Field(
        default=0.2, gt=0.0, lt=1.0, description="share carved out for test when the file holds only x and y"
    )
    layout: Literal["NCHW", "NHWC"] = Field(default="NCHW", description="axis order of 4-dimensional images")
    standardize: bool = Field(default=True, description="standardize each channel with training-split statistics")


def dataset_file_identity(name: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """What a dataset entry's file adds to its identity: the file's SHA-256 (empty for other datasets)."""
    if name != FILE_DATASET or "path" not in options:
        return {}
    path = Path(options["path"])
    if not path.is_file():
        raise UsageError(f"dataset {name}: {path} does not exist")
    return {"file_sha256": file_digest(path)}


def _read(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise UsageError(f"dataset {FILE_DATASET}: {path} does not exist")
    if path.suffix not in FILE_SUFFIXES:
        raise UsageError(f"dataset {FILE_DATASET}: {path} is neither a .npz nor a .pt file")
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as archive:
                return {key: archive[key] for key in archive.files}
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise UsageError(f"dataset {FILE_DATASET}: {path} cannot be read: {type(error).__name__}") from None
    if not isinstance(loaded, Mapping) or not all(isinstance(value, torch.Tensor) for value in loaded.values()):
        raise UsageError(f"dataset {FILE_DATASET}: {path} must hold a dict of tensors")
    return {str(key): value.numpy() for key, value in loaded.items()}


def _images(array: np.ndarray, name: str, options: FilesOptions) -> torch.Tensor:
    if array.ndim == 3:
        array = array[:, None]
    elif array.ndim == 4 and options.layout == "NHWC":
        array = array.transpose(0, 3, 1, 2)
    elif array.ndim != 4:
        raise UsageError(f"dataset {FILE_DATASET}: {options.path}: {name} has shape {array.shape}; "
                         "expected (N, C, H, W) or (N, H, W)")
    if not (np.issubdtype(array.dtype, np.number) and not np.issubdtype(array.dtype, np.complexfloating)):
        raise UsageError(f"dataset {FILE_DATASET}: {options.path}: {name} holds {array.dtype}, not numbers")
    images = torch.from_numpy(np.ascontiguousarray(array)).float()
    return images / 255.0 if array.dtype == np.uint8 else images


def _labels(array: np.ndarray, name: str, count: int, options: FilesOptions) -> torch.Tensor:
    if array.ndim != 1 or len(array) != count:
        raise UsageError(f"dataset {FILE_DATASET}: {options.path}: {name} has shape {array.shape}; "
                         f"expected ({count},), one label per image")
    if not np.issubdtype(array.dtype, np.integer) or (count and array.min() < 0):
        raise UsageError(f"dataset {FILE_DATASET}: {options.path}: {name} must hold class indices 0..K-1 "
                         f"(got {array.dtype}{', negative values' if np.issubdtype(array.dtype, np.integer) else ''})")
    return torch.from_numpy(array.astype(np.int64))


def _pair(arrays: dict[str, np.ndarray], split: str, options: FilesOptions) -> tuple[torch.Tensor, torch.Tensor]:
    images_key, labels_key = (f"x_{split}", f"y_{split}") if split else _POOLED
    images = _images(arrays[images_key], images_key, options)
    return images, _labels(arrays[labels_key], labels_key, len(images), options)


def _split_pairs(arrays: dict[str, np.ndarray], options: FilesOptions) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(train, validation, test) pairs: given by the file, or carved as the options state."""
    if all(key in arrays for key in _GIVEN):
        train, test = _pair(arrays, "train", options), _pair(arrays, "test", options)
        if "x_val" in arrays or "y_val" in arrays:
            return [train, _pair(arrays, "val", options), test]
        kept, carved = stratified_split(train[1], options.validation_fraction, options.split_seed)
        return [(train[0][index], train[1][index]) for index in (kept, carved)] + [test]
    if all(key in arrays for key in _POOLED):
        images, labels = _pair(arrays, "", options)
        rest, held_out = stratified_split(labels, options.test_fraction, options.split_seed)
        kept, carved = stratified_split(labels[rest], options.validation_fraction, options.split_seed + 1)
        return [(images[index], labels[index]) for index in (rest[kept], rest[carved], held_out)]
    raise UsageError(f"dataset {FILE_DATASET}: {options.path} holds {', '.join(sorted(arrays)) or 'nothing'}; "
                     f"expected {', '.join(_GIVEN)} (optionally x_val, y_val) or x and y")


def _standardized(pairs: list[tuple[torch.Tensor, torch.Tensor]]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Every split standardized per channel with the training split's statistics."""
    train_images = pairs[0][0]
    mean = train_images.mean(dim=(0, 2, 3), keepdim=True)
    std = train_images.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-12)
    return [((images - mean) / std, labels) for images, labels in pairs]


def files(options: FilesOptions, data_root: object = None) -> DatasetSplits:
    """Images and labels from a .npz or .pt file, split as the file gives or as the options state."""
    pairs = _split_pairs(_read(options.path), options)
    shapes = {tuple(images.shape[1:]) for images, _ in pairs}
    if len(shapes) != 1:
        raise UsageError(f"dataset {FILE_DATASET}: {options.path}: the splits' images differ in shape {sorted(shapes)}")
    if options.standardize:
        pairs = _standardized(pairs)
    num_classes = int(max(int(labels.max()) for _, labels in pairs if len(labels)) + 1)
    train, validation, test = (tensor_splits(images, labels, [np.arange(len(labels))])[0] for images, labels in pairs)
    key = {"name": FILE_DATASET, "options": options.model_dump(mode="json", exclude={"test_limit"}),
           **dataset_file_identity(FILE_DATASET, {"path": options.path})}
    c, h, w = next(iter(shapes))
    return DatasetSplits(FILE_DATASET, train, validation, limit_test(test, options.test_limit, options.split_seed),
                         (int(c), int(h), int(w)), num_classes, key)
