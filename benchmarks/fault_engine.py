"""Fault-engine speed: inject+restore on a ResNet-18-sized fault space against one forward pass.

Deploys torchvision's ResNet-18 (weights=None, 10 classes: 11.2 M stored conv/linear values) in a number
format, then for each BER from 1e-7 to 1e-3 times inject+restore of sampled bit flips (median over
trials) and compares it with one clean forward pass over 256 images of 3x32x32, and with a dense
baseline that draws one random number per stored bit, the way other fault injectors sample.

    python benchmarks/fault_engine.py [--quick] [--format fp32] [--device cpu]

The last line sums up the ratios inject+restore / forward; the target at BER 1e-5 is at most 0.005.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torchvision

from resbench.engine.faults import BernoulliFaults
from resbench.engine.formats import resolve_format
from resbench.engine.injection import Injector

BERS = (1e-7, 1e-6, 1e-5, 1e-4, 1e-3)
TARGET_BER = 1e-5
TARGET_RATIO = 0.005


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_seconds(action: Callable[[], object], repeats: int, device: torch.device) -> float:
    """Median wall time of ``action`` over ``repeats`` runs, after one warm-up run."""
    action()
    synchronize(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        action()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def dense_inject_restore(injector: Injector, ber: float, fraction: float = 1.0) -> float:
    """Baseline: one uniform draw per stored bit, a mask per bit plane, XOR and whole-tensor decode.

    Works tensor by tensor on the injector's codes, the way other fault injectors sample, and covers the
    first tensors holding at least ``fraction`` of the fault space. Returns the share it covered, so
    that a partial run can be scaled to the whole space (the cost is linear in bits).
    """
    number_format = injector.format
    offsets = injector.layout.offsets
    for index in range(len(offsets) - 1):
        codes = injector.codes[offsets[index] : offsets[index + 1]]
        values = injector.values[offsets[index] : offsets[index + 1]]
        scale = injector.scales[index] if number_format.scaled else None
        mask = torch.zeros_like(codes)
        for bit in range(number_format.bits_per_element):
            hit = torch.rand(codes.numel(), device=codes.device) < ber
            mask |= hit.to(codes.dtype) << bit
        for _ in range(2):  # inject, then restore
            codes ^= mask
            values.copy_(number_format.decode(codes, scale))
        if offsets[index + 1] >= fraction * offsets[-1]:
            return offsets[index + 1] / offsets[-1]
    return 1.0


def dense_seconds(injector: Injector, quick: bool, device: torch.device) -> tuple[float, str]:
    """Time of the dense baseline over the whole space; ``--quick`` times a tenth once and scales it."""
    if quick:
        start = time.perf_counter()
        share = dense_inject_restore(injector, TARGET_BER, 0.1)
        synchronize(device)
        return (time.perf_counter() - start) / share, f", scaled from {share:.0%} of the space"
    return median_seconds(lambda: dense_inject_restore(injector, TARGET_BER), 3, device), ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer trials and repeats (under a minute)")
    parser.add_argument("--format", default="fp32", help="number format of the fault space")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    trials, repeats = (3, 2) if args.quick else (31, 5)
    device = torch.device(args.device)

    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None, num_classes=10).to(device).eval()
    images = torch.randn(256, 3, 32, 32, device=device)
    injector = Injector.deploy(model, resolve_format(args.format))
    layout = injector.layout
    print(f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}")
    print(
        f"fault space: {len(layout.names)} tensors, {layout.total_elements:,} values, "
        f"{layout.total_bits:,} bits in {args.format}"
    )

    with torch.inference_mode():
        forward = median_seconds(lambda: model(images), 1 if args.quick else repeats, device)
    print(f"clean forward, 256 x 3x32x32: {forward * 1e3:.1f} ms")

    clean_values = injector.values.clone()
    start = time.perf_counter()
    sweeps = [BernoulliFaults().sample(layout, BERS, seed) for seed in range(trials)]
    sampling = (time.perf_counter() - start) / trials
    print(f"sampling a nested sweep of {len(BERS)} BERs: {sampling * 1e3:.2f} ms per trial")

    def inject_restore(ber_index: int, trial: int) -> None:
        injector.inject(sweeps[trial][ber_index])
        injector.restore()

    dense, note = dense_seconds(injector, args.quick, device)
    print(f"dense per-bit random mask baseline: {dense * 1e3:.1f} ms ({dense / forward:.1f} forward passes{note})")

    print(f"{'BER':>8} {'flips':>8} {'inject+restore':>15} {'per flip':>10} {'/ forward':>10} {'speedup':>9}")
    ratios = {}
    for index, ber in enumerate(BERS):
        times = [median_seconds(lambda i=index, t=t: inject_restore(i, t), repeats, device) for t in range(trials)]
        elapsed = statistics.median(times)
        flips = statistics.median(sweep[index].num_flips for sweep in sweeps)
        ratios[ber] = elapsed / forward
        per_flip = elapsed / flips * 1e6 if flips else float("nan")
        print(
            f"{ber:>8.0e} {flips:>8.0f} {elapsed * 1e6:>12.0f} us {per_flip:>7.3f} us "
            f"{ratios[ber]:>10.5f} {dense / elapsed:>8.0f}x"
        )

    assert torch.equal(injector.values.view(torch.int32), clean_values.view(torch.int32)), "restore not exact"
    verdict = "meets" if ratios[TARGET_BER] <= TARGET_RATIO else "MISSES"
    summary = ", ".join(f"{ber:.0e}: {ratio:.5f}" for ber, ratio in ratios.items())
    print(
        f"inject+restore / forward ratios ({args.format}, {device}): {summary}; "
        f"at {TARGET_BER:.0e} {ratios[TARGET_BER]:.5f} {verdict} the {TARGET_RATIO} target"
    )


if __name__ == "__main__":
    main()
