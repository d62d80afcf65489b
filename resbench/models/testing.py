"""Tiny ``test-*`` models for fast contract tests (the timm habit: tiny models in the real registry).

``test-cnn`` deliberately uses every activation call pattern the call-site rewriter must handle: one
ReLU module called twice (as torchvision's BasicBlock does), ``inplace=True``, ``F.relu``, ``torch.relu``,
``ReLU6`` and ``Tensor.relu``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from resbench.models.common import ImageShape, training_family
from resbench.options import Options

__all__ = ["TinyCNN", "TinyMLP", "test_cnn", "test_mlp"]


class TinyMLP(nn.Module):
    """Two hidden layers of 16: one ReLU module and one ``F.relu`` call."""

    def __init__(self, image_shape: ImageShape, num_classes: int):
        super().__init__()
        self.fc1 = nn.Linear(math.prod(image_shape), 16)
        self.relu = nn.ReLU()
        self.fc2 = nn.Linear(16, 16)
        self.fc3 = nn.Linear(16, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(self.fc1(x.flatten(1)))
        return self.fc3(F.relu(self.fc2(x)))


class TinyResidualBlock(nn.Module):
    """A residual block calling one in-place ReLU module twice, like torchvision's BasicBlock."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += x
        return self.relu(out)


class TinyCNN(nn.Module):
    """Stem, one residual block, functional activations, ReLU6, global pooling, two linear layers."""

    def __init__(self, image_shape: ImageShape, num_classes: int):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(image_shape[0], 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.block = TinyResidualBlock(8)
        self.conv = nn.Conv2d(8, 8, 3, padding=1)
        self.act6 = nn.ReLU6()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Linear(8, 16)
        self.fc2 = nn.Linear(16, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.block(self.stem(x))
        x = F.relu(self.conv(x), inplace=True)
        x = self.pool(self.act6(x)).flatten(1)
        x = torch.relu(self.fc1(x))
        return self.fc2(x.relu())


@training_family("test")
def test_mlp(image_shape: ImageShape, num_classes: int, options: Options) -> nn.Module:
    """Tiny MLP for tests (two hidden layers of 16)."""
    return TinyMLP(image_shape, num_classes)


@training_family("test")
def test_cnn(image_shape: ImageShape, num_classes: int, options: Options) -> nn.Module:
    """Tiny CNN for tests, with every activation call pattern (shared, in-place, functional, ReLU6)."""
    return TinyCNN(image_shape, num_classes)
