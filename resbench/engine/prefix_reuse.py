"""Prefix reuse for weight faults: a faulty pass recomputes only what its flipped bits can reach.

Where a trial flips a few stored bits, every operation before the first one that reads a flipped tensor
computes exactly what the clean network computes, and once the values that flow past some point equal the
clean ones again (the fault was masked), so does everything after it. Fault-injection tools exploit both:
SCI-FI (Ruospo et al., ETS 2023) restarts from stored clean feature maps and stops once a block's output
equals the clean run's, for up to 70% less simulation time.

:meth:`PrefixReuse.build` traces the deployed model with ``torch.fx`` (a module that holds stored tensors
itself, or has no submodules, is one node), runs it fault-free once and records

* which stored tensors of the fault space each node reads: the tensors (views included) that the torch
  functions it calls receive, so a bound read by a later module, a weight read back through a transform
  and a batch-norm statistic all count;
* *cuts*: points of the topological order where the pass can restart, each with the clean values of the
  nodes computed before it and read after it (its live values), kept for the whole evaluation set. For
  residual and branching models the live values include every open branch. A cut is kept only if none of
  its live values is later modified in place, and cuts are kept (latest first) within a memory budget.

A trial (:meth:`PrefixReuse.logits`, called while the faults are injected) then finds the first and last
nodes that read a flipped tensor, restarts at the latest kept cut at or before the first, and after the
last compares the live values at each kept cut with the clean ones, bit for bit: where they are equal the
clean logits are the answer (early exit). The recomputed nodes call the same operators on the same values
as a full pass, so the logits are the full pass's bit for bit. :meth:`build` checks the traced pass against
the model's own clean logits and returns None (use the full pass) for a model it cannot trace, whose
output is not one tensor, that modifies its input in place, or whose traced pass differs.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from functools import reduce
from typing import Any

import numpy as np
import torch
from torch import fx, nn
from torch.nn.utils import parametrize
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

from resbench.engine.evaluation import EvaluationData, predict_logits
from resbench.engine.faults import FaultSites
from resbench.engine.injection import Injector

__all__ = ["DEFAULT_REUSE_MEMORY", "PrefixReuse"]

logger = logging.getLogger(__name__)

#: Default memory budget for the kept clean values: 4 GiB (ResNet-20 on 1,000 images needs about 1 GiB).
DEFAULT_REUSE_MEMORY = 4 * 2**30

_FREE_OPS = ("placeholder", "get_attr")


class _LeafTracer(fx.Tracer):
    """Traces through containers; a module that holds parameters or buffers itself, or has no submodules,
    stays one node (bounded activations, parametrized layers, a plugin's own layer)."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        if super().is_leaf_module(m, module_qualified_name):
            return True
        holds = next(m.parameters(recurse=False), None) is not None or next(m.buffers(recurse=False), None) is not None
        return holds or next(m.children(), None) is None or parametrize.is_parametrized(m)


class _StoredReads(TorchFunctionMode):
    """Records which fault-space tensors the torch functions called inside it receive (by storage range)."""

    def __init__(self, injector: Injector) -> None:
        super().__init__()
        self.pointer = injector.values.untyped_storage().data_ptr()
        self.offsets = np.asarray(injector.layout.offsets, dtype=np.int64)
        self.read: set[int] = set()

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        for value in tree_flatten((args, kwargs or {}))[0]:
            if isinstance(value, torch.Tensor) and value.numel() and self._is_stored(value):
                self._record(value)
        return func(*args, **(kwargs or {}))

    def _is_stored(self, tensor: torch.Tensor) -> bool:
        return bool(tensor.untyped_storage().data_ptr() == self.pointer)

    def _record(self, tensor: torch.Tensor) -> None:
        first = int(tensor.storage_offset())
        last = first + sum((size - 1) * abs(stride) for size, stride in zip(tensor.shape, tensor.stride(), strict=True))
        low, high = (int(np.searchsorted(self.offsets, end, side="right")) - 1 for end in (first, last))
        self.read.update(range(low, high + 1))


@dataclass(frozen=True)
class _Cut:
    """Restart point: ``index`` is the first node recomputed, ``live`` the nodes before it read after it."""

    index: int
    live: tuple[fx.Node, ...]


def _trace(model: nn.Module) -> fx.GraphModule:
    tracer = _LeafTracer()
    graph = tracer.trace(model)
    return fx.GraphModule(tracer.root, graph)


def _bit_equal(left: torch.Tensor, right: torch.Tensor) -> bool:
    """Equal bit for bit (NaN payloads and the sign of zero included)."""
    if left.shape != right.shape or left.dtype != right.dtype:
        return False
    if left.is_floating_point():
        integer = {1: torch.int8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[left.element_size()]
        return torch.equal(left.view(integer), right.view(integer))
    return torch.equal(left, right)


class _Program:
    """The traced graph as a list of nodes, each with the function that computes it from an environment."""

    def __init__(self, graph_module: fx.GraphModule) -> None:
        self.root = graph_module
        self.nodes = list(graph_module.graph.nodes)
        self.position = {node: index for index, node in enumerate(self.nodes)}
        self.last_use = {node: max((self.position[user] for user in node.users), default=-1) for node in self.nodes}
        self.dies_at: list[list[fx.Node]] = [[] for _ in self.nodes]
        for node, last in self.last_use.items():
            if last >= 0 and node.op not in _FREE_OPS:
                self.dies_at[last].append(node)

    def attribute(self, target: str) -> Any:
        return reduce(getattr, target.split("."), self.root)

    def run_node(self, node: fx.Node, env: dict[fx.Node, Any], images: torch.Tensor) -> Any:
        if node.op == "placeholder":
            return images
        if node.op == "get_attr":
            return self.attribute(str(node.target))
        args = fx.node.map_arg(node.args, env.__getitem__)
        kwargs = fx.node.map_arg(node.kwargs, env.__getitem__)
        if node.op == "call_module":
            return self.root.get_submodule(str(node.target))(*args, **kwargs)
        if node.op == "call_function":
            return node.target(*args, **kwargs)  # type: ignore[operator]
        if node.op == "call_method":
            receiver, *rest = args
            return getattr(receiver, str(node.target))(*rest, **kwargs)
        return args[0]  # output

    def live_at(self, index: int) -> tuple[fx.Node, ...]:
        return tuple(node for node in self.nodes[:index]
                     if node.op not in _FREE_OPS and self.last_use[node] >= index)


class PrefixReuse:
    """Clean values of a deployed model kept at cuts of its traced graph, and trials that restart from them
    (see the module docstring). Build with :meth:`build`; ``stored_bytes`` is the memory the kept values take."""

    def __init__(self, model: nn.Module, program: _Program, data: EvaluationData, readers: dict[int, list[int]],
                 cuts: list[_Cut], kept: dict[fx.Node, list[torch.Tensor]], clean_logits: list[torch.Tensor],
                 injector: Injector) -> None:
        self.model, self.program, self.data, self.readers, self.cuts = model, program, data, readers, cuts
        self.kept, self.clean_logits, self.injector = kept, clean_logits, injector
        self._offsets = np.asarray(injector.layout.offsets, dtype=np.int64)
        #: Bytes the kept clean values take (each storage counted once).
        self.stored_bytes = _distinct_bytes([value for values in kept.values() for value in values])
        #: Nodes recomputed and batches answered by an early exit in the last trial (for benchmarks and tests).
        self.last_recomputed = 0
        self.last_early_exits = 0

    @classmethod
    def build(cls, model: nn.Module, injector: Injector, data: EvaluationData,
              memory_bytes: int = DEFAULT_REUSE_MEMORY) -> PrefixReuse | None:
        """Reuse for ``model`` deployed by ``injector`` on ``data``, keeping at most ``memory_bytes`` of clean
        values; None where the full pass must be used (the reason is logged)."""
        try:
            program = _Program(_trace(model))
        except Exception as error:  # any tracing failure: the full pass is always right
            logger.info("prefix reuse off: torch.fx cannot trace %s (%s)", type(model).__name__, error)
            return None
        try:
            survey = _survey(program, injector, data)
            if survey is None:
                return None
            readers, mutated, bytes_per_image = survey
            cuts = _choose_cuts(program, readers, mutated, bytes_per_image, data.size, memory_bytes)
            kept, logits = _clean_pass(program, data, cuts)
        except Exception as error:  # a node the interpreter cannot run alone: the full pass is always right
            logger.warning("prefix reuse off for %s: %s: %s", type(model).__name__, type(error).__name__, error)
            return None
        if not _bit_equal(torch.cat(logits).float(), predict_logits(model, data)):
            logger.info("prefix reuse off: the traced pass of %s differs from its forward", type(model).__name__)
            return None
        return cls(model, program, data, readers, cuts, kept, logits, injector)

    def _faulted_tensors(self, sites: FaultSites) -> np.ndarray:
        return np.unique(np.searchsorted(self._offsets, sites.touched, side="right") - 1)

    @torch.inference_mode()
    def logits(self, sites: FaultSites) -> torch.Tensor:
        """The logits of the evaluation set with ``sites`` injected (inject before calling): the full pass's,
        bit for bit, recomputing from the latest kept cut before the first node that reads a faulted tensor."""
        faulted = self._faulted_tensors(sites)
        reading = [position for tensor in faulted for position in self.readers.get(int(tensor), ())]
        self.last_recomputed = self.last_early_exits = 0
        if not reading:
            return torch.cat(self.clean_logits).float()
        first, last = min(reading), max(reading)
        start = max((cut for cut in self.cuts if cut.index <= first), key=lambda cut: cut.index)
        checks = [cut for cut in self.cuts if cut.index > last]
        if start is self.cuts[0] and not checks:  # nothing to reuse: the model's own forward pass
            self.last_recomputed = len(self.program.nodes) * len(self.clean_logits)
            return predict_logits(self.model, self.data)
        with parametrize.cached():
            outputs = [self._batch(batch, start, checks) for batch in range(len(self.clean_logits))]
        return torch.cat(outputs).float()

    def _batch(self, batch: int, start: _Cut, checks: Sequence[_Cut]) -> torch.Tensor:
        program = self.program
        size = self.data.batch_size
        images = self.data.images[batch * size: (batch + 1) * size]
        env: dict[fx.Node, Any] = {node: self.kept[node][batch] for node in start.live}
        for node in program.nodes[: start.index]:
            if node.op in _FREE_OPS:
                env[node] = program.run_node(node, env, images)
        pending = list(checks)
        for index in range(start.index, len(program.nodes)):
            if pending and pending[0].index == index:
                if all(_bit_equal(env[node], self.kept[node][batch]) for node in pending[0].live):
                    self.last_early_exits += 1
                    return self.clean_logits[batch]
                pending.pop(0)
            node = program.nodes[index]
            if node.op == "output":
                return program.run_node(node, env, images)
            env[node] = program.run_node(node, env, images)
            self.last_recomputed += 1
            for dead in program.dies_at[index]:
                env.pop(dead, None)
        raise AssertionError("a traced graph ends with its output node")


def _distinct_bytes(tensors: Sequence[torch.Tensor]) -> int:
    storages = {tensor.untyped_storage().data_ptr(): tensor.untyped_storage().nbytes() for tensor in tensors}
    return sum(storages.values())


def _survey(program: _Program, injector: Injector,
            data: EvaluationData) -> tuple[dict[int, list[int]], set[fx.Node], dict[fx.Node, float]] | None:
    """One clean pass over the first batch: the stored tensors each node reads (tensor index -> reading node
    positions), the nodes whose value a later node modifies in place, and each node's bytes per image."""
    images = data.images[: data.batch_size].clone()
    env: dict[fx.Node, Any] = {}
    readers: dict[int, list[int]] = {}
    versions: dict[fx.Node, int] = {}
    bytes_per_image: dict[fx.Node, float] = {}
    # Without the read-back cache: every node that reads a transformed weight reads its stored tensor.
    with torch.no_grad():
        for index, node in enumerate(program.nodes):
            reads = _StoredReads(injector)
            with reads:
                env[node] = program.run_node(node, env, images)
            for tensor in reads.read:
                readers.setdefault(tensor, []).append(index)
            value = env[node]
            if isinstance(value, torch.Tensor) and node.op not in _FREE_OPS:
                versions[node] = value._version
                bytes_per_image[node] = value.untyped_storage().nbytes() / len(images)
    output = env[program.nodes[-1]]
    if not isinstance(output, torch.Tensor) or not torch.equal(images, data.images[: data.batch_size]):
        logger.info("prefix reuse off: the model's output is not one tensor, or it modifies its input in place")
        return None
    unread = set(range(len(injector.layout.names))) - set(readers)
    if unread:  # a stored value no traced node reads as a tensor (quantized kernels' packed weights): unseen
        names = ", ".join(injector.layout.names[index] for index in sorted(unread)[:3])
        logger.info("prefix reuse off: no traced operation reads the stored tensors %s as tensors", names)
        return None
    mutated = {node for node, version in versions.items() if env[node]._version != version}
    return readers, mutated, bytes_per_image


def _choose_cuts(program: _Program, readers: dict[int, list[int]], mutated: set[fx.Node],
                 bytes_per_image: dict[fx.Node, float], images: int, memory_bytes: int) -> list[_Cut]:
    """For each node that reads stored tensors, the latest usable cut at or before it; the earliest (the
    largest feature maps, the least computation saved) are dropped until their live values fit the budget.
    The first cut (nothing live: the full pass) is always kept."""
    first = next(index for index, node in enumerate(program.nodes) if node.op not in _FREE_OPS)
    usable = [index for index in range(first, len(program.nodes))
              if all(node in bytes_per_image and node not in mutated for node in program.live_at(index))]
    wanted = sorted({max(cut for cut in usable if cut <= position)
                     for positions in readers.values() for position in positions if position >= first})
    cuts = [_Cut(index, program.live_at(index)) for index in sorted({first, *wanted})]
    while len(cuts) > 1 and _kept_bytes(cuts, bytes_per_image, images) > memory_bytes:
        cuts.pop(1)
    return cuts


def _kept_bytes(cuts: Sequence[_Cut], bytes_per_image: dict[fx.Node, float], images: int) -> float:
    nodes = {node for cut in cuts for node in cut.live}
    return sum(bytes_per_image[node] for node in nodes) * images


def _clean_pass(program: _Program, data: EvaluationData,
                cuts: Sequence[_Cut]) -> tuple[dict[fx.Node, list[torch.Tensor]], list[torch.Tensor]]:
    """The clean values of every live node of the kept cuts, per batch, and the clean logits per batch."""
    wanted = {node for cut in cuts for node in cut.live}
    kept: dict[fx.Node, list[torch.Tensor]] = {node: [] for node in wanted}
    logits = []
    with torch.no_grad(), parametrize.cached():
        for start in range(0, data.size, data.batch_size):
            images = data.images[start: start + data.batch_size]
            env: dict[fx.Node, Any] = {}
            for index, node in enumerate(program.nodes):
                env[node] = program.run_node(node, env, images)
                if node in wanted:
                    kept[node].append(env[node])
                for dead in program.dies_at[index]:
                    env.pop(dead, None)
            logits.append(env[program.nodes[-1]])
    return kept, logits

