"""Shared fixtures: no third-party plugins, fresh registries per test, and a small in-test plugin."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pydantic
import pytest

from resbench import plugins
from resbench.engine.faults import BernoulliFaults, FaultModelOptions
from resbench.engine.formats import FixedPoint, Float32
from resbench.options import Options

TEST_PLUGIN = "resbench_test_items"


@pytest.fixture(autouse=True)
def _isolated_plugins(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Third-party plugins installed on this machine must not leak into the tests.

    The plugin-environment test in ``test_plugins.py`` removes the variable itself.
    """
    monkeypatch.setenv(plugins.DISABLE_PLUGINS_VARIABLE, "1")
    plugins.reset_registries()
    yield
    plugins.reset_registries()


class FixedPointOptions(Options):
    """Options of the test ``qM.N`` format."""

    integer_bits: int = pydantic.Field(default=3, ge=0, le=31, description="integer bits M")
    fraction_bits: int = pydantic.Field(default=4, ge=0, le=31, description="fraction bits N")


class ClipOptions(Options):
    """Options of the test clipping method."""

    bound: float = pydantic.Field(default=1.0, gt=0, le=100, description="activation bound")


class FloatFormat(Float32):
    """A format used only by the tests (fp32 under another name)."""

    def __init__(self, options: Options) -> None:
        self.options = options


class FixedPointFormat(FixedPoint):
    """A fixed-point format used only by the tests."""

    Options = FixedPointOptions

    def __init__(self, options: FixedPointOptions) -> None:
        super().__init__(options.integer_bits, options.fraction_bits)


class FlipFaults(BernoulliFaults):
    """Flip test bits."""

    Options = FaultModelOptions


def _item(description: str) -> Any:
    """A stand-in item: the registry stores items, it never calls them."""

    def item(*args: Any, **kwargs: Any) -> None:
        return None

    item.__doc__ = description
    return item


def build_test_plugin() -> ModuleType:
    """A plugin that registers one item in every suite family, under names no real plugin uses."""
    module = ModuleType(TEST_PLUGIN, "Items the resbench tests register.")

    @plugins.hookimpl
    def register_formats(register: Any) -> None:
        register("dummy-fp", FloatFormat)
        register("dummy-qM.N", FixedPointFormat, pattern=r"dummy-q(?P<integer_bits>\d+)\.(?P<fraction_bits>\d+)")

    @plugins.hookimpl
    def register_fault_models(register: Any) -> None:
        register("dummy-flip", FlipFaults)

    @plugins.hookimpl
    def register_methods(register: Any) -> None:
        register("dummy-none", _item("No protection, for tests."))
        register("dummy-clip", _item("Clip activations, for tests."), options=ClipOptions)

    @plugins.hookimpl
    def register_models(register: Any) -> None:
        register("dummy-mlp", _item("A tiny test model."))

    @plugins.hookimpl
    def register_datasets(register: Any) -> None:
        register("dummy-blobs", _item("A tiny test dataset."))

    @plugins.hookimpl
    def register_executors(register: Any) -> None:
        register("dummy-inline", _item("Runs jobs inline, for tests."))

    for hook in (
        register_formats,
        register_fault_models,
        register_methods,
        register_models,
        register_datasets,
        register_executors,
    ):
        setattr(module, hook.__name__, hook)
    return module


# The plugins the foundation itself ships; the other built-ins are tested where they are written.
FOUNDATION_PLUGINS = ("resbench.cli.list_cmd", "resbench.cli.validate_cmd")


@pytest.fixture
def test_items(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Load the foundation's own plugins plus the in-test plugin, registered as a built-in.

    Suite and CLI tests then depend on neither the timing nor the names of the real model, data and
    fault-engine plugins; ``test_plugins.py`` loads those.
    """
    monkeypatch.setitem(sys.modules, TEST_PLUGIN, build_test_plugin())
    monkeypatch.setattr(plugins, "BUILTIN_PLUGINS", (*FOUNDATION_PLUGINS, TEST_PLUGIN))
    plugins.reset_registries()
    yield
    plugins.reset_registries()


VALID_SUITE = """\
version: 1
name: tiny
methods:
  - dummy-none
  - name: dummy-clip
    bound: 2.5
models: [dummy-mlp]
datasets: [dummy-blobs]
formats: [dummy-fp, dummy-q3.4]
faults: [dummy-flip]
bers: [1.0e-6, 1.0e-5]
trials: 5
seed: 7
executor: dummy-inline
"""


@pytest.fixture
def valid_suite(tmp_path: Path) -> Path:
    """A suite file naming only the in-test plugin's items (use with ``test_items``)."""
    path = tmp_path / "suite.yaml"
    path.write_text(VALID_SUITE, encoding="utf-8")
    return path


@pytest.fixture
def write_suite(tmp_path: Path) -> Any:
    """Write a suite file from text and return its path."""

    def write(text: str, name: str = "suite.yaml") -> Path:
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        return path

    return write


@pytest.fixture
def add_plugin(monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    """Register a module with the given hook implementations as a built-in plugin (named
    ``resbench_test_plugin`` unless ``name`` says otherwise), for this test only."""

    def add(name: str = "resbench_test_plugin", **hooks: Callable[[Any], None]) -> None:
        module = ModuleType(name)
        for hook, function in hooks.items():
            setattr(module, hook, plugins.hookimpl(function))
        monkeypatch.setitem(sys.modules, module.__name__, module)
        monkeypatch.setattr(plugins, "BUILTIN_PLUGINS", (*plugins.BUILTIN_PLUGINS, module.__name__))
        plugins.reset_registries()

    return add
