"""Campaign overhead: wall time of the trial loop divided by (trials x one clean evaluation pass).

A trial's floor is one clean pass over the evaluation set; everything else (sampling, injection,
restore, metrics, store writes) is overhead. The target is a ratio of at most 1.10, and below 1 at BERs
where most trials have no flip (those reuse the fault-free result without a forward pass).

Runs on the default suite's model (LeNet-5 on mnist5k, fp32, bitflip), training it first if the
artifact cache lacks it. ``--quick`` uses fewer trials.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from resbench.cache import ArtifactCache
from resbench.config import TrialPolicy
from resbench.datasets import load_dataset
from resbench.engine.evaluation import (
    EvaluationData,
    load_evaluation_data,
    predict_logits,
    predictions_of,
    trial_metrics,
)
from resbench.engine.faults import resolve_fault_model
from resbench.engine.formats import resolve_format
from resbench.engine.injection import Injector
from resbench.run.campaign import CampaignPlan, CleanReference, run_campaign
from resbench.training import load_or_train_baseline

BERS = [1e-7, 3e-7, 1e-6, 3e-6, 1e-5, 3e-5, 1e-4]


def clean_pass_seconds(model: torch.nn.Module, data: EvaluationData, repeats: int) -> float:
    """Median time of one clean evaluation pass."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        predict_logits(model, data)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer trials (under a minute)")
    parser.add_argument("--trials", type=int, help="trials per BER")
    args = parser.parse_args()
    trials = args.trials or (15 if args.quick else 60)
    device = torch.device("cpu")
    splits = load_dataset("mnist5k")
    model = load_or_train_baseline("lenet5", {}, splits, seed=0, cache=ArtifactCache(), device=device,
                                   progress=False).model
    data = load_evaluation_data(splits.test, device, 1024)
    injector = Injector.deploy(model, resolve_format("fp32"))
    logits = predict_logits(model, data)
    predictions, _ = predictions_of(logits)
    clean = CleanReference(predictions, trial_metrics(logits, data.labels, predictions))
    fault_model = resolve_fault_model("bitflip")
    predict_logits(model, data)
    print(f"lenet5 / mnist5k / fp32 / bitflip: {injector.layout.total_bits:,} stored bits, "
          f"{data.size} test images, {trials} trials per BER")
    print(f"{'BER':>8} {'flips/trial':>12} {'zero-flip %':>12} {'clean pass ms':>14} {'trial ms':>9} {'ratio':>7}")
    ratios = {}
    for ber in BERS:
        before = clean_pass_seconds(model, data, 7)
        cell_id = f"cell-{ber}"
        plan = CampaignPlan([ber], [cell_id], TrialPolicy(trials=trials), lambda trial: trial)
        started = time.perf_counter()
        rows = list(run_campaign(model, injector, fault_model, data, clean, plan, {cell_id: {}}))
        wall = time.perf_counter() - started
        after = clean_pass_seconds(model, data, 7)
        floor = (before + after) / 2
        flips = [row.flips for row in rows]
        ratios[ber] = wall / (trials * floor)
        print(f"{ber:>8.0e} {statistics.mean(flips):>12.1f} {100 * flips.count(0) / len(flips):>12.0f} "
              f"{1000 * floor:>14.2f} {1000 * wall / trials:>9.2f} {ratios[ber]:>7.3f}")
    summary = ", ".join(f"{ber:.0e}: {ratio:.3f}" for ber, ratio in ratios.items())
    print(f"campaign wall / (trials x clean pass): {summary} (target <= 1.10; < 1 where most trials have no flip)")


if __name__ == "__main__":
    main()
