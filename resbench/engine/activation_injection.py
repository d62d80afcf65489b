"""Inject activation faults through forward hooks: XOR on the integer view of an operator's output.

:class:`ActivationInjector` hooks the operators an activation fault model chooses (see
:mod:`resbench.engine.activation_faults`). A probe pass over one image fixes their execution order and the size
of each one's output per image: the per-image layout faults are sampled over. The model is not copied
or changed otherwise.

For each batch, the trial's sites become, per operator, one index tensor into the flat output and one
XOR mask tensor (sites in the same element combined), built once with numpy and moved to the device in
one transfer each. The hook then costs one gather and one scatter per operator with faults, O(flips):

* ``fp32`` outputs are flipped in place on their ``int32`` view, when the output owns its storage (a
  conv or linear output does); an output that aliases an input (an in-place activation, a flatten view)
  is copied first, so no other consumer sees the fault;
* other formats quantize every output (``decode(encode(y))``, in clean passes too: that is computing in
  the format) and flip bits of the codes before decoding.

An operator without faults in a batch costs a dictionary lookup in ``fp32``. With no fault at all, the
logits are bit-identical to the model's without hooks.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from resbench.engine.activation_faults import (
    ActivationFaultModel,
    ActivationFaultOptions,
    ImageFaults,
    select_operators,
)
from resbench.engine.faultspace import FaultSpaceLayout
from resbench.engine.formats import Float32, NumberFormat
from resbench.errors import UsageError
from resbench.models.callsites import activation_call_sites, is_rewritten, rewrite_activation_call_sites
from resbench.models.operators import FUNCTION_KINDS, expose_function_operators

__all__ = ["ActivationInjector", "BatchPlan", "chosen_operators"]

_UNSIGNED = {8: np.uint8, 16: np.uint16, 32: np.uint32, 64: np.uint64}
_SIGNED = {8: np.int8, 16: np.int16, 32: np.int32, 64: np.int64}

#: Per operator name: flat indices into the batch's output and their XOR masks (code dtype), on the device.
BatchPlan = dict[str, tuple[torch.Tensor, torch.Tensor]]


def chosen_operators(model: nn.Module, options: ActivationFaultOptions) -> tuple[nn.Module, set[str]]:
    """The model to hook (rewritten so that every activation call, and every function operator such as
    ``add`` or ``matmul`` the options choose, has its own module; parameters shared) and the qualified names
    of the operators the options choose in it.

    Choosing nothing is bad input (:class:`UsageError`).
    """
    call_sites: list[str] = []
    if "activation" in options.operators:
        model = model if is_rewritten(model) else rewrite_activation_call_sites(model, copy_model=False)
        call_sites = activation_call_sites(model)
    functions = tuple(kind for kind in FUNCTION_KINDS if kind in options.operators)
    if functions:
        model = expose_function_operators(model, functions)
    chosen = {_before_bound(model, name) if name in call_sites else name
              for name in select_operators(model, options, call_sites)}
    if not chosen:
        raise UsageError(f"no operator of the model matches operators {list(options.operators)} and names "
                         f"{list(options.names)}")
    return model, chosen


def _aliases(output: torch.Tensor, inputs: tuple[Any, ...]) -> bool:
    pointer = output.untyped_storage().data_ptr()
    return any(isinstance(item, torch.Tensor) and item.untyped_storage().data_ptr() == pointer for item in inputs)


def _before_bound(model: nn.Module, call_site: str) -> str:
    """Where a fault in a call site's output lands: the submodule a wrapper names in ``faulty_output`` (a
    bounded activation names its original activation, so the bound acts on the fault), else the call site."""
    inner = getattr(model.get_submodule(call_site), "faulty_output", None)
    return f"{call_site}.{inner}" if isinstance(inner, str) else call_site


class ActivationInjector:
    """Forward hooks that hold the chosen operator outputs in a number format and flip their bits.

    ``model`` must already sit on the device of ``example`` (one or more input images). When the fault
    model chooses activation call sites or function operators (``add``, ``matmul``), ``model`` is rewritten
    (outputs unchanged, parameters shared): evaluate :attr:`model`, not the model passed in.
    """

    def __init__(self, model: nn.Module, fault_model: ActivationFaultModel, example: torch.Tensor) -> None:
        try:
            model, chosen = chosen_operators(model, fault_model.options)
        except UsageError as error:
            raise UsageError(f"fault model {fault_model.name}: {error}") from None
        self.model = model
        self.format: NumberFormat = fault_model.number_format()
        self.quantizes = not isinstance(self.format, Float32)
        self.device = example.device
        self.scales: dict[str, torch.Tensor] = {}
        self.plan: BatchPlan = {}
        self.layout = self._probe(chosen, example[:1])
        self._code_bits = torch.iinfo(self.format.code_dtype).bits
        self._handles: list[RemovableHandle] = [
            model.get_submodule(name).register_forward_hook(self._hook(name)) for name in self.layout.names
        ]

    def _probe(self, chosen: set[str], image: torch.Tensor) -> FaultSpaceLayout:
        """Execution order and per-image output size of the chosen operators (one pass of one image)."""
        calls: list[tuple[str, int]] = []
        handles = [
            self.model.get_submodule(name).register_forward_hook(
                lambda _module, _inputs, output, name=name: calls.append((name, int(output[0].numel())))
            )
            for name in sorted(chosen)
        ]
        try:
            with torch.inference_mode():
                self.model.eval()(image)
        finally:
            for handle in handles:
                handle.remove()
        names = [name for name, _ in calls]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise UsageError(f"operators called more than once per inference cannot be told apart: {repeated}; "
                             "narrow the operators with names")
        return FaultSpaceLayout(tuple(names), tuple(numel for _, numel in calls), self.format.bits_per_element,
                                self.format.bit_fields())

    def remove(self) -> None:
        """Remove the hooks; the model computes as before."""
        for handle in self._handles:
            handle.remove()
        self._handles = []

    # -- ranges -----------------------------------------------------------------------------------------

    def profile_ranges(self, batches: Iterator[torch.Tensor]) -> None:
        """Per-operator scales of a scaled format (``int8``): ``max|output| / 127`` over ``batches``.

        The outputs are profiled in float (nothing quantized), on training images only.
        """
        if not self.format.scaled:
            return
        largest: dict[str, torch.Tensor] = {}

        def record(name: str, output: torch.Tensor) -> None:
            value = output.detach().abs().amax().float()
            largest[name] = torch.maximum(largest[name], value) if name in largest else value

        handles = [
            self.model.get_submodule(name).register_forward_hook(
                lambda _module, _inputs, output, name=name: record(name, output)
            )
            for name in self.layout.names
        ]
        quantizes, self.quantizes = self.quantizes, False
        try:
            with torch.inference_mode():
                for images in batches:
                    self.model(images.to(self.device))
        finally:
            self.quantizes = quantizes
            for handle in handles:
                handle.remove()
        self.scales = {name: self.format.scale_for(value.reshape(1)) for name, value in largest.items()}

    # -- hooks ------------------------------------------------------------------------------------------

    def _hook(self, name: str) -> Any:
        def hook(module: nn.Module, inputs: tuple[Any, ...], output: torch.Tensor) -> torch.Tensor | None:
            sites = self.plan.get(name)
            if sites is None and not self.quantizes:
                return None
            return self._apply(name, inputs, output, sites)

        return hook

    def _apply(self, name: str, inputs: tuple[Any, ...], output: torch.Tensor,
               sites: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
        if self.quantizes:
            scale = self.scales.get(name)
            if self.format.scaled and scale is None:
                raise UsageError(f"format {self.format.name} needs profiled ranges (profile_ranges) first")
            codes = self.format.encode(output, scale).contiguous()
            if sites is not None:
                _xor(codes.view(-1), *sites)
            return self.format.decode(codes, scale).view(output.shape)
        assert sites is not None
        target = output
        if not output.is_contiguous() or _aliases(output, inputs):
            target = output.contiguous().clone()
        _xor(target.view(self.format.code_dtype).view(-1), *sites)
        return target

    # -- plans ------------------------------------------------------------------------------------------

    def batch_plan(self, faults: ImageFaults, rows: np.ndarray, start: int, stop: int) -> BatchPlan:
        """The sites of the images ``rows[start:stop]`` (``rows`` ascending), for a batch of those images."""
        first = int(np.searchsorted(faults.images, rows[start], side="left"))
        last = int(np.searchsorted(faults.images, rows[stop - 1], side="right"))
        images, elements, bits = faults.images[first:last], faults.elements[first:last], faults.bits[first:last]
        if images.size == 0:
            return {}
        position = np.searchsorted(rows, images) - start
        operator = np.searchsorted(np.asarray(self.layout.offsets[1:]), elements, side="right")
        offsets = np.asarray(self.layout.offsets, dtype=np.int64)
        numels = np.asarray(self.layout.numels, dtype=np.int64)
        flat = position * numels[operator] + elements - offsets[operator]
        order = np.lexsort((flat, operator))
        operator, flat, bits = operator[order], flat[order], bits[order]
        starts = np.flatnonzero(np.concatenate(([True], (flat[1:] != flat[:-1]) | (operator[1:] != operator[:-1]))))
        masks = np.bitwise_xor.reduceat(np.left_shift(np.uint64(1), bits.astype(np.uint64)), starts)
        operator, flat = operator[starts], flat[starts]
        masks = masks.astype(_UNSIGNED[self._code_bits]).view(_SIGNED[self._code_bits])
        flat_device = torch.from_numpy(flat).to(self.device, non_blocking=True)
        masks_device = torch.from_numpy(masks).to(self.device, non_blocking=True)
        bounds = np.flatnonzero(np.concatenate(([True], operator[1:] != operator[:-1], [True])))
        return {
            self.layout.names[int(operator[begin])]: (flat_device[begin:end], masks_device[begin:end])
            for begin, end in itertools.pairwise(bounds)
        }


def _xor(flat: torch.Tensor, index: torch.Tensor, masks: torch.Tensor) -> None:
    """``flat[index] ^= masks`` (indices distinct)."""
    flat.index_copy_(0, index, flat.index_select(0, index) ^ masks)
