"""CIFAR-style VGG with batch normalization and CIFAR ResNets.

* VGG-11/16 (Simonyan & Zisserman 2015) with batch norm after every convolution and one linear
  classifier on globally pooled 512 features, the usual CIFAR adaptation.
* ResNet-20/56 (He et al. 2016, section 4.2): 3 stages of 16/32/64 channels with n = 3 or 9 basic blocks,
  option A (parameter-free, zero-padded) shortcuts by default.
"""

from __future__ import annotations

from typing import Literal

import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from resbench.models.common import ImageShape, training_family
from resbench.options import Options

__all__ = ["CifarResNet", "ResNetCifarOptions", "VGGCifar", "resnet20", "resnet56", "vgg11", "vgg16"]

VGG_LAYERS: dict[str, list[int | str]] = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
}


class VGGCifar(nn.Module):
    """VGG with batch norm for small images (Simonyan & Zisserman 2015)."""

    def __init__(self, layers: list[int | str], image_shape: ImageShape, num_classes: int):
        super().__init__()
        modules: list[nn.Module] = []
        channels = image_shape[0]
        for layer in layers:
            if layer == "M":
                modules.append(nn.MaxPool2d(2, ceil_mode=True))
                continue
            assert isinstance(layer, int)
            modules += [nn.Conv2d(channels, layer, 3, padding=1), nn.BatchNorm2d(layer), nn.ReLU(inplace=True)]
            channels = layer
        self.features = nn.Sequential(*modules)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(channels, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.pool(self.features(x)).flatten(1))


@training_family("cifar")
def vgg11(image_shape: ImageShape, num_classes: int, options: Options) -> nn.Module:
    """VGG-11 with batch norm, CIFAR style (Simonyan & Zisserman 2015)."""
    return VGGCifar(VGG_LAYERS["vgg11"], image_shape, num_classes)


@training_family("cifar")
def vgg16(image_shape: ImageShape, num_classes: int, options: Options) -> nn.Module:
    """VGG-16 with batch norm, CIFAR style (Simonyan & Zisserman 2015)."""
    return VGGCifar(VGG_LAYERS["vgg16"], image_shape, num_classes)


class ResNetCifarOptions(Options):
    """Options of the CIFAR ResNets."""

    shortcut: Literal["A", "B"] = Field(
        default="A", description="A: zero-padded identity (He et al. 2016, CIFAR); B: 1x1 convolution"
    )


class PaddedShortcut(nn.Module):
    """Option A shortcut: subsample by 2 and zero-pad the new channels (no parameters)."""

    def __init__(self, extra_channels: int):
        super().__init__()
        self.extra_channels = extra_channels

    def forward(self, x: Tensor) -> Tensor:
        pad = self.extra_channels // 2
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, pad, self.extra_channels - pad))


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with batch norm and a shortcut; one ReLU module called twice, as in
    torchvision."""

    def __init__(self, in_channels: int, channels: int, stride: int, shortcut: str):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != channels:
            self.shortcut = (
                PaddedShortcut(channels - in_channels) if shortcut == "A"
                else nn.Sequential(nn.Conv2d(in_channels, channels, 1, stride=stride, bias=False),
                                   nn.BatchNorm2d(channels))
            )

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet for CIFAR (He et al. 2016, section 4.2): depth 6n + 2."""

    def __init__(self, blocks: int, image_shape: ImageShape, num_classes: int, shortcut: str):
        super().__init__()
        self.conv1 = nn.Conv2d(image_shape[0], 16, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU(inplace=True)
        stages = []
        in_channels = 16
        for index, channels in enumerate((16, 32, 64)):
            stride = 1 if index == 0 else 2
            layer = [BasicBlock(in_channels if block == 0 else channels, channels,
                                stride if block == 0 else 1, shortcut) for block in range(blocks)]
            stages.append(nn.Sequential(*layer))
            in_channels = channels
        self.layer1, self.layer2, self.layer3 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d | nn.Linear):
                nn.init.kaiming_normal_(module.weight)

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(self.pool(x).flatten(1))


@training_family("resnet-cifar")
def resnet20(image_shape: ImageShape, num_classes: int, options: ResNetCifarOptions) -> nn.Module:
    """ResNet-20 for CIFAR (He et al. 2016)."""
    return CifarResNet(3, image_shape, num_classes, options.shortcut)


@training_family("resnet-cifar")
def resnet56(image_shape: ImageShape, num_classes: int, options: ResNetCifarOptions) -> nn.Module:
    """ResNet-56 for CIFAR (He et al. 2016)."""
    return CifarResNet(9, image_shape, num_classes, options.shortcut)
