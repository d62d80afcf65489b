"""Activation call sites: give every activation call its own module, so bounds can belong to call sites.

Torchvision-style blocks call one ``nn.ReLU`` module twice (ResNet BasicBlock and Bottleneck), use
``inplace=True``, ``F.relu``, ``torch.relu``, ``Tensor.relu`` or ``ReLU6``. Bounds, however, belong to
each *call* (METHODS.md, "Activation call sites"). :func:`rewrite_activation_call_sites` traces the model
with ``torch.fx`` and gives every activation call a fresh, non-in-place module of its own.

Naming (stable: the same model always gets the same names):

* a module called once keeps its qualified name (``features.1``);
* a module called several times keeps its name for the first call; later calls get ``_1``, ``_2``, ...
  appended (``layer1.0.relu`` and ``layer1.0.relu_1`` for a BasicBlock);
* a functional call (``F.relu``, ``torch.relu``, ``x.relu()``, ``F.relu6``, ...) gets the name of the
  function inside the module whose ``forward`` made the call (``block.relu``), with ``_1``, ``_2``, ...
  appended where the name is taken.

Parameter and buffer names are unchanged (the fault engine identifies tensors by qualified name, and
protected models must line up with the unprotected one). Outputs are unchanged: an in-place activation
becomes out of place, and every later use of its input reads its output instead, which is what in-place
modification meant. Tracing happens in eval mode: Python-level branches on ``self.training`` are fixed to
their eval-mode side (leaf modules such as batch norm and dropout still follow ``train()``/``eval()``).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

from resbench.errors import UsageError

__all__ = [
    "ACTIVATION_MODULES",
    "CallSite",
    "activation_call_sites",
    "call_site_details",
    "get_call_site",
    "is_rewritten",
    "replace_call_site",
    "rewrite_activation_call_sites",
]

# Activation module types that get a module per call, with the kind recorded for each call site.
ACTIVATION_MODULES: dict[type[nn.Module], str] = {
    nn.ReLU: "relu",
    nn.ReLU6: "relu6",
    nn.LeakyReLU: "leaky_relu",
    nn.ELU: "elu",
    nn.GELU: "gelu",
    nn.SiLU: "silu",
    nn.Hardswish: "hardswish",
    nn.Hardtanh: "hardtanh",
}

# Node meta key marking a call-site node; survives deepcopy of the rewritten GraphModule.
CALL_SITE_META = "resbench_call_site"


def _module_from_function(target: Any, kwargs: dict[str, Any]) -> tuple[nn.Module, str] | None:
    """The module equivalent to a functional activation call, with its kind; None if not an activation."""
    if target in (F.relu, torch.relu, torch.relu_, F.relu_, "relu", "relu_"):
        return nn.ReLU(), "relu"
    if target is F.relu6:
        return nn.ReLU6(), "relu6"
    if target in (F.leaky_relu, "leaky_relu"):
        return nn.LeakyReLU(kwargs.get("negative_slope", 0.01)), "leaky_relu"
    if target is F.elu:
        return nn.ELU(kwargs.get("alpha", 1.0)), "elu"
    if target is F.gelu:
        return nn.GELU(kwargs.get("approximate", "none")), "gelu"
    if target is F.silu:
        return nn.SiLU(), "silu"
    if target is F.hardswish:
        return nn.Hardswish(), "hardswish"
    if target is F.hardtanh:
        return nn.Hardtanh(kwargs.get("min_val", -1.0), kwargs.get("max_val", 1.0)), "hardtanh"
    return None


IN_PLACE_TARGETS = (torch.relu_, F.relu_, "relu_")


@dataclass(frozen=True)
class CallSite:
    """One activation call: its module name, the kind of activation and where it came from."""

    name: str
    kind: str
    origin: str


class _ScopedTracer(fx.Tracer):
    """A tracer that remembers which module's ``forward`` it is in, to name an obstacle precisely."""

    def __init__(self) -> None:
        super().__init__()
        self.module_path_stack: list[str] = []
        self.failed_in: str | None = None

    def call_module(self, m: nn.Module, forward: Callable[..., Any], args: Any, kwargs: Any) -> Any:
        self.module_path_stack.append(self.path_of_module(m))
        try:
            return super().call_module(m, forward, args, kwargs)
        except Exception:
            if self.failed_in is None:
                self.failed_in = self.module_path_stack[-1]
            raise
        finally:
            self.module_path_stack.pop()


def _trace(model: nn.Module) -> fx.GraphModule:
    tracer = _ScopedTracer()
    was_training = model.training
    model.eval()
    try:
        graph = tracer.trace(model)
    except Exception as error:
        where = f"the forward of module {tracer.failed_in!r}" if tracer.failed_in else "the top-level forward"
        raise UsageError(
            f"cannot rewrite activation call sites of {type(model).__name__}: torch.fx cannot trace "
            f"{where} ({type(error).__name__}: {str(error).splitlines()[0]})"
        ) from None
    finally:
        model.train(was_training)
    graph_module = fx.GraphModule(tracer.root, graph, type(model).__name__)
    graph_module.train(was_training)
    return graph_module


def _normalized_kwargs(node: fx.Node) -> dict[str, Any]:
    """All arguments after the input, as keywords (``inplace`` included)."""
    if node.op == "call_method":
        return dict(node.kwargs)
    try:
        normalized = fx.operator_schemas.normalize_function(
            node.target, node.args, node.kwargs, normalize_to_only_use_kwargs=True  # type: ignore[arg-type]
        )
    except Exception:
        normalized = None
    return dict(normalized.kwargs) if normalized is not None else dict(node.kwargs)


def _scope_of(node: fx.Node) -> str:
    """Qualified name of the module whose forward made a functional call ('' for the top level)."""
    stack = node.meta.get("nn_module_stack") or {}
    if not stack:
        return ""
    path = list(stack.values())[-1][0]
    return str(path)


class _Namer:
    """Hands out unique module names: ``base``, then ``base_1``, ``base_2``, ..."""

    def __init__(self, model: nn.Module):
        self.taken = {name for name, _ in model.named_modules()}
        self.taken |= {name for name, _ in model.named_parameters()} | {name for name, _ in model.named_buffers()}

    def fresh(self, base: str) -> str:
        if base not in self.taken:
            self.taken.add(base)
            return base
        index = 1
        while f"{base}_{index}" in self.taken:
            index += 1
        self.taken.add(f"{base}_{index}")
        return f"{base}_{index}"


def _out_of_place(module: nn.Module) -> nn.Module:
    fresh = copy.deepcopy(module)
    if hasattr(fresh, "inplace"):
        setattr(fresh, "inplace", False)  # noqa: B010 (nn.Module typing would refuse a plain assignment)
    return fresh


def _activation_of(graph_module: fx.GraphModule, node: fx.Node) -> tuple[nn.Module, str, bool, str] | None:
    """(fresh module, kind, was in place, origin) for an activation node, None for anything else."""
    if node.op == "call_module":
        module = graph_module.get_submodule(str(node.target))
        kind = ACTIVATION_MODULES.get(type(module))
        if kind is None:
            return None
        return _out_of_place(module), kind, bool(getattr(module, "inplace", False)), f"module {node.target}"
    if node.op in ("call_function", "call_method"):
        kwargs = _normalized_kwargs(node)
        found = _module_from_function(node.target, kwargs)
        if found is None:
            return None
        in_place = bool(kwargs.get("inplace", False)) or node.target in IN_PLACE_TARGETS
        label = node.target if isinstance(node.target, str) else getattr(node.target, "__name__", node.target)
        scope = _scope_of(node)
        origin = f"{node.op.replace('_', ' ')} {label}" + (f" in {scope}" if scope else "")
        return found[0], found[1], in_place, origin
    return None


def _input_of(node: fx.Node) -> Any:
    return node.args[0] if node.args else next(iter(node.kwargs.values()))


def _function_base_name(node: fx.Node, kind: str) -> str:
    scope = _scope_of(node)
    return f"{scope}.{kind}" if scope else kind


def _redirect_in_place_users(graph: fx.Graph, node: fx.Node, replacement: fx.Node) -> None:
    """After an in-place activation, later readers of its input must read the activated tensor."""
    source = _input_of(node)
    if not isinstance(source, fx.Node):
        return
    order = {graph_node: index for index, graph_node in enumerate(graph.nodes)}
    for user in list(source.users):
        if user is not replacement and order[user] > order[replacement]:
            user.replace_input_with(source, replacement)


def _rewrite_graph(graph_module: fx.GraphModule) -> None:
    namer = _Namer(graph_module)
    first_use: set[str] = set()
    graph = graph_module.graph
    for node in list(graph.nodes):
        found = _activation_of(graph_module, node)
        if found is None:
            continue
        module, kind, in_place, origin = found
        if node.op == "call_module" and str(node.target) not in first_use:
            first_use.add(str(node.target))
            name = str(node.target)
        else:
            base = str(node.target) if node.op == "call_module" else _function_base_name(node, kind)
            name = namer.fresh(base)
        graph_module.add_submodule(name, module)
        with graph.inserting_after(node):
            replacement = graph.call_module(name, (_input_of(node),))
        replacement.meta = dict(node.meta)
        replacement.meta[CALL_SITE_META] = CallSite(name, kind, origin)
        node.replace_all_uses_with(replacement)
        if in_place:
            _redirect_in_place_users(graph, node, replacement)
        graph.erase_node(node)


def _check_names_kept(original: nn.Module, rewritten: nn.Module) -> None:
    before = set(original.state_dict())
    after = set(rewritten.state_dict())
    if before != after:
        lost = sorted(before - after)
        raise UsageError(
            f"cannot rewrite activation call sites of {type(original).__name__}: tensors not used in "
            f"forward would be dropped: {', '.join(lost[:8])}"
        )


def rewrite_activation_call_sites(model: nn.Module, *, copy_model: bool = True) -> fx.GraphModule:
    """A ``torch.fx.GraphModule`` computing the same outputs as ``model``, with one module per call.

    ``copy_model`` (default) deep-copies first, so the result shares no tensors with ``model``; without
    it the result shares ``model``'s leaf modules (and so its parameters) but ``model`` is not altered. A model
    that torch.fx cannot trace raises :class:`UsageError` naming the module whose ``forward`` failed
    and why. Already rewritten models come back unchanged (or copied).
    """
    source = copy.deepcopy(model) if copy_model else model
    if is_rewritten(source):
        assert isinstance(source, fx.GraphModule)
        return source
    graph_module = _trace(source)
    _check_names_kept(source, graph_module)
    _rewrite_graph(graph_module)
    graph_module.graph.lint()
    graph_module.delete_all_unused_submodules()
    graph_module.recompile()
    graph_module.meta[CALL_SITE_META] = True
    _check_names_kept(source, graph_module)
    return graph_module


def is_rewritten(model: nn.Module) -> bool:
    """Whether ``model`` came out of :func:`rewrite_activation_call_sites`."""
    return isinstance(model, fx.GraphModule) and bool(getattr(model, "meta", {}).get(CALL_SITE_META))


def call_site_details(model: nn.Module) -> list[CallSite]:
    """The call sites of ``model`` in execution order (graph order), with kind and origin.

    On a model that is not rewritten yet, this lists the names a rewrite would give (by rewriting a copy).
    Call sites whose module a method has replaced are still listed.
    """
    # Without a copy the rewrite shares only leaf modules with ``model`` and leaves ``model`` itself as it was.
    rewritten = model if is_rewritten(model) else rewrite_activation_call_sites(model, copy_model=False)
    assert isinstance(rewritten, fx.GraphModule)
    return [node.meta[CALL_SITE_META] for node in rewritten.graph.nodes if CALL_SITE_META in node.meta]


def activation_call_sites(model: nn.Module) -> list[str]:
    """Names of the activation call-site modules of ``model``, in execution order."""
    return [site.name for site in call_site_details(model)]


def get_call_site(model: nn.Module, name: str) -> nn.Module:
    """The module at call site ``name`` of a rewritten model."""
    _require_call_site(model, name)
    return model.get_submodule(name)


def replace_call_site(model: nn.Module, name: str, module: nn.Module) -> nn.Module:
    """Put ``module`` (a bounded activation, say) at call site ``name`` of a rewritten model; returns
    the module that was there. The graph is untouched, so the call site keeps its name and place.
    """
    previous = get_call_site(model, name)
    model.set_submodule(name, module)
    return previous


def _require_call_site(model: nn.Module, name: str) -> None:
    if not is_rewritten(model):
        raise ValueError("rewrite the model with rewrite_activation_call_sites() before addressing call sites")
    names = activation_call_sites(model)
    if name not in names:
        raise UsageError(f"unknown activation call site {name!r}; call sites: {', '.join(names)}")

