"""The fault space: the stored tensors of a model that faults may hit, in a canonical order.

By default the fault space holds the weight and bias of every convolution and linear layer, every
floating-point parameter held directly by any other module (attention projections such as
``nn.MultiheadAttention``'s ``in_proj_weight``, embeddings, layer norms, class tokens and position
embeddings: every weight matrix a transformer stores), followed by every parameter or buffer a method
declared or marked as stored (:func:`mark_stored`; bounds, thresholds): a method that keeps more state in
memory exposes more bits. Batch norm is left out by default because deployments fold it into the
preceding convolution; layer norm cannot be folded. A CNN of convolutions, linear layers and batch norms
therefore has the fault space it always had. :class:`FaultSpaceOptions` add batch-norm tensors, drop
method tensors or directly held parameters, or select layers by module name pattern or module type and
tensors by name pattern.

**Canonical order and names.** Model tensors come first, in module registration order (weight, bias,
then for batch norm running mean and running variance), method tensors after them. A tensor's
canonical name is its qualified name in the model (``features.0.weight``). A weight under
:mod:`torch.nn.utils.parametrize` (a weight transform storing raw ``W`` and computing with ``tau(W)``)
is stored as ``features.0.parametrizations.weight.original`` but named ``features.0.weight``, so a
protected model and the unprotected one share the same layout prefix and, with the same seed, the same
fault sites in it (common random numbers).
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, cast

import pydantic
import torch
from pydantic import Field
from torch import nn
from torch.nn.utils import parametrize

from resbench.engine.formats import NumberFormat
from resbench.errors import UsageError
from resbench.options import Options

__all__ = [
    "FaultSpace",
    "FaultSpaceLayout",
    "FaultSpaceOptions",
    "StoredTensor",
    "mark_stored",
    "stored_attributes",
]

_MARK = "_resbench_stored_attributes"
_LAYER_ATTRIBUTES = ("weight", "bias")
_NORM_ATTRIBUTES = ("weight", "bias", "running_mean", "running_var")
_LAYER_TYPES = (nn.modules.conv._ConvNd, nn.Linear)
#: Options added later, with their defaults: left out of the identity when at their default.
_LATER_OPTIONS: dict[str, object] = {"direct_parameters": True, "tensors": (), "exclude_tensors": ()}


class FaultSpaceOptions(Options):
    """Which stored tensors faults may hit."""

    batch_norm: bool = Field(
        default=False, description="add batch-norm weight, bias, running mean and running variance"
    )
    method_tensors: bool = Field(default=True, description="include the tensors methods marked as stored")
    layers: tuple[str, ...] = Field(
        default=(), description="keep only modules whose name matches one of these (fnmatch, or 're:' + regex)"
    )
    exclude_layers: tuple[str, ...] = Field(default=(), description="drop modules whose name matches one of these")
    module_types: tuple[str, ...] = Field(
        default=(), description="module class names to take tensors from instead of conv/linear (e.g. Conv2d)"
    )
    direct_parameters: bool = Field(
        default=True,
        description="add parameters held directly by modules other than conv/linear/batch norm (attention, "
        "embeddings, layer norm, tokens); false: conv/linear only",
    )
    tensors: tuple[str, ...] = Field(
        default=(), description="keep only model tensors whose name matches one of these (fnmatch, or 're:' + regex)"
    )
    exclude_tensors: tuple[str, ...] = Field(default=(), description="drop model tensors whose name matches one "
                                             "of these")

    @pydantic.model_serializer(mode="wrap")
    def _identity(self, handler: pydantic.SerializerFunctionWrapHandler) -> dict[str, Any]:
        """Options added after results were first stored are left out at their defaults, so the identity of
        every cell stored before them is unchanged."""
        data: dict[str, Any] = handler(self)
        return {key: value for key, value in data.items()
                if key not in _LATER_OPTIONS or getattr(self, key) != _LATER_OPTIONS[key]}


def mark_stored(module: nn.Module, attribute: str) -> None:
    """Declare ``module.<attribute>`` (a floating-point parameter or buffer) stored in faultable memory.

    Methods call this for the state they add (bounds, thresholds) so it joins the fault space, in
    ``Method.build`` (the cache rebuilds the structure, then loads the fitted state). A module class can
    instead declare its stored tensors once: ``stored_tensors = ("bound",)``.
    """
    if _locate(module, attribute) is None:
        raise UsageError(
            f"cannot mark {type(module).__name__}.{attribute} as stored: "
            "it is not a floating-point parameter or buffer of that module"
        )
    marked = module.__dict__.setdefault(_MARK, [])
    if attribute not in marked:
        marked.append(attribute)


def stored_attributes(module: nn.Module) -> tuple[str, ...]:
    """The attributes of ``module`` that are stored: those its class declares in ``stored_tensors``, then
    those a method marked with :func:`mark_stored`, in marking order."""
    declared = tuple(getattr(type(module), "stored_tensors", ()))
    marked = tuple(attribute for attribute in module.__dict__.get(_MARK, ()) if attribute not in declared)
    return declared + marked


@dataclass(frozen=True)
class StoredTensor:
    """One tensor of the fault space and where it lives.

    ``owner.<slot>`` is the parameter or buffer that holds the stored values (for a parametrized
    weight, the ``original`` of its parametrization); ``name`` is the canonical name.
    """

    name: str
    owner: nn.Module
    slot: str
    kind: Literal["model", "method"]

    @property
    def tensor(self) -> torch.Tensor:
        """The stored tensor itself."""
        found = getattr(self.owner, self.slot)
        assert isinstance(found, torch.Tensor)
        return found

    @property
    def numel(self) -> int:
        """Number of stored elements."""
        return self.tensor.numel()


@dataclass(frozen=True)
class FaultSpaceLayout:
    """The fault space as a line of elements: tensor names, sizes and the bits of each element.

    Element ``e`` of the whole space is element ``e - offsets[t]`` of tensor ``t``. This is all a
    fault model needs to sample sites; it holds no tensors.
    """

    names: tuple[str, ...]
    numels: tuple[int, ...]
    bits_per_element: int
    bit_fields: dict[str, tuple[int, ...]] = field(default_factory=dict, compare=False)

    @property
    def offsets(self) -> tuple[int, ...]:
        """Start of each tensor in the element line, plus the total at the end."""
        starts = [0]
        for numel in self.numels:
            starts.append(starts[-1] + numel)
        return tuple(starts)

    @property
    def total_elements(self) -> int:
        """Elements in the whole fault space."""
        return sum(self.numels)

    @property
    def total_bits(self) -> int:
        """Stored bits in the whole fault space."""
        return self.total_elements * self.bits_per_element

    def bits_per_tensor(self) -> dict[str, int]:
        """Stored bits of each tensor, by canonical name."""
        return {name: numel * self.bits_per_element for name, numel in zip(self.names, self.numels, strict=True)}


def _is_floating(value: object) -> bool:
    return isinstance(value, torch.Tensor) and value.is_floating_point()


def _locate(module: nn.Module, attribute: str) -> tuple[nn.Module, str] | None:
    """The (owner, slot) holding the stored values of ``module.<attribute>``, if it is a float tensor."""
    if parametrize.is_parametrized(module, attribute):
        owner = cast(nn.ModuleDict, module.parametrizations)[attribute]
        return (owner, "original") if _is_floating(getattr(owner, "original", None)) else None
    for table in (module._parameters, module._buffers):
        if attribute in table and _is_floating(table[attribute]):
            return module, attribute
    return None


def _direct_attributes(module: nn.Module) -> list[str]:
    names = [name for name, value in module._parameters.items() if _is_floating(value)]
    names += [name for name, value in module._buffers.items() if _is_floating(value)]
    if parametrize.is_parametrized(module):
        names += list(cast(nn.ModuleDict, module.parametrizations).keys())
    return names


def _held_parameters(module: nn.Module) -> tuple[str, ...]:
    """The floating-point parameters ``module`` holds itself (parametrized ones included), less those a method
    declared or marked as stored (they are method tensors)."""
    names = [name for name, value in module._parameters.items() if _is_floating(value)]
    if parametrize.is_parametrized(module):
        names += list(cast(nn.ModuleDict, module.parametrizations).keys())
    method_state = set(stored_attributes(module))
    return tuple(name for name in names if name not in method_state)


def _compile(pattern: str) -> re.Pattern[str]:
    if pattern.startswith("re:"):
        try:
            return re.compile(pattern[3:])
        except re.error as error:
            raise UsageError(f"fault space pattern {pattern!r} is not a valid regex: {error}") from None
    return re.compile(fnmatch.translate(pattern))


class FaultSpace:
    """The stored tensors of ``model`` that faults may hit, in canonical order (see module docstring)."""

    def __init__(self, model: nn.Module, options: FaultSpaceOptions | None = None) -> None:
        self.model = model
        self.options = options or FaultSpaceOptions()
        self._include = [_compile(pattern) for pattern in self.options.layers]
        self._exclude = [_compile(pattern) for pattern in self.options.exclude_layers]
        self._tensor_include = [_compile(pattern) for pattern in self.options.tensors]
        self._tensor_exclude = [_compile(pattern) for pattern in self.options.exclude_tensors]
        self.tensors: tuple[StoredTensor, ...] = self._collect()
        if not self.tensors:
            raise UsageError(f"the fault space of {type(model).__name__} is empty with options {self.options}")

    def _selected(self, name: str) -> bool:
        if self._include and not any(pattern.fullmatch(name) for pattern in self._include):
            return False
        return not any(pattern.fullmatch(name) for pattern in self._exclude)

    def _tensor_selected(self, name: str) -> bool:
        if self._tensor_include and not any(pattern.fullmatch(name) for pattern in self._tensor_include):
            return False
        return not any(pattern.fullmatch(name) for pattern in self._tensor_exclude)

    def _model_attributes(self, module: nn.Module) -> tuple[str, ...]:
        chosen_types = self.options.module_types
        if chosen_types and type(module).__name__ not in chosen_types:
            return ()
        if isinstance(module, _LAYER_TYPES):
            return _LAYER_ATTRIBUTES
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            return _NORM_ATTRIBUTES if chosen_types or self.options.batch_norm else ()
        if chosen_types:
            return tuple(_direct_attributes(module))
        return _held_parameters(module) if self.options.direct_parameters else ()

    def _modules(self) -> Iterator[tuple[str, nn.Module]]:
        for name, module in self.model.named_modules():
            if "parametrizations" not in name.split(".") and self._selected(name):
                yield name, module

    def _collect(self) -> tuple[StoredTensor, ...]:
        model: list[StoredTensor] = []
        method: list[StoredTensor] = []
        seen: set[int] = set()
        for module_name, module in self._modules():
            for attribute in self._model_attributes(module):
                if self._tensor_selected(f"{module_name}.{attribute}" if module_name else attribute):
                    self._add(model, seen, module_name, module, attribute, "model")
        if self.options.method_tensors:
            for module_name, module in self._modules():
                for attribute in stored_attributes(module):
                    self._add(method, seen, module_name, module, attribute, "method")
        return tuple(model + method)

    @staticmethod
    def _add(
        found: list[StoredTensor],
        seen: set[int],
        module_name: str,
        module: nn.Module,
        attribute: str,
        kind: Literal["model", "method"],
    ) -> None:
        location = _locate(module, attribute)
        if location is None:
            return
        stored = StoredTensor(f"{module_name}.{attribute}" if module_name else attribute, *location, kind)
        if id(stored.tensor) not in seen:
            seen.add(id(stored.tensor))
            found.append(stored)

    @property
    def names(self) -> tuple[str, ...]:
        """Canonical names in canonical order."""
        return tuple(stored.name for stored in self.tensors)

    @property
    def total_elements(self) -> int:
        """Stored elements in the whole fault space."""
        return sum(stored.numel for stored in self.tensors)

    def layout(self, number_format: NumberFormat) -> FaultSpaceLayout:
        """The element/bit line that fault models sample from, for tensors stored in ``number_format``."""
        return FaultSpaceLayout(
            names=self.names,
            numels=tuple(stored.numel for stored in self.tensors),
            bits_per_element=number_format.bits_per_element,
            bit_fields=number_format.bit_fields(),
        )

    def bits_per_tensor(self, number_format: NumberFormat) -> dict[str, int]:
        """Stored bits of each tensor in ``number_format``, by canonical name."""
        return self.layout(number_format).bits_per_tensor()

    def total_bits(self, number_format: NumberFormat) -> int:
        """Stored bits of the whole fault space in ``number_format``."""
        return self.total_elements * number_format.bits_per_element

    def describe(self) -> list[dict[str, object]]:
        """One entry per tensor (name, kind, shape), for the provenance of a result row."""
        return [
            {"name": stored.name, "kind": stored.kind, "shape": list(stored.tensor.shape)} for stored in self.tensors
        ]
