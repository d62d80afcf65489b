"""Deploy a model's fault space in a number format and inject faults into it in place.

:class:`Injector` keeps the whole fault space in two flat buffers on the tensors' own device: ``codes``
(integer bit patterns in the number format) and ``values`` (float32, what the network computes with).
Every stored parameter or buffer is re-pointed to a view into ``values``, so the model needs no change
and no copy. A trial then costs O(flips):

1. the sites' per-element XOR masks (combined when sampled) travel to the device;
2. ``codes[touched] ^= mask``, one gather and one scatter for the whole fault space;
3. only the touched elements are decoded into ``values``;
4. :meth:`Injector.restore` applies the same XOR again (an involution) and decodes the same elements.

On CPU the few sparse operations run on one intra-op thread: they are bound by memory latency, and
waking a parallel region (any operation over 32768 elements) costs milliseconds on a shared machine,
more than the whole injection.

A quantized format keeps parameters per group of elements (a scale per tensor or per output channel,
see :mod:`resbench.engine.formats`): :attr:`Injector.parameters` holds one row per group, and a touched
element is decoded with its group's row. With ``faultable_parameters`` the stored parameters join the
element line after every tensor, as one more tensor per stored tensor and parameter
(``conv1.weight.scale``: a float32 bit pattern over ``32 / bits`` codes per group); a flip there changes
the parameter and the whole group is decoded again, as is the restore.

Stuck-at faults become XORs too: the effective mask is the stuck bits that differ from the stored code
(``mask & ~code`` for stuck-at-1, ``mask & code`` for stuck-at-0), kept for the undo. The number of bits
an injection really changed is :attr:`Injector.effective_flips`. Restoring is
therefore bit-exact in ``codes`` and, as decoding is deterministic, in ``values``. The clean codes are
kept so that :meth:`Injector.reset` can always go back to the fault-free deployed state.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
from torch import nn

from resbench.engine.faults import FaultSites
from resbench.engine.faultspace import FaultSpace, FaultSpaceOptions
from resbench.engine.formats import NumberFormat
from resbench.engine.stored_parameters import ParameterStore
from resbench.errors import ResbenchError, UsageError

__all__ = ["Injector"]

_UNSIGNED = {8: np.uint8, 16: np.uint16, 32: np.uint32, 64: np.uint64}
_SIGNED = {8: np.int8, 16: np.int16, 32: np.int32, 64: np.int64}


@contextmanager
def _one_thread(device: torch.device) -> Iterator[None]:
    """Run the enclosed CPU operations on one intra-op thread (see the module docstring)."""
    if device.type != "cpu":
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _single_device(space: FaultSpace) -> torch.device:
    devices = {stored.tensor.device for stored in space.tensors}
    if len(devices) != 1:
        raise UsageError(f"the fault space spans several devices ({sorted(map(str, devices))}); use one")
    return devices.pop()


class Injector:
    """The deployed fault space of one model in one number format (see the module docstring).

    Building an injector deploys: each stored tensor is encoded once, the model then computes with
    ``decode(encode(w))``. Move the model to its device before deploying, not after. The original
    float tensors are kept (one copy of the fault space) so that :meth:`undeploy` can give them back.
    """

    def __init__(self, space: FaultSpace, number_format: NumberFormat) -> None:
        self.space = space
        self.format = number_format
        self.device = _single_device(space)
        self.stored_parameters = ParameterStore(space.names, [stored.tensor.shape for stored in space.tensors],
                                                number_format, self.device)
        self.layout = self.stored_parameters.extend(space.layout(number_format))
        total = self.stored_parameters.first_element
        self.values = torch.empty(total, dtype=torch.float32, device=self.device)
        self.codes = torch.empty(self.layout.total_elements, dtype=number_format.code_dtype, device=self.device)
        self.parameters = self.stored_parameters.parameters
        self._ends = torch.tensor(space.layout(number_format).offsets[1:], dtype=torch.int64, device=self.device)
        self._code_bits = torch.iinfo(number_format.code_dtype).bits
        self._originals: list[torch.Tensor] = []
        self._applied: tuple[torch.Tensor, torch.Tensor] | None = None
        self.effective_flips = 0
        with torch.no_grad():
            self._deploy()
        self.clean_codes = self.codes.clone()

    @classmethod
    def deploy(
        cls, model: nn.Module, number_format: NumberFormat, options: FaultSpaceOptions | None = None
    ) -> Injector:
        """Build the fault space of ``model`` and deploy it in ``number_format``."""
        return cls(FaultSpace(model, options), number_format)

    @property
    def scales(self) -> torch.Tensor:
        """The scale of every parameter group (one per tensor unless the format quantizes per channel)."""
        return self.parameters[:, 0]

    def _deploy(self) -> None:
        offsets = self.layout.offsets
        groups = self.stored_parameters
        for index, stored in enumerate(self.space.tensors):
            original = stored.tensor.data
            start, end = offsets[index], offsets[index + 1]
            grouped = original.detach().reshape(groups.counts[index], -1)
            rows = self.format.parameters_for(grouped)
            self.parameters[groups.starts[index]:groups.starts[index + 1]] = rows
            codes = self.format.encode_with(grouped, rows.unsqueeze(1))
            self.codes[start:end] = codes.reshape(-1)
            self.values[start:end] = self.format.decode_with(codes, rows.unsqueeze(1)).reshape(-1)
            self._originals.append(original)
            stored.tensor.data = self.values[start:end].view(original.shape)
        self.codes[self.stored_parameters.first_element:] = self.stored_parameters.codes()

    def undeploy(self) -> None:
        """Give the model its original float tensors back; the injector is unusable afterwards."""
        self._require_clean_state("undeploy")
        for stored, original in zip(self.space.tensors, self._originals, strict=True):
            stored.tensor.data = original
        self._originals = []

    def describe(self) -> list[dict[str, object]]:
        """One entry per stored tensor (name, kind, shape), stored parameters included, for a result row."""
        return [*self.space.describe(), *self.stored_parameters.describe()]

    @property
    def injected_now(self) -> bool:
        """Whether faults are injected and not yet restored."""
        return self._applied is not None

    def is_clean(self) -> bool:
        """Whether the codes equal the clean deployed codes bit for bit."""
        return self._applied is None and torch.equal(self.codes, self.clean_codes)

    def _require_clean_state(self, action: str) -> None:
        if not self._originals:
            raise ResbenchError(f"cannot {action}: the model was undeployed")
        if self._applied is not None:
            raise ResbenchError(f"cannot {action}: faults are injected; restore first")

    def _decode(self, elements: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        if not self.format.scaled:
            return self.format.decode(codes)
        tensor = torch.searchsorted(self._ends, elements, right=True)
        return self.format.decode_with(codes, self.stored_parameters.rows_of(elements, tensor))

    def _write(self, elements: torch.Tensor, codes: torch.Tensor) -> None:
        self.codes.index_copy_(0, elements, codes)
        first_parameter = self.stored_parameters.first_element
        in_values = elements < first_parameter
        if first_parameter == self.layout.total_elements or bool(in_values.all()):  # no parameter touched
            self.values.index_copy_(0, elements, self._decode(elements, codes))
            return
        tensors = self.stored_parameters.read(self.codes[first_parameter:], elements[~in_values] - first_parameter)
        value_elements = elements[in_values]
        self.values.index_copy_(0, value_elements, self._decode(value_elements, codes[in_values]))
        for index in tensors:
            self._decode_tensor(index)

    def _decode_tensor(self, index: int) -> None:
        """Decode all of tensor ``index`` again from its codes (after a change in its parameters)."""
        start, end = self.layout.offsets[index], self.layout.offsets[index + 1]
        groups = self.stored_parameters
        rows = self.parameters[groups.starts[index]:groups.starts[index + 1]].unsqueeze(1)
        codes = self.codes[start:end].view(groups.counts[index], -1)
        self.values[start:end] = self.format.decode_with(codes, rows).reshape(-1)

    def _device_sites(self, sites: FaultSites) -> tuple[torch.Tensor, torch.Tensor]:
        """Touched elements and their masks on the device, masks in the code dtype's bit pattern."""
        masks = sites.masks.astype(_UNSIGNED[self._code_bits]).view(_SIGNED[self._code_bits])
        elements = torch.from_numpy(sites.touched).to(self.device, non_blocking=True)
        return elements, torch.from_numpy(masks).to(self.device, non_blocking=True)

    def inject(self, sites: FaultSites) -> None:
        """Apply ``sites`` to the stored codes and the values the model computes with, in place."""
        self._require_clean_state("inject")
        if sites.layout != self.layout:
            raise ResbenchError("these fault sites were sampled for another fault space layout")
        elements, masks = self._device_sites(sites)
        with torch.no_grad(), _one_thread(self.device):
            current = self.codes.index_select(0, elements)
            if sites.kind == "stuck-at-1":
                masks = masks & ~current
            elif sites.kind == "stuck-at-0":
                masks = masks & current
            self._write(elements, current ^ masks)
        self._applied = (elements, masks)
        self.effective_flips = self._changed_bits(sites, masks)

    def _changed_bits(self, sites: FaultSites, masks: torch.Tensor) -> int:
        """Bits the last injection really changed: sampled sites minus draws that cancelled (a bit drawn
        twice) and stuck-at sites that already held the stuck value."""
        if sites.kind == "flip":
            return int(np.bitwise_count(sites.masks).sum())
        unsigned = masks.cpu().numpy().view(_UNSIGNED[self._code_bits])
        return int(np.bitwise_count(unsigned).sum())

    def restore(self) -> None:
        """Undo the last injection bit-exactly (the same XOR again); a no-op when nothing is injected."""
        if self._applied is None:
            return
        elements, masks = self._applied
        with torch.no_grad(), _one_thread(self.device):
            self._write(elements, self.codes.index_select(0, elements) ^ masks)
        self._applied = None

    @contextmanager
    def injected(self, sites: FaultSites) -> Iterator[Injector]:
        """``with injector.injected(sites): evaluate()``: inject, and restore however the block ends."""
        self.inject(sites)
        try:
            yield self
        finally:
            self.restore()

    def reset(self) -> None:
        """Return to the clean deployed state from the kept clean codes (after an interrupted trial)."""
        with torch.no_grad():
            self.codes.copy_(self.clean_codes)
            first_parameter = self.stored_parameters.first_element
            self.stored_parameters.read(self.codes[first_parameter:])
            for index in range(len(self.space.tensors)):
                self._decode_tensor(index)
        self._applied = None
