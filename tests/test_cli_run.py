"""``resbench run``, ``leaderboard``, ``plot`` and ``export`` through the command line."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from resbench.cli import main

SUITE = """\
version: 1
name: tiny-cli
datasets: [{name: synthetic, train_size: 128, test_size: 32, separation: 3.0}]
models: [test-mlp]
methods: [none]
formats: [fp16]
faults: [bitflip]
bers: [1.0e-3, 1.0e-2]
trials: 3
training: {epochs: 1}
"""


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("run")
    suite = folder / "suite.yaml"
    suite.write_text(SUITE, encoding="utf-8")
    status = main(["run", str(suite), "--store", str(folder / "r.sqlite"), "--cache-dir", str(folder / "cache"),
                   "--no-progress", "--device", "cpu"])
    assert status == 0
    return folder


def test_run_writes_store_leaderboard_and_figures(finished_run: Path) -> None:
    assert (finished_run / "r.sqlite").is_file()
    markdown = (finished_run / "leaderboard.md").read_text(encoding="utf-8")
    assert "## synthetic" in markdown and "| none |" in markdown
    assert (finished_run / "leaderboard.html").read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    figures = sorted(path.name for path in (finished_run / "figures").iterdir())
    assert len(figures) == 4 and any(name.endswith(".svg") for name in figures)


def test_leaderboard_formats(finished_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = str(finished_run / "r.sqlite")
    assert main(["leaderboard", "--store", store, "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    [table] = data["tables"]
    assert table["bers"] == [1e-3, 1e-2] and table["rows"][0]["method"] == "none"
    output = finished_run / "board.tex"
    assert main(["leaderboard", "--store", store, "--format", "latex", "--output", str(output)]) == 0
    assert "\\begin{tabular}" in output.read_text(encoding="utf-8")


def test_export_one_row_per_trial(finished_run: Path) -> None:
    output = finished_run / "trials.csv"
    assert main(["export", "--store", str(finished_run / "r.sqlite"), "--output", str(output)]) == 0
    trials = pd.read_csv(output)
    assert len(trials) == 2 * 3 + 1
    assert {"accuracy", "sdc_rate", "critical_sdc_rate", "due_rate", "flips", "seed", "flips_per_bit",
            "flips_per_tensor"} <= set(
        trials.columns)


def test_second_run_skips_everything(finished_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    suite = finished_run / "suite.yaml"
    status = main(["run", str(suite), "--store", str(finished_run / "r.sqlite"), "--cache-dir",
                   str(finished_run / "cache"), "--no-progress", "--report-dir", str(finished_run / "again")])
    assert status == 0
    assert "0 trials run, 6 already stored" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["run", "--methods", "nonne"], "did you mean 'none'"),
        (["run", "--bers", "1e-5,abc"], "--bers"),
        (["run", "--bers", "2"], "(0, 1)"),
        (["run", "--trials", "0"], "trials"),
        (["run", "--formats", "fp33"], "fp32"),
        (["run", "--device", "tpu:9"], "--device"),
        (["run", "--checkpoint", "/nonexistent/model.pt"], "no such file"),
        (["leaderboard", "--store", "/nonexistent/r.sqlite"], "no results store"),
        (["export", "--store", "/nonexistent/r.sqlite"], "no results store"),
    ],
)
def test_bad_input_exits_2_with_one_line(
    arguments: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = ["--store", str(tmp_path / "r.sqlite")] if arguments[0] == "run" else []
    assert main([*arguments, *store]) == 2
    error = capsys.readouterr().err
    assert message in error
    assert "Traceback" not in error
    assert not (tmp_path / "r.sqlite").exists()
