"""Per-method overhead: resbench's protected model beside a plain PyTorch implementation of the same method.

For every model and method, three models are timed in one interleaved loop (the order rotates pass by pass,
so all three see the same machine noise), each deployed in fp32 as in a campaign:

* ``none``: the unprotected model;
* ``resbench``: the method as resbench builds it (call sites rewritten, bounded modules, parametrized weights);
* ``reference``: the same model and the same bounds or stored weights, written as one would by hand in plain
  PyTorch: the model's activation followed by ``torch.clamp(a, max=b)`` (Ranger, and its clamps after
  pooling and flatten), ``torch.where(a > b, 0, a)`` (Clip-Act), ``a * torch.sigmoid(k * (b - a))``
  (FitAct, ProAct), a convolution or linear layer that computes ``tau(W)`` or ``W / c`` in its forward (SAF,
  weight scaling).

It prints per method the median overhead (%) of the paired ratios against ``none`` with its distribution-free
95% interval (``resbench.statistics.overhead_interval``), for resbench and for the reference, whether both
give the same logits bit for bit, and whether resbench's overhead is within 1.5 times the reference's (plus
two points, or within the reference's interval). Bounds are profiled, not fitted (the cost of a pass does not depend on
their values); models carry their initial weights and see random images of their dataset's shape.

Usage: ``python benchmarks/overhead.py [--models lenet5,resnet20] [--methods ranger,fitact] [--images 1000]
[--repeats 21] [--threads 1]``.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from resbench_plugins.clipact import ZeroAboveActivation
from resbench_plugins.fitact import FitReLUActivation
from resbench_plugins.ranger import ClampedActivation, FollowingClamp
from torch import nn
from torch.nn.utils import parametrize

from resbench.engine.allocator import keep_freed_memory
from resbench.engine.evaluation import EvaluationData, predict_logits
from resbench.engine.formats import resolve_format
from resbench.engine.injection import Injector
from resbench.methods import BoundedActivation, set_profiled_bounds
from resbench.methods.testing import tiny_prepare_context
from resbench.methods.transforms import weight_layers
from resbench.models import build_model
from resbench.plugins import get_registries
from resbench.statistics import overhead_interval

METHODS = ["ranger", "clipact", "fitact", "proact", "saf-tanh", "saf-arctan", "saf-softsign", "saf-hardtanh",
           "wscale", "saf-tanh+fitact"]
IMAGE_SHAPES = {"lenet5": (1, 28, 28)}
DEFAULT_SHAPE = (3, 32, 32)
#: Percentage points of overhead that timings on a shared machine cannot tell apart.
RESOLUTION = 2.0
CONVOLUTIONS = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


class PlainBounded(nn.Module):
    """The model's activation followed by a hand-written bound: ``limit(activated, bound)``."""

    def __init__(self, activation: nn.Module, bound: torch.Tensor,
                 limit: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.activation, self.bound, self.limit = activation, bound, limit

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.limit(self.activation(inputs), self.bound)


class PlainClamp(nn.Module):
    """``torch.clamp(x, max=b)`` with a call site's bound (Ranger's clamps after pooling and flatten)."""

    def __init__(self, bound: torch.Tensor) -> None:
        super().__init__()
        self.bound = bound

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return torch.clamp(inputs, max=self.bound)


def _plain_limit(module: BoundedActivation) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    if isinstance(module, ClampedActivation):
        return lambda activated, bound: torch.clamp(activated, max=bound)
    if isinstance(module, ZeroAboveActivation):
        return lambda activated, bound: torch.where(activated > bound, 0.0, activated)
    if isinstance(module, FitReLUActivation):
        slope = module.slope
        return lambda activated, bound: activated * torch.sigmoid(slope * (bound - activated))
    raise TypeError(f"no plain reference for {type(module).__name__}")


class PlainReadBack(nn.Module):
    """A convolution or linear layer that computes its weight from the stored tensor in every forward pass."""

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.read_back = layer.parametrizations.weight[0]
        self.stored = nn.Parameter(layer.parametrizations.weight.original.detach().clone())
        self.bias = layer.bias
        self.convolution = None if isinstance(layer, nn.Linear) else CONVOLUTIONS[self.stored.dim() - 2]
        self.settings = () if isinstance(layer, nn.Linear) else (layer.stride, layer.padding, layer.dilation,
                                                                  layer.groups)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        weight = self.read_back(self.stored)
        if self.convolution is None:
            return F.linear(inputs, weight, self.bias)
        return self.convolution(inputs, weight, self.bias, *self.settings)


def reference_model(protected: nn.Module) -> nn.Module:
    """A copy of ``protected`` whose bounded activations and transformed layers are plain PyTorch."""
    reference = copy.deepcopy(protected)
    for name, module in list(reference.named_modules()):
        if isinstance(module, BoundedActivation):
            plain: nn.Module = PlainBounded(module.activation, module.bound.detach(), _plain_limit(module))
        elif isinstance(module, FollowingClamp):
            plain = PlainClamp(module.__dict__["source"].bound.detach())
        else:
            continue
        reference.set_submodule(name, plain)
    for name, layer in weight_layers(reference):
        if parametrize.is_parametrized(layer, "weight"):
            reference.set_submodule(name, PlainReadBack(layer))
    return reference


def prepared(method: str, base: nn.Module, image_shape: tuple[int, int, int]) -> nn.Module:
    """``method`` built on a copy of ``base``, its bounds profiled on random images."""
    context = tiny_prepare_context(image_shape=image_shape, num_classes=10, samples=64)
    built = get_registries().methods.build(method, {}, where=f"method {method}").value
    model = built.build(copy.deepcopy(base), context).eval()
    sites = [name for name, module in model.named_modules() if isinstance(module, BoundedActivation)]
    if sites:
        set_profiled_bounds(model, sites, context)
    return model


def deployed(model: nn.Module) -> nn.Module:
    """``model`` with its fault space deployed in fp32, as a campaign runs it."""
    Injector.deploy(model, resolve_format("fp32"))
    return model


def interleaved(models: dict[str, nn.Module], data: EvaluationData, repeats: int) -> dict[str, list[float]]:
    """Clean-pass seconds of each model, the order rotating from pass to pass, after one warm-up pass each."""
    for model in models.values():
        predict_logits(model, data)
    names = list(models)
    times: dict[str, list[float]] = {name: [] for name in names}
    for repeat in range(repeats):
        for name in names[repeat % len(names):] + names[: repeat % len(names)]:
            started = time.perf_counter()
            predict_logits(models[name], data)
            times[name].append(time.perf_counter() - started)
    return times


def _overhead(times: dict[str, list[float]], which: str) -> tuple[float, float, float]:
    return overhead_interval(json.dumps({"baseline": times["none"], "protected": times[which]}))


def verdict(resbench: tuple[float, float, float], reference: tuple[float, float, float]) -> str:
    """``ok`` when resbench's median overhead is at most 1.5 times the reference's plus :data:`RESOLUTION`
    points (overheads of a point or two are below what a timing can tell apart), or when the two intervals
    overlap; ``SLOWER`` otherwise."""
    (median, low, _), (reference_median, _, reference_high) = resbench, reference
    if median <= 1.5 * max(reference_median, 0.0) + RESOLUTION or low <= reference_high:
        return "ok"
    return "SLOWER"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="lenet5,resnet20")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=21, help="interleaved timing passes per model")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    allocator = "freed memory kept, as in campaigns" if keep_freed_memory() else "the system's settings"
    print(f"device cpu, {args.threads} thread(s), {args.images} images, batch {args.batch_size}, fp32, "
          f"{args.repeats} interleaved passes, allocator: {allocator}; overhead % against none: median [95% interval]")
    print(f"{'model':<9} {'method':<16} {'resbench %':>24} {'reference %':>24} {'same logits':>11} {'verdict':>8}")
    for model_name in args.models.split(","):
        image_shape = IMAGE_SHAPES.get(model_name, DEFAULT_SHAPE)
        torch.manual_seed(0)
        base = build_model(model_name, image_shape, 10).eval()
        data = EvaluationData(torch.rand(args.images, *image_shape, generator=torch.Generator().manual_seed(0)),
                              torch.zeros(args.images, dtype=torch.int64), args.batch_size)
        for method in args.methods.split(","):
            protected = prepared(method, base, image_shape)
            models = {"none": deployed(copy.deepcopy(base)), "resbench": deployed(protected),
                      "reference": deployed(reference_model(protected))}
            same = torch.equal(predict_logits(models["resbench"], data), predict_logits(models["reference"], data))
            times = interleaved(models, data, args.repeats)
            ours, theirs = _overhead(times, "resbench"), _overhead(times, "reference")
            print(f"{model_name:<9} {method:<16} {_shown(ours):>24} {_shown(theirs):>24} {'yes' if same else 'no':>11} "
                  f"{verdict(ours, theirs):>8}   (none {1000 * statistics.median(times['none']):.1f} ms)")


def _shown(overhead: tuple[float, float, float]) -> str:
    median, low, high = overhead
    return f"{median:+.1f} [{low:+.1f}, {high:+.1f}]"


if __name__ == "__main__":
    main()
