"""What a resilience method is: a recipe that turns a trained model into a protected one.

A method works in two steps so that its expensive part can be cached:

* :meth:`Method.build` changes the model's structure (replace activations with bounded ones, store
  weights through a transform) from cheap, deterministic information such as output shapes;
* :meth:`Method.fit` tunes what the method learns (bounds, thresholds) in place, on the training and
  validation splits only. resbench calls it whenever the method's class defines it, stores the fitted
  state dict in the artifact cache and, on a later run, rebuilds the structure and loads that state.

Tensors a method adds and keeps in memory (bounds, thresholds) are stored tensors and join the fault
space: a method that stores more state exposes more bits to faults. Declare them on the module class
(``stored_tensors = ("bound",)``, as :class:`resbench.methods.components.BoundedActivation` does) or mark
them with :func:`resbench.engine.faultspace.mark_stored` inside :meth:`Method.build`; either survives the cache.
"""

from __future__ import annotations

from abc import ABC
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn
from torch.utils.data import Dataset

from resbench.engine.faultspace import FaultSpaceOptions
from resbench.engine.formats import NumberFormat
from resbench.options import NoOptions
from resbench.options import Options as OptionsModel

__all__ = ["CITATION_SEPARATOR", "Citation", "Method", "PrepareContext", "defines_fit"]

#: Joins the citations of a composed method's parts in one leaderboard cell.
CITATION_SEPARATOR = "; "


@dataclass(frozen=True)
class Citation:
    """The paper a method (or a component) comes from, shown in leaderboards."""

    authors: str
    title: str
    venue: str
    year: int
    link: str = ""

    def __str__(self) -> str:
        text = f"{self.authors}, \u201c{self.title}\u201d, {self.venue} {self.year}"
        return f"{text}, {self.link}" if self.link else text


@dataclass(frozen=True)
class PrepareContext:
    """What a method may use while preparing: the training and validation splits, never the test split.

    ``validation`` is carved from the training data; tune thresholds on it. ``number_format`` is the
    format the prepared model will be deployed in (used by format-dependent methods such as a
    fault-driven threshold search) and ``fault_space`` the suite's fault-space options. ``train`` may be
    augmented (random crops and flips, for training); ``train_plain`` is the same images with the
    evaluation transforms, where they differ: profile activations on :attr:`profiling`.
    """

    train: Dataset[Any]
    validation: Dataset[Any]
    image_shape: tuple[int, int, int]
    num_classes: int
    device: torch.device
    seed: int
    number_format: NumberFormat
    fault_space: FaultSpaceOptions = field(default_factory=FaultSpaceOptions)
    batch_size: int = 256
    progress: bool = False
    train_plain: Dataset[Any] | None = None

    @property
    def profiling(self) -> Dataset[Any]:
        """The training split with the evaluation transforms (no augmentation): what profiling reads."""
        return self.train if self.train_plain is None else self.train_plain

    @property
    def format_name(self) -> str:
        """Name of the deployment number format."""
        return self.number_format.name


def defines_fit(method: Method) -> bool:
    """Whether ``method``'s class defines :meth:`Method.fit`: resbench then calls it and caches its result."""
    return type(method).fit is not Method.fit


class Method(ABC):  # noqa: B024 - every step has a meaningful default; subclasses override what they need
    """A resilience method. The unprotected baseline overrides nothing."""

    Options: ClassVar[type[OptionsModel]] = NoOptions
    #: Paper the method comes from, shown in leaderboards (a :class:`Citation` or plain text).
    citation: ClassVar[Citation | str] = ""
    #: How resbench's setting differs from the paper's, shown in leaderboards.
    notes: ClassVar[str] = ""
    #: What the method changes, for composing methods with ``+``: ``"activations"`` (it rewrites the
    #: activation call sites) and/or ``"weights"`` (it stores weights through a transform). Two parts of a
    #: composition may not change the same thing; a method that declares nothing cannot be composed.
    changes: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, options: OptionsModel) -> None:
        self.options = options

    def quantized_refusal(self) -> str | None:
        """Why a model converted to PyTorch's quantized kernels (``int8`` with ``engine: torch-ao``) cannot
        carry this method's protection, in one line; None when it can. A method that changes nothing can;
        recipes, transforms and compositions ask their components."""
        return None if not self.changes else "it does not say whether quantized kernels keep its protection"

    @property
    def format_dependent(self) -> bool:
        """Whether the prepared model depends on the number format (then it is prepared per format)."""
        return False

    def build(self, model: nn.Module, context: PrepareContext) -> nn.Module:
        """Return the protected model's structure; the baseline returns ``model`` unchanged."""
        return model

    def fit(self, model: nn.Module, context: PrepareContext) -> dict[str, Any]:
        """Tune the method's own parameters in place; returns metrics to keep beside the cached result."""
        return {}

    def citation_text(self) -> str:
        """The citation as shown in leaderboards (a composition joins its parts')."""
        return str(self.citation)

    def notes_text(self) -> str:
        """The notes as shown in leaderboards (a composition joins its parts')."""
        return self.notes

    def cache_identity(self) -> dict[str, Any]:
        """What else determines the fitted state besides the method's name, plugin version and options
        (a recipe adds its components' plugins and versions)."""
        return {}
