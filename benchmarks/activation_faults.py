"""Activation-fault speed: a faulty pass over the evaluation set against a clean pass, side by side.

For LeNet-5 (1x28x28, 1,000 images) and ResNet-20 (3x32x32, 512 images), untrained (speed does not
depend on the weights), this times, alternately so both see the same machine noise, and keeping the
fastest of several repeats. On a CPU the clock is the CPU time of the calling thread with one intra-op
thread (``--threads 1``, the default there): on a shared machine wall time swings with other people's
jobs, CPU time much less; ``--wall`` uses wall time instead (and on a GPU always).

* the clean pass: the model without hooks;
* one trial of ``act-single`` (one flip per image in conv/linear outputs): sampling every image's fault
  and the faulty pass through the hooks;
* one trial of ``act-bitflip`` at BER 1e-6 and 1e-5 (images without a flip keep their clean logits);
* with ``--format q15.16``: the clean pass computing in the format (hooks, no fault) as the reference
  of the faulty passes, and the plain clean pass beside it.

    python benchmarks/activation_faults.py [--quick] [--format fp32] [--device cpu] [--batch-size 256]
                                           [--threads N] [--wall]

The last line sums up: the target is act-single / clean <= 1.10 on both models.
"""

from __future__ import annotations

import argparse
import copy
import functools
import time
from collections.abc import Callable

import torch
from torch import nn

from resbench.engine.activation_faults import ActivationFaultModel
from resbench.engine.evaluation import EvaluationData, predict_logits
from resbench.engine.faults import resolve_fault_model
from resbench.models import build_model
from resbench.run.activation_campaign import ActivationCampaign, faulty_logits, prepare_activation_campaign

TARGET_RATIO = 1.10
MODELS = (("lenet5", (1, 28, 28), 1000), ("resnet20", (3, 32, 32), 512))


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def fastest_side_by_side(
    actions: dict[str, Callable[[], object]], repeats: int, device: torch.device, clock: Callable[[], float]
) -> dict[str, float]:
    """Fastest time of each action over ``repeats`` rounds, the actions alternating within a round."""
    for action in actions.values():
        action()
    times: dict[str, list[float]] = {name: [] for name in actions}
    for _ in range(repeats):
        for name, action in actions.items():
            synchronize(device)
            start = clock()
            action()
            synchronize(device)
            times[name].append(clock() - start)
    return {name: min(values) for name, values in times.items()}


def faulty_trial(campaign: ActivationCampaign, ber: float) -> Callable[[], torch.Tensor]:
    """One trial: sample every image's faults (a fresh trial seed each call), then the faulty pass."""
    seeds = iter(range(10**9))

    def run() -> torch.Tensor:
        faults = campaign.trial_faults([ber], next(seeds))[0]
        return faulty_logits(campaign.injector, campaign.data, faults, campaign.clean_logits)

    return run


def benchmark(name: str, shape: tuple[int, int, int], count: int, args: argparse.Namespace) -> float:
    """Print the side-by-side times of one model; returns the act-single ratio to its clean pass."""
    device = torch.device(args.device)
    torch.manual_seed(0)
    model: nn.Module = build_model(name, shape, 10, {}).to(device).eval()
    without_hooks = copy.deepcopy(model)  # the clean pass: the same network, no hooks at all
    data = EvaluationData(torch.randn(count, *shape, device=device), torch.randint(0, 10, (count,), device=device),
                          args.batch_size)
    single_ratio = float("nan")
    for label, fault_name, ber in (("act-single", "act-single", -1.0), ("act-bitflip 1e-6", "act-bitflip", 1e-6),
                                   ("act-bitflip 1e-5", "act-bitflip", 1e-5)):
        fault_model = resolve_fault_model(fault_name, {"format": args.format})
        assert isinstance(fault_model, ActivationFaultModel)
        campaign = prepare_activation_campaign(model, fault_model, data, None, 0)
        if label == "act-single":
            layout = campaign.injector.layout
            print(f"{name}: {count} images of {shape}, batch {args.batch_size}, {len(layout.names)} operators, "
                  f"{layout.total_elements:,} output elements per image, activations in {args.format}")
        actions: dict[str, Callable[[], object]] = {"clean, no hooks": functools.partial(predict_logits, without_hooks,
                                                                                          data)}
        if args.format != "fp32":
            actions[f"clean in {args.format}"] = functools.partial(predict_logits, campaign.injector.model, data)
        actions[label] = faulty_trial(campaign, ber)
        times = fastest_side_by_side(actions, args.repeats, device, args.clock)
        campaign.close()
        reference = times[f"clean in {args.format}"] if args.format != "fp32" else times["clean, no hooks"]
        shown = "   ".join(f"{key} {seconds * 1e3:8.2f} ms" for key, seconds in times.items())
        print(f"  {shown}   ratio {times[label] / reference:.3f}")
        if label == "act-single":
            single_ratio = times[label] / reference
            sampling = min(_seconds(functools.partial(campaign.trial_faults, [-1.0], seed), args.clock)
                           for seed in range(20))
            print(f"  act-single sampling alone {sampling * 1e3:.2f} ms ({sampling / reference:.3f} of the clean "
                  "pass)")
    return single_ratio


def _seconds(action: Callable[[], object], clock: Callable[[], float]) -> float:
    start = clock()
    action()
    return clock() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    parser.add_argument("--format", default="fp32", help="activation number format (fp32, q15.16, ...)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--threads", type=int, help="intra-op threads on a CPU (default 1)")
    parser.add_argument("--wall", action="store_true", help="time by wall clock instead of thread CPU time")
    args = parser.parse_args()
    args.repeats = 5 if args.quick else 15
    on_cpu = torch.device(args.device).type == "cpu"
    if on_cpu:
        torch.set_num_threads(args.threads or 1)
    thread_time = on_cpu and not args.wall and torch.get_num_threads() == 1
    args.clock = time.thread_time if thread_time else time.perf_counter
    print(f"clock: {'CPU time of the calling thread' if thread_time else 'wall time'}, "
          f"{torch.get_num_threads()} intra-op thread(s), fastest of {args.repeats} alternating repeats")
    ratios = {name: benchmark(name, shape, count, args) for name, shape, count in MODELS}
    verdict = "met" if all(ratio <= TARGET_RATIO for ratio in ratios.values()) else "NOT met"
    summary = ", ".join(f"{name} {ratio:.3f}" for name, ratio in ratios.items())
    print(f"act-single trial / clean pass: {summary} (target <= {TARGET_RATIO:.2f}: {verdict})")


if __name__ == "__main__":
    main()
