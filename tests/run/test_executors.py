"""Executors give the same rows; runs survive kills, broken plugins and a second run on the same store."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import pandas as pd
import pytest
import torch
from torch import nn

from resbench import plugins
from resbench.cli import main
from resbench.config import load_suite, parse_suite
from resbench.methods import Method, PrepareContext
from resbench.run.runner import RunSettings, RunSummary, run_suite
from tests.helpers import rows

SUITE: dict[str, Any] = {
    "name": "executors",
    "datasets": [{"name": "synthetic", "train_size": 256, "test_size": 128, "separation": 3.0}],
    "models": ["test-mlp"],
    "methods": ["none"],
    "formats": ["fp32", "q2.5"],
    "faults": ["bitflip"],
    "bers": [1e-3, 1e-2],
    "trials": 6,
    "seed": 3,
    "training": {"epochs": 1},
}
def run(folder: Path, store: str, executor: dict[str, Any] | str = "local", **changes: Any) -> RunSummary:
    suite = parse_suite({**SUITE, "executor": executor, **changes}, "test")
    settings = RunSettings(store=folder / store, device=torch.device("cpu"), cache_dir=folder / "cache",
                           progress=False)
    return run_suite(suite, settings)


@pytest.mark.parametrize("trial_batch", [0, 4])
def test_process_executor_gives_the_rows_of_local(trial_batch: int, tmp_path: Path) -> None:
    local = run(tmp_path, "local.sqlite")
    process = run(tmp_path, "process.sqlite", {"name": "process", "workers": 2, "trial_batch": trial_batch})
    expected = rows(tmp_path / "local.sqlite")
    assert len(expected) == 2 * (2 * 6 + 1)
    pd.testing.assert_frame_equal(rows(tmp_path / "process.sqlite"), expected)
    assert local.trials_run == process.trials_run == 2 * 2 * 6
    assert process.phases["campaign"] > 0  # the workers' phase timings reach the driver


def test_bad_executor_options_are_bad_input_before_any_work(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["run", "--executor", "process", "--workers", "0", "--store", str(tmp_path / "r.sqlite"),
                   "--no-progress"])
    assert status == 2
    assert "workers" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


# -- failure isolation ----------------------------------------------------------------------------------------


class Breakable(Method):
    """A method whose fit raises while ``broken`` is set: a third-party plugin with a bug."""

    trains = True
    broken = True

    def fit(self, model: nn.Module, context: PrepareContext) -> dict[str, Any]:
        if Breakable.broken:
            raise ValueError("threshold search diverged")
        return {}


class ExplodingReLU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("CUDA out of memory (simulated)")


class ExplodesOnEvaluation(Method):
    """A method whose protected model cannot be evaluated."""

    def build(self, model: nn.Module, context: PrepareContext) -> nn.Module:
        model.relu = ExplodingReLU()  # type: ignore[assignment]
        return model


BROKEN_PLUGIN = "resbench_broken_methods"


@pytest.fixture
def broken_methods(monkeypatch: pytest.MonkeyPatch) -> None:
    module = ModuleType(BROKEN_PLUGIN)

    @plugins.hookimpl
    def register_methods(register: Any) -> None:
        register("breakable", Breakable)
        register("explodes", ExplodesOnEvaluation)

    module.register_methods = register_methods  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, BROKEN_PLUGIN, module)
    monkeypatch.setattr(plugins, "BUILTIN_PLUGINS", (*plugins.BUILTIN_PLUGINS, BROKEN_PLUGIN))
    monkeypatch.setattr(Breakable, "broken", True)
    plugins.reset_registries()


def test_a_failing_plugin_is_named_and_the_other_cells_go_on(broken_methods: None, tmp_path: Path) -> None:
    summary = run(tmp_path, "r.sqlite", methods=["none", "breakable", "explodes"])
    by_method = {failure.method: failure for failure in summary.failures}
    assert set(by_method) == {"breakable", "explodes"}
    cells_per_method = 2 * (1 + 2)  # formats x (clean + BERs)
    assert len(summary.failures) == 2 * cells_per_method
    assert (by_method["breakable"].phase, by_method["breakable"].plugin) == ("prepare", BROKEN_PLUGIN)
    assert by_method["breakable"].error == (f"plugin '{BROKEN_PLUGIN}', method 'breakable', in fit: "
                                            "ValueError: threshold search diverged")
    assert (by_method["explodes"].phase, by_method["explodes"].plugin) == ("deploy", BROKEN_PLUGIN)
    assert "out of memory" in by_method["explodes"].error
    stored = rows(tmp_path / "r.sqlite")
    assert len(stored) == 2 * (2 * 6 + 1)  # every cell of "none"
    from resbench.run.store import ResultStore

    with ResultStore.open_existing(tmp_path / "r.sqlite") as store:
        failures = store.failures_frame()
        assert set(failures["method"]) == {"breakable", "explodes"} and len(failures) == 2 * cells_per_method


def test_run_exits_1_listing_failed_cells_and_a_rerun_retries_them(
    broken_methods: None, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    suite = tmp_path / "suite.yaml"
    suite.write_text(
        "name: failing\ndatasets: [{name: synthetic, train_size: 256, test_size: 64, separation: 3.0}]\n"
        "models: [test-mlp]\nmethods: [none, breakable]\nformats: [fp32]\nfaults: [bitflip]\nbers: [1.0e-2]\n"
        "trials: 3\ntraining: {epochs: 1}\n", encoding="utf-8")
    argv = ["run", str(suite), "--store", str(tmp_path / "r.sqlite"), "--cache-dir", str(tmp_path / "cache"),
            "--no-progress", "--device", "cpu"]
    assert main(argv) == 1
    output = capsys.readouterr()
    assert "resbench: 2 cells failed" in output.err
    assert "breakable on test-mlp/synthetic" in output.err
    assert f"prepare failed in plugin {BROKEN_PLUGIN}: plugin '{BROKEN_PLUGIN}', method 'breakable', in fit: " \
           "ValueError: threshold search diverged" in output.err
    assert "Run the same command again to retry them" in output.err
    assert "| none" in output.out  # the leaderboard of what did run
    monkeypatch.setattr(Breakable, "broken", False)
    assert main(argv) == 0
    assert "3 trials run, 3 already stored" in capsys.readouterr().out  # only the failed cells ran
    from resbench.run.store import ResultStore

    with ResultStore.open_existing(tmp_path / "r.sqlite") as store:
        assert store.failures_frame().empty
        assert set(store.cells_frame()["method"]) == {"none", "breakable"}
    assert len(rows(tmp_path / "r.sqlite")) == 2 * (3 + 1)


def test_a_worker_without_the_runs_cache_fails_naming_it_rather_than_training_again(tmp_path: Path) -> None:
    from resbench.engine.faultspace import FaultSpaceOptions
    from resbench.run.cells import CellKeys, Group
    from resbench.run.failures import Failed
    from resbench.run.jobs import GroupJob, JobContext, JobSettings

    run(tmp_path, "r.sqlite")  # its baseline job trained the baseline into tmp_path/cache
    suite = parse_suite(SUITE, "test")
    keys = CellKeys(suite, FaultSpaceOptions(), None)
    group = Group(suite.methods[0], suite.models[0], suite.datasets[0], suite.formats[0])
    another_node = JobContext(suite, JobSettings(device="cpu", cache_dir=tmp_path / "another-node"), keys)
    failed = [output for output in GroupJob(another_node, group, {})() if isinstance(output, Failed)]
    assert len(failed) == 1
    failure = failed[0].failures[0]
    assert (failure.phase, failure.plugin) == ("baseline", "resbench")
    assert "is not in the artifact cache" in failure.error and "must share --cache-dir" in failure.error
    assert not (tmp_path / "another-node").exists()  # nothing was trained there
    shared = JobContext(suite, JobSettings(device="cpu", cache_dir=tmp_path / "cache"), keys)
    assert not any(isinstance(output, Failed) for output in GroupJob(shared, group, {})())


# -- kills and concurrent runs (real subprocesses) ------------------------------------------------------------

KILL_SUITE = """\
version: 1
name: kill
datasets: [{{name: synthetic, train_size: 256, test_size: {test_size}, separation: 3.0}}]
models: [{model}]
methods: [none]
formats: [fp32, q2.5]
faults: [bitflip]
bers: [1.0e-2]
trials: {trials}
seed: 5
training: {{epochs: 1}}
"""


def _command(suite: Path, store: Path, folder: Path, executor: str) -> list[str]:
    workers = ["--workers", "2"] if executor == "process" else []
    return [sys.executable, "-m", "resbench", "run", str(suite), "--store", str(store), "--cache-dir",
            str(folder / "cache"), "--report-dir", str(folder / "reports"), "--no-progress", "--device", "cpu",
            "--executor", executor, *workers]


def _faulty_rows(store: Path) -> int:
    import sqlite3

    with sqlite3.connect(f"file:{store}?mode=ro", uri=True) as connection:
        count = connection.execute("SELECT count(*) FROM trials JOIN cells USING (cell_id) WHERE ber > 0").fetchone()
    connection.close()
    return int(count[0])


def _stored(store: Path) -> int:
    try:
        return len(rows(store))
    except Exception:  # the file is not there yet, or its tables are being created
        return 0


def _start_and_wait_for_rows(command: list[str], store: Path, timeout: float = 120.0) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + timeout
    while _stored(store) <= 2 and time.monotonic() < deadline:  # beyond the two clean rows: trials
        assert process.poll() is None, process.stderr.read().decode() if process.stderr else ""
        time.sleep(0.05)
    return process


@pytest.mark.parametrize(("executor", "trials"), [("local", 400), ("process", 600)])
def test_a_run_killed_mid_campaign_resumes_to_the_same_rows(executor: str, trials: int, tmp_path: Path) -> None:
    suite = tmp_path / "suite.yaml"
    # A convolutional model: trials slow enough that the kill lands well before the campaign ends.
    suite.write_text(KILL_SUITE.format(test_size=2048, trials=trials, model="test-cnn"), encoding="utf-8")
    reference = tmp_path / "reference.sqlite"
    workers = {"workers": 2} if executor == "process" else {}
    uninterrupted = parse_suite({**load_suite(suite).model_dump(), "executor": {"name": executor, **workers}}, "test")
    run_suite(uninterrupted, RunSettings(store=reference, device=torch.device("cpu"), cache_dir=tmp_path / "cache",
                                         progress=False))
    expected = rows(reference)
    assert len(expected) == 2 * (trials + 1)

    killed = tmp_path / "killed.sqlite"
    process = _start_and_wait_for_rows(_command(suite, killed, tmp_path, executor), killed)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    if process.stderr is not None:
        process.stderr.close()
    partial = _faulty_rows(killed)
    assert 0 < partial < 2 * trials, "the kill must land mid-campaign"
    time.sleep(0.5)  # the process pool's workers die with the driver
    resumed = subprocess.run(_command(suite, killed, tmp_path, executor), capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert f"{2 * trials - partial} trials run, {partial} already stored" in resumed.stdout
    final = rows(killed)
    assert not final.duplicated(["cell_id", "trial"]).any()
    pd.testing.assert_frame_equal(final, expected)
    from resbench.cli.report_cmds import load_leaderboard
    from resbench.report.renderers import _numeric_frame

    boards = [_numeric_frame(load_leaderboard(path)[0]) for path in (reference, killed)]
    measured = [column for column in boards[0] if column.startswith(("overhead", "prepare"))]  # timings differ
    pd.testing.assert_frame_equal(boards[0].drop(columns=measured), boards[1].drop(columns=measured))


def test_two_runs_started_together_on_one_store_one_is_refused(tmp_path: Path) -> None:
    suite = tmp_path / "suite.yaml"
    suite.write_text(KILL_SUITE.format(test_size=256, trials=150, model="test-mlp"), encoding="utf-8")
    store = tmp_path / "r.sqlite"
    command = _command(suite, store, tmp_path, "local")
    both = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = sorted((process.wait(timeout=300), *process.communicate()) for process in both)
    (ran, ran_out, _), (refused, _, refused_err) = results
    assert (ran, refused) == (0, 2)
    assert "300 trials run, 0 already stored" in ran_out
    assert "another resbench run is writing this store" in refused_err and "Traceback" not in refused_err
    stored = rows(store)
    assert len(stored) == 2 * (150 + 1) and not stored.duplicated(["cell_id", "trial"]).any()
    again = run_suite(load_suite(suite), RunSettings(store=store, device=torch.device("cpu"),
                                                     cache_dir=tmp_path / "cache", progress=False))
    assert (again.trials_run, again.trials_skipped) == (0, 300)


# -- ray ------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def local_ray() -> Any:
    """A Ray instance on this machine, on a loopback address, with two CPUs."""
    ray = pytest.importorskip("ray", reason="ray is not installed (pip install 'resbench[ray]')")
    # The workers import this module when a test sends them one of its jobs.
    search_path = str(Path(__file__).resolve().parents[2])  # the checkout: tests.run.test_executors
    # address="local": a new instance, even where a file of an earlier cluster names one to join.
    ray.init(address="local", num_cpus=2, _node_ip_address="127.0.0.2", include_dashboard=False,
             log_to_driver=False, configure_logging=False, runtime_env={"env_vars": {"PYTHONPATH": search_path}})
    yield ray
    ray.shutdown()


@pytest.mark.parametrize("trial_batch", [0, 4])
def test_ray_executor_gives_the_rows_of_local(trial_batch: int, local_ray: Any, tmp_path: Path) -> None:
    run(tmp_path, "local.sqlite")
    summary = run(tmp_path, "ray.sqlite", {"name": "ray", "trial_batch": trial_batch})
    pd.testing.assert_frame_equal(rows(tmp_path / "ray.sqlite"), rows(tmp_path / "local.sqlite"))
    assert summary.trials_run == 2 * 2 * 6 and not summary.failures
    assert local_ray.is_initialized()  # the executor left the Ray it did not start running


class DiesOnce:
    """A job that, the first time it runs, kills its own worker process after a few outputs (a node lost
    mid-task); picklable, so it travels to Ray workers like any job."""

    def __init__(self, job: Any, marker: Path) -> None:
        self.job = job
        self.marker = marker

    @property
    def resources(self) -> dict[str, float]:
        return dict(self.job.resources)

    def __call__(self) -> Any:
        first_attempt = not self.marker.exists()
        self.marker.touch()
        for index, output in enumerate(self.job()):
            if first_attempt and index == 5:
                os._exit(1)
            yield output

    def lost(self, reason: str) -> Any:
        return self.job.lost(reason)


@pytest.mark.parametrize(("trial_batch", "jobs"), [(0, 2), (2, 6)])  # two groups of six trials
def test_ray_retries_a_job_whose_worker_died_without_duplicating_rows(trial_batch: int, jobs: int, local_ray: Any,
                                                                      tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from resbench.run import batches, runner

    run(tmp_path, "local.sqlite")
    original = runner.GroupJob
    markers = iter(range(100))

    def dies_once(*arguments: Any, **keywords: Any) -> DiesOnce:
        return DiesOnce(original(*arguments, **keywords), tmp_path / f"attempted-{next(markers)}")

    monkeypatch.setattr(runner, "GroupJob", dies_once)
    monkeypatch.setattr(batches, "GroupJob", dies_once)
    summary = run(tmp_path, "ray.sqlite", {"name": "ray", "trial_batch": trial_batch})
    assert not summary.failures
    assert len(list(tmp_path.glob("attempted-*"))) == jobs  # every job's first worker died
    stored = rows(tmp_path / "ray.sqlite")
    assert not stored.duplicated(["cell_id", "trial"]).any()
    pd.testing.assert_frame_equal(stored, rows(tmp_path / "local.sqlite"))


def test_sigterm_stops_a_run_as_ctrl_c_does_and_its_tables_say_they_are_incomplete(tmp_path: Path) -> None:
    from resbench.cli.report_cmds import load_leaderboard

    suite = tmp_path / "suite.yaml"
    suite.write_text(KILL_SUITE.format(test_size=2048, trials=400, model="test-cnn"), encoding="utf-8")
    store = tmp_path / "terminated.sqlite"
    process = _start_and_wait_for_rows(_command(suite, store, tmp_path, "local"), store)
    process.send_signal(signal.SIGTERM)  # what a job scheduler sends
    assert process.wait(timeout=60) == 128 + signal.SIGTERM
    assert process.stderr is not None
    assert "interrupted; the trials received so far are stored" in process.stderr.read().decode()
    process.stderr.close()
    assert 0 < _faulty_rows(store) < 2 * 400
    assert all("Incomplete: the last run" in table.description for table in load_leaderboard(store)[0])
    resumed = subprocess.run(_command(suite, store, tmp_path, "local"), capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert _faulty_rows(store) == 2 * 400
    assert not any("Incomplete" in table.description for table in load_leaderboard(store)[0])
