"""The plugin as resbench sees it once installed: listed under its own name, its format usable by name."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from resbench.engine.formats import resolve_format
from resbench.plugins import DISABLE_PLUGINS_VARIABLE, get_registries, reset_registries

from resbench_example import FP8E4M3


@pytest.fixture(autouse=True)
def _plugins_enabled(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(DISABLE_PLUGINS_VARIABLE, raising=False)
    reset_registries()


def test_registered_under_the_plugin_name() -> None:
    registries = get_registries()
    info = registries.plugins["example"]
    assert (info.module, info.builtin, info.version) == ("resbench_example", False, "0.1.0")
    assert info.items == {"formats": ["fp8-e4m3"]}
    entry = registries.formats.get("fp8-e4m3")
    assert entry.plugin == "example"
    assert entry.description.startswith("OCP FP8 E4M3")


def test_resolved_by_name() -> None:
    fp8 = resolve_format("fp8-e4m3")
    assert isinstance(fp8, FP8E4M3)
    assert fp8.quantize(torch.tensor([1.07])).item() == 1.125
    assert not resolve_format("fp8-e4m3", {"saturate": False}).saturate


def _resbench() -> str:
    script = Path(sys.executable).parent / "resbench"
    found = str(script) if script.exists() else shutil.which("resbench")
    assert found, "the resbench console script is not installed"
    return found


def test_resbench_list_shows_the_plugin() -> None:
    environment = {key: value for key, value in os.environ.items() if key != DISABLE_PLUGINS_VARIABLE}
    listed = subprocess.run(
        [_resbench(), "list", "plugins", "--json"], capture_output=True, text=True, env=environment, check=True
    )
    plugins = {record["name"]: record for record in json.loads(listed.stdout)}
    assert plugins["example"]["module"] == "resbench_example"
    assert plugins["example"]["builtin"] is False
    assert plugins["example"]["items"] == {"formats": ["fp8-e4m3"]}

    formats = subprocess.run(
        [_resbench(), "list", "formats", "--json"], capture_output=True, text=True, env=environment, check=True
    )
    fp8 = next(record for record in json.loads(formats.stdout) if record["name"] == "fp8-e4m3")
    assert fp8["plugin"] == "example"
    assert [option["name"] for option in fp8["options"]] == ["saturate"]


def test_turned_off_by_the_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(DISABLE_PLUGINS_VARIABLE, "1")
    reset_registries()
    assert "example" not in get_registries().plugins
    assert "fp8-e4m3" not in get_registries().formats
