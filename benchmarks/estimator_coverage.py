"""Coverage and bias of the campaign designs against a brute-force Bernoulli campaign, and the trials
each design needs.

**Coverage** (the default), for one deployed model at each BER of ``--bers``:

1. reference: a long plain Bernoulli campaign (every trial a direct draw; zero-flip trials reuse the
   clean result), long enough that about ``--reference`` of its trials flip a bit (at most
   :data:`REFERENCE_CAP` trials), gives the true mean accuracy up to a small standard error;
2. repetitions: many independent small campaigns of each design, each giving an estimate and its 95%
   bounded-bootstrap interval: ``conditional`` (trials given at least one flip, weighted exactly by
   P(K = 0), :mod:`resbench.engine.estimator`), ``critical-bits`` (trials per critical-bit stratum, weighted
   exactly by the binomial stratum probabilities and allocated as a suite's ``sampling: critical-bits``
   allocates them: a pilot per stratum, then each trial where it narrows the interval most,
   :mod:`resbench.engine.strata`) and plain ``bernoulli`` trials.

Prints per design the coverage of the 95% intervals (share of repetitions whose interval holds the
reference), the misses below and above, their mean width, and the bias of the estimates (mean estimate
minus reference, in standard errors). Default: a small MLP on synthetic data (minutes);
``--model lenet5 --dataset mnist5k --test-limit 500`` is the default suite's model.

**Trials for a +-1-point interval** (``--trials-needed``): for the MLP on digits in fp32 and LeNet-5 on
mnist5k in fp32 and q15.16, at BERs 1e-6 and 1e-5, the trials each design needs for a 95% interval of
half-width 1 point, twice: from the sampling variance alone, ``(1.96 sigma)^2`` with ``sigma`` the
standard deviation of one trial's contribution (``P(K >= 1)`` times that of accuracy given a flip for the
conditional design, ``sum_h W_h S_h`` under Neyman allocation for critical-bit strata; Cochran 1977,
eq. 5.27); and for the interval the leaderboard shows, whose pseudo-trial per stratum adds
``(d_h / (n_h + 1))^2`` to each stratum's spread (:func:`resbench.engine.strata.stratum_spread`), trials
allocated one at a time as the design does. Spreads come from ``--pilot`` trials per design and stratum.

``--json`` writes the figures.
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
from resbench.engine.strata import STRATA, CriticalBitStrata, StratifiedDesign, stratum_spread
from resbench.seeds import derive_seed
from resbench.training import load_or_train_baseline

DESIGNS = ("conditional", "critical-bits", "bernoulli")
#: (model, dataset, test limit, format) of the trials-needed table
TRIALS_NEEDED_SETUPS = (("mlp", "digits", None, "fp32"), ("lenet5", "mnist5k", 500, "fp32"),
                        ("lenet5", "mnist5k", 500, "q15.16"))
TRIALS_NEEDED_BERS = (1e-6, 1e-5)
Z95 = 1.959963984540054
#: The most plain Bernoulli trials one reference may take (at BER 1e-7 on a small model, a few hundred flip).
REFERENCE_CAP = 2_000_000


@dataclass
class Deployed:
    """A trained model deployed in a number format, with its clean accuracy."""

    model: torch.nn.Module
    injector: Injector
    data: EvaluationData
    clean_predictions: torch.Tensor
    clean_accuracy: float


@dataclass(frozen=True)
class Setup:
    """What to deploy: model, dataset (with an optional class-stratified test subset) and format."""

    model: str
    dataset: str
    format: str
    test_limit: int | None = None
    epochs: int | None = None


def deploy(setup: Setup, cache_dir: Path) -> Deployed:
    options: dict[str, object] = {"test_limit": setup.test_limit} if setup.test_limit else {}
    if setup.dataset == "synthetic":
        options.update({"train_size": 512, "test_size": 256, "separation": 3.0})
    splits = load_dataset(setup.dataset, options)
    device = torch.device("cpu")
    model = load_or_train_baseline(setup.model, {}, splits, seed=0, cache=ArtifactCache(cache_dir), device=device,
                                   training_options={"epochs": setup.epochs} if setup.epochs else None,
                                   progress=False).model.eval()
    data = load_evaluation_data(splits.test, device, 1024)
    injector = Injector.deploy(model, resolve_format(setup.format))
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


def strata_of(deployed: Deployed, faults: FaultModel, ber: float, critical_bits: list[int] | None = None
              ) -> CriticalBitStrata:
    """The critical-bit strata at ``ber``: the format's critical bits, or ``critical_bits`` instead."""
    bits = critical_bits if critical_bits else deployed.injector.format.critical_bits()
    return CriticalBitStrata.of(faults, deployed.injector.layout, ber, bits)


def critical_bit_campaign(deployed: Deployed, strata: CriticalBitStrata, trials: int, stream: str) -> list[float]:
    """``trials`` trials of one cell as ``sampling: critical-bits`` runs them (:class:`StratifiedDesign`: a pilot
    in each stratum, then each trial where it narrows the interval most); the accuracies in trial order."""
    design = StratifiedDesign(tuple(float(weight) for weight in strata.weights()), deployed.clean_accuracy)
    samples: list[list[float]] = [[] for _ in design.weights]
    accuracies = []
    for _ in range(trials):
        stratum = design.next_stratum(samples)
        seed = derive_seed(stream, len(samples[stratum]))
        samples[stratum].append(accuracy_under(deployed, strata.sample(stratum, seed)))
        accuracies.append(samples[stratum][-1])
    return accuracies


def coverage_at(deployed: Deployed, faults: FaultModel, ber: float, args: argparse.Namespace) -> dict[str, float]:
    """Reference, then each design's coverage, one-sided misses, width and bias at one BER."""
    layout = deployed.injector.layout
    zero_flip = zero_flip_probability(layout.total_elements * faults.allowed_bits(layout).size, ber)
    # Enough plain trials that about ``--reference`` of them flip a bit (zero-flip trials cost no forward pass).
    count = min(REFERENCE_CAP, math.ceil(args.reference / max(1 - zero_flip, 1e-12)))
    reference = bernoulli_trials(deployed, faults, ber, count, f"reference-{ber}")
    truth = float(reference.mean())
    truth_error = float(reference.std(ddof=1)) / math.sqrt(reference.size)
    design = CellDesign(zero_flip, deployed.clean_accuracy)
    strata = strata_of(deployed, faults, ber, args.critical_bits)
    estimates: dict[str, list[tuple[float, float, float]]] = {name: [] for name in DESIGNS}
    for repetition in range(args.repetitions):
        stream = f"{ber}-{repetition}"
        estimates["conditional"].append(design.estimate(
            conditional_trials(deployed, faults, ber, args.trials, f"c{stream}").tolist()))
        stratified = StratifiedDesign(tuple(float(weight) for weight in strata.weights()), deployed.clean_accuracy)
        estimates["critical-bits"].append(stratified.estimate(
            critical_bit_campaign(deployed, strata, args.trials, f"s{stream}")))
        estimates["bernoulli"].append(CellDesign().estimate(
            bernoulli_trials(deployed, faults, ber, args.trials, f"b{stream}").tolist()))
    result = {"ber": ber, "reference_trials": count, "zero_flip_probability": zero_flip,
              "critical_weights": strata.weights().tolist(),
              "clean": deployed.clean_accuracy, "reference_mean": truth, "reference_se": truth_error}
    for name, found in estimates.items():
        means, lows, highs = (np.array(column) for column in zip(*found, strict=True))
        spread = float(means.std(ddof=1)) / math.sqrt(means.size)
        result[f"{name}_coverage"] = float(np.mean((lows <= truth) & (truth <= highs)))
        result[f"{name}_miss_below"] = float(np.mean(truth < lows))
        result[f"{name}_miss_above"] = float(np.mean(truth > highs))
        result[f"{name}_mean_width"] = float(np.mean(highs - lows))
        result[f"{name}_bias"] = float(means.mean()) - truth
        result[f"{name}_bias_z"] = result[f"{name}_bias"] / math.hypot(spread, truth_error)
    return result


def trials_needed(deployed: Deployed, faults: FaultModel, ber: float, pilot: int) -> dict[str, float]:
    """Trials for a +-1-point 95% interval under each design, from pilot spreads (module docstring): from the
    sampling variance alone, and with the interval's pseudo-trials (``stratum_spread``)."""
    layout = deployed.injector.layout
    hit = 1 - zero_flip_probability(layout.total_elements * faults.allowed_bits(layout).size, ber)
    conditional = conditional_trials(deployed, faults, ber, pilot, f"pilot-{ber}").tolist()
    strata = strata_of(deployed, faults, ber)
    weights = strata.weights()
    samples = [[]] + [[accuracy_under(deployed, strata.sample(h, derive_seed(f"pilot-{ber}", h, t)))
                       for t in range(pilot)] if weights[h] > 0 else [] for h in range(1, len(STRATA))]
    deviations = [float(np.std(sample, ddof=1)) if len(sample) > 1 else 0.0 for sample in samples]
    conditional_sigma = hit * float(np.std(conditional, ddof=1))
    strata_sigma = float(np.dot(weights, deviations))
    return {"ber": ber, "conditional": (Z95 * conditional_sigma) ** 2, "critical-bits": (Z95 * strata_sigma) ** 2,
            "conditional_interval": _trials_for_interval([hit], [conditional]),
            "critical-bits_interval": _trials_for_interval(weights[1:].tolist(), samples[1:]),
            "critical_weights": weights.tolist(), "stratum_sd": deviations, "pilot": pilot}


def _trials_for_interval(weights: list[float], samples: list[list[float]], halfwidth: float = 1.0,
                         limit: int = 1_000_000) -> int:
    """The fewest trials whose allocation, one trial at a time where it helps most (as the design allocates),
    brings ``Z95 * sqrt(sum_h W_h^2 V_h(n_h))`` to ``halfwidth``; strata from their pilot ``samples``."""
    live = [h for h, weight in enumerate(weights) if weight > 0 and len(samples[h]) > 1]
    counts = {h: 2 for h in live}

    def spread() -> float:
        return sum(weights[h] ** 2 * stratum_spread(samples[h], counts[h]) for h in live)

    while Z95 * math.sqrt(spread()) > halfwidth and sum(counts.values()) < limit:
        best = max(live, key=lambda h: weights[h] ** 2 * (stratum_spread(samples[h], counts[h])
                                                          - stratum_spread(samples[h], counts[h] + 1)))
        step = max(1, counts[best] // 50)  # big allocations move in steps of 2 %
        counts[best] += step
    return sum(counts.values())


def coverage(args: argparse.Namespace, cache_dir: Path) -> dict[str, object]:
    setup = Setup(args.model, args.dataset, args.format, args.test_limit, args.epochs)
    deployed = deploy(setup, cache_dir)
    faults = resolve_fault_model("bitflip")
    print(f"{args.model} / {args.dataset} / {args.format} / bitflip, clean {deployed.clean_accuracy:.2f} %; "
          f"{args.repetitions} repetitions of {args.trials} trials per design")
    rows = []
    for ber in args.bers:
        row = coverage_at(deployed, faults, ber, args)
        rows.append(row)
        print(f"BER {ber:g}: P(K=0) = {row['zero_flip_probability']:.4f}; reference {row['reference_mean']:.3f} % "
              f"± {row['reference_se']:.3f} (SE) from {row['reference_trials']} Bernoulli trials")
        for name in DESIGNS:
            print(f"  {name:>13}: coverage {100 * row[f'{name}_coverage']:.1f} % (truth below the interval "
                  f"{100 * row[f'{name}_miss_below']:.1f} %, above {100 * row[f'{name}_miss_above']:.1f} %); "
                  f"mean width {row[f'{name}_mean_width']:.2f} points; bias {row[f'{name}_bias']:+.3f} points "
                  f"({row[f'{name}_bias_z']:+.2f} SE)")
    return {"setup": vars(setup), "trials": args.trials, "repetitions": args.repetitions,
            "bers": rows}


def trials_needed_table(args: argparse.Namespace, cache_dir: Path) -> dict[str, object]:
    faults = resolve_fault_model("bitflip")
    rows = []
    print(f"Trials for a ±1-point 95% interval ({args.pilot} pilot trials per design and stratum): from the "
          "sampling variance alone, and for the interval resbench shows (bounded bootstrap, pseudo-trial per stratum)")
    print("| model / format | BER | conditional | critical-bit strata | fewer | conditional, interval | "
          "critical-bit strata, interval | fewer |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for model, dataset, limit, number_format in TRIALS_NEEDED_SETUPS:
        deployed = deploy(Setup(model, dataset, number_format, limit), cache_dir)
        for ber in TRIALS_NEEDED_BERS:
            row = {"model": model, "dataset": dataset, "format": number_format,
                   **trials_needed(deployed, faults, ber, args.pilot)}
            rows.append(row)
            ratio = row["conditional"] / max(row["critical-bits"], 1e-12)
            shown = row["conditional_interval"] / max(row["critical-bits_interval"], 1)
            print(f"| {model} {number_format} | {ber:g} | {row['conditional']:.0f} | {row['critical-bits']:.0f} | "
                  f"{ratio:.1f}x | {row['conditional_interval']} | {row['critical-bits_interval']} | {shown:.1f}x |")
    return {"trials_needed": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="test-mlp")
    parser.add_argument("--dataset", default="synthetic")
    parser.add_argument("--format", default="fp32")
    parser.add_argument("--test-limit", type=int, default=None)
    parser.add_argument("--epochs", type=int, default=None, help="training epochs (default: the model's recipe)")
    parser.add_argument("--bers", type=lambda text: [float(part) for part in text.split(",")],
                        default=[1e-7, 1e-6, 1e-5, 1e-4, 1e-3], help="comma-separated BERs")
    parser.add_argument("--trials", type=int, default=30, help="trials per repetition and design")
    parser.add_argument("--critical-bits", type=lambda text: [int(part) for part in text.split(",")], default=None,
                        help="comma-separated bit positions to stratify on (default: the format's critical bits)")
    parser.add_argument("--repetitions", type=int, default=100)
    parser.add_argument("--reference", type=int, default=5000,
                        help="trials with a flip in the brute-force reference (plain trials: this over P(K >= 1))")
    parser.add_argument("--trials-needed", action="store_true",
                        help="instead: trials for a ±1-point interval, conditional vs critical-bit strata")
    parser.add_argument("--pilot", type=int, default=100, help="--trials-needed: pilot trials per design/stratum")
    parser.add_argument("--cache-dir", type=Path, default=None, help="artifact cache (default: a temporary one)")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temporary:
        cache_dir = args.cache_dir or Path(temporary)
        result = trials_needed_table(args, cache_dir) if args.trials_needed else coverage(args, cache_dir)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
