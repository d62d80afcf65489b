"""The method API as a plugin author meets it: fit runs, the cache follows the plugin, failures are named."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from resbench import plugins
from resbench.cli import main
from resbench.engine.faultspace import mark_stored
from resbench.errors import PluginError
from resbench.methods import Method, PrepareContext
from resbench.registry import Registry
from resbench.run.store import ResultStore
from tests.helpers import MINIMAL_SUITE as SUITE


def _run(folder: Path, methods: str, *extra: str, cache: Path | None = None) -> int:
    """``resbench run`` of the tiny suite with ``--methods``, store and reports in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    suite = folder / "suite.yaml"
    suite.write_text(SUITE, encoding="utf-8")
    return main(["run", str(suite), "--methods", methods, "--store", str(folder / "r.sqlite"), "--cache-dir",
                 str(cache or folder / "cache"), "--report-dir", str(folder / "reports"), "--no-progress", *extra])


class Counting(Method):
    """Scales nothing; counts its fits (no ``trains`` flag or anything else to set)."""

    fits = 0

    def fit(self, model: nn.Module, context: PrepareContext) -> dict[str, Any]:
        Counting.fits += 1
        return {}


def test_fit_runs_without_any_flag_and_a_new_plugin_version_fits_again(
    add_plugin: Callable[..., None], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    add_plugin(register_methods=lambda register: register("counting", Counting))
    Counting.fits = 0
    cache = tmp_path / "cache"
    assert _run(tmp_path / "first", "counting", cache=cache) == 0
    assert Counting.fits == 1
    assert _run(tmp_path / "again", "counting", cache=cache) == 0  # another store, same cache: fitted state reused
    assert Counting.fits == 1
    monkeypatch.setattr(plugins, "__version__", "999.0")  # the plugin's version changed: its fit may have too
    plugins.reset_registries()
    assert _run(tmp_path / "third", "counting", cache=cache) == 0
    assert Counting.fits == 2


class Failing(Method):
    """A method whose fit raises."""

    def fit(self, model: nn.Module, context: PrepareContext) -> dict[str, Any]:
        raise ValueError("bounds diverged")


def test_a_failing_fit_is_one_line_naming_plugin_item_and_phase(
    add_plugin: Callable[..., None], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    add_plugin(register_methods=lambda register: register("failing", Failing))
    assert _run(tmp_path, "failing") == 1  # the method's cells fail; the run goes on and ends with status 1
    error = capsys.readouterr().err.strip().splitlines()
    assert error[0].startswith("resbench: ") and "cells failed" in error[0]
    assert error[1].endswith("prepare failed in plugin resbench_test_plugin: plugin 'resbench_test_plugin', "
                             "method 'failing', in fit: ValueError: bounds diverged")
    assert main(["-v", "run", str(tmp_path / "suite.yaml"), "--methods", "failing", "--store",
                 str(tmp_path / "r.sqlite"), "--cache-dir", str(tmp_path / "cache"), "--no-progress"]) == 1
    verbose = capsys.readouterr().err
    assert "Traceback" in verbose and 'raise ValueError("bounds diverged")' in verbose


def test_a_factory_returning_the_wrong_type_is_named(add_plugin: Callable[..., None], tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    add_plugin(register_methods=lambda register: register("not-a-method", lambda options: nn.ReLU()))
    assert _run(tmp_path, "not-a-method") == 1
    assert capsys.readouterr().err.strip() == (
        "resbench: error: plugin 'resbench_test_plugin', method 'not-a-method', in construction: "
        "the factory returned ReLU, not a Method")


@pytest.mark.parametrize("family", ["formats", "faults", "models", "datasets", "activations", "optimizers"])
def test_every_family_checks_what_its_factories_return(family: str) -> None:
    registry: Registry[Any] = plugins.get_registries().families[family]
    registry.add("wrong-type", lambda *arguments: object(), "test-plugin")
    with pytest.raises(PluginError, match=r"test-plugin.*wrong-type.*the factory returned object"):
        registry.build("wrong-type", call=lambda factory, options: factory(options))


class SamplingFails(Method):
    """Unprotected; used with a fault model that raises."""


def test_a_fault_model_that_raises_while_sampling_is_named(add_plugin: Callable[..., None], tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    from resbench.engine.faults import BernoulliFaults, FaultModelOptions

    class Broken(BernoulliFaults):
        def sample_sites(self, *arguments: Any) -> Any:
            raise RuntimeError("no randomness left")

    add_plugin(register_fault_models=lambda register: register("broken", lambda options: Broken(options),
                                                               options=FaultModelOptions))
    assert _run(tmp_path, "none", "--faults", "broken") == 1
    error = capsys.readouterr().err.strip().splitlines()
    assert error[1].endswith("campaign failed in plugin resbench_test_plugin: plugin 'resbench_test_plugin', "
                             "fault model 'broken', in sample: RuntimeError: no randomness left")


def test_a_report_format_that_raises_is_named(add_plugin: Callable[..., None], tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    def broken(tables: list[Any]) -> str:
        raise KeyError("column")

    add_plugin(register_report_formats=lambda register: register("broken", broken))
    assert _run(tmp_path, "none") == 0
    capsys.readouterr()
    assert main(["leaderboard", "--store", str(tmp_path / "r.sqlite"), "--format", "broken"]) == 1
    assert capsys.readouterr().err.strip() == ("resbench: error: plugin 'resbench_test_plugin', report format "
                                               "'broken', in render: KeyError: 'column'")


class Bound(nn.Module):
    """A bound that is stored because its class says so."""

    stored_tensors = ("bound",)

    def __init__(self) -> None:
        super().__init__()
        self.bound = nn.Parameter(torch.tensor(100.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.minimum(torch.relu(x), self.bound)


class DeclaredBound(Method):
    """Adds a bound in build, declared stored by its module class; fit sets it."""

    def build(self, model: nn.Module, context: PrepareContext) -> nn.Module:
        model.relu = Bound()  # type: ignore[assignment]
        return model

    def fit(self, model: nn.Module, context: PrepareContext) -> dict[str, Any]:
        with torch.no_grad():
            model.relu.bound.fill_(3.0)  # type: ignore[union-attr, operator]
        return {}


class MarksInFit(DeclaredBound):
    """Marks its bound stored in fit: a cached run would rebuild without the mark."""

    def build(self, model: nn.Module, context: PrepareContext) -> nn.Module:
        model.relu = nn.Module()  # type: ignore[assignment]
        model.relu.bound = nn.Parameter(torch.tensor(100.0))  # type: ignore[union-attr]
        model.relu.forward = lambda x: torch.minimum(torch.relu(x), model.relu.bound)  # type: ignore[union-attr]
        return model

    def fit(self, model: nn.Module, context: PrepareContext) -> dict[str, Any]:
        mark_stored(model.relu, "bound")  # type: ignore[arg-type]
        return {}


def test_a_declared_stored_tensor_stays_in_the_fault_space_of_a_cached_method(
    add_plugin: Callable[..., None], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    add_plugin(register_methods=lambda register: (register("declared", DeclaredBound),
                                                  register("marks-in-fit", MarksInFit)))
    for folder in (tmp_path / "first", tmp_path / "cached"):  # fitted, then loaded from the cache
        assert _run(folder, "declared", cache=tmp_path / "cache") == 0
        with ResultStore(folder / "r.sqlite") as store:
            space = json.loads(store.cells_frame().iloc[0]["fault_space"])
        assert space[-1]["name"] == "relu.bound" and space[-1]["kind"] == "method"
    assert _run(tmp_path / "first", "marks-in-fit") == 1
    assert "mark them in build() or declare stored_tensors" in capsys.readouterr().err


def test_normalized_options_make_a_named_item_and_its_defaults_one_cell(tmp_path: Path) -> None:
    from resbench_plugins.ranger import RangerOptions

    defaults = RangerOptions().model_dump(mode="json")
    assert _run(tmp_path, "ranger") == 0
    spelled_out = tmp_path / "spelled.yaml"
    spelled_out.write_text(SUITE + f"methods: [{json.dumps({'name': 'ranger', **defaults})}]\n", encoding="utf-8")
    status = main(["run", str(spelled_out), "--store", str(tmp_path / "r.sqlite"), "--cache-dir",
                   str(tmp_path / "cache"), "--report-dir", str(tmp_path / "reports"), "--no-progress"])
    assert status == 0
    with ResultStore(tmp_path / "r.sqlite") as store:
        cells = store.cells_frame()
    assert cells["cell_id"].nunique() == 2  # BER 0 and BER 1e-3, once: the second run added no cell
