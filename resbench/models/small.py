"""Small classic networks: a multilayer perceptron, LeNet-5 and the CIFAR variant of AlexNet."""

from __future__ import annotations

import math
from typing import Annotated

from pydantic import Field
from torch import Tensor, nn

from resbench.models.common import ImageShape, feature_count, training_family
from resbench.options import Options

__all__ = ["MLP", "AlexNetCifar", "LeNet5", "MLPOptions", "alexnet_cifar", "lenet5", "mlp"]


class MLPOptions(Options):
    """Options of ``mlp``."""

    hidden: tuple[Annotated[int, Field(ge=1)], ...] = Field(
        default=(256, 128), description="width of each hidden layer"
    )
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0, description="dropout after each hidden layer")


class MLP(nn.Module):
    """Fully connected network: flatten, then Linear-ReLU per hidden layer, then a linear classifier."""

    def __init__(self, image_shape: ImageShape, num_classes: int, hidden: tuple[int, ...], dropout: float):
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = math.prod(image_shape)
        for size in hidden:
            layers += [nn.Linear(width, size), nn.ReLU(inplace=True)]
            if dropout:
                layers.append(nn.Dropout(dropout))
            width = size
        layers.append(nn.Linear(width, num_classes))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)


@training_family("mlp")
def mlp(image_shape: ImageShape, num_classes: int, options: MLPOptions) -> nn.Module:
    """Multilayer perceptron with ReLU hidden layers."""
    return MLP(image_shape, num_classes, options.hidden, options.dropout)


class LeNet5(nn.Module):
    """LeNet-5 (LeCun et al. 1998) with ReLU and max pooling, as commonly used for MNIST.

    The first convolution pads by 2 so 28x28 inputs see the original 32x32 geometry; the second pads
    too when the map is small (8x8 digits), and the classifier width follows the feature map.
    """

    def __init__(self, image_shape: ImageShape, num_classes: int):
        super().__init__()
        pooled = image_shape[1] // 2
        self.features = nn.Sequential(
            nn.Conv2d(image_shape[0], 6, 5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(2, ceil_mode=True),
            nn.Conv2d(6, 16, 5, padding=0 if pooled >= 10 else 2), nn.ReLU(inplace=True),
            nn.MaxPool2d(2, ceil_mode=True),
        )
        width = feature_count(self.features, image_shape, "lenet5")
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(width, 120), nn.ReLU(inplace=True), nn.Linear(120, 84), nn.ReLU(inplace=True),
            nn.Linear(84, num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))


@training_family("lenet")
def lenet5(image_shape: ImageShape, num_classes: int, options: Options) -> nn.Module:
    """LeNet-5 (LeCun et al. 1998) with ReLU activations."""
    return LeNet5(image_shape, num_classes)


class AlexNetCifar(nn.Module):
    """AlexNet (Krizhevsky et al. 2012) scaled to 32x32 images, as in the pytorch-classification CIFAR
    models: five convolutions (64-192-384-256-256) and one linear classifier. Pools round up so that
    smaller inputs still fit.
    """

    def __init__(self, image_shape: ImageShape, num_classes: int):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(image_shape[0], 64, 11, stride=4, padding=5), nn.ReLU(inplace=True),
            nn.MaxPool2d(2, ceil_mode=True),
            nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(2, ceil_mode=True),
            nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2, ceil_mode=True),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(feature_count(self.features, image_shape, "alexnet-cifar"), num_classes)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))


@training_family("cifar")
def alexnet_cifar(image_shape: ImageShape, num_classes: int, options: Options) -> nn.Module:
    """AlexNet for CIFAR-sized images (Krizhevsky et al. 2012)."""
    return AlexNetCifar(image_shape, num_classes)
