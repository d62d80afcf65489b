"""Cells know what computed them: plugin versions in the cell identity, stale rows refused or replaced."""

from __future__ import annotations

import importlib.metadata
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pandas as pd
import pytest

from resbench import plugins
from resbench.cli import main
from resbench.report.display import legend
from resbench.report.latex import render_latex
from resbench.report.renderers import render_html, render_markdown
from resbench.report.tables import build_leaderboard
from resbench.run.store import ResultStore

SUITE = """\
version: 1
datasets: [{name: synthetic, train_size: 128, test_size: 32, separation: 3.0}]
models: [test-mlp]
methods: [none, ranger]
formats: [fp32]
bers: [1.0e-3]
trials: 2
training: {epochs: 1}
"""


def _run(folder: Path, *extra: str) -> int:
    suite = folder / "suite.yaml"
    suite.write_text(SUITE, encoding="utf-8")
    return main(["run", str(suite), "--store", str(folder / "r.sqlite"), "--cache-dir", str(folder / "cache"),
                 "--report-dir", str(folder / "reports"), "--no-progress", *extra])


def _frames(folder: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    with ResultStore.open_existing(folder / "r.sqlite") as store:
        return store.cells_frame(), store.trials_frame()


def _versions(cells: pd.DataFrame) -> set[str]:
    return {json.dumps(json.loads(definition)["method"]["plugins"], sort_keys=True)
            for definition in cells["definition"]}


def _bump(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(plugins, "__version__", "999.0")  # every built-in plugin's version
    plugins.reset_registries()


def test_a_version_bump_never_leaves_stale_rows_in_a_cell(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _run(tmp_path) == 0
    before_cells, before_trials = _frames(tmp_path)
    assert not any("999.0" in versions for versions in _versions(before_cells))
    _bump(monkeypatch)
    capsys.readouterr()
    assert _run(tmp_path) == 2  # refused: the stored cells were computed by the earlier version
    error = capsys.readouterr().err
    assert "computed by other plugin versions" in error and "--rerun stale" in error
    assert "999.0" in error and "resbench_plugins.ranger" in error
    cells, trials = _frames(tmp_path)
    assert len(trials) == len(before_trials) and set(cells["cell_id"]) == set(before_cells["cell_id"])
    assert _run(tmp_path, "--rerun", "stale") == 0
    cells, trials = _frames(tmp_path)
    assert not set(cells["cell_id"]) & set(before_cells["cell_id"])  # every old cell replaced
    assert set(trials["cell_id"]) <= set(cells["cell_id"]) and len(trials) == len(before_trials)
    assert all("999.0" in versions for versions in _versions(cells))
    tables = build_leaderboard(cells, trials)
    assert {str(text) for text in tables[0].rows["plugins"]} == {"resbench_plugins.none 999.0",
                                                                 "resbench_plugins.ranger 999.0"}
    assert "resbench_plugins.ranger 999.0" in render_markdown(tables)


def test_rerun_replaces_a_method_a_cell_or_the_failed_cells_and_refuses_unknown_names(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _run(tmp_path) == 0
    cells, trials = _frames(tmp_path)
    first_runs = set(trials["run_id"])
    assert _run(tmp_path, "--rerun", "ranger") == 0
    _, rerun = _frames(tmp_path)
    ranger = rerun[rerun["method"] == "ranger"]
    assert set(ranger["run_id"]).isdisjoint(first_runs)  # computed again by the second run
    assert set(rerun[rerun["method"] == "none"]["run_id"]) == first_runs
    cell = str(cells[(cells["method"] == "none") & (cells["ber"] > 0)]["cell_id"].iloc[0])
    assert _run(tmp_path, "--rerun", f"{cell},failed") == 0
    _, again = _frames(tmp_path)
    assert set(again[again["cell_id"] == cell]["run_id"]).isdisjoint(set(rerun["run_id"]))
    capsys.readouterr()
    assert _run(tmp_path, "--rerun", "fitact") == 2
    assert "--rerun: 'fitact' is neither failed, stale, a method of the suite" in capsys.readouterr().err


def test_a_table_never_pools_rows_of_two_plugin_versions(tmp_path: Path) -> None:
    assert _run(tmp_path) == 0
    cells, trials = _frames(tmp_path)
    ranger = cells[cells["method"] == "ranger"]
    renamed = {cell_id: f"{cell_id}-other" for cell_id in ranger["cell_id"]}

    def other_version(definition: str) -> str:
        fields = json.loads(definition)
        fields["method"]["plugins"] = {"resbench_plugins.ranger": "0.0.1"}
        return json.dumps(fields, sort_keys=True)

    older = ranger.assign(cell_id=ranger["cell_id"].map(renamed), definition=ranger["definition"].map(other_version))
    older_trials = trials[trials["cell_id"].isin(renamed)].assign(cell_id=lambda frame: frame["cell_id"].map(renamed))
    tables = build_leaderboard(pd.concat([cells, older]), pd.concat([trials, older_trials]))
    methods = sorted(str(method) for method in tables[0].rows["method"])
    assert methods == sorted(["none", f"ranger ({_plugins_text(ranger)})", "ranger (resbench_plugins.ranger 0.0.1)"])


def _plugins_text(cells: pd.DataFrame) -> str:
    versions = json.loads(str(cells["definition"].iloc[0]))["method"]["plugins"]
    return ", ".join(f"{plugin} {version}" for plugin, version in sorted(versions.items()))


def test_method_notes_are_shown_in_markdown_html_and_latex(tmp_path: Path) -> None:
    assert _run(tmp_path) == 0
    tables = build_leaderboard(*_frames(tmp_path))
    notes = dict(tables[0].method_notes)
    assert set(notes) == {"ranger"} and notes["ranger"]
    words = notes["ranger"].split()[:4]
    for text in (render_markdown(tables), render_html(tables), render_latex(tables)):
        assert " ".join(words) in text


def test_each_row_shows_its_clean_accuracy_beside_the_unprotected_models(tmp_path: Path) -> None:
    assert _run(tmp_path) == 0
    rows = build_leaderboard(*_frames(tmp_path))[0].rows.set_index("method")
    assert rows.loc["none", "clean_vs_none"] == 0
    ranger, none = rows.loc["ranger"], rows.loc["none"]
    assert ranger["clean_vs_none"] == ranger["clean_accuracy"] - none["clean_accuracy"]
    assert "| clean vs none |" in render_markdown(build_leaderboard(*_frames(tmp_path)))


FAULT_PLUGIN = "resbench_test_flip_plugin"


def _fault_plugin(monkeypatch: pytest.MonkeyPatch) -> None:
    """A third-party plugin, ``myflip``, whose fault model ``my-flip`` flips bits (installed by a fake entry point)."""
    from resbench.engine.faults import BernoulliFaults, FaultModelOptions

    module = ModuleType(FAULT_PLUGIN)

    @plugins.hookimpl
    def register_fault_models(register: Any) -> None:
        def my_flip(options: FaultModelOptions) -> BernoulliFaults:
            """Bits flip independently with probability BER (a third-party fault model, for tests)."""
            return BernoulliFaults(options, "flip")

        register("my-flip", my_flip, options=FaultModelOptions)

    module.register_fault_models = register_fault_models  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, FAULT_PLUGIN, module)
    entry_point = importlib.metadata.EntryPoint("myflip", FAULT_PLUGIN, plugins.ENTRY_POINT_GROUP)
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda **selection: [entry_point])
    monkeypatch.delenv(plugins.DISABLE_PLUGINS_VARIABLE, raising=False)
    plugins.reset_registries()


def _set_version(version: str) -> None:
    plugins.get_registries().plugins["myflip"].version = version


def test_a_new_version_of_a_fault_model_plugin_makes_its_stored_cells_stale(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _fault_plugin(monkeypatch)
    monkeypatch.setattr(sys.modules[__name__], "SUITE", SUITE + "faults: [my-flip]\n")
    _set_version("1.0")
    assert _run(tmp_path) == 0
    before, before_trials = _frames(tmp_path)
    assert all(json.loads(definition)["plugins"]["myflip"] == "1.0" for definition in before["definition"])
    _set_version("1.1")  # the fault model computes differently now: none of the stored rows is its
    capsys.readouterr()
    assert _run(tmp_path) == 2
    error = capsys.readouterr().err
    assert "computed by other plugin versions" in error and "myflip 1.0" in error and "myflip 1.1" in error
    assert _run(tmp_path, "--rerun", "stale") == 0
    cells, trials = _frames(tmp_path)
    assert not set(cells["cell_id"]) & set(before["cell_id"]) and len(trials) == len(before_trials)
    [table] = build_leaderboard(cells, trials)
    assert "Model, dataset, format or fault model from: myflip 1.1." in legend(table)


def test_a_baseline_is_trained_again_for_another_version_of_its_dataset_or_model_plugin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from resbench.cache import ArtifactCache
    from resbench.datasets import load_dataset
    from resbench.training import load_or_train_baseline

    def baseline_hit() -> bool:
        splits = load_dataset("synthetic", {"train_size": 64, "test_size": 16})
        version = plugins.get_registries().plugins["resbench.datasets"].version
        assert splits.key["plugins"] == {"resbench.datasets": version}
        return load_or_train_baseline("test-mlp", {}, splits, seed=0, cache=ArtifactCache(tmp_path), device="cpu",
                                      training_options={"epochs": 1}, progress=False).cache_hit

    assert not baseline_hit() and baseline_hit()
    plugins.get_registries().plugins["resbench.datasets"].version = "999.0"  # other data, same name and options
    assert not baseline_hit() and baseline_hit()
    plugins.get_registries().plugins["resbench.models"].version = "999.0"  # another model, same name and options
    assert not baseline_hit()
