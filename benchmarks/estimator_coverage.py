"""Coverage and bias of the conditional-on-a-flip estimator against a brute-force Bernoulli campaign.

For one deployed model and one BER:

1. reference: a long plain Bernoulli campaign (every trial a direct draw; zero-flip trials reuse the
   clean result) gives the true mean accuracy up to a small standard error;
2. repetitions: many independent small campaigns of the conditional design (trials given at least
   one flip, weighted exactly by P(K = 0), :mod:`resbench.engine.estimator`), each giving an estimate and its
   95% bounded-bootstrap interval; the same number of plain Bernoulli trials beside them, with the
   same interval, for comparison.

Prints the coverage of the 95% intervals (share of repetitions whose interval holds the reference),
their mean width, and the bias of the estimates (mean estimate minus reference, in reference standard
errors). ``--json`` writes the figures for tests. Default: a small MLP on synthetic data (seconds);
``--model lenet5 --dataset mnist5k --test-limit 500`` is the default suite's model.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from resbench.cache import ArtifactCache
from resbench.datasets import load_dataset
from resbench.engine.estimator import CellDesign, sample_given_flips, zero_flip_probability
from resbench.engine.evaluation import (
    EvaluationData,
    load_evaluation_data,
    predict_logits,
    predictions_of,
    trial_metrics,
)
from resbench.engine.faults import FaultModel, FaultSites, resolve_fault_model
from resbench.engine.formats import resolve_format
from resbench.engine.injection import Injector
from resbench.seeds import derive_seed
from resbench.training import load_or_train_baseline


@dataclass
class Deployed:
    """A trained model deployed in a number format, with its clean accuracy."""

    model: torch.nn.Module
    injector: Injector
    data: EvaluationData
    clean_predictions: torch.Tensor
    clean_accuracy: float


def deploy(args: argparse.Namespace, cache_dir: Path) -> Deployed:
    options = {"test_limit": args.test_limit} if args.test_limit else {}
    if args.dataset == "synthetic":
        options.update({"train_size": 512, "test_size": 256, "separation": 3.0})
    splits = load_dataset(args.dataset, options)
    device = torch.device("cpu")
    model = load_or_train_baseline(args.model, {}, splits, seed=0, cache=ArtifactCache(cache_dir), device=device,
                                   training_options={"epochs": args.epochs} if args.epochs else None,
                                   progress=False).model.eval()
    data = load_evaluation_data(splits.test, device, 1024)
    injector = Injector.deploy(model, resolve_format(args.format))
    logits = predict_logits(model, data)
    predictions, _ = predictions_of(logits)
    clean = trial_metrics(logits, data.labels, predictions).accuracy
    return Deployed(model, injector, data, predictions, clean)


def accuracy_under(deployed: Deployed, sites: FaultSites) -> float:
    if sites.num_flips == 0:
        return deployed.clean_accuracy
    with deployed.injector.injected(sites):
        logits = predict_logits(deployed.model, deployed.data)
    return trial_metrics(logits, deployed.data.labels, deployed.clean_predictions).accuracy


def bernoulli_trials(deployed: Deployed, faults: FaultModel, ber: float, count: int, stream: str) -> np.ndarray:
    layout = deployed.injector.layout
    return np.array([accuracy_under(deployed, faults.sample(layout, [ber], derive_seed(stream, t))[0])
                     for t in range(count)])


def conditional_trials(deployed: Deployed, faults: FaultModel, ber: float, count: int, stream: str) -> np.ndarray:
    layout = deployed.injector.layout
    return np.array([accuracy_under(deployed, sample_given_flips(faults, layout, ber, derive_seed(stream, t)))
                     for t in range(count)])


def simulate(args: argparse.Namespace, cache_dir: Path) -> dict[str, float]:
    deployed = deploy(args, cache_dir)
    faults = resolve_fault_model("bitflip")
    layout = deployed.injector.layout
    zero_flip = zero_flip_probability(layout.total_elements * faults.allowed_bits(layout).size, args.ber)
    reference = bernoulli_trials(deployed, faults, args.ber, args.reference, "reference")
    truth = float(reference.mean())
    truth_error = float(reference.std(ddof=1)) / math.sqrt(reference.size)
    design = CellDesign(zero_flip, deployed.clean_accuracy)
    figures: dict[str, list[float]] = {"conditional": [], "bernoulli": []}
    covered = {"conditional": 0, "bernoulli": 0}
    widths = {"conditional": 0.0, "bernoulli": 0.0}
    for repetition in range(args.repetitions):
        samples = {
            "conditional": (design, conditional_trials(deployed, faults, args.ber, args.trials, f"c{repetition}")),
            "bernoulli": (CellDesign(), bernoulli_trials(deployed, faults, args.ber, args.trials, f"b{repetition}")),
        }
        for name, (cell_design, accuracies) in samples.items():
            mean, low, high = cell_design.estimate(accuracies.tolist())
            figures[name].append(mean)
            covered[name] += int(low <= truth <= high)
            widths[name] += (high - low) / args.repetitions
    result = {"ber": args.ber, "zero_flip_probability": zero_flip, "clean": deployed.clean_accuracy,
              "reference_mean": truth, "reference_se": truth_error, "reference_trials": args.reference,
              "trials": args.trials, "repetitions": args.repetitions}
    for name in figures:
        estimates = np.asarray(figures[name])
        spread = float(estimates.std(ddof=1)) / math.sqrt(estimates.size)
        result[f"{name}_coverage"] = covered[name] / args.repetitions
        result[f"{name}_mean_width"] = widths[name]
        result[f"{name}_bias"] = float(estimates.mean()) - truth
        result[f"{name}_bias_z"] = result[f"{name}_bias"] / math.hypot(spread, truth_error)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="test-mlp")
    parser.add_argument("--dataset", default="synthetic")
    parser.add_argument("--format", default="fp32")
    parser.add_argument("--test-limit", type=int, default=None)
    parser.add_argument("--epochs", type=int, default=None, help="training epochs (default: the model's recipe)")
    parser.add_argument("--ber", type=float, default=2e-5)
    parser.add_argument("--trials", type=int, default=30, help="trials per repetition")
    parser.add_argument("--repetitions", type=int, default=300)
    parser.add_argument("--reference", type=int, default=20000, help="trials of the brute-force reference")
    parser.add_argument("--cache-dir", type=Path, default=None, help="artifact cache (default: a temporary one)")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temporary:
        result = simulate(args, args.cache_dir or Path(temporary))
    print(f"{args.model} / {args.dataset} / {args.format} / bitflip at BER {args.ber:g}: "
          f"P(K=0) = {result['zero_flip_probability']:.3f}, clean {result['clean']:.2f} %")
    print(f"reference: {result['reference_mean']:.3f} % ± {result['reference_se']:.3f} (SE) from "
          f"{args.reference} Bernoulli trials")
    for name in ("conditional", "bernoulli"):
        print(f"{name:>11}: coverage of 95% intervals {100 * result[f'{name}_coverage']:.1f} % over "
              f"{args.repetitions} repetitions of {args.trials} trials; mean width "
              f"{result[f'{name}_mean_width']:.2f} points; bias {result[f'{name}_bias']:+.3f} points "
              f"({result[f'{name}_bias_z']:+.2f} SE)")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
