"""Random bit-error training, RandBET (Stutz et al., MLSys 2021): fine-tune under the bit errors to come.

Quantization-aware fine-tuning of the trained model in its deployment format: every step averages the
gradient of the clean quantized model with the gradient under random bit errors at ``p_train`` in its
stored codes (clipped element-wise to ±``gradient_clip``), with the authors' loss curriculum and weight
clipping to [-w_max, w_max] (:class:`resbench.methods.fault_aware.RandomBitErrorStep`). The bit errors are
drawn by resbench's ``bitflip`` fault model over the model's fault space in the deployment format and
injected by its injector, from seeds in a range no evaluation trial uses
(:func:`resbench.seeds.training_seed`). The method is therefore prepared once per format.

Meant for integer formats (the paper's 8-, 4- and 2-bit quantization): in a floating-point format a flip
of a high exponent bit makes the perturbed loss non-finite, and such steps keep the clean gradient alone.
Presets as for ``clip`` (:mod:`resbench_plugins.clip`), with 10 epochs in ``cpu``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import pydantic
from torch import nn

from resbench.config import ComponentSpec
from resbench.engine.faults import resolve_fault_model
from resbench.hookspecs import Register
from resbench.methods import PrepareContext
from resbench.methods.fault_aware import (
    BitErrorCurriculum,
    RandomBitErrorStep,
    clipped_parameters,
    model_fault_space,
    project_weights,
)
from resbench.methods.transforms import TransformMethod, WeightTransform
from resbench.options import Options
from resbench.plugins import hookimpl
from resbench.training import evaluate
from resbench_plugins.clip import PRESETS as CLIP_PRESETS
from resbench_plugins.clip import STUTZ_CITATION, FaultAwareTrainingOptions, StoredAsIs, fine_tune

__all__ = ["PRESETS", "RandBetMethod", "RandBetOptions", "RandomBitErrorTraining", "register_methods",
           "register_weight_transforms"]

#: clip's presets with 10 epochs in ``cpu``: twice clip's, since half of each step's gradient is perturbed.
PRESETS: dict[str, dict[str, Any]] = {**CLIP_PRESETS, "cpu": {**CLIP_PRESETS["cpu"], "epochs": 10}}


class RandBetOptions(FaultAwareTrainingOptions):
    """Options of the ``random-bit-error-training`` transform and the ``randbet`` method."""

    presets: ClassVar[dict[str, dict[str, Any]]] = PRESETS

    p_train: float = pydantic.Field(default=0.01, gt=0, le=0.5,
                                    description="bit error rate injected while training (the paper's 1%)")
    w_max: float | None = pydantic.Field(default=0.1, gt=0, le=1e6,
                                         description="weight clipping to [-w_max, w_max]; null: none")
    gradient_clip: float = pydantic.Field(default=0.05, gt=0, le=1e6,
                                          description="element-wise clip of the perturbed gradient")
    loss_threshold: float = pydantic.Field(default=1.75, gt=0, le=1e6,
                                           description="curriculum: perturbed term while clean loss < 1.15 x this and "
                                           "the mean of clean and perturbed loss <= this")


class RandomBitErrorTraining(WeightTransform):
    """RandBET: quantization-aware fine-tuning with random bit errors in the stored codes."""

    Options: ClassVar[type[Options]] = RandBetOptions
    format_dependent: ClassVar[bool] = True
    #: Read back as stored: quantized kernels compute with the stored codes, and those are what training changed.
    not_quantizable: ClassVar[str | None] = None

    def read_back(self, name: str, layer: nn.Module, context: PrepareContext) -> nn.Module:
        return StoredAsIs()

    def fit(self, model: nn.Module, layers: list[str], context: PrepareContext) -> dict[str, Any]:
        options = self.options
        assert isinstance(options, RandBetOptions)
        before = evaluate(model, context.validation, context.device, context.batch_size)
        space = model_fault_space(model, context.fault_space)
        if options.w_max is not None:
            project_weights(clipped_parameters(space), options.w_max)
        if not options.epochs:
            return {"start_validation_accuracy": before,
                    "validation_accuracy": evaluate(model, context.validation, context.device, context.batch_size)}
        step = RandomBitErrorStep(space, context.number_format, resolve_fault_model("bitflip"), options.p_train,
                                  seed_parts=("randbet", context.seed, context.format_name),
                                  gradient_clip=options.gradient_clip,
                                  curriculum=BitErrorCurriculum(options.loss_threshold), w_max=options.w_max)
        result = fine_tune(model, context, options, step, f"randbet p={options.p_train:g} {context.format_name}")
        return {"start_validation_accuracy": before, "validation_accuracy": result.validation_accuracy,
                "train_seconds": round(result.seconds, 3), "steps": step.steps,
                "perturbed_steps": step.perturbed_steps, "nonfinite_perturbed_steps": step.nonfinite_steps}


class RandBetMethod(TransformMethod):
    """RandBET (Stutz et al. 2021): fine-tuned with random bit errors in the quantized weights, and clipped."""

    Options: ClassVar[type[Options]] = RandBetOptions
    citation = STUTZ_CITATION
    notes = ("fine-tuned from the trained baseline in the deployment format (preset cpu: 10 epochs of Adam; "
             "mlsys2021: the authors' SGD recipe) instead of trained from scratch; bit errors from resbench's "
             "bitflip model on training seeds disjoint from evaluation seeds; the constant-p curriculum "
             "(not the step variant that ramps p)")

    def transform_spec(self) -> ComponentSpec:
        return ComponentSpec(name="random-bit-error-training", options=self.options.model_dump(mode="json"))


@hookimpl
def register_weight_transforms(register: Register) -> None:
    """Register ``random-bit-error-training``."""
    register("random-bit-error-training", RandomBitErrorTraining)


@hookimpl
def register_methods(register: Register) -> None:
    """Register ``randbet``."""
    register("randbet", RandBetMethod,
             description="random bit-error training with weight clipping (RandBET, Stutz et al. 2021), per "
             "format; presets cpu (default, 10 epochs) and mlsys2021 (the authors' recipe)")
