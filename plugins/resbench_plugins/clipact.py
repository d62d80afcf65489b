"""Clip-Act / FT-ClipAct (Hoang et al., DATE 2020): zero activations above a searched per-layer threshold.

Components: the ``zero-above`` activation scheme (x for 0 <= x <= T, 0 above T) and the
``ftclipact-search`` threshold optimizer: per call site, an interval search scored by the area under
accuracy across fault rates, with resbench's own fault engine in the deployment number format, on the
validation split.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import pydantic
import torch
from torch import nn
from tqdm import tqdm

from resbench.config import ComponentSpec
from resbench.datasets.base import random_subset
from resbench.engine.evaluation import EvaluationData, load_evaluation_data, predict_logits
from resbench.engine.faults import FaultModel, FaultSites, resolve_fault_model
from resbench.engine.faultspace import FaultSpaceOptions
from resbench.engine.injection import Injector
from resbench.hookspecs import Register
from resbench.methods import (
    ActivationScheme,
    BoundedActivation,
    CallSiteSpec,
    Citation,
    PrepareContext,
    Recipe,
    RecipeOptions,
    ThresholdOptimizer,
    bound_shape,
    bounded_sites,
    set_profiled_bounds,
)
from resbench.options import Options
from resbench.plugins import hookimpl
from resbench.seeds import derive_seed

__all__ = ["ClipAct", "FtClipActSearch", "ZeroAbove", "ZeroAboveActivation", "register_activation_schemes",
           "register_methods", "register_threshold_optimizers"]

CLIPACT = Citation(
    authors="L.-H. Hoang, M. A. Hanif, M. Shafique",
    title="FT-ClipAct: Resilience Analysis of Deep Neural Networks and Improving their Fault Tolerance "
          "using Clipped Activation",
    venue="DATE",
    year=2020,
    link="https://arxiv.org/abs/1912.00941",
)


class ZeroAboveActivation(BoundedActivation):
    """``act(x)`` where it is at most the bound, 0 above it (Clip-Act, Hoang et al. 2020, eq. 1). Nothing is
    above +inf, so no guard is needed at an unset bound."""

    exact_when_unbounded = True

    def limit(self, activated: torch.Tensor) -> torch.Tensor:
        return activated.masked_fill(activated > self.bound, 0.0)

    def limit_(self, activated: torch.Tensor) -> torch.Tensor:
        return activated.masked_fill_(activated > self.bound, 0.0)


class ZeroAbove(ActivationScheme):
    """Zero each activation above its bound (Clip-Act)."""

    not_quantizable: ClassVar[str | None] = None  # a hard bound on the dequantized activation

    def build(self, site: CallSiteSpec) -> BoundedActivation:
        return ZeroAboveActivation(site.activation, bound_shape(site.output_shape, site.granularity))


class FtClipActSearchOptions(Options):
    """Options of ``ftclipact-search`` (defaults: the paper's search with fewer fault draws, for CPU)."""

    bers: tuple[float, ...] = pydantic.Field(default=(1e-7, 1e-6, 3e-6, 1e-5, 3e-5),
                                             description="fault rates the score integrates over")
    fault_model: str = pydantic.Field(
        default="bitflip", description="weight fault model the candidates are scored under (the paper: bit flips; "
        "the suite's fault model is not used, so one search serves every fault model)")
    draws: int = pydantic.Field(default=4, ge=1, le=10_000,
                                description="fault draws per candidate and rate (the paper: 20)")
    candidates: int = pydantic.Field(default=4, ge=3, le=64, description="evenly spaced candidates per round")
    min_rounds: int = pydantic.Field(default=3, ge=1, le=100, description="rounds before the stop rule applies")
    max_rounds: int = pydantic.Field(default=4, ge=1, le=100, description="rounds at most")
    delta: float = pydantic.Field(default=0.2, ge=0, description="stop when no score changes by more than this")
    validation_samples: int | None = pydantic.Field(
        default=None, ge=1, description="seeded random sample of the validation split to score on (all: None)")
    profile_fraction: float = pydantic.Field(default=0.2, gt=0, le=1,
                                             description="share of the training split profiled for the interval")

    @pydantic.field_validator("fault_model")
    @classmethod
    def _known_fault_model(cls, name: str) -> str:
        from resbench.plugins import get_registries

        names = get_registries().faults.names()
        if name not in names:
            raise ValueError(f"unknown fault model {name!r}; fault models: {', '.join(names)}")
        return name

    @pydantic.model_validator(mode="after")
    def _check(self) -> FtClipActSearchOptions:
        if self.max_rounds < self.min_rounds:
            raise ValueError(f"max_rounds ({self.max_rounds}) must be at least min_rounds ({self.min_rounds})")
        if any(not 0 < ber < 1 for ber in self.bers) or not self.bers:
            raise ValueError("bers must be rates in (0, 1)")
        return self


def area_under_accuracy(accuracies: Sequence[float]) -> float:
    """Trapezoid area under accuracy (percent) on an evenly spaced axis from 1/n to 1 (FT-ClipAct, Sec. IV)."""
    axis = np.linspace(1 / len(accuracies), 1.0, len(accuracies))
    return float(np.trapezoid(accuracies, x=axis))


class _FaultScorer:
    """Scores a model by its area under accuracy across fault rates, on fixed fault draws.

    The model is deployed in the number format once, with the bounds outside the fault space (they are
    what the search changes); every candidate sees the same fault sites (common random numbers).
    """

    def __init__(self, model: nn.Module, context: PrepareContext, options: FtClipActSearchOptions) -> None:
        self.model = model
        space = context.fault_space.model_copy(update={"method_tensors": False})
        self.injector = Injector.deploy(model, context.number_format, FaultSpaceOptions.model_validate(space))
        validation = random_subset(context.validation, options.validation_samples, context.seed)
        self.data: EvaluationData = load_evaluation_data(validation, context.device, context.batch_size)
        bers = sorted(options.bers)
        fault_model: FaultModel = resolve_fault_model(options.fault_model)
        self.draws: list[list[FaultSites]] = [
            fault_model.sample(self.injector.layout, bers, derive_seed("ftclipact-search", context.seed, draw))
            for draw in range(options.draws)
        ]

    def _accuracy(self) -> float:
        logits = predict_logits(self.model, self.data)
        correct = (logits.argmax(dim=1) == self.data.labels) & torch.isfinite(logits).all(dim=1)
        return 100.0 * float(correct.float().mean())

    def score(self) -> float:
        clean = self._accuracy()
        per_ber = np.zeros(len(self.draws[0]))
        for draw in self.draws:
            for index, sites in enumerate(draw):
                if sites.num_flips == 0:
                    per_ber[index] += clean
                    continue
                with self.injector.injected(sites):
                    per_ber[index] += self._accuracy()
        return area_under_accuracy(per_ber / len(self.draws))


class FtClipActSearch(ThresholdOptimizer):
    """Per call site, in order: interval search from [0, profiled max] scored by fault-injection AUC."""

    Options: ClassVar[type[Options]] = FtClipActSearchOptions
    format_dependent = True

    def fit(self, model: nn.Module, sites: Sequence[str], context: PrepareContext) -> dict[str, Any]:
        options = self.options
        assert isinstance(options, FtClipActSearchOptions)
        set_profiled_bounds(model, sites, context, fraction=options.profile_fraction)
        modules = bounded_sites(model, sites)
        if any(module.bound.numel() != 1 for module in modules.values()):
            raise ValueError("ftclipact-search finds layer-wise thresholds: use granularity layer")
        search_model = copy.deepcopy(model).eval()
        scorer = _FaultScorer(search_model, context, options)
        search_modules = bounded_sites(search_model, sites)
        found: dict[str, dict[str, Any]] = {}
        for name in tqdm(sites, desc="ftclipact-search", unit="site", disable=not context.progress, leave=False):
            found[name] = self._search(search_modules[name].bound, scorer, options)
            with torch.no_grad():
                modules[name].bound.fill_(found[name]["bound"])
        return {"sites": found}

    @staticmethod
    def _search(bound: torch.Tensor, scorer: _FaultScorer, options: FtClipActSearchOptions) -> dict[str, Any]:
        """Shrink [0, max] around the best of evenly spaced candidates; the bound ends at the best found."""
        low, high = 0.0, float(bound.detach())
        previous: np.ndarray | None = None
        rounds = 0
        best_value, best_score = high, -np.inf
        while rounds < options.max_rounds:
            rounds += 1
            candidates = np.linspace(low, high, options.candidates)
            scores = np.empty(len(candidates))
            for index, candidate in enumerate(candidates):
                with torch.no_grad():
                    bound.fill_(float(candidate))
                scores[index] = scorer.score()
            best = int(np.argmax(scores))
            best_value, best_score = float(candidates[best]), float(scores[best])
            low = float(candidates[max(best - 1, 0)])
            high = float(candidates[min(best + 1, len(candidates) - 1)])
            settled = previous is not None and float(np.max(np.abs(scores - previous))) <= options.delta
            previous = scores
            if rounds >= options.min_rounds and settled:
                break
        with torch.no_grad():
            bound.fill_(best_value)
        return {"bound": best_value, "score": best_score, "rounds": rounds}


class ClipActOptions(RecipeOptions):
    """Clip-Act: zero above a layer-wise threshold found by the fault-driven interval search."""

    activation: ComponentSpec = pydantic.Field(default=ComponentSpec(name="zero-above"),
                                               description="activation scheme")
    optimizer: ComponentSpec = pydantic.Field(default=ComponentSpec(name="ftclipact-search"),
                                              description="threshold optimizer")


class ClipAct(Recipe):
    """Clip-Act: zero activations above a per-layer threshold searched with fault injection."""

    Options = ClipActOptions
    citation = CLIPACT
    notes = ("threshold search on the validation split with resbench's fault engine (bit flips in weights, in "
             "the deployment format, as in the paper, whatever fault model the suite runs: optimizer option "
             "fault_model changes it), 4 fault draws per candidate by default (the paper: 20)")


@hookimpl
def register_activation_schemes(register: Register) -> None:
    """Register ``zero-above``."""
    register("zero-above", ZeroAbove)


@hookimpl
def register_threshold_optimizers(register: Register) -> None:
    """Register ``ftclipact-search``."""
    register("ftclipact-search", FtClipActSearch)


@hookimpl
def register_methods(register: Register) -> None:
    """Register ``clipact``."""
    register("clipact", ClipAct)
