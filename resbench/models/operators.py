"""Operators that are functions, not modules, given a module each so that faults can reach their outputs.

The residual add of a ResNet block (``out + shortcut``, ``out += identity``) and the products of attention
written with ``torch.matmul`` or ``@`` are function calls: no module holds them, so no forward hook sees
their outputs. :func:`expose_function_operators` traces the model with ``torch.fx`` (as
:mod:`resbench.models.callsites` does) and puts each such call of the chosen kinds into its own
:class:`FunctionOperator` module, named after the module whose ``forward`` made the call and the kind
(``layer1.0.add``; ``_1``, ``_2``, ... where the name is taken). Outputs are unchanged (an in-place add
becomes out of place, and later readers of its input read its output). Only what the traced graph shows is
reachable: the products inside ``nn.MultiheadAttention`` run in one fused call that fx does not enter.

Kinds: ``add`` (``+``, ``+=``, ``torch.add``, ``Tensor.add`` of two tensors) and ``matmul`` (``@``,
``torch.matmul``, ``torch.bmm``, ``torch.mm``, ``torch.einsum``, ``F.scaled_dot_product_attention``).
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

from resbench.models.callsites import (
    CALL_SITE_META,
    _Namer,
    _redirect_in_place_users,
    _scope_of,
    _trace,
)

__all__ = ["FUNCTION_KINDS", "FunctionOperator", "expose_function_operators"]

#: Function targets (and tensor method names) of each kind; the in-place ones become out of place.
_TARGETS: dict[str, dict[Any, Callable[..., Any]]] = {
    "add": {operator.add: operator.add, operator.iadd: operator.add, torch.add: torch.add, "add": torch.add,
            "add_": torch.add},
    "matmul": {operator.matmul: torch.matmul, torch.matmul: torch.matmul, torch.bmm: torch.bmm, torch.mm: torch.mm,
               torch.einsum: torch.einsum, F.scaled_dot_product_attention: F.scaled_dot_product_attention,
               "matmul": torch.matmul, "bmm": torch.bmm},
}
#: The operator kinds that are functions.
FUNCTION_KINDS = tuple(_TARGETS)
_IN_PLACE = (operator.iadd, "add_")


class FunctionOperator(nn.Module):
    """One call of a function (``kind``: ``add`` or ``matmul``) as a module, so hooks see its output."""

    def __init__(self, function: Callable[..., Any], kind: str) -> None:
        super().__init__()
        self.function = function
        self.kind = kind

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.function(*args, **kwargs)

    def extra_repr(self) -> str:
        return f"{self.kind}: {getattr(self.function, '__name__', self.function)}"


def _kind_of(node: fx.Node, kinds: tuple[str, ...]) -> tuple[str, Callable[..., Any]] | None:
    if node.op not in ("call_function", "call_method"):
        return None
    for kind in kinds:
        function = _TARGETS[kind].get(node.target)
        if function is None:
            continue
        if kind == "add" and sum(isinstance(argument, fx.Node) for argument in node.args[:2]) < 2:
            return None  # a constant added is not a residual add
        return kind, function
    return None


def _copy(graph_module: fx.GraphModule) -> fx.GraphModule:
    """A new GraphModule with a copy of the graph, sharing the submodules: the original stays as it was."""
    graph = fx.Graph()
    output = graph.graph_copy(graph_module.graph, {})
    graph.output(output)
    copied = fx.GraphModule(graph_module, graph, type(graph_module).__name__)
    copied.meta.update(getattr(graph_module, "meta", {}))
    for original, new in zip(graph_module.graph.nodes, graph.nodes, strict=False):
        new.meta = dict(original.meta)
    copied.train(graph_module.training)
    return copied


def expose_function_operators(model: nn.Module, kinds: tuple[str, ...] = FUNCTION_KINDS) -> fx.GraphModule:
    """``model`` as a GraphModule in which every call of a function of ``kinds`` is a :class:`FunctionOperator`.

    The result shares ``model``'s modules and parameters; ``model`` itself is not altered. A model that
    torch.fx cannot trace raises :class:`~resbench.errors.UsageError` naming where.
    """
    graph_module = _copy(model) if isinstance(model, fx.GraphModule) else _trace(model)
    namer = _Namer(graph_module)
    graph = graph_module.graph
    for node in list(graph.nodes):
        found = _kind_of(node, kinds)
        if found is None:
            continue
        kind, function = found
        scope = _scope_of(node)
        name = namer.fresh(f"{scope}.{kind}" if scope else kind)
        graph_module.add_submodule(name, FunctionOperator(function, kind))
        with graph.inserting_after(node):
            replacement = graph.call_module(name, node.args, dict(node.kwargs))
        replacement.meta = {key: value for key, value in node.meta.items() if key != CALL_SITE_META}
        node.replace_all_uses_with(replacement)
        if node.target in _IN_PLACE:
            _redirect_in_place_users(graph, node, replacement)
        graph.erase_node(node)
    graph.lint()
    graph_module.recompile()
    return graph_module
