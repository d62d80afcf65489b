"""Campaign cost: wall time of the trial loop divided by (trials x one clean evaluation pass), with and
without prefix reuse, side by side in one run.

A trial's floor used to be one clean pass over the evaluation set. With prefix reuse
(:mod:`resbench.engine.prefix_reuse`) a weight-fault trial recomputes only from the first operation that
reads a flipped tensor and stops where the fault was masked, so its ratio falls below 1 where faults are
few. Both campaigns run the same trials under the default (conditional) sampling: every trial has at least
one flip; each trial runs both ways beside a clean pass, in rotating order, so that all three see the same
machine noise, and the benchmark checks that their rows agree.

Models: LeNet-5 on mnist5k (the default suite's, trained first if the artifact cache lacks it) and
ResNet-20 with its initial weights on 1,000 random 32x32 images (training it on a CPU takes hours; a trained
model masks more faults, so there reuse can only do better). Targets: ResNet-20 <= 0.4 at BER 1e-7 and
<= 0.8 at 1e-6, LeNet-5 <= 0.3 at 1e-7 and 1e-6, and <= 1.05 where reuse cannot help.

Usage: ``python benchmarks/campaign.py [--models lenet5,resnet20] [--trials 20] [--threads 1] [--quick]``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

from resbench.cache import ArtifactCache
from resbench.config import TrialPolicy
from resbench.datasets import load_dataset
from resbench.engine.allocator import keep_freed_memory
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
from resbench.engine.prefix_reuse import PrefixReuse
from resbench.models import build_model
from resbench.run.campaign import CampaignPlan, CleanReference, run_campaign
from resbench.training import load_or_train_baseline

BERS = {"lenet5": [1e-7, 1e-6, 1e-5, 1e-4], "resnet20": [1e-7, 1e-6, 1e-5]}


def lenet5_on_mnist5k() -> tuple[nn.Module, EvaluationData]:
    """The default suite's trained LeNet-5 and the mnist5k test split (1,000 images)."""
    splits = load_dataset("mnist5k")
    model = load_or_train_baseline("lenet5", {}, splits, seed=0, cache=ArtifactCache(), device=torch.device("cpu"),
                                   progress=False).model
    return model.eval(), load_evaluation_data(splits.test, torch.device("cpu"), 1024)


def resnet20_on_random_images() -> tuple[nn.Module, EvaluationData]:
    """ResNet-20 with its (seeded) initial weights and 1,000 random 32x32 images."""
    torch.manual_seed(0)
    images = torch.rand(1000, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    labels = torch.randint(10, (1000,), generator=torch.Generator().manual_seed(1))
    return build_model("resnet20", (3, 32, 32), 10).eval(), EvaluationData(images, labels, 1024)


MODELS: dict[str, Callable[[], tuple[nn.Module, EvaluationData]]] = {
    "lenet5": lenet5_on_mnist5k, "resnet20": resnet20_on_random_images,
}


def clean_pass_seconds(model: nn.Module, data: EvaluationData) -> float:
    """Time of one clean evaluation pass."""
    started = time.perf_counter()
    predict_logits(model, data)
    return time.perf_counter() - started


def trial_seconds(model: nn.Module, injector: Injector, data: EvaluationData, clean: CleanReference, ber: float,
                  trial: int, reuse: PrefixReuse | None) -> tuple[float, tuple[float, float, int]]:
    """Wall time of conditional trial ``trial`` at ``ber`` through the campaign loop, and its (accuracy, SDC
    rate, flips)."""
    plan = CampaignPlan([ber], ["cell"], TrialPolicy(trials=trial + 1), lambda index: index, conditional=True,
                        batch=((trial, (0,)),))
    started = time.perf_counter()
    [row] = run_campaign(model, injector, resolve_fault_model("bitflip"), data, clean, plan, {"cell": {}}, reuse)
    return time.perf_counter() - started, (row.accuracy, row.sdc_rate, row.flips)


def paired_ratios(model: nn.Module, injector: Injector, data: EvaluationData, clean: CleanReference, ber: float,
                  trials: int, reuse: PrefixReuse | None) -> tuple[float, float, float, float, bool]:
    """Per trial a clean pass, the trial without reuse and the trial with it, in rotating order (all three see
    the same machine noise): mean flips, mean clean pass, both ratios and whether the rows agree."""
    seconds: dict[str, float] = {"clean": 0.0, "full": 0.0, "reuse": 0.0}
    rows: dict[str, list[tuple[float, float, int]]] = {"full": [], "reuse": []}
    for trial in range(trials):
        order = ["clean", "full", "reuse"]
        for which in order[trial % 3:] + order[: trial % 3]:
            if which == "clean":
                seconds["clean"] += clean_pass_seconds(model, data)
                continue
            elapsed, row = trial_seconds(model, injector, data, clean, ber, trial, reuse if which == "reuse" else None)
            seconds[which] += elapsed
            rows[which].append(row)
    floor = seconds["clean"]
    flips = statistics.mean(row[2] for row in rows["full"])
    return flips, floor / trials, seconds["full"] / floor, seconds["reuse"] / floor, rows["full"] == rows["reuse"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="lenet5,resnet20")
    parser.add_argument("--trials", type=int, help="trials per BER (default 30; --quick: 8)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--quick", action="store_true", help="fewer trials")
    args = parser.parse_args()
    trials = args.trials or (8 if args.quick else 30)
    torch.set_num_threads(args.threads)
    allocator = "freed memory kept, as in campaigns" if keep_freed_memory() else "the system's settings"
    print(f"cpu, {args.threads} thread(s), allocator: {allocator}, fp32, bitflip, conditional sampling (every trial "
          "has a flip), "
          f"{trials} trials per BER; ratio = wall / (trials x clean pass)")
    print(f"{'model':<9} {'BER':>7} {'flips/trial':>11} {'clean ms':>9} {'full pass':>9} {'reuse':>7} "
          f"{'same rows':>9}")
    for name in args.models.split(","):
        model, data = MODELS[name]()
        injector = Injector.deploy(model, resolve_format("fp32"))
        logits = predict_logits(model, data)
        predictions, _ = predictions_of(logits)
        clean = CleanReference(predictions, trial_metrics(logits, data.labels, predictions))
        started = time.perf_counter()
        reuse = PrefixReuse.build(model, injector, data)
        built = time.perf_counter() - started
        for ber in BERS[name]:
            flips, floor, full, reused, same = paired_ratios(model, injector, data, clean, ber, trials, reuse)
            print(f"{name:<9} {ber:>7.0e} {flips:>11.1f} {1000 * floor:>9.1f} {full:>9.3f} {reused:>7.3f} "
                  f"{'yes' if same else 'NO':>9}")
        kept = reuse.stored_bytes / 2**20 if reuse is not None else 0.0
        print(f"{name:<9} prefix reuse: built in {built:.2f} s, {kept:.0f} MiB of clean values kept")


if __name__ == "__main__":
    main()
