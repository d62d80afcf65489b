"""Weight clipping (Stutz et al., MLSys 2021): fine-tune with the weights held in [-w_max, w_max].

The trained model's stored parameters (the fault space's, normalization layers' aside: convolution and
linear weights and biases, attention projections, embeddings) are projected onto [-w_max, w_max] and the
model is fine-tuned with the same projection after every optimizer step (the authors' box projection,
``w_max`` 0.1 in their headline CIFAR-10 model). Stored in a format whose range adapts to each layer
(the asymmetric per-layer ``[min, max]`` of robust quantization, or ``int8``'s per-tensor scale), the
clipped weights get a smaller quantization step, so every bit flip moves a weight by less.

Normalization: the authors reparameterize group norm so that it absorbs the scale clipping takes from
the weights. Batch norm and layer norm do that by themselves, so their parameters are not clipped (batch
norm is also out of the fault space by default: deployments fold it). LeNet-5 has no normalization: the fine-tuning
lets the layers trade scale among themselves within the box (a ReLU network scaled layer by layer only
scales its logits, which leaves every prediction unchanged); the clean accuracy it keeps is measured in
``results/fault-aware-training``.

The weights are read back as stored: what changes is what is stored, not how it is read. Presets:
``cpu`` (default: 5 epochs of Adam at 5e-4, cosine, minutes on two cores) and ``mlsys2021`` (the
authors' fine-tuning recipe for MNIST: SGD with Nesterov momentum 0.9, learning rate 0.005, weight decay
5e-4, batch 128, 140 epochs, step decay; resbench's ``multistep`` schedule decays at 50% and 75% of
training where theirs decays at 40%, 60% and 80%). The last epoch is kept, as the authors do.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import pydantic
import torch
from torch import nn

from resbench.config import ComponentSpec
from resbench.datasets import DatasetSplits
from resbench.hookspecs import Register
from resbench.methods import Citation, PrepareContext
from resbench.methods.fault_aware import clipped_parameters, model_fault_space, project_weights, projected_step
from resbench.methods.transforms import TransformMethod, WeightTransform
from resbench.options import Options
from resbench.plugins import hookimpl
from resbench.training import TrainingOptions, TrainingResult, TrainingStep, cross_entropy_step, evaluate, train_model

__all__ = ["PRESETS", "STUTZ_CITATION", "ClipMethod", "ClipOptions", "FaultAwareTrainingOptions", "StoredAsIs",
           "WeightClipping", "fine_tune", "register_methods", "register_weight_transforms"]

STUTZ_CITATION = Citation(
    authors="D. Stutz, N. Chandramoorthy, M. Hein, B. Schiele",
    title="Bit Error Robustness for Energy-Efficient DNN Accelerators",
    venue="MLSys",
    year=2021,
    link="https://arxiv.org/abs/2006.13977",
)

#: Fine-tuning recipes; options left unset come from the chosen preset.
PRESETS: dict[str, dict[str, Any]] = {
    "cpu": {"optimizer": "adam", "lr": 5e-4, "epochs": 5, "batch_size": 64, "weight_decay": 0.0,
            "schedule": "cosine"},
    "mlsys2021": {"optimizer": "sgd", "lr": 0.005, "epochs": 140, "batch_size": 128, "weight_decay": 5e-4,
                  "schedule": "multistep"},
}


class FaultAwareTrainingOptions(Options):
    """Fine-tuning options shared by ``clip`` and ``randbet``."""

    #: The recipe of each preset; options left unset come from it.
    presets: ClassVar[dict[str, dict[str, Any]]] = PRESETS

    preset: Literal["cpu", "mlsys2021"] = pydantic.Field(
        default="cpu", description="cpu: a few epochs of Adam; mlsys2021: the authors' SGD fine-tuning recipe")
    epochs: int | None = pydantic.Field(default=None, ge=0, le=10_000,
                                        description="fine-tuning epochs (0: project only; default from preset)")
    lr: float | None = pydantic.Field(default=None, gt=0, le=10, description="peak learning rate (default from preset)")
    optimizer: Literal["sgd", "adam", "adamw"] | None = pydantic.Field(default=None,
                                                                       description="optimizer (default from preset)")
    batch_size: int | None = pydantic.Field(default=None, ge=2, le=65_536,
                                            description="batch size (default from preset)")
    weight_decay: float | None = pydantic.Field(default=None, ge=0, le=1,
                                                description="weight decay (default from preset)")
    augment_shift: int = pydantic.Field(default=0, ge=0, le=16,
                                        description="random translation by up to N pixels while training")

    @pydantic.model_validator(mode="after")
    def _fill_from_preset(self) -> FaultAwareTrainingOptions:
        for key, value in self.presets[self.preset].items():
            if key in type(self).model_fields and getattr(self, key) is None:
                object.__setattr__(self, key, value)
        return self

    def training(self) -> TrainingOptions:
        """The :class:`TrainingOptions` of the fine-tuning (the last epoch is kept)."""
        assert self.epochs and self.lr and self.optimizer and self.batch_size and self.weight_decay is not None
        return TrainingOptions(epochs=self.epochs, lr=self.lr, optimizer=self.optimizer, batch_size=self.batch_size,
                               weight_decay=self.weight_decay, schedule=self.presets[self.preset]["schedule"],
                               momentum=0.9, nesterov=self.optimizer == "sgd", augment_shift=self.augment_shift,
                               select_on_validation=False)


class ClipOptions(FaultAwareTrainingOptions):
    """Options of the ``weight-clipping`` transform and the ``clip`` method."""

    w_max: float = pydantic.Field(default=0.1, gt=0, le=1e6,
                                  description="weights and biases are held in [-w_max, w_max] (the paper's 0.1)")


class StoredAsIs(nn.Module):
    """Read a stored weight back as it is: fault-aware training changes what is stored, not how it is read."""

    def forward(self, stored: torch.Tensor) -> torch.Tensor:
        return stored


def fine_tune(model: nn.Module, context: PrepareContext, options: FaultAwareTrainingOptions, step: TrainingStep,
              description: str) -> TrainingResult:
    """Fine-tune ``model`` in place on the training split with ``step``, as ``options`` say."""
    splits = DatasetSplits("prepare", context.train, context.validation, context.validation,
                           context.image_shape, context.num_classes)
    return train_model(model, splits, options.training(), context.device, seed=context.seed,
                       progress=context.progress, description=description, step=step)


class WeightClipping(WeightTransform):
    """Weight clipping: weights and biases projected onto [-w_max, w_max], fine-tuned under the projection."""

    Options: ClassVar[type[Options]] = ClipOptions
    #: Read back as stored: quantized kernels compute with the stored codes, and those are what training changed.
    not_quantizable: ClassVar[str | None] = None

    def read_back(self, name: str, layer: nn.Module, context: PrepareContext) -> nn.Module:
        return StoredAsIs()

    def fit(self, model: nn.Module, layers: list[str], context: PrepareContext) -> dict[str, Any]:
        options = self.options
        assert isinstance(options, ClipOptions)
        before = evaluate(model, context.validation, context.device, context.batch_size)
        parameters = clipped_parameters(model_fault_space(model, context.fault_space))
        project_weights(parameters, options.w_max)
        projected = evaluate(model, context.validation, context.device, context.batch_size)
        metrics = {"start_validation_accuracy": before, "projected_validation_accuracy": projected}
        if not options.epochs:
            return {**metrics, "validation_accuracy": projected}
        step = projected_step(cross_entropy_step(), parameters, options.w_max)
        result = fine_tune(model, context, options, step, f"clip w_max={options.w_max:g}")
        return {**metrics, "validation_accuracy": result.validation_accuracy,
                "train_seconds": round(result.seconds, 3)}


class ClipMethod(TransformMethod):
    """Weight clipping (Stutz et al. 2021): fine-tuned with every weight and bias held in [-w_max, w_max]."""

    Options: ClassVar[type[Options]] = ClipOptions
    citation = STUTZ_CITATION
    notes = ("fine-tuned from the trained baseline (preset cpu: 5 epochs of Adam; mlsys2021: the authors' SGD "
             "recipe) instead of trained from scratch; no reparameterized normalization (batch norm stays out of "
             "the clipped and stored tensors); robust quantization is the format (an asymmetric per-layer range)")

    def transform_spec(self) -> ComponentSpec:
        return ComponentSpec(name="weight-clipping", options=self.options.model_dump(mode="json"))


@hookimpl
def register_weight_transforms(register: Register) -> None:
    """Register ``weight-clipping``."""
    register("weight-clipping", WeightClipping)


@hookimpl
def register_methods(register: Register) -> None:
    """Register ``clip``."""
    register("clip", ClipMethod, description="weight clipping to [-w_max, w_max] with fine-tuning (Stutz et al. 2021); "
             "presets cpu (default, 5 epochs) and mlsys2021 (the authors' recipe)")
