"""Quantization parameters of a deployed fault space: one row per group, and their codes when stored.

A quantized format (:mod:`resbench.engine.formats`) keeps parameters per group of elements: one group
per tensor, or one per output channel. :class:`ParameterStore` holds the rows of every group of a fault
space, finds the row of any element, and, when the format stores parameters in the fault space
(``faultable_parameters``), lays them out as codes of the format's width after the tensors:

* a ``float32`` parameter (the scale) is its IEEE 754 bit pattern split into ``32 / bits`` codes, lowest
  bits first (code ``j`` holds bits ``bits*j .. bits*(j+1)-1``), so bit ``k`` of code ``j`` is bit
  ``bits*j + k`` of the float;
* an ``unsigned`` parameter (the zero point) is one code holding its integer value.

Parameters are laid out per stored tensor, then per parameter, then per group: ``conv1.weight.scale``
(``groups * 32 / bits`` codes), ``conv1.weight.zero_point`` (``groups`` codes), then the next tensor.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from resbench.engine.faultspace import FaultSpaceLayout
from resbench.engine.formats import NumberFormat, StoredParameter

__all__ = ["ParameterStore"]


class ParameterStore:
    """The parameter rows of every group of the tensors ``names`` of ``shapes`` stored in ``number_format``
    (see the module docstring)."""

    def __init__(self, names: Sequence[str], shapes: Sequence[torch.Size], number_format: NumberFormat,
                 device: torch.device) -> None:
        self.format = number_format
        self.names = tuple(names)
        self.counts = [number_format.groups(shape) for shape in shapes]
        self.starts = [0]
        for count in self.counts:
            self.starts.append(self.starts[-1] + count)
        width = number_format.parameters_for(torch.zeros(1, 1)).shape[1]
        self.parameters = torch.zeros(self.starts[-1], width, dtype=torch.float32, device=device)
        numels = [math.prod(shape) for shape in shapes]
        self.first_element = sum(numels)
        self._group_starts = torch.tensor(self.starts[:-1], dtype=torch.int64, device=device)
        self._group_sizes = torch.tensor([max(numel // count, 1) for numel, count in zip(numels, self.counts,
                                                                                        strict=True)],
                                         dtype=torch.int64, device=device)
        self._tensor_starts = torch.tensor([0, *torch.tensor(numels).cumsum(0).tolist()[:-1]], dtype=torch.int64,
                                           device=device)
        self._fields = number_format.stored_parameters()
        self._entries = [(index, field) for index in range(len(self.counts)) for field in self._fields]
        self._entry_ends = torch.tensor(self._entry_sizes(), dtype=torch.int64).cumsum(0)

    def _codes_per_value(self, field: StoredParameter) -> int:
        return math.ceil(32 / self.format.bits_per_element) if field.kind == "float32" else 1

    def _entry_sizes(self) -> list[int]:
        return [self.counts[index] * self._codes_per_value(field) for index, field in self._entries]

    def layout_entries(self) -> tuple[tuple[str, ...], tuple[int, ...]]:
        """Names and element counts of the stored parameters, in layout order (empty when none are stored)."""
        names = tuple(f"{self.names[index]}.{field.name}" for index, field in self._entries)
        return names, tuple(self._entry_sizes())

    def extend(self, layout: FaultSpaceLayout) -> FaultSpaceLayout:
        """``layout`` with the stored parameters after its tensors (unchanged when none are stored)."""
        names, numels = self.layout_entries()
        if not names:
            return layout
        return FaultSpaceLayout(layout.names + names, layout.numels + numels, layout.bits_per_element,
                                layout.bit_fields)

    def describe(self) -> list[dict[str, object]]:
        """One entry per stored parameter tensor (name, kind ``parameter``, codes), for a result row."""
        names, numels = self.layout_entries()
        return [{"name": name, "kind": "parameter", "shape": [numel]} for name, numel in zip(names, numels,
                                                                                             strict=True)]

    def rows_of(self, elements: torch.Tensor, tensors: torch.Tensor) -> torch.Tensor:
        """The parameter row of each of ``elements`` (element line indices) of ``tensors`` (their tensor)."""
        local = elements - self._tensor_starts.index_select(0, tensors)
        groups = self._group_starts.index_select(0, tensors) + local // self._group_sizes.index_select(0, tensors)
        return self.parameters.index_select(0, groups)

    def _rows(self, index: int) -> torch.Tensor:
        return self.parameters[self.starts[index]:self.starts[index + 1]]

    def codes(self) -> torch.Tensor:
        """The codes of every stored parameter, in layout order (empty when none are stored)."""
        pieces = [self._encode(self._rows(index)[:, field.column], field) for index, field in self._entries]
        if not pieces:
            return torch.empty(0, dtype=self.format.code_dtype, device=self.parameters.device)
        return torch.cat(pieces)

    def read(self, codes: torch.Tensor, touched: torch.Tensor | None = None) -> list[int]:
        """Set the parameters from their ``codes`` (all of them, in layout order); return the tensors whose
        parameters ``touched`` (indices into ``codes``; all when None) belong to."""
        ends = self._entry_ends.tolist()
        for number, (index, field) in enumerate(self._entries):
            start = ends[number - 1] if number else 0
            self._rows(index)[:, field.column] = self._decode(codes[start:ends[number]], field, self.counts[index])
        if touched is None:
            return sorted({index for index, _ in self._entries})
        entries = torch.searchsorted(self._entry_ends, touched.cpu(), right=True).unique().tolist()
        return sorted({self._entries[number][0] for number in entries})

    def _encode(self, values: torch.Tensor, field: StoredParameter) -> torch.Tensor:
        bits = self.format.bits_per_element
        if field.kind == "unsigned":
            patterns = values.to(torch.int64).unsqueeze(1)
        else:
            word = values.contiguous().view(torch.int32).to(torch.int64) & 0xFFFFFFFF
            shifts = torch.arange(self._codes_per_value(field), device=values.device) * bits
            patterns = (word.unsqueeze(1) >> shifts) & ((1 << bits) - 1)
        return _as_code_dtype(patterns.reshape(-1), self.format.code_dtype)

    def _decode(self, codes: torch.Tensor, field: StoredParameter, count: int) -> torch.Tensor:
        bits = self.format.bits_per_element
        unsigned = codes.to(torch.int64) & ((1 << bits) - 1)
        if field.kind == "unsigned":
            return unsigned.to(torch.float32)
        shifts = torch.arange(self._codes_per_value(field), device=codes.device) * bits
        word = (unsigned.view(count, -1) << shifts).sum(dim=1) & 0xFFFFFFFF
        signed = torch.where(word >= 1 << 31, word - (1 << 32), word)
        return signed.to(torch.int32).view(torch.float32)


def _as_code_dtype(patterns: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Unsigned bit patterns (int64, below ``2**width``) as the signed code dtype holding the same bits."""
    width = torch.iinfo(dtype).bits
    return torch.where(patterns >= 1 << (width - 1), patterns - (1 << width), patterns).to(dtype)
