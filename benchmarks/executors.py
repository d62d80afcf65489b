"""Wall time of one suite on each executor: ``local``, ``process`` (2 workers) and ``ray`` (2 CPUs),
with a group's trials as one job or split into trial batches (``trial_batch``).

Two suites, both from the default one (lenet5 on mnist5k, nine BERs) with a fixed number of trials:
*many groups* (by default the methods whose preparation is quick, none, ranger and clipact, in fp32
and q15.16: six groups) and *one group* (none in fp32, four times the trials), where only trial
batches give a second worker work. The baseline and fitted methods are made once beforehand into a
shared artifact cache, so each executor times the same work: preparing and deploying every group and
running its campaigns, with its own start-up cost (worker processes importing torch, Ray starting)
included. Each run writes a fresh store; its rows are checked to be identical to the local run's.

    python benchmarks/executors.py [--trials 30] [--quick] [--methods none,ranger,clipact]
"""

from __future__ import annotations

import argparse
import importlib.util
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from resbench.config import load_suite, parse_suite
from resbench.run.runner import RunSettings, run_suite

SUITE = Path(__file__).resolve().parent / "default.yaml"
EXECUTORS: tuple[dict[str, Any], ...] = (
    {"name": "process", "workers": 2, "trial_batch": 0},
    {"name": "process", "workers": 2, "trial_batch": 10},
    {"name": "ray", "cpus": 2, "node_ip_address": "127.0.0.2", "trial_batch": 0},
    {"name": "ray", "cpus": 2, "node_ip_address": "127.0.0.2", "trial_batch": 10},
)
ROWS = ("SELECT cell_id, trial, seed, accuracy, sdc_rate, critical_sdc_rate, due_rate, flips, flips_per_bit, "
        "flips_per_tensor FROM trials ORDER BY cell_id, trial")


def _rows(store: Path) -> pd.DataFrame:
    with sqlite3.connect(store) as connection:
        frame = pd.read_sql_query(ROWS, connection)
    connection.close()
    return frame


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=30, help="trials per cell (default 30)")
    parser.add_argument("--quick", action="store_true", help="10 trials per cell")
    parser.add_argument("--methods", default="none,ranger,clipact", help="comma-separated methods")
    args = parser.parse_args()
    trials = 10 if args.quick else args.trials
    base = load_suite(SUITE).model_dump()
    suites = {
        "many groups": {**base, "methods": args.methods.split(","), "trials": trials},
        "one group": {**base, "methods": ["none"], "formats": ["fp32"], "trials": 4 * trials},
    }
    executors = [spec for spec in EXECUTORS
                 if spec["name"] != "ray" or importlib.util.find_spec("ray") is not None]
    with tempfile.TemporaryDirectory() as folder:
        cache = Path(folder) / "cache"
        stores = iter(range(1000))

        def run(suite: dict[str, Any], executor: dict[str, Any]) -> tuple[float, pd.DataFrame]:
            store = Path(folder) / f"{next(stores)}.sqlite"
            settings = RunSettings(store=store, device=torch.device("cpu"), cache_dir=cache, progress=False)
            started = time.perf_counter()
            run_suite(parse_suite({**suite, "executor": executor}, "benchmark"), settings)
            return time.perf_counter() - started, _rows(store)

        run(suites["many groups"], {"name": "local"})  # trains the baseline and fits the methods into the cache
        print(f"default suite, 9 BERs; many groups: methods {args.methods} x fp32, q15.16, {trials} trials per "
              f"cell; one group: none x fp32, {4 * trials} trials per cell. Baseline and fits cached; "
              f"{torch.get_num_threads()} torch threads in the driver (local), one per worker")
        print(f"{'suite':<12} {'executor':<22} {'trial_batch':>11} {'wall s':>8} {'speedup':>8} {'rows equal':>11}")
        for title, suite in suites.items():
            local_seconds, reference = run(suite, {"name": "local"})
            print(f"{title:<12} {'local':<22} {0:>11} {local_seconds:>8.1f} {1:>7.2f}x {'-':>11}")
            for executor in executors:
                label = ", ".join(f"{key}={value}" for key, value in executor.items()
                                  if key in ("name", "workers", "cpus"))
                seconds, frame = run(suite, executor)
                equal = "yes" if frame.equals(reference) else "NO"
                print(f"{title:<12} {label:<22} {executor['trial_batch']:>11} {seconds:>8.1f} "
                      f"{local_seconds / seconds:>7.2f}x {equal:>11}")
        if len(executors) < len(EXECUTORS):
            print("ray is not installed: pip install 'resbench[ray]' to time it")


if __name__ == "__main__":
    main()
