"""Per-method overhead: clean inference time against the unprotected model, and what each method stores.

For every method (all registered ones by default) this runs a minimal campaign through ``resbench run``
(one BER, one trial) in a temporary store, with many interleaved timing passes, and prints per method:

* the median overhead (%) of the paired ratios protected/unprotected over interleaved clean passes,
  with its distribution-free 95% interval (``resbench.run.measures.overhead_interval``): the figure to
  quote, where a single ratio of two timings is noise;
* the deterministic figures: stored values and bits the method adds to the fault space.

Usage: ``python benchmarks/overhead.py [--methods none,ranger] [--repeats 41] [--model lenet5]``.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from resbench import measures
from resbench.config import parse_suite
from resbench.engine.formats import resolve_format
from resbench.plugins import get_registries
from resbench.report.tables import build_leaderboard
from resbench.run.runner import RunSettings, run_suite
from resbench.run.store import ResultStore


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", help="comma-separated methods (default: every registered method)")
    parser.add_argument("--model", default="lenet5")
    parser.add_argument("--dataset", default="mnist5k")
    parser.add_argument("--format", default="fp32")
    parser.add_argument("--repeats", type=int, default=41, help="interleaved timing pairs per method")
    parser.add_argument("--cache-dir", type=Path, help="artifact cache (default: resbench's)")
    args = parser.parse_args()
    methods = args.methods.split(",") if args.methods else get_registries().methods.names()
    methods = ["none", *[method for method in methods if method != "none"]]
    measures.TIMING_REPEATS = args.repeats
    suite = parse_suite({"name": "overhead", "methods": methods, "models": [args.model], "datasets": [args.dataset],
                         "formats": [args.format], "bers": [1e-3], "trials": 1}, "benchmark")
    with tempfile.TemporaryDirectory() as temporary:
        store = Path(temporary) / "overhead.sqlite"
        run_suite(suite, RunSettings(store=store, device=torch.device("cpu"), cache_dir=args.cache_dir,
                                     progress=False))
        with ResultStore(store) as results:
            [table] = build_leaderboard(results.cells_frame(), results.trials_frame())
    bits_per_value = resolve_format(args.format).bits_per_element
    print(f"{args.model} / {args.dataset} / {args.format}: {args.repeats} interleaved clean passes per method")
    print(f"{'method':<24} {'overhead %':>10} {'95% interval':>18} {'added values':>13} {'added bits %':>13}")
    for _, row in table.rows.sort_values("method").iterrows():
        interval = f"[{row['overhead_low']:.1f}, {row['overhead_high']:.1f}]"
        print(f"{row['method']:<24} {row['overhead_pct']:>10.1f} {interval:>18} "
              f"{int(row['added_bits']) // bits_per_value:>13d} {row['added_bits_pct']:>13.3f}")


if __name__ == "__main__":
    main()
