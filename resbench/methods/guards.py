"""Sanity guards: a prepared method that is broken fails its cells instead of becoming a quiet row.

Two checks run on every prepared method:

* :func:`check_finite`: after a method (or one of its parts) is built and fitted, every stored tensor
  (weights, biases, bounds, a transform's stored values), every buffer and every weight a layer computes
  with (a transform's read-back) must be finite. A NaN that crept in while fitting would otherwise make
  every trial a DUE and the clean accuracy chance. Unset bounds (+inf) are allowed only while building:
  an optimizer must set every bound it fits.
* :func:`check_clean_drop`: the prepared model's clean accuracy, deployed in the cell's number format,
  may lie at most :attr:`resbench.config.Guards.max_clean_drop` points below the unprotected model's in
  the same format, unless the suite accepts the drop for that method (``guards: {accept_clean_drop:
  [name]}``).

Both raise :class:`resbench.errors.PluginError` naming the plugin, the item and the phase; the runner
turns it into failed cells, never into leaderboard rows.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn
from torch.nn.utils import parametrize

from resbench.errors import PluginError

__all__ = ["check_clean_drop", "check_finite", "non_finite_tensors"]

_SHOWN = 4


def _weights_in_use(model: nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    """The weight each parametrized layer computes with (its transform's read-back), by layer name."""
    with torch.no_grad():
        for name, module in model.named_modules():
            if "parametrizations" in name.split("."):
                continue
            for attribute in getattr(module, "parametrizations", {}):
                if parametrize.is_parametrized(module, attribute):
                    yield f"{name}.{attribute} (read back)" if name else f"{attribute} (read back)", getattr(
                        module, attribute)


def _problem(tensor: torch.Tensor, allow_unset: bool) -> str:
    """'' for a finite tensor, else what is wrong with it ('2 of 6 values NaN, 1 -inf')."""
    values = tensor.detach()
    bad = ~torch.isfinite(values)
    if allow_unset:
        bad &= ~torch.isposinf(values)
    count = int(bad.sum())
    if not count:
        return ""
    kinds = [(int(torch.isnan(values).sum()), "NaN"), (int(torch.isposinf(values).sum()), "+inf"),
             (int(torch.isneginf(values).sum()), "-inf")]
    what = ", ".join(f"{number} {kind}" for number, kind in kinds if number)
    return f"{count} of {values.numel()} values non-finite ({what})"


def non_finite_tensors(model: nn.Module, *, allow_unset: bool = False) -> list[str]:
    """``'name: k of n values non-finite (...)'`` for every floating-point parameter, buffer and read-back
    weight of ``model`` that holds NaN or an infinity. ``allow_unset``: +inf is fine (unset bounds)."""
    found = []
    tensors = [*model.state_dict().items(), *_weights_in_use(model)]
    for name, tensor in tensors:
        if tensor.is_floating_point():
            problem = _problem(tensor, allow_unset)
            if problem:
                found.append(f"{name}: {problem}")
    return found


def check_finite(model: nn.Module, plugin: str, item: str, phase: str, *, allow_unset: bool = False) -> None:
    """Raise :class:`PluginError` (plugin, item, phase named) when ``model`` holds a non-finite value."""
    found = non_finite_tensors(model, allow_unset=allow_unset)
    if found:
        more = f" and {len(found) - _SHOWN} more" if len(found) > _SHOWN else ""
        raise PluginError(plugin, item, phase, f"left non-finite values in {'; '.join(found[:_SHOWN])}{more}")


def check_clean_drop(clean: float, reference: float, *, tolerance: float, accepted: bool, plugin: str, item: str,
                     where: str) -> None:
    """Raise :class:`PluginError` when the clean accuracy ``clean`` (%) lies more than ``tolerance`` points
    below ``reference``, the unprotected model's in the same format, and the suite did not accept it."""
    drop = reference - clean
    if drop > tolerance and not accepted:
        raise PluginError(plugin, item, "clean accuracy check",
                          f"clean accuracy {clean:.2f}% {where} is {drop:.2f} points below the unprotected model's "
                          f"{reference:.2f}% (the suite allows {tolerance:g}: raise guards.max_clean_drop or list "
                          "the method in guards.accept_clean_drop)")
