"""Helpers shared by the model definitions."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import torch
from torch import nn

from resbench.errors import UsageError

__all__ = ["ImageShape", "feature_count", "training_family"]

ImageShape = tuple[int, int, int]
Factory = TypeVar("Factory", bound=Callable[..., nn.Module])


def training_family(family: str) -> Callable[[Factory], Factory]:
    """Mark a model factory with the baseline training recipe family it uses (see resbench.training).

    Third-party factories may set the ``training_family`` attribute the same way; without it a model is
    trained with the ``generic`` recipe.
    """

    def mark(factory: Factory) -> Factory:
        factory.training_family = family  # type: ignore[attr-defined]
        return factory

    return mark


def feature_count(features: nn.Module, image_shape: ImageShape, model_name: str) -> int:
    """Number of values ``features`` produces for one image, found by a dry run on zeros.

    A too-small input raises :class:`UsageError` naming the model and the shape.
    """
    try:
        with torch.no_grad():
            return int(features(torch.zeros(1, *image_shape)).numel())
    except RuntimeError as error:
        raise UsageError(
            f"model {model_name!r} cannot take images of shape {tuple(image_shape)}: {error}"
        ) from None
