"""What a resilience method is: a recipe that turns a trained model into a protected one.

A method works in two steps so that its expensive part can be cached:

* :meth:`Method.build` changes the model's structure (replace activations with bounded ones, store
  weights through a transform) from cheap, deterministic information such as profiled maxima;
* :meth:`Method.fit` tunes what the method learns (bounds, thresholds) in place. The runner stores the
  fitted state dict in the artifact cache and, on a later run, rebuilds the structure and loads it.

Tensors a method adds and keeps in memory (bounds, thresholds) are marked as stored with
:func:`resbench.faultspace.mark_stored`, so they join the fault space: a method that stores more state
exposes more bits to faults.
"""

from __future__ import annotations

from abc import ABC
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from resbench.options import NoOptions
from resbench.options import Options as OptionsModel

if TYPE_CHECKING:
    from resbench.datasets import DatasetSplits

__all__ = ["Method", "PrepareContext"]


@dataclass(frozen=True)
class PrepareContext:
    """What a method may use while preparing: the training and validation splits, never the test split."""

    splits: DatasetSplits
    device: torch.device
    seed: int
    format_name: str
    batch_size: int = 256
    progress: bool = False


class Method(ABC):  # noqa: B024 - every step has a meaningful default; subclasses override what they need
    """A resilience method. The unprotected baseline overrides nothing."""

    Options: ClassVar[type[OptionsModel]] = NoOptions
    #: Paper the method comes from, shown in leaderboards.
    citation: ClassVar[str] = ""
    #: How resbench's setting differs from the paper's, shown in leaderboards.
    notes: ClassVar[str] = ""
    #: Whether the prepared model depends on the number format (weight scaling's target range does).
    format_dependent: ClassVar[bool] = False
    #: Whether :meth:`fit` does work worth caching.
    trains: ClassVar[bool] = False

    def __init__(self, options: OptionsModel) -> None:
        self.options = options

    def build(self, model: nn.Module, context: PrepareContext) -> nn.Module:
        """Return the protected model's structure; the baseline returns ``model`` unchanged."""
        return model

    def fit(self, model: nn.Module, context: PrepareContext) -> dict[str, Any]:
        """Tune the method's own parameters in place; returns metrics to keep beside the cached result."""
        return {}
