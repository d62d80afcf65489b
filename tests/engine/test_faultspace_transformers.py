"""The fault space beyond conv and linear: parameters held directly by modules (attention, embeddings, layer
norm, tokens), selected by module type and tensor name; the CNN zoo's fault space and identity unchanged."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from resbench.engine.faultspace import FaultSpace, FaultSpaceOptions
from resbench.models import build_model
from resbench.plugins import get_registries


class TinyTransformer(nn.Module):
    """Token embedding, a class token, attention, layer norm and a linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(16, 8)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, 8))
        self.attention = nn.MultiheadAttention(8, 2, batch_first=True)
        self.norm = nn.LayerNorm(8)
        self.head = nn.Linear(8, 3)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = torch.cat([self.cls_token.expand(len(tokens), -1, -1), self.embed(tokens)], dim=1)
        x = self.norm(x + self.attention(x, x, x, need_weights=False)[0])
        return self.head(x[:, 0])


def test_default_space_holds_every_parameter_a_transformer_stores() -> None:
    model = TinyTransformer()
    space = FaultSpace(model)
    assert {id(stored.tensor) for stored in space.tensors} == {id(parameter) for parameter in model.parameters()}
    assert space.names == ("cls_token", "embed.weight", "attention.in_proj_weight", "attention.in_proj_bias",
                           "attention.out_proj.weight", "attention.out_proj.bias", "norm.weight", "norm.bias",
                           "head.weight", "head.bias")


def test_selection_by_module_type_and_by_tensor_name() -> None:
    model = TinyTransformer()
    by_type = FaultSpace(model, FaultSpaceOptions(module_types=("MultiheadAttention", "Embedding")))
    assert by_type.names == ("embed.weight", "attention.in_proj_weight", "attention.in_proj_bias")
    by_name = FaultSpace(model, FaultSpaceOptions(tensors=("*.in_proj_weight", "re:.*norm\\..*")))
    assert by_name.names == ("attention.in_proj_weight", "norm.weight", "norm.bias")
    dropped = FaultSpace(model, FaultSpaceOptions(exclude_tensors=("*.bias",)))
    assert not any(name.endswith(".bias") for name in dropped.names) and "cls_token" in dropped.names
    conv_linear = FaultSpace(model, FaultSpaceOptions(direct_parameters=False))
    assert conv_linear.names == ("attention.out_proj.weight", "attention.out_proj.bias", "head.weight", "head.bias")


ZOO_SHAPES = {"lenet5": (1, 28, 28), "mlp": (1, 8, 8), "test-mlp": (1, 8, 8), "test-cnn": (1, 8, 8)}


@pytest.mark.parametrize("name", [name for name in get_registries().models.names()
                                  if name in ZOO_SHAPES or name in ("alexnet-cifar", "vgg11", "resnet20",
                                                                    "mobilenet_v2", "resnet18", "vgg16_bn")])
def test_cnn_zoo_fault_space_is_conv_and_linear_as_before(name: str) -> None:
    model = build_model(name, ZOO_SHAPES.get(name, (3, 32, 32)), 10)
    assert FaultSpace(model).names == FaultSpace(model, FaultSpaceOptions(direct_parameters=False)).names


def test_options_at_their_defaults_keep_the_stored_identity() -> None:
    assert FaultSpaceOptions().model_dump() == {"batch_norm": False, "method_tensors": True, "layers": (),
                                                "exclude_layers": (), "module_types": ()}
    assert FaultSpaceOptions(direct_parameters=False).model_dump()["direct_parameters"] is False
