"""Models from a user's Python callable (``module``): importing, building, checking and identity."""

from __future__ import annotations

import sqlite3
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

from resbench.cli import main
from resbench.config import parse_suite
from resbench.engine.faultspace import FaultSpaceOptions
from resbench.run.cells import CellKeys, Group

NETS = textwrap.dedent("""\
    from torch import nn


    def build(num_classes, width=8, image_shape=None):
        channels, height, width_px = image_shape
        return nn.Sequential(nn.Flatten(), nn.Linear(channels * height * width_px, width), nn.ReLU(),
                             nn.Linear(width, num_classes))


    def fixed(width=8):
        return nn.Sequential(nn.Flatten(), nn.Linear(999, width), nn.ReLU(), nn.Linear(width, 10))


    def not_a_model():
        return 42


    def broken():
        raise RuntimeError("no weights here")


    answer = 42
    """)

SUITE = """\
version: 1
datasets: [{{name: synthetic, train_size: 96, test_size: 24, separation: 3.0}}]
models: [{model}]
methods: [none]
bers: [1e-3]
trials: 2
training: {{epochs: 1}}
"""


@pytest.fixture
def nets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``nets.py`` in a folder on ``sys.path`` (importable as ``resbench_test_nets``) and as a file."""
    path = tmp_path / "resbench_test_nets.py"
    path.write_text(NETS, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    return path


def _run(folder: Path, model: str, *flags: str) -> int:
    suite = folder / "suite.yaml"
    suite.write_text(SUITE.format(model=model), encoding="utf-8")
    return main(["run", str(suite), "--store", str(folder / "r.sqlite"), "--cache-dir", str(folder / "cache"),
                 "--no-progress", "--device", "cpu", *flags])


def _stored_models(store: Path) -> list[str]:
    with sqlite3.connect(store) as connection:
        return [row[0] for row in connection.execute("SELECT DISTINCT model FROM cells")]


def test_factory_from_a_file_path_runs(nets: Path) -> None:
    assert _run(nets.parent, "{name: module, factory: resbench_test_nets.py:build, arguments: {width: 6}}") == 0
    assert len(_stored_models(nets.parent / "r.sqlite")) == 1


def test_factory_from_a_module_path_on_the_command_line(nets: Path) -> None:
    assert _run(nets.parent, "test-mlp", "--models", "resbench_test_nets:build") == 0
    [model] = _stored_models(nets.parent / "r.sqlite")
    assert "resbench_test_nets:build" in model


@pytest.mark.parametrize(("factory", "problem"), [
    ("no_such_package_xyz:build", "cannot be imported: ModuleNotFoundError"),
    ("missing_file.py:build", "does not exist"),
    ("resbench_test_nets:nothing", "has no attribute 'nothing'"),
    ("resbench_test_nets:answer", "not callable"),
    ("resbench_test_nets:not_a_model", "returned a int, not a torch.nn.Module"),
    ("resbench_test_nets:broken", "failed: RuntimeError: no weights here"),
    ("resbench_test_nets:fixed", "does not fit dataset synthetic"),
    ("{name: module, factory: 'resbench_test_nets:build', checkpoint: nothing.pt}", "nothing.pt does not exist"),
])
def test_bad_factory_exits_2_with_one_line(nets: Path, capsys: pytest.CaptureFixture[str], factory: str,
                                           problem: str) -> None:
    assert _run(nets.parent, factory) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and problem in error, error
    assert not (nets.parent / "r.sqlite").exists()  # nothing written


def _definition(model: dict[str, object] | str) -> str:
    suite = parse_suite({"models": [model]}, "test")
    group = Group(suite.methods[0], suite.models[0], suite.datasets[0], suite.formats[0])
    return CellKeys(suite, FaultSpaceOptions(), None).definition(group, suite.faults[0], 1e-5)


def test_identity_holds_factory_arguments_and_checkpoint_checksum(nets: Path) -> None:
    checkpoint = nets.parent / "w.pt"
    torch.save(nn.Linear(2, 2).state_dict(), checkpoint)
    with_weights = {"name": "module", "factory": "resbench_test_nets:build", "checkpoint": str(checkpoint)}
    first = _definition(with_weights)
    assert "resbench_test_nets:build" in first and "checkpoint_sha256" in first
    assert _definition({**with_weights, "arguments": {"width": 4}}) != first
    assert _definition({**with_weights, "factory": "resbench_test_nets.py:build"}) != first
    torch.save(nn.Linear(2, 2).state_dict(), checkpoint)  # same path, other weights
    assert _definition(with_weights) != first
    assert '"model": {"name": "lenet5", "options": {}}' in _definition("lenet5")  # zoo identities unchanged


def test_checkpoint_in_the_model_entry_replaces_training(nets: Path) -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 8), nn.ReLU(), nn.Linear(8, 10))
    torch.save(model.state_dict(), nets.parent / "w.pt")
    entry = "{name: resbench_test_nets:build, checkpoint: w.pt}"
    assert _run(nets.parent, entry) == 0
    assert not (nets.parent / "cache" / "baseline").exists()  # nothing trained


def test_validate_finds_a_factory_that_cannot_be_imported(nets: Path, capsys: pytest.CaptureFixture[str]) -> None:
    suite = nets.parent / "suite.yaml"
    suite.write_text(SUITE.format(model="no_such_package_xyz:build"), encoding="utf-8")
    assert main(["validate", str(suite)]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "models[0]" in error and "ModuleNotFoundError" in error, error
