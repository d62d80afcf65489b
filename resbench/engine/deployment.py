"""Deploying a model in a number format: the one place that chooses between simulated and real kernels.

A format's :attr:`~resbench.engine.formats.NumberFormat.engine` decides. ``simulated``: the model keeps its
float kernels and computes with decoded values (:class:`~resbench.engine.injection.Injector`). ``torch-ao``:
the model is converted by PyTorch's post-training quantization, calibrated on a seeded sample of the
training split, and faults hit its integer codes (:mod:`resbench.engine.torch_ao`).
"""

from __future__ import annotations

from typing import Any

from torch import nn
from torch.utils.data import Dataset

from resbench.datasets.base import random_subset
from resbench.engine.evaluation import load_evaluation_data
from resbench.engine.faultspace import FaultSpaceOptions
from resbench.engine.formats import Int8, NumberFormat
from resbench.engine.injection import Injector
from resbench.engine.torch_ao import QuantizedInjector, convert
from resbench.errors import UsageError

__all__ = ["deploy_model"]


def deploy_model(model: nn.Module, number_format: NumberFormat, options: FaultSpaceOptions | None = None, *,
                 calibration: Dataset[Any] | None = None, seed: int = 0) -> tuple[nn.Module, Injector]:
    """The model that computes once ``model`` is stored in ``number_format``, and its injector.

    ``model`` is changed in place (its weights quantized, or folded for conversion); pass a copy.
    ``calibration`` (the training split, as profiling reads it) and ``seed`` choose the images that calibrate
    a torch-ao model's activation ranges.
    """
    if number_format.engine != "torch-ao":
        return model, Injector.deploy(model, number_format, options)
    if not isinstance(number_format, Int8) or calibration is None:
        raise UsageError(f"format {number_format.name} with engine torch-ao needs int8 and calibration images")
    sample = random_subset(calibration, number_format.calibration_images, seed)
    images = load_evaluation_data(sample, next(model.parameters()).device, 256).images
    quantized = convert(model, number_format, images)
    return quantized, QuantizedInjector(quantized, number_format)
