"""Wall time of one suite on each executor: ``local``, ``process`` (2 workers) and ``ray`` (2 CPUs).

The suite is the default one (lenet5 on mnist5k, fp32 and q15.16, nine BERs) with a fixed number of
trials and, by default, the methods whose preparation is quick (none, ranger, clipact: six groups).
Its baseline and fitted methods are made once beforehand into a shared artifact cache, so each
executor times the same work: preparing and deploying every group and running its campaigns, with its
own start-up cost (worker processes importing torch, Ray starting) included. Each executor writes a
fresh store; the rows are checked to be identical.

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
    {"name": "local"},
    {"name": "process", "workers": 2},
    {"name": "ray", "cpus": 2, "node_ip_address": "127.0.0.2"},
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
    base = {**load_suite(SUITE).model_dump(), "methods": args.methods.split(",")}
    executors = [spec for spec in EXECUTORS
                 if spec["name"] != "ray" or importlib.util.find_spec("ray") is not None]
    with tempfile.TemporaryDirectory() as folder:
        cache = Path(folder) / "cache"

        def run(executor: dict[str, Any], store: str) -> float:
            suite = parse_suite({**base, "trials": trials, "executor": executor}, "benchmark")
            settings = RunSettings(store=Path(folder) / store, device=torch.device("cpu"), cache_dir=cache,
                                   progress=False)
            started = time.perf_counter()
            run_suite(suite, settings)
            return time.perf_counter() - started

        run({"name": "local"}, "warm-up.sqlite")  # trains the baseline into the shared cache
        print(f"default suite with methods {args.methods}: {trials} trials per cell, 2 formats x 9 BERs, "
              f"baseline and fits cached; {torch.get_num_threads()} torch threads in the driver")
        print(f"{'executor':<26} {'wall s':>8} {'speedup':>8} {'rows equal':>11}")
        reference: pd.DataFrame | None = None
        local_seconds = 0.0
        for executor in executors:
            label = ", ".join(f"{key}={value}" for key, value in executor.items() if key != "node_ip_address")
            seconds = run(executor, f"{executor['name']}.sqlite")
            frame = _rows(Path(folder) / f"{executor['name']}.sqlite")
            if reference is None:
                reference, local_seconds = frame, seconds
            equal = frame.equals(reference)
            print(f"{label:<26} {seconds:>8.1f} {local_seconds / seconds:>7.2f}x {'yes' if equal else 'NO':>11}")
        if len(executors) < len(EXECUTORS):
            print("ray is not installed: pip install 'resbench[ray]' to time it")


if __name__ == "__main__":
    main()
