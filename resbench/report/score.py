"""The resilience score: chance-corrected accuracy averaged over log10 BER on a fixed reference range.

At each BER, accuracy is normalized as ``(acc - chance) / (clean - chance)`` and clipped to [0, 1]:
0 is a model no better than always predicting the most frequent class, 1 one that keeps ``clean``. The
normalized curve, linear between measured BERs, is averaged over log10 BER across
:data:`REFERENCE_RANGE`. Where the sweep covers only part of it, the score averages over the covered
part and says so (``score_range``): nothing is extrapolated. So a model at chance scores 0 and a model
that never falls below ``clean`` scores 1, whatever the grid; noise cannot lift it above 1.

``clean`` is the *reference* clean accuracy of the setup, the same for every method of a leaderboard
table: the unprotected model's (:mod:`resbench.report.tables`). A method is then scored by its
accuracy under faults alone, never by what it kept of its own clean accuracy, so a weak model cannot
win: one whose accuracy never exceeds ``c`` scores at most ``(c - chance) / (clean - chance)`` (0 for a
model at chance), however little it loses. A method that costs clean accuracy pays
for it at every BER; one that gains clean accuracy over the reference gets no credit for it (clipped at
1: a quantization or training gain is not fault resilience).
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
    """Score(s) of accuracy curves, normalized by the reference clean accuracy ``clean`` (module
    docstring): ``accuracies`` has one column per BER of ``bers`` (ascending) and any leading shape
    (posterior draws), which the result keeps; NaN where the sweep does not overlap the reference range."""
    values = np.asarray(accuracies, dtype=float)
    leading = values.shape[:-1] if values.ndim > 1 else (1,)
    curves = values.reshape(math.prod(leading), values.shape[-1])
    span = covered_range(bers, reference)
    if span is None or math.isnan(clean) or math.isnan(chance):
        return np.full(leading, math.nan)
    decades = np.log10(np.asarray(bers, dtype=float))
    low, high = math.log10(span[0]), math.log10(span[1])
    inside = decades[(decades > low) & (decades < high)]
    grid = np.concatenate(([low], inside, [high]))
    normalized = normalized_accuracy(curves, clean, chance)
    on_grid = np.stack([np.interp(grid, decades, row) for row in normalized])
    widths = np.diff(grid)
    return np.asarray((on_grid[:, 1:] + on_grid[:, :-1]) / 2 @ widths / (high - low)).reshape(leading)
