"""Train the default baselines on this machine's CPU and report test accuracy and time.

Targets (the default recipes are tuned for them): ``lenet5`` on ``mnist5k`` at least 97% and ``mlp`` on
``digits`` at least 95% test accuracy, each in about a minute on a 2-core CPU. Nothing is cached: every
run trains from scratch.

    python benchmarks/train_baselines.py [--seed 0] [--device cpu] [--threads N]
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from resbench.datasets import load_dataset
from resbench.models import build_model
from resbench.training import evaluate, recipe_for, train_model

CASES = (("lenet5", "mnist5k", 97.0), ("mlp", "digits", 95.0))


def run_case(model_name: str, dataset_name: str, target: float, seed: int, device: str) -> bool:
    """Train one baseline from scratch, print its figures, and say whether it met the target."""
    splits = load_dataset(dataset_name, {})
    options = recipe_for(model_name)
    torch.manual_seed(seed)
    model = build_model(model_name, splits.image_shape, splits.num_classes)
    started = time.perf_counter()
    result = train_model(model, splits, options, device, seed=seed, progress=False)
    seconds = time.perf_counter() - started
    accuracy = evaluate(model, splits.test, device)
    verdict = "ok" if accuracy >= target else "BELOW TARGET"
    print(f"{model_name:8s} on {dataset_name:8s}: test {accuracy:6.2f}% (target >= {target:.0f}%), "
          f"validation {result.validation_accuracy:6.2f}% at epoch {result.best_epoch}/{options.epochs}, "
          f"{seconds:5.1f} s on {device} ({torch.get_num_threads()} threads) [{verdict}]")
    return accuracy >= target


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch intra-op threads (default: torch's choice); 1 is faster on a busy machine")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    results = [run_case(model, dataset, target, args.seed, args.device) for model, dataset, target in CASES]
    return 0 if all(results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
