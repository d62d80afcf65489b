"""Fault-aware training: weight clipping and random bit-error training (Stutz et al., MLSys 2021).

Stutz, Chandramoorthy, Hein, Schiele, "Bit Error Robustness for Energy-Efficient DNN Accelerators",
MLSys 2021 (arXiv:2006.13977) make a model tolerate bit errors in its quantized weights by training:

* **weight clipping** projects the weights onto [-w_max, w_max] after every optimizer step (the paper's
  box projection). A quantizer whose range adapts to each layer then has a smaller step, so every bit
  flip moves a weight by less;
* **random bit-error training** (RandBET) is quantization-aware training in which each step
  averages the gradient of the clean quantized model with the gradient of the same model under random
  bit errors injected into its quantized weights, the latter clipped element-wise; a loss curriculum
  (:class:`BitErrorCurriculum`) drops the perturbed term while the model cannot afford it.

Both are training steps for :func:`resbench.training.train_model` (:func:`projected_step`,
:class:`RandomBitErrorStep`). The bit errors come from resbench's fault engine: the fault model samples
sites over the layout of the model's fault space in the deployment format and an
:class:`~resbench.engine.injection.Injector` XORs them into the stored codes, exactly as a trial does;
their seeds come from :func:`resbench.seeds.training_seed`, a range no evaluation trial draws from.
Gradients reach the float weights through the quantized ones unchanged (the straight-through estimator,
Bengio, Leonard, Courville, arXiv:1308.3432, 2013), as in the authors' code.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from resbench.engine.faults import FaultModel, FaultSites
from resbench.engine.faultspace import FaultSpace, FaultSpaceOptions
from resbench.engine.formats import NumberFormat
from resbench.engine.injection import Injector
from resbench.seeds import training_seed
from resbench.training import TrainingStep

__all__ = [
    "NORMALIZATION_LAYERS",
    "BitErrorCurriculum",
    "RandomBitErrorStep",
    "clipped_parameters",
    "model_fault_space",
    "project_weights",
    "projected_step",
    "quantized_values",
    "straight_through",
]


#: Layers whose parameters clipping leaves alone: they absorb the scale clipping takes from the others.
NORMALIZATION_LAYERS: tuple[type[nn.Module], ...] = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm,
                                                     nn.modules.instancenorm._InstanceNorm)


def model_fault_space(model: nn.Module, options: FaultSpaceOptions) -> FaultSpace:
    """The tensors of ``model`` that the fault space ``options`` select, less method tensors: the bounds of an
    activation method composed with this one are fitted afterwards, on the trained weights."""
    return FaultSpace(model, options.model_copy(update={"method_tensors": False}))


def clipped_parameters(space: FaultSpace) -> list[torch.Tensor]:
    """What weight clipping projects: every parameter of the model's fault space (a transformed layer's
    stored ``original`` included) except those of normalization layers, as the authors project every
    stored layer parameter.

    Normalization layers keep their scale, so they absorb the scale clipping takes from the layers around
    them (the role of the authors' reparameterized group norm, whose own parameters they clip too).
    """
    return [stored.tensor for stored in space.tensors
            if stored.kind == "model" and isinstance(stored.tensor, nn.Parameter)
            and not isinstance(stored.owner, NORMALIZATION_LAYERS)]


def project_weights(parameters: Sequence[torch.Tensor], w_max: float) -> None:
    """Project ``parameters`` onto the box [-w_max, w_max] in place (Stutz et al. 2021, weight clipping).

    The edge is the parameter dtype's value nearest ``w_max`` from below (float32 rounds 0.05 up), so
    every projected value lies within ±``w_max`` as written."""
    with torch.no_grad():
        for parameter in parameters:
            edge = _inward_edge(w_max, parameter.dtype)
            parameter.clamp_(-edge, edge)


def _inward_edge(w_max: float, dtype: torch.dtype) -> float:
    edge = torch.tensor(w_max, dtype=dtype)
    if float(edge) > w_max:
        edge = torch.nextafter(edge, torch.zeros_like(edge))
    return float(edge)


def projected_step(step: TrainingStep, parameters: Sequence[torch.Tensor], w_max: float) -> TrainingStep:
    """``step`` followed by the projection of ``parameters`` onto [-w_max, w_max]."""

    def projected(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                  optimizer: torch.optim.Optimizer) -> tuple[torch.Tensor, torch.Tensor]:
        result = step(model, images, labels, optimizer)
        project_weights(parameters, w_max)
        return result

    return projected


def quantized_values(space: FaultSpace, number_format: NumberFormat,
                     sites: FaultSites | None = None) -> list[torch.Tensor]:
    """What each tensor of ``space`` computes with once stored in ``number_format`` and, with ``sites``, hit by
    those faults: the fault engine deploys the tensors, injects, copies the values out and gives the model
    its float tensors back. Detached, one tensor per stored tensor, in the space's order and shapes."""
    injector = Injector(space, number_format)
    try:
        if sites is not None:
            injector.inject(sites)
        values = injector.values.clone()
        injector.restore()
    finally:
        injector.undeploy()
    offsets = injector.layout.offsets
    return [values[offsets[index]:offsets[index + 1]].view(stored.tensor.shape)
            for index, stored in enumerate(space.tensors)]


class _StraightThrough(torch.autograd.Function):
    """Forward: ``value`` exactly; backward: the gradient goes to ``parameter`` unchanged. (The usual
    ``parameter + (value - parameter).detach()`` is off by a rounding error in the forward pass.)"""

    @staticmethod
    def forward(ctx: Any, parameter: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        return value.clone()

    @staticmethod
    def backward(ctx: Any, gradient: torch.Tensor) -> tuple[torch.Tensor, None]:
        return gradient, None


@contextmanager
def straight_through(space: FaultSpace, values: Sequence[torch.Tensor]) -> Iterator[None]:
    """Inside the block the model computes with ``values`` in place of its stored parameters, and gradients
    reach the parameters as if the values were theirs (straight-through estimator). Stored buffers (batch
    norm statistics) are left alone: a training forward pass does not read them."""
    swapped = []
    for stored, value in zip(space.tensors, values, strict=True):
        table = stored.owner._parameters
        parameter = table.get(stored.slot)
        if parameter is None:
            continue
        table[stored.slot] = _StraightThrough.apply(parameter, value.detach())
        swapped.append((table, stored.slot, parameter))
    try:
        yield
    finally:
        for table, slot, parameter in swapped:
            table[slot] = parameter


@contextmanager
def _kept_buffers(model: nn.Module) -> Iterator[None]:
    """Batch-norm statistics a training pass updates inside the block are put back afterwards: the
    perturbed pass trains the weights, not the statistics (the authors' default)."""
    saved = [(buffer, buffer.detach().clone()) for buffer in model.buffers()]
    try:
        yield
    finally:
        with torch.no_grad():
            for buffer, value in saved:
                buffer.copy_(value)


@dataclass(frozen=True)
class BitErrorCurriculum:
    """When the next step includes the perturbed term (the authors' ``average_simple_curriculum``): while
    the clean loss is below ``1.15 * threshold`` and the mean of the clean and perturbed losses is at most
    ``threshold`` (1.75 in their MNIST and CIFAR experiments). A step without the perturbed pass counts
    its perturbed loss as 0, as theirs does."""

    threshold: float = 1.75

    def admits(self, clean_loss: float, perturbed_loss: float) -> bool:
        """Whether the next step includes the perturbed pass."""
        return clean_loss < 1.15 * self.threshold and (clean_loss + perturbed_loss) / 2 <= self.threshold


@dataclass
class RandomBitErrorStep:
    """One RandBET step (Stutz et al. 2021, as their average-gradient training implements it), for
    :func:`resbench.training.train_model`.

    1. Forward and backward with the weights of ``space`` quantized in ``number_format`` (straight-through):
       the clean gradient.
    2. If the curriculum admits it: sample bit errors at ``ber`` with ``fault_model`` over the same stored
       codes (seed: ``training_seed(*seed_parts, step)``), forward and backward under them, with batch
       norm in training mode and its statistics kept; clip that gradient element-wise to
       ±``gradient_clip`` and average it with the clean one. A non-finite perturbed loss (an exponent flip
       in a float format) contributes nothing.
    3. One optimizer step, then the projection onto [-w_max, w_max] when ``w_max`` is set.

    ``seeds`` lists the training seeds drawn, in order; ``perturbed_steps`` counts the steps whose
    perturbed term was averaged in, ``nonfinite_steps`` those whose perturbed loss was not finite.
    """

    space: FaultSpace
    number_format: NumberFormat
    fault_model: FaultModel
    ber: float
    seed_parts: tuple[object, ...]
    gradient_clip: float = 0.05
    curriculum: BitErrorCurriculum = field(default_factory=BitErrorCurriculum)
    w_max: float | None = None
    seeds: list[int] = field(default_factory=list, init=False)
    steps: int = field(default=0, init=False)
    perturbed_steps: int = field(default=0, init=False)
    nonfinite_steps: int = field(default=0, init=False)
    admitted: bool = field(default=True, init=False)

    def __post_init__(self) -> None:
        probe = Injector(self.space, self.number_format)  # the layout trials use (stored parameters included)
        probe.undeploy()
        self._layout = probe.layout
        self._clipped = clipped_parameters(self.space)

    def __call__(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                 optimizer: torch.optim.Optimizer) -> tuple[torch.Tensor, torch.Tensor]:
        trainable = [parameter for parameter in model.parameters() if parameter.requires_grad]
        optimizer.zero_grad(set_to_none=True)
        with straight_through(self.space, quantized_values(self.space, self.number_format)):
            logits = model(images)
            loss = F.cross_entropy(logits, labels)
        loss.backward()
        perturbed_loss = self._perturbed_pass(model, images, labels, trainable) if self.admitted else 0.0
        optimizer.step()
        if self.w_max is not None:
            project_weights(self._clipped, self.w_max)
        self.admitted = self.curriculum.admits(float(loss.detach()), perturbed_loss)
        self.steps += 1
        return loss.detach(), logits.detach()

    def _perturbed_pass(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                        trainable: Sequence[torch.Tensor]) -> float:
        """Add the clipped perturbed gradient to the clean one and average them; returns the perturbed loss."""
        seed = training_seed(*self.seed_parts, self.steps)
        self.seeds.append(seed)
        sites = self.fault_model.sample(self._layout, [self.ber], seed)[0]
        with _kept_buffers(model), straight_through(self.space, quantized_values(self.space, self.number_format,
                                                                                  sites)):
            perturbed = F.cross_entropy(model(images), labels)
            if not math.isfinite(float(perturbed.detach())):
                self.nonfinite_steps += 1
                return math.inf
            gradients = torch.autograd.grad(perturbed, trainable, allow_unused=True)
        for parameter, gradient in zip(trainable, gradients, strict=True):
            clipped = torch.zeros_like(parameter) if gradient is None else gradient.clamp(-self.gradient_clip,
                                                                                           self.gradient_clip)
            parameter.grad = (clipped if parameter.grad is None else parameter.grad + clipped) / 2
        self.perturbed_steps += 1
        return float(perturbed.detach())
