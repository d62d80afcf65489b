"""Deterministic cost of an inference: multiply-adds and elementwise operations per image.

Timings vary between machines and runs; the operations a forward pass executes do not. :func:`count_operations`
runs one clean batch under a dispatch mode that sees every ATen operator the pass calls (the traced program as
executed, weight read-backs and bounds included) and counts

* multiply-adds: ``output elements x (input channels / groups) x kernel elements`` for a convolution,
  ``M x N x K`` for a matrix product (``addmm``, ``mm``, ``bmm``, ``linear``);
* elementwise operations: the output elements of every other operator that computes values (activations,
  bounds, normalization, pooling, additions, a weight read-back), not of those that only view, copy or
  allocate memory.

Both are divided by the batch's images, so a weight read back once per batch counts a share per image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

__all__ = ["OperationCount", "count_operations"]

_PRODUCTS = {"mm", "bmm", "addmm", "baddbmm", "linear", "matmul"}
_CONVOLUTIONS = {"convolution", "_convolution", "mkldnn_convolution", "conv2d", "conv1d", "conv3d"}
#: Operators that move, view or allocate values without computing any.
_NOT_COMPUTING = {
    "view", "_unsafe_view", "reshape", "flatten", "t", "transpose", "permute", "expand", "squeeze", "unsqueeze",
    "as_strided", "alias", "detach", "clone", "copy_", "contiguous", "slice", "select", "empty", "empty_like",
    "zeros_like", "ones_like", "full_like", "new_empty", "new_zeros", "new_ones", "lift_fresh", "_to_copy",
    "cat", "stack", "split", "unbind", "chunk", "index_select", "_reshape_alias", "empty_strided", "zeros",
    "ones", "full", "scalar_tensor", "resize_", "set_", "unfold", "max_pool2d_with_indices_backward",
}


@dataclass(frozen=True)
class OperationCount:
    """Operations of one inference (per image)."""

    multiply_adds: float
    elementwise: float


class _Counter(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.multiply_adds = 0
        self.elementwise = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        name = func.overloadpacket.__name__
        outputs = [value for value in tree_flatten(out)[0] if isinstance(value, torch.Tensor)]
        if name in _CONVOLUTIONS:
            weight = _weight_of(args[1])  # (output channels, input channels / groups, *kernel)
            self.multiply_adds += outputs[0].numel() * int(math.prod(weight.shape[1:]))
        elif name in _PRODUCTS:
            left = args[1] if name in ("addmm", "baddbmm") else args[0]
            self.multiply_adds += outputs[0].numel() * int(left.shape[-1])
        elif name not in _NOT_COMPUTING and outputs and outputs[0].is_floating_point():
            self.elementwise += outputs[0].numel()
        return out


def _weight_of(weight: Any) -> torch.Tensor:
    """A convolution's weight: the tensor itself, or unpacked from a quantized kernel's packed parameters."""
    return weight if isinstance(weight, torch.Tensor) else weight.unpack()[0]


@torch.inference_mode()
def count_operations(model: nn.Module, images: torch.Tensor) -> OperationCount:
    """Multiply-adds and elementwise operations per image of ``model``'s forward pass on ``images`` (one batch)."""
    counter = _Counter()
    with counter:
        model(images)
    count = max(1, int(images.shape[0]))
    return OperationCount(counter.multiply_adds / count, counter.elementwise / count)
