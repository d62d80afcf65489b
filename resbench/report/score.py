"""The resilience score: chance-corrected accuracy averaged over log10 BER on a fixed reference range.

At each BER, accuracy is normalized as ``(acc - chance) / (clean - chance)`` and clipped to [0, 1]:
0 is a model no better than always predicting the most frequent class, 1 one that lost nothing. The
normalized curve, linear between measured BERs, is averaged over log10 BER across
:data:`REFERENCE_RANGE`. Where the sweep covers only part of it, the score averages over the covered
part and says so (``score_range``): nothing is extrapolated. So a model at chance scores 0 and a model
that never loses accuracy scores 1, whatever the grid; noise cannot lift it above 1; a model whose clean
accuracy is at chance scores 0, so a broken model never ranks first.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["REFERENCE_RANGE", "covered_range", "normalized_accuracy", "resilience_score"]

REFERENCE_RANGE = (1e-9, 1e-1)


def normalized_accuracy(accuracy: np.ndarray, clean: float, chance: float) -> np.ndarray:
    """``(acc - chance) / (clean - chance)`` clipped to [0, 1]; all 0 when clean is not above chance."""
    values = np.asarray(accuracy, dtype=float)
    if not clean > chance:
        return np.zeros_like(values)
    return np.clip((values - chance) / (clean - chance), 0.0, 1.0)


def covered_range(bers: list[float], reference: tuple[float, float] = REFERENCE_RANGE) -> tuple[float, float] | None:
    """The part of ``reference`` inside the measured sweep, or None when they do not overlap in a span
    (or there is no sweep: one fault per inference)."""
    if not bers:
        return None
    low, high = max(min(bers), reference[0]), min(max(bers), reference[1])
    return (low, high) if high > low else None


def resilience_score(
    bers: list[float],
    accuracies: np.ndarray,
    clean: float,
    chance: float,
    reference: tuple[float, float] = REFERENCE_RANGE,
) -> np.ndarray:
    """Score(s) of accuracy curves: ``accuracies`` has one column per BER of ``bers`` (ascending) and
    any leading shape (posterior draws); NaN where the sweep does not overlap the reference range."""
    curves = np.atleast_2d(np.asarray(accuracies, dtype=float))
    span = covered_range(bers, reference)
    if span is None or math.isnan(clean) or math.isnan(chance):
        return np.full(curves.shape[0], math.nan)
    decades = np.log10(np.asarray(bers, dtype=float))
    low, high = math.log10(span[0]), math.log10(span[1])
    inside = decades[(decades > low) & (decades < high)]
    grid = np.concatenate(([low], inside, [high]))
    normalized = normalized_accuracy(curves, clean, chance)
    on_grid = np.stack([np.interp(grid, decades, row) for row in normalized])
    widths = np.diff(grid)
    return np.asarray((on_grid[:, 1:] + on_grid[:, :-1]) / 2 @ widths / (high - low))
