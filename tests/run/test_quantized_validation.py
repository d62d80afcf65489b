"""A model on PyTorch's quantized kernels runs the methods whose protection it can carry; every other
combination is bad input, refused with exit status 2 before any work."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from resbench.cli import main
from resbench.config import Suite
from resbench.run.validation import quantized_problems

REAL = "{name: int8, engine: torch-ao, granularity: channel}"


def _suite(methods: str, formats: str = f"[{REAL}]", extra: str = "") -> str:
    return (f"version: 1\nname: q\ndatasets: [mnist5k]\nmodels: [lenet5]\nmethods: {methods}\n"
            f"formats: {formats}\nfaults: [bitflip]\nbers: [1.0e-4]\ntrials: 2\n{extra}")


def _status(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    status = main(list(argv))
    return status, capsys.readouterr().err


def test_bounding_methods_and_weight_scaling_run_on_quantized_kernels(write_suite: Any,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    suite = write_suite(_suite("[none, ranger, clipact, wscale, ranger+wscale]"))
    assert _status(capsys, "validate", str(suite))[0] == 0


@pytest.mark.parametrize(("methods", "named", "reason"), [
    ("[none, fitact]", "fitact", "no quantized kernel computes it"),
    ("[proact]", "proact", "no quantized kernel computes it"),
    ("[saf-tanh]", "saf-tanh", "no read-back between memory and the multiply"),
    ("[saf-tanh+ranger]", "saf-tanh+ranger", "no read-back"),
])
def test_methods_a_quantized_model_cannot_carry_are_refused(write_suite: Any, capsys: pytest.CaptureFixture[str],
                                                            methods: str, named: str, reason: str) -> None:
    suite = write_suite(_suite(methods))
    status, err = _status(capsys, "validate", str(suite))
    assert status == 2
    assert f"cannot carry method {named}: " in err and reason in err
    assert err.count("cannot carry") == 1 and "Traceback" not in err


def test_the_simulated_formats_take_every_method(write_suite: Any, capsys: pytest.CaptureFixture[str]) -> None:
    suite = write_suite(_suite("[fitact, saf-tanh]", "[int8, {name: int8, granularity: channel}, uint4-asym]"))
    assert _status(capsys, "validate", str(suite))[0] == 0


def test_activation_faults_and_fault_space_options_are_refused(write_suite: Any,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    text = _suite("[none]", extra="fault_space: {batch_norm: true}\n").replace("[bitflip]", "[bitflip, act-bitflip]")
    status, err = _status(capsys, "validate", str(write_suite(text)))
    assert status == 2
    assert "fault model act-bitflip targets activations" in err and "fault_space options do not apply" in err


def test_a_run_is_refused_before_any_work(write_suite: Any, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    store = tmp_path / "never.sqlite"
    status, err = _status(capsys, "run", str(write_suite(_suite("[fitact]"))), "--store", str(store),
                          "--cache-dir", str(tmp_path / "cache"), "--no-progress")
    assert status == 2 and "cannot carry method fitact" in err
    assert not store.exists() and not (tmp_path / "cache").exists()


def test_quantized_kernels_run_on_the_cpu_only() -> None:
    suite = Suite.model_validate({"version": 1, "name": "q", "datasets": ["mnist5k"], "models": ["lenet5"],
                                  "methods": ["none"], "formats": [{"name": "int8", "engine": "torch-ao"}],
                                  "faults": ["bitflip"], "bers": [1e-4]})
    assert quantized_problems(suite, "suite", "cpu") == []
    assert any("run on the CPU, not on cuda" in problem for problem in quantized_problems(suite, "suite", "cuda"))
