"""What a plugin author meets: the right item blamed, item and plugin in option errors, a test helper."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from resbench import plugins
from resbench.cli import main
from resbench.config import ComponentSpec
from resbench.errors import PluginError, UsageError
from resbench.methods import (
    ActivationScheme,
    BoundedActivation,
    CallSiteSpec,
    PrepareContext,
    Recipe,
    RecipeOptions,
    activation_call_sites,
    bound_shape,
    bounded_sites,
    transformed_layers,
)
from resbench.methods.testing import prepare_method, tiny_model, tiny_prepare_context


class Flattening(BoundedActivation):
    """A wrong ``limit``: it flattens the activation's output."""

    def limit(self, activated: torch.Tensor) -> torch.Tensor:
        return torch.minimum(activated, self.bound).flatten(1)


class FlatteningScheme(ActivationScheme):
    """Builds :class:`Flattening` modules."""

    def build(self, site: CallSiteSpec) -> BoundedActivation:
        return Flattening(site.activation, bound_shape(site.output_shape, site.granularity))


class FlatteningRecipeOptions(RecipeOptions):
    """The flattening scheme with Ranger's built-in optimizer."""

    activation: ComponentSpec = ComponentSpec(name="flattening")
    optimizer: ComponentSpec = ComponentSpec(name="profile-max")


class FlatteningRecipe(Recipe):
    """A recipe around the wrong scheme."""

    Options = FlatteningRecipeOptions


def test_a_limit_of_the_wrong_shape_is_blamed_on_the_activation_scheme_at_build(
    add_plugin: Callable[..., None],
) -> None:
    add_plugin(register_activation_schemes=lambda register: register("flattening", FlatteningScheme),
               register_methods=lambda register: register("flattening-recipe", FlatteningRecipe))
    context = tiny_prepare_context()
    with pytest.raises(PluginError) as raised:
        prepare_method("flattening-recipe", tiny_model(context, epochs=1), context)
    message = str(raised.value)
    assert raised.value.plugin == "resbench_test_plugin"
    assert "activation scheme 'flattening', in build" in message and "returned shape (1, 256)" in message
    assert "profile-max" not in message


def test_an_option_error_names_the_item_and_its_plugin() -> None:
    plugins.reset_registries()
    with pytest.raises(UsageError) as raised:
        plugins.get_registries().methods.build("recipe", {"activation": "clamp",
                                                          "optimizer": {"name": "profile-max", "qq": 1}})
    assert "recipe optimizer 'profile-max' (plugin resbench_plugins.ranger): qq: unknown option" in str(raised.value)


def test_a_duplicate_name_exits_2_naming_both_plugins(
    add_plugin: Callable[..., None], capsys: pytest.CaptureFixture[str]
) -> None:
    add_plugin(register_methods=lambda register: register("ranger", FlatteningRecipe))
    assert main(["list", "methods"]) == 2
    error = capsys.readouterr().err
    assert "method 'ranger' registered twice: by plugin 'resbench_plugins.ranger' and by 'resbench_test_plugin'" in (
        error)
    assert "failed in" not in error  # neither plugin is blamed: the pair is the problem


def test_the_test_helpers_prepare_a_built_in_method_on_a_tiny_model() -> None:
    context = tiny_prepare_context()
    assert isinstance(context, PrepareContext) and context.image_shape == (1, 8, 8)
    model = tiny_model(context)
    images, labels = context.validation[:]
    accuracy = float((model(images).argmax(dim=1) == labels).float().mean())
    assert accuracy > 0.6  # the classes differ in brightness: a few epochs learn them
    prepared = prepare_method("ranger", model, context)
    bounds = bounded_sites(prepared, activation_call_sites(prepared))
    assert len(bounds) == 2 and all(torch.isfinite(module.bound).all() for module in bounds.values())
    again = prepare_method("ranger", tiny_model(tiny_prepare_context()), tiny_prepare_context())
    assert all(torch.equal(a.bound, b.bound) for a, b in zip(
        bounds.values(), bounded_sites(again, activation_call_sites(again)).values(), strict=True))
    assert isinstance(prepared, nn.Module)


# -- the plugin guide's own examples ------------------------------------------------------------------------

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "plugins.md"


def _guide_section(title: str) -> str:
    text = GUIDE.read_text(encoding="utf-8")
    start = text.index(title)
    following = text.find("\n#", start + len(title))
    return text[start:] if following < 0 else text[start:following]


def _python_blocks(section: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```$", section, flags=re.MULTILINE | re.DOTALL)


def test_the_guides_test_example_passes() -> None:
    namespace: dict[str, Any] = {}
    blocks = _python_blocks(_guide_section("## Testing a plugin"))
    assert len(blocks) == 1
    exec(compile(blocks[0], "docs/plugins.md (Testing a plugin)", "exec"), namespace)
    tests = [value for name, value in namespace.items() if name.startswith("test_")]
    assert tests
    for test in tests:
        test()


def test_the_guides_named_transform_method_runs_by_its_name(
    add_plugin: Callable[..., None], tmp_path: Path
) -> None:
    namespace: dict[str, Any] = {}
    block = _python_blocks(_guide_section("#### `register_weight_transforms(register)`"))[0]
    exec(compile(block, "docs/plugins.md (weight transforms)", "exec"), namespace)
    add_plugin(register_weight_transforms=namespace["register_weight_transforms"],
               register_methods=namespace["register_methods"])
    context = tiny_prepare_context()
    prepared = prepare_method("clamp-on-read", tiny_model(context, epochs=1), context)
    assert transformed_layers(prepared) == ["0", "4", "6"]
    suite = tmp_path / "suite.yaml"
    suite.write_text("datasets: [{name: synthetic, train_size: 128, test_size: 32, separation: 3.0}]\n"
                     "models: [test-mlp]\nbers: [1.0e-3]\ntrials: 2\ntraining: {epochs: 1}\n", encoding="utf-8")
    assert main(["run", str(suite), "--methods", "none,clamp-on-read+ranger", "--store", str(tmp_path / "r.sqlite"),
                 "--cache-dir", str(tmp_path / "cache"), "--report-dir", str(tmp_path / "reports"),
                 "--no-progress"]) == 0
