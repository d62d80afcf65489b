"""A small vision transformer (Dosovitskiy et al., ICLR 2021) that trains on ``mnist5k`` in minutes on a CPU.

Patch embedding (a strided convolution), a class token and learned position embeddings, pre-norm encoder
blocks (Xiong et al., ICML 2020) of ``nn.MultiheadAttention`` and a GELU MLP, each with a residual add, a
final LayerNorm and a linear head on the class token.

Activation call sites (found by the fx tracing of :mod:`resbench.models.callsites`): the GELU of each
block's MLP, ``blocks.N.mlp.1``. The attention softmax is not a call site: it runs inside
``nn.MultiheadAttention``, which fx treats as one operator, and it is bounded by construction (its outputs
lie in [0, 1] and sum to 1), so a range restriction adds nothing there. Weight transforms see the linear
layers (attention output projection, MLP, head) and the patch convolution; the fault space holds every
stored tensor, ``in_proj_weight`` and the tokens included (:mod:`resbench.engine.faultspace`).
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import Tensor, nn

from resbench.errors import UsageError
from resbench.models.common import ImageShape, training_family
from resbench.options import Options

__all__ = ["EncoderBlock", "PatchEmbedding", "ViTOptions", "VisionTransformer", "vit_tiny"]


class ViTOptions(Options):
    """Options of ``vit-tiny``."""

    patch_size: int = Field(default=7, ge=1, le=64, description="side of the square patches (must divide the image)")
    dim: int = Field(default=64, ge=4, le=4096, description="embedding width")
    depth: int = Field(default=2, ge=1, le=48, description="encoder blocks")
    heads: int = Field(default=4, ge=1, le=64, description="attention heads (must divide dim)")
    mlp_dim: int = Field(default=128, ge=1, le=16384, description="hidden width of each block's MLP")


class PatchEmbedding(nn.Module):
    """Non-overlapping patches projected to ``dim`` by a strided convolution, as a (N, patches, dim) sequence."""

    def __init__(self, channels: int, patch_size: int, dim: int) -> None:
        super().__init__()
        self.projection = nn.Conv2d(channels, dim, patch_size, stride=patch_size)

    def forward(self, images: Tensor) -> Tensor:
        return self.projection(images).flatten(2).transpose(1, 2)


class EncoderBlock(nn.Module):
    """Pre-norm transformer block: ``x + attention(norm(x))``, then ``x + mlp(norm(x))``."""

    def __init__(self, dim: int, heads: int, mlp_dim: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attention = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_dim), nn.GELU(), nn.Linear(mlp_dim, dim))

    def forward(self, x: Tensor) -> Tensor:
        normed = self.norm1(x)
        x = x + self.attention(normed, normed, normed, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


class VisionTransformer(nn.Module):
    """ViT: patch embedding, class token, position embeddings, encoder blocks, LayerNorm, linear head."""

    def __init__(self, image_shape: ImageShape, num_classes: int, options: ViTOptions) -> None:
        super().__init__()
        channels, height, width = image_shape
        patches = (height // options.patch_size) * (width // options.patch_size)
        self.patch_embedding = PatchEmbedding(channels, options.patch_size, options.dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, options.dim))
        self.position_embedding = nn.Parameter(torch.randn(1, patches + 1, options.dim) * 0.02)
        self.blocks = nn.Sequential(*(EncoderBlock(options.dim, options.heads, options.mlp_dim)
                                      for _ in range(options.depth)))
        self.norm = nn.LayerNorm(options.dim)
        self.head = nn.Linear(options.dim, num_classes)

    def forward(self, images: Tensor) -> Tensor:
        tokens = self.patch_embedding(images)
        tokens = torch.cat([self.cls_token.expand(tokens.shape[0], -1, -1), tokens], dim=1)
        encoded = self.blocks(tokens + self.position_embedding)
        return self.head(self.norm(encoded[:, 0]))


def _check(image_shape: ImageShape, options: ViTOptions) -> None:
    _, height, width = image_shape
    if height % options.patch_size or width % options.patch_size:
        raise UsageError(f"model 'vit-tiny': patch_size {options.patch_size} does not divide images of "
                         f"{height}x{width}")
    if options.dim % options.heads:
        raise UsageError(f"model 'vit-tiny': heads ({options.heads}) must divide dim ({options.dim})")


@training_family("vit")
def vit_tiny(image_shape: ImageShape, num_classes: int, options: ViTOptions) -> nn.Module:
    """A small vision transformer (Dosovitskiy et al. 2021) with GELU MLPs, for 28x28 digits."""
    _check(image_shape, options)
    return VisionTransformer(image_shape, num_classes, options)
