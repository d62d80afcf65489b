"""What a cell records about its model beside the trials: baseline checksum, chance level, timings.

* The baseline checksum (SHA-256 of the trained weights) says whether two stores evaluated the same
  trained model: accuracy reproduces bit for bit only then (same checksum, same machine type).
* Chance accuracy is the accuracy of always predicting the most frequent test class: the floor the
  resilience score normalizes to, so a broken model scores 0.
* Timing interleaves clean passes of the unprotected and the protected model, pass by pass, so both
  see the same machine noise; the leaderboard reports the median of the paired ratios with a
  distribution-free interval (:func:`resbench.statistics.overhead_interval`), and the conditions it was
  measured under (device, threads, batch size, images).
* The deterministic cost beside it: multiply-adds and elementwise operations per inference of both models
  (:func:`resbench.engine.operations.count_operations`), which no machine changes.
"""

from __future__ import annotations

import hashlib
import time

import torch
from torch import nn

from resbench.engine.allocator import keep_freed_memory
from resbench.engine.evaluation import EvaluationData, predict_logits
from resbench.engine.operations import count_operations

__all__ = ["TIMING_REPEATS", "baseline_checksum", "chance_accuracy", "inference_cost", "interleaved_timing"]

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


def inference_cost(baseline: nn.Module, protected: nn.Module, data: EvaluationData) -> dict[str, object]:
    """What the timing was measured under, and the operations per inference of both models (counted on one
    evaluation batch): kept beside the timings in a cell's ``timing`` record."""
    images = data.images[: data.batch_size]
    operations = {}
    for which, model in (("baseline", baseline), ("protected", protected)):
        count = count_operations(model, images)
        operations[which] = {"multiply_adds": count.multiply_adds, "elementwise": count.elementwise}
    conditions = {"device": str(data.images.device), "threads": torch.get_num_threads(),
                  "batch_size": data.batch_size, "images": data.size,
                  "allocator": "freed memory kept" if keep_freed_memory() else "system"}
    return {"conditions": conditions, "operations": operations}
