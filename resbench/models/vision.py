"""torchvision architectures (untrained, ``weights=None``) adapted to the dataset.

Input channels other than 3 replace the first convolution. Small images (side below 64 by default, the
``small_input`` option overrides) get the usual CIFAR adaptation: ResNets use a 3x3 stride-1 stem without
max pooling (He et al. 2016, section 4.2); MobileNetV2 a stride-1 first convolution; AlexNet a 3x3
stride-1 stem and 2x2 pools; VGG and AlexNet pool globally before a classifier sized for it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import Field
from torch import nn

from resbench.models.common import ImageShape, training_family
from resbench.options import Options

__all__ = ["VisionModelOptions", "alexnet", "mobilenet_v2", "resnet18", "resnet50", "vgg16_bn"]

SMALL_SIDE = 64


class VisionModelOptions(Options):
    """Options of the torchvision models."""

    small_input: bool | None = Field(
        default=None, description="CIFAR-style stem for small images; default: when the image side is < 64"
    )


def _is_small(image_shape: ImageShape, options: VisionModelOptions) -> bool:
    if options.small_input is not None:
        return options.small_input
    return min(image_shape[1], image_shape[2]) < SMALL_SIDE


def _conv_like(conv: Any, in_channels: int, kernel: int | None = None, stride: int | None = None) -> nn.Conv2d:
    """A fresh convolution like ``conv`` with other input channels, kernel or stride."""
    kernel_size = kernel if kernel is not None else conv.kernel_size[0]
    return nn.Conv2d(
        in_channels, conv.out_channels, kernel_size, stride=stride if stride is not None else conv.stride[0],
        padding=kernel_size // 2 if kernel is not None else conv.padding[0],
        bias=conv.bias is not None,
    )


def _round_up_pools(features: nn.Sequential) -> None:
    """Make every max pool 2x2 and round up, so that images down to 1x1 pass all five pools."""
    for index, layer in enumerate(features):
        if isinstance(layer, nn.MaxPool2d):
            features[index] = nn.MaxPool2d(2, ceil_mode=True)


def _resnet(builder: Callable[..., nn.Module]) -> Callable[[ImageShape, int, VisionModelOptions], nn.Module]:
    def factory(image_shape: ImageShape, num_classes: int, options: VisionModelOptions) -> nn.Module:
        model = builder(weights=None, num_classes=num_classes)
        if _is_small(image_shape, options):
            model.conv1 = _conv_like(model.conv1, image_shape[0], kernel=3, stride=1)
            model.maxpool = nn.Identity()
        elif image_shape[0] != 3:
            model.conv1 = _conv_like(model.conv1, image_shape[0])
        return model

    return factory


@training_family("imagenet")
def resnet18(image_shape: ImageShape, num_classes: int, options: VisionModelOptions) -> nn.Module:
    """torchvision ResNet-18 (He et al. 2016), untrained."""
    from torchvision.models import resnet18 as builder

    return _resnet(builder)(image_shape, num_classes, options)


@training_family("imagenet")
def resnet50(image_shape: ImageShape, num_classes: int, options: VisionModelOptions) -> nn.Module:
    """torchvision ResNet-50 (He et al. 2016), untrained."""
    from torchvision.models import resnet50 as builder

    return _resnet(builder)(image_shape, num_classes, options)


@training_family("imagenet")
def vgg16_bn(image_shape: ImageShape, num_classes: int, options: VisionModelOptions) -> nn.Module:
    """torchvision VGG-16 with batch norm (Simonyan & Zisserman 2015), untrained."""
    from torchvision.models import vgg16_bn as builder

    model = builder(weights=None, num_classes=num_classes)
    if image_shape[0] != 3:
        model.features[0] = _conv_like(model.features[0], image_shape[0])
    if _is_small(image_shape, options):
        _round_up_pools(model.features)
        model.avgpool = nn.AdaptiveAvgPool2d(1)
        model.classifier[0] = nn.Linear(512, model.classifier[0].out_features)
    return model


@training_family("imagenet")
def alexnet(image_shape: ImageShape, num_classes: int, options: VisionModelOptions) -> nn.Module:
    """torchvision AlexNet (Krizhevsky et al. 2012), untrained."""
    from torchvision.models import alexnet as builder

    model = builder(weights=None, num_classes=num_classes)
    if _is_small(image_shape, options):
        model.features[0] = _conv_like(model.features[0], image_shape[0], kernel=3, stride=1)
        _round_up_pools(model.features)
        model.avgpool = nn.AdaptiveAvgPool2d(1)
        model.classifier[1] = nn.Linear(256, model.classifier[1].out_features)
    elif image_shape[0] != 3:
        model.features[0] = _conv_like(model.features[0], image_shape[0])
    return model


@training_family("mobilenet")
def mobilenet_v2(image_shape: ImageShape, num_classes: int, options: VisionModelOptions) -> nn.Module:
    """torchvision MobileNetV2 (Sandler et al. 2018), untrained."""
    from torchvision.models import mobilenet_v2 as builder

    model = builder(weights=None, num_classes=num_classes)
    stem = model.features[0][0]
    if _is_small(image_shape, options) or image_shape[0] != 3:
        model.features[0][0] = _conv_like(stem, image_shape[0], stride=1 if _is_small(image_shape, options) else 2)
    return model
