"""Batches from a dataset, fast for in-memory tensors, through a DataLoader otherwise."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset

__all__ = ["Batches", "iterate_batches", "tensor_view"]

Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]


def tensor_view(dataset: Dataset[Any]) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Images and labels of an in-memory dataset (a TensorDataset, or a Subset of one), else None."""
    if isinstance(dataset, TensorDataset) and len(dataset.tensors) == 2:
        images, labels = dataset.tensors
        return images, labels
    if isinstance(dataset, Subset):
        inner = tensor_view(dataset.dataset)
        if inner is not None:
            index = torch.as_tensor(list(dataset.indices), dtype=torch.int64)
            return inner[0][index], inner[1][index]
    return None


def _tensor_batches(
    images: torch.Tensor, labels: torch.Tensor, batch_size: int, order: torch.Tensor | None
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    for start in range(0, len(labels), batch_size):
        if order is None:
            yield images[start : start + batch_size], labels[start : start + batch_size]
        else:
            index = order[start : start + batch_size]
            yield images[index], labels[index]


def iterate_batches(
    data: Dataset[Any] | Batches,
    batch_size: int = 256,
    *,
    shuffle: bool = False,
    generator: torch.Generator | None = None,
    num_workers: int = 0,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield (images, labels) batches on the CPU.

    ``data`` is a Dataset (batched here; in-memory tensors are sliced directly instead of collated
    sample by sample) or anything that already yields batches, such as a DataLoader, used as it is.
    """
    if not isinstance(data, Dataset):
        for images, labels, *_ in data:
            yield images, labels
        return
    view = tensor_view(data)
    if view is not None:
        order = torch.randperm(len(view[1]), generator=generator) if shuffle else None
        yield from _tensor_batches(view[0], view[1], batch_size, order)
        return
    loader = DataLoader(data, batch_size=batch_size, shuffle=shuffle, generator=generator,
                        num_workers=num_workers)
    for images, labels in loader:
        yield images, labels
