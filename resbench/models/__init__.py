"""Model plugins: factories ``item(image_shape, num_classes, options) -> nn.Module``.

Built-in models are registered through :func:`register_models`, the hook third-party plugins implement
to add their own ``nn.Module`` factories. :func:`build_model` looks a name up and builds it;
:func:`load_checkpoint` loads users' trained weights.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from resbench.hookspecs import Register
from resbench.models.checkpoint import load_checkpoint
from resbench.models.cifar import ResNetCifarOptions, resnet20, resnet56, vgg11, vgg16
from resbench.models.common import ImageShape, training_family
from resbench.models.factory import FACTORY_MODEL, ModuleOptions, module
from resbench.models.small import MLPOptions, alexnet_cifar, lenet5, mlp
from resbench.models.testing import test_cnn, test_mlp
from resbench.models.transformer import ViTOptions, vit_tiny
from resbench.models.vision import VisionModelOptions, alexnet, mobilenet_v2, resnet18, resnet50, vgg16_bn
from resbench.plugins import hookimpl

__all__ = ["ImageShape", "build_model", "load_checkpoint", "model_training_family", "register_models",
           "training_family"]


@hookimpl
def register_models(register: Register) -> None:
    """The built-in models."""
    register("mlp", mlp, options=MLPOptions)
    register("lenet5", lenet5)
    register("alexnet-cifar", alexnet_cifar)
    register("vgg11", vgg11)
    register("vgg16", vgg16)
    register("resnet20", resnet20, options=ResNetCifarOptions)
    register("resnet56", resnet56, options=ResNetCifarOptions)
    for name, factory in (("resnet18", resnet18), ("resnet50", resnet50), ("vgg16_bn", vgg16_bn),
                          ("alexnet", alexnet), ("mobilenet_v2", mobilenet_v2)):
        register(name, factory, options=VisionModelOptions)
    register("vit-tiny", vit_tiny, options=ViTOptions)
    register(FACTORY_MODEL, module, options=ModuleOptions)
    register("test-mlp", test_mlp)
    register("test-cnn", test_cnn)


def build_model(
    name: str, image_shape: ImageShape, num_classes: int, options: dict[str, Any] | None = None
) -> nn.Module:
    """Build the model registered as ``name`` for images of ``image_shape`` (C, H, W) and ``num_classes``.

    Initialization draws from torch's global generator: seed it first for a reproducible model.
    """
    from resbench.plugins import get_registries

    shape, classes = tuple(image_shape), int(num_classes)
    built = get_registries().models.build(name, options, where=f"model {name}",
                                          call=lambda factory, validated: factory(shape, classes, validated))
    model: nn.Module = built.value
    return model


def model_training_family(name: str) -> str:
    """The baseline training recipe family of model ``name`` (``generic`` when the factory names none)."""
    from resbench.plugins import get_registries

    entry, _ = get_registries().models.resolve(name)
    return str(getattr(entry.item, "training_family", "generic"))
