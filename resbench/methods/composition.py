"""Composed methods: ``saf-tanh+proact`` applies a weight transform and an activation method together.

A composition is itself a method (registered as ``compose``, answering every ``A+B`` name), so its cells,
cache entries and leaderboard rows work like any other's; rows are labelled by the name as written.
Each part declares what it changes (:attr:`resbench.methods.base.Method.changes`); two parts that change
the same thing (two weight transforms on one layer, two activation rewrites) are bad input, found when
the suite is validated, before any work.

Order matters and is fixed by what each part changes, not by how the name is written:

* **build**: activation rewrites first, weight transforms after. The rewrite traces the model with
  ``torch.fx``, which is fragile on parametrized modules; the transform then registers its
  parametrizations on the rewritten model's layers;
* **fit**: weight transforms first (SAF fine-tunes the weights, the other method's bounds frozen), then
  the activation method, whose bounds are therefore fitted on the transformed model.

Both parts' stored tensors (the transformed weights' stored values, the bounds) are in the fault space.
"""

from __future__ import annotations

from typing import Any, ClassVar

import pydantic
from torch import nn

from resbench.config import ComponentSpec
from resbench.errors import UsageError, blame_plugin
from resbench.methods.base import CITATION_SEPARATOR, Method, PrepareContext, defines_fit
from resbench.methods.recipes import normalized_spec
from resbench.options import Options
from resbench.registry import Built

__all__ = ["COMPOSITION_PATTERN", "Composition", "CompositionOptions", "method_changes", "written_name"]

#: ``A+B`` with ``A`` free of ``+``: ``a+b+c`` is ``a`` composed with the composition ``b+c``.
COMPOSITION_PATTERN = r"(?P<first>[^+]+)\+(?P<second>.+)"

# The order parts are built in (the reverse is the order they are fitted in).
_BUILD_ORDER = ("activations", "weights")

_WHAT = {
    "activations": "rewrite the activation call sites (one activation method at a time)",
    "weights": "store the weights through a transform (one weight transform per layer)",
}


def method_changes(spec: ComponentSpec) -> frozenset[str]:
    """What the method ``spec`` (normalized) changes; a composition changes what its parts change."""
    from resbench.plugins import get_registries

    entry, options = get_registries().methods.options_for(spec.name, spec.options)
    if isinstance(options, CompositionOptions):
        return method_changes(options.first) | method_changes(options.second)
    return frozenset(getattr(entry.item, "changes", frozenset()))


def written_name(spec: ComponentSpec) -> str:
    """A normalized method spec's name as a user writes it: a composition's is ``A+B``."""
    if {"first", "second"} <= set(spec.options):
        return "+".join(written_name(ComponentSpec.model_validate(spec.options[key])) for key in ("first", "second"))
    return spec.name


def _check_compatible(first: ComponentSpec, second: ComponentSpec) -> None:
    names = [written_name(first), written_name(second)]
    changes = [method_changes(first), method_changes(second)]
    for name, changed in zip(names, changes, strict=True):
        if not changed:
            raise UsageError(f"method {'+'.join(names)}: {name!r} declares no change that can be composed "
                             "(it neither rewrites activations nor transforms weights); name the other part alone")
    for what in sorted(changes[0] & changes[1]):
        raise UsageError(f"method {'+'.join(names)}: {names[0]!r} and {names[1]!r} both {_WHAT.get(what, what)}; "
                         "they cannot be composed")


class CompositionOptions(Options):
    """Two methods applied together; the name ``A+B`` sets them (each part may be a composition)."""

    first: ComponentSpec = pydantic.Field(description="first method (name or {name, options})")
    second: ComponentSpec = pydantic.Field(description="second method (name or {name, options})")

    @pydantic.model_validator(mode="after")
    def _normalize_and_check(self) -> CompositionOptions:
        object.__setattr__(self, "first", normalized_spec("methods", self.first, "composed method"))
        object.__setattr__(self, "second", normalized_spec("methods", self.second, "composed method"))
        _check_compatible(self.first, self.second)
        return self


def _changes_of(method: Method) -> frozenset[str]:
    if isinstance(method, Composition):
        return frozenset().union(*(_changes_of(part.value) for part in method.parts))
    return frozenset(method.changes)


def _order_key(part: Built[Method]) -> int:
    changes = _changes_of(part.value)
    return min((_BUILD_ORDER.index(what) for what in changes if what in _BUILD_ORDER), default=len(_BUILD_ORDER))


class Composition(Method):
    """Methods applied together: activation rewrites built first, weight transforms fitted first."""

    Options: ClassVar[type[Options]] = CompositionOptions

    def __init__(self, options: CompositionOptions) -> None:
        super().__init__(options)
        from resbench.plugins import get_registries

        methods = get_registries().methods
        #: The parts as written (``A+B``: A, B).
        self.written: list[Built[Method]] = [methods.build(spec.name, spec.options, where=f"method {spec.name}")
                                             for spec in (options.first, options.second)]
        #: The parts in build order.
        self.parts: list[Built[Method]] = sorted(self.written, key=_order_key)

    @property
    def format_dependent(self) -> bool:
        return any(part.value.format_dependent for part in self.parts)

    def quantized_refusal(self) -> str | None:
        reasons = [reason for part in self.written if (reason := part.value.quantized_refusal()) is not None]
        return reasons[0] if reasons else None

    def citation_text(self) -> str:
        return CITATION_SEPARATOR.join(part.value.citation_text() for part in self.written)

    def notes_text(self) -> str:
        notes = [f"{part.entry.name}: {part.value.notes_text()}" for part in self.written if part.value.notes_text()]
        order = " then ".join(part.entry.name for part in reversed(self.parts))
        return "; ".join([f"fitted in the order {order}", *notes])

    def cache_identity(self) -> dict[str, Any]:
        from resbench.plugins import get_registries

        plugins = get_registries().plugins
        return {
            part.entry.name: {"plugin": part.entry.plugin, "version": plugins[part.entry.plugin].version,
                              "components": part.value.cache_identity()}
            for part in self.parts
        }

    def build(self, model: nn.Module, context: PrepareContext) -> nn.Module:
        for part in self.parts:
            with blame_plugin(part.entry.plugin, f"method {part.entry.name!r}", "build"):
                model = part.value.build(model, context)
        return model

    def fit(self, model: nn.Module, context: PrepareContext) -> dict[str, Any]:
        metrics: dict[str, Any] = {}
        for part in reversed(self.parts):
            if defines_fit(part.value):
                with blame_plugin(part.entry.plugin, f"method {part.entry.name!r}", "fit"):
                    metrics[part.entry.name] = part.value.fit(model, context)
        return metrics
