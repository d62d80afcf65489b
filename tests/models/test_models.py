"""Model plugins: every built-in model adapts to channels, size and classes; checkpoints load strictly."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch
from torch import nn

from resbench.errors import UsageError
from resbench.models import build_model, load_checkpoint, model_training_family
from resbench.models.common import feature_count
from resbench.plugins import get_registries

SMALL_MODELS = ["mlp", "lenet5", "alexnet-cifar", "vgg11", "vgg16", "resnet20", "resnet56", "mobilenet_v2",
                "test-mlp", "test-cnn"]
BIG_MODELS = ["resnet18", "resnet50", "vgg16_bn", "alexnet"]


def test_all_models_registered() -> None:
    names = set(get_registries().models.names())
    assert set(SMALL_MODELS + BIG_MODELS) <= names


@pytest.mark.parametrize("name", SMALL_MODELS)
@pytest.mark.parametrize("shape", [(1, 8, 8), (3, 32, 32)])
def test_model_adapts_to_the_dataset(name: str, shape: tuple[int, int, int]) -> None:
    model = build_model(name, shape, 7).eval()
    with torch.no_grad():
        assert model(torch.randn(2, *shape)).shape == (2, 7)


@pytest.mark.parametrize("name", BIG_MODELS)
def test_torchvision_model_adapts_to_small_grey_images(name: str) -> None:
    model = build_model(name, (1, 16, 16), 5).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 1, 16, 16)).shape == (1, 5)


def test_torchvision_small_input_stem() -> None:
    small = build_model("resnet18", (3, 32, 32), 10)
    large = build_model("resnet18", (3, 64, 64), 10)
    assert small.conv1.stride == (1, 1) and isinstance(small.maxpool, nn.Identity)
    assert large.conv1.stride == (2, 2) and isinstance(large.maxpool, nn.MaxPool2d)
    forced = build_model("resnet18", (3, 32, 32), 10, {"small_input": False})
    assert forced.conv1.stride == (2, 2)


def test_cifar_resnet_depths_and_shortcuts() -> None:
    def convolutions(model: nn.Module) -> int:
        return sum(isinstance(module, nn.Conv2d) for module in model.modules())

    assert convolutions(build_model("resnet20", (3, 32, 32), 10)) == 19
    assert convolutions(build_model("resnet56", (3, 32, 32), 10)) == 55
    assert convolutions(build_model("resnet20", (3, 32, 32), 10, {"shortcut": "B"})) == 21


def test_model_options_are_validated() -> None:
    with pytest.raises(UsageError, match="unknown option"):
        build_model("lenet5", (1, 28, 28), 10, {"width": 3})
    with pytest.raises(UsageError, match="did you mean"):
        build_model("lenet6", (1, 28, 28), 10)
    assert build_model("mlp", (1, 4, 4), 3, {"hidden": [5]}).layers[1].out_features == 5
    with pytest.raises(UsageError, match=r"hidden\.0: Input should be greater than or equal to 1"):
        build_model("mlp", (1, 4, 4), 3, {"hidden": [-3]})


def test_too_small_images_are_a_usage_error() -> None:
    assert build_model("lenet5", (1, 1, 1), 10)(torch.zeros(1, 1, 1, 1)).shape == (1, 10)
    with pytest.raises(UsageError, match=r"model 'mine' cannot take images of shape \(1, 2, 2\)"):
        feature_count(nn.Conv2d(1, 1, 5), (1, 2, 2), "mine")


def test_training_families() -> None:
    assert model_training_family("lenet5") == "lenet"
    assert model_training_family("resnet20") == "resnet-cifar"
    assert model_training_family("test-cnn") == "test"


def test_checkpoint_round_trip(tmp_path: Path) -> None:
    source = build_model("test-cnn", (1, 8, 8), 10)
    path = tmp_path / "model.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in source.state_dict().items()}}, path)
    target = load_checkpoint(build_model("test-cnn", (1, 8, 8), 10), path)
    for key, value in source.state_dict().items():
        assert torch.equal(value, target.state_dict()[key])


def test_checkpoint_with_wrong_shapes_names_the_keys(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    torch.save(build_model("test-cnn", (1, 8, 8), 3).state_dict(), path)
    with pytest.raises(UsageError) as raised:
        load_checkpoint(build_model("test-cnn", (1, 8, 8), 10), path)
    message = str(raised.value)
    assert "fc2.weight" in message and "fc2.bias" in message and "wrong shapes" in message
    assert "\n" not in message


def test_checkpoint_with_missing_and_unexpected_keys(tmp_path: Path) -> None:
    state = build_model("test-cnn", (1, 8, 8), 10).state_dict()
    state.pop("conv.bias")
    state["extra.weight"] = torch.zeros(1)
    path = tmp_path / "model.pt"
    torch.save(state, path)
    with pytest.raises(UsageError, match=r"missing keys: conv\.bias.*unexpected keys: extra\.weight"):
        load_checkpoint(build_model("test-cnn", (1, 8, 8), 10), path)
    with pytest.raises(UsageError, match="does not exist"):
        load_checkpoint(build_model("test-cnn", (1, 8, 8), 10), tmp_path / "absent.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    for junk in (b"not a checkpoint", pickle.dumps({"model": print}, protocol=2)):  # a pickle torch refuses
        (tmp_path / "junk.pt").write_bytes(junk)
        with pytest.raises(UsageError, match="cannot be read") as raised:
            load_checkpoint(build_model("test-cnn", (1, 8, 8), 10), tmp_path / "junk.pt")
        assert "\n" not in str(raised.value)


class UserNet(nn.Module):
    """A user's own architecture."""

    def __init__(self, image_shape: tuple[int, int, int], num_classes: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(image_shape[0] * image_shape[1] * image_shape[2], 4),
                                  nn.ReLU())
        self.head = nn.Linear(4, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def test_third_party_model_plugin(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import sys
    from types import ModuleType

    from resbench import plugins
    from resbench.models.callsites import activation_call_sites

    module = ModuleType("user_models")

    @plugins.hookimpl
    def register_models(register: object) -> None:
        register("user-net", lambda shape, classes, options: UserNet(shape, classes),  # type: ignore[operator]
                 description="A user's network.")

    module.register_models = register_models  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "user_models", module)
    monkeypatch.setattr(plugins, "BUILTIN_PLUGINS", (*plugins.BUILTIN_PLUGINS, "user_models"))
    plugins.reset_registries()
    model = build_model("user-net", (1, 3, 3), 2)
    assert isinstance(model, UserNet) and model_training_family("user-net") == "generic"
    assert activation_call_sites(model) == ["body.2"]
    path = tmp_path / "user.pt"
    torch.save(model.state_dict(), path)
    assert isinstance(load_checkpoint(build_model("user-net", (1, 3, 3), 2), path), UserNet)
