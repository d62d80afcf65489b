"""What a cell records about its model beside the trials: baseline checksum, chance level, timings.

* The baseline checksum (SHA-256 of the trained weights) says whether two stores evaluated the same
  trained model: accuracy reproduces bit for bit only then (same checksum, same machine type).
* Chance accuracy is the accuracy of always predicting the most frequent test class: the floor the
  resilience score normalizes to, so a broken model scores 0.
* Timing interleaves clean passes of the unprotected and the protected model, pass by pass, so both
  see the same machine noise; the leaderboard reports the median of the paired ratios with a
  distribution-free interval (:func:`overhead_interval`).
"""

from __future__ import annotations

import hashlib
import json
import math
import time

import numpy as np
import torch
from torch import nn

from resbench.run.evaluation import EvaluationData, predict_logits

__all__ = ["TIMING_REPEATS", "baseline_checksum", "chance_accuracy", "interleaved_timing", "overhead_interval"]

TIMING_REPEATS = 15


def baseline_checksum(model: nn.Module) -> str:
    """SHA-256 over the model's state (names, dtypes, shapes and bytes, in name order)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        value = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{value.dtype}:{tuple(value.shape)}".encode())
        digest.update(value.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def chance_accuracy(labels: torch.Tensor) -> float:
    """Accuracy (%) of always predicting the most frequent label."""
    counts = torch.bincount(labels.detach().cpu().to(torch.int64))
    return 100 * float(counts.max()) / max(1, int(labels.numel()))


def _timed_pass(model: nn.Module, data: EvaluationData) -> float:
    started = time.perf_counter()
    predict_logits(model, data)
    if data.images.is_cuda:
        torch.cuda.synchronize(data.images.device)
    return time.perf_counter() - started


def interleaved_timing(
    baseline: nn.Module, protected: nn.Module, data: EvaluationData, repeats: int | None = None
) -> dict[str, list[float]]:
    """Clean-pass seconds of both models, alternating which goes first, after one warm-up pass each
    (``repeats`` pairs, :data:`TIMING_REPEATS` by default)."""
    repeats = TIMING_REPEATS if repeats is None else repeats
    predict_logits(baseline, data)
    predict_logits(protected, data)
    times: dict[str, list[float]] = {"baseline": [], "protected": []}
    for repeat in range(repeats):
        order = ("baseline", "protected") if repeat % 2 == 0 else ("protected", "baseline")
        for which in order:
            times[which].append(_timed_pass(baseline if which == "baseline" else protected, data))
    return times


def overhead_interval(timing_json: str, level: float = 0.95) -> tuple[float, float, float]:
    """Median overhead (%) of the paired ratios protected/baseline and its distribution-free interval.

    The interval is the pair of order statistics of the ratios that brackets the median with binomial
    probability at least ``level`` (Conover, *Practical Nonparametric Statistics*, 3rd ed., sec. 3.2);
    NaN where there are too few pairs for one.
    """
    from scipy import stats

    timing = json.loads(timing_json or "{}")
    baseline = np.asarray(timing.get("baseline", []), dtype=float)
    protected = np.asarray(timing.get("protected", []), dtype=float)
    if baseline.size == 0 or baseline.size != protected.size or np.any(baseline <= 0):
        return math.nan, math.nan, math.nan
    ratios = np.sort(100 * (protected / baseline - 1))
    median = float(np.median(ratios))
    count = ratios.size
    lower_rank = int(stats.binom.ppf((1 - level) / 2, count, 0.5))  # 0-based index of the lower bound
    if lower_rank < 1:
        return median, math.nan, math.nan
    return median, float(ratios[lower_rank - 1]), float(ratios[count - lower_rank])
