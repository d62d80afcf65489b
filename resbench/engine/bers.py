"""Bit-error rates: the one rule a BER sweep follows, and the BER column of one fault per inference.

This module imports nothing heavy (no torch), so reports and configuration share it with the engine.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from resbench.errors import UsageError

__all__ = ["ONE_FAULT_PER_INFERENCE", "check_bers", "sorted_bers"]

#: The BER column of a cell with one fault per inference (``act-single``): not a rate.
ONE_FAULT_PER_INFERENCE = -1.0


def sorted_bers(bers: Iterable[float]) -> list[float]:
    """A BER sweep checked and sorted ascending: at least one BER, each in (0, 1], no BER twice.

    Raises :class:`UsageError` (one line naming the offending value) otherwise.
    """
    checked = [float(ber) for ber in bers]
    if not checked:
        raise UsageError("at least one BER is needed")
    for ber in checked:
        if not 0.0 < ber <= 1.0:
            raise UsageError(f"each BER must lie in (0, 1], got {ber}")
    if len(set(checked)) != len(checked):
        raise UsageError(f"BERs must be distinct, got {checked}")
    return sorted(checked)


def check_bers(bers: Sequence[float]) -> list[float]:
    """``bers`` as floats when they form a sweep in ascending order (what nested sampling needs: the sites
    of a BER are thinned from those of the next larger one); :class:`UsageError` otherwise."""
    checked = sorted_bers(bers)
    if checked != [float(ber) for ber in bers]:
        raise UsageError(f"BERs must be sorted ascending, got {list(bers)}")
    return checked
