"""Weight transforms: how a layer's weight is stored and read back (SAF, weight scaling).

A :class:`WeightTransform` gives every convolution and linear layer a *read-back* module, registered
with :mod:`torch.nn.utils.parametrize`: the layer stores a tensor ``original`` (what the memory holds,
what faults hit and what the number format encodes) and computes with ``read_back(original)``. The
read-back module's ``right_inverse(weight)`` sets the stored tensor from the trained weight, so a
transform applied to a trained model starts from it (SAF's adaptation, the scaled weight ``c * W``).
Biases are not transformed.

The fault engine names a parametrized weight's stored ``original`` like the plain weight
(``features.0.weight``, see :mod:`resbench.engine.faultspace`): a protected model and the unprotected one share
their fault sites (common random numbers). Constants of a read-back module (a scale factor) are
buffers of that module, outside the fault space, as a quantizer's per-tensor scale is: they are part of
the program, not of the stored weights.

:class:`TransformMethod` turns a transform into a method (``saf-tanh``, ``wscale``; the ad-hoc
``transform`` method names any registered transform). Methods compose with ``+``
(:mod:`resbench.methods.composition`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

import pydantic
from torch import nn
from torch.nn.utils import parametrize

from resbench.config import ComponentSpec
from resbench.engine.faultspace import stored_attributes
from resbench.errors import PluginError, UsageError, blame_plugin
from resbench.methods.base import Method, PrepareContext
from resbench.methods.guards import check_finite
from resbench.methods.recipes import normalized_spec
from resbench.options import NoOptions
from resbench.options import Options as OptionsModel
from resbench.registry import Built

__all__ = [
    "TransformMethod",
    "TransformMethodOptions",
    "WeightTransform",
    "apply_weight_transform",
    "frozen_method_tensors",
    "transformed_layers",
    "weight_layers",
]

_LAYER_TYPES = (nn.modules.conv._ConvNd, nn.Linear)


def weight_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Every convolution and linear layer of ``model`` with a weight, by qualified name, in module order."""
    return [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, _LAYER_TYPES) and "parametrizations" not in name.split(".")
    ]


def transformed_layers(model: nn.Module) -> list[str]:
    """Names of the layers whose weight is stored through a transform (a parametrization)."""
    return [name for name, module in weight_layers(model) if parametrize.is_parametrized(module, "weight")]


class WeightTransform(ABC):
    """How weights are stored and read back (registered with ``register_weight_transforms``).

    :meth:`read_back` returns, for one layer, the module whose ``forward(stored)`` is the weight the
    layer computes with and whose ``right_inverse(weight)`` is what is stored for a trained ``weight``.
    :meth:`fit` may then train the stored tensors (SAF fine-tunes them); it sees the training and
    validation splits only.
    """

    Options: ClassVar[type[OptionsModel]] = NoOptions
    #: Whether what is stored depends on the deployment number format (weight scaling's t does).
    format_dependent: ClassVar[bool] = False
    #: Why a model on quantized kernels cannot carry the transform (one line); None when it can. Quantized
    #: kernels multiply the stored codes directly: nothing reads a weight back through a function.
    not_quantizable: ClassVar[str | None] = ("quantized kernels compute with the stored codes: there is no "
                                             "read-back between memory and the multiply")

    def __init__(self, options: OptionsModel) -> None:
        self.options = options

    @abstractmethod
    def read_back(self, name: str, layer: nn.Module, context: PrepareContext) -> nn.Module:
        """The read-back module of layer ``name`` (its trained weight is ``layer.weight``)."""

    def fit(self, model: nn.Module, layers: list[str], context: PrepareContext) -> dict[str, Any]:
        """Train what the transform stores, in place (``layers`` are the transformed layers); default: nothing."""
        return {}


def apply_weight_transform(model: nn.Module, transform: WeightTransform, context: PrepareContext) -> list[str]:
    """Store the weight of every conv/linear layer of ``model`` through ``transform``; returns the layers.

    A layer whose weight is already transformed is refused: two transforms on one weight would make
    the stored tensor of the first the "weight" of the second, which no method means.
    """
    names = []
    for name, layer in weight_layers(model):
        if parametrize.is_parametrized(layer, "weight"):
            raise UsageError(f"layer {name!r} already stores its weight through a transform; "
                             "a layer takes one weight transform")
        parametrize.register_parametrization(layer, "weight", transform.read_back(name, layer, context))
        names.append(name)
    return names


@contextmanager
def frozen_method_tensors(model: nn.Module) -> Iterator[None]:
    """Exclude the tensors methods store (bounds, thresholds) from training inside the block.

    Used when a weight transform fine-tunes a model that already carries another method's state (a
    composition): the bounds are that method's to fit.
    """
    frozen = []
    for module in model.modules():
        for attribute in stored_attributes(module):
            value = getattr(module, attribute, None)
            if isinstance(value, nn.Parameter) and value.requires_grad:
                value.requires_grad_(False)
                frozen.append(value)
    try:
        yield
    finally:
        for value in frozen:
            value.requires_grad_(True)


class TransformMethodOptions(OptionsModel):
    """Options of the ad-hoc ``transform`` method: which weight transform."""

    transform: ComponentSpec = pydantic.Field(description="weight transform (name or {name, options})")

    @pydantic.model_validator(mode="after")
    def _normalize_transform(self) -> TransformMethodOptions:
        object.__setattr__(self, "transform", normalized_spec("transforms", self.transform, "weight transform"))
        return self


class TransformMethod(Method):
    """A method that stores every conv/linear weight through one weight transform.

    Subclasses name their transform in :meth:`transform_spec` (``wscale``: ``weight-scaling`` with the
    method's own options); the base class takes it from its ``transform`` option.
    """

    Options: ClassVar[type[OptionsModel]] = TransformMethodOptions
    changes: ClassVar[frozenset[str]] = frozenset({"weights"})

    def __init__(self, options: OptionsModel) -> None:
        super().__init__(options)
        from resbench.plugins import get_registries

        spec = self.transform_spec()
        self.transform: Built[Any] = get_registries().transforms.build(spec.name, spec.options,
                                                                       where=f"weight transform {spec.name}")

    def transform_spec(self) -> ComponentSpec:
        """The transform this method applies, with its options."""
        assert isinstance(self.options, TransformMethodOptions)
        return self.options.transform

    @property
    def format_dependent(self) -> bool:
        transform: WeightTransform = self.transform.value
        return transform.format_dependent

    def quantized_refusal(self) -> str | None:
        transform: WeightTransform = self.transform.value
        reason = transform.not_quantizable
        return None if reason is None else f"weight transform {self.transform.entry.name}: {reason}"

    def cache_identity(self) -> dict[str, Any]:
        from resbench.plugins import get_registries

        entry = self.transform.entry
        return {entry.name: {"plugin": entry.plugin, "version": get_registries().plugins[entry.plugin].version}}

    def _label(self) -> str:
        return f"weight transform {self.transform.entry.name!r}"

    def build(self, model: nn.Module, context: PrepareContext) -> nn.Module:
        with blame_plugin(self.transform.entry.plugin, self._label(), "build"):
            layers = apply_weight_transform(model, self.transform.value, context)
        if not layers:
            raise UsageError(f"{type(model).__name__} has no convolution or linear layer to transform")
        check_finite(model, self.transform.entry.plugin, self._label(), "build", allow_unset=True)
        return model

    def fit(self, model: nn.Module, context: PrepareContext) -> dict[str, Any]:
        transform: WeightTransform = self.transform.value
        layers = transformed_layers(model)
        with blame_plugin(self.transform.entry.plugin, self._label(), "fit"), frozen_method_tensors(model):
            metrics = transform.fit(model, layers, context)
        if transformed_layers(model) != layers:
            raise PluginError(self.transform.entry.plugin, self._label(), "fit",
                              "fit() changed which layers are transformed; transform them in read_back")
        # Bounds of an activation method composed with this one are fitted later: +inf is unset, not broken.
        check_finite(model, self.transform.entry.plugin, self._label(), "fit", allow_unset=True)
        return dict(metrics)
