"""``resbench run [SUITE.yaml] [flags]``: run a suite (the embedded default one without arguments)."""

from __future__ import annotations

import argparse
import math
import sys
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from resbench.cache import ArtifactCache
from resbench.cli.report_cmds import load_leaderboard
from resbench.config import Suite, load_suite, parse_suite
from resbench.engine.prefix_reuse import DEFAULT_REUSE_MEMORY
from resbench.errors import UsageError
from resbench.files import check_folder, write_atomically
from resbench.plugins import get_registries, hookimpl
from resbench.report.renderers import render_html, render_markdown
from resbench.run.store import DEFAULT_STORE, CellFailure

__all__ = ["DEFAULT_SUITE", "RunCommand", "register_commands", "suite_from_arguments"]

DEFAULT_SUITE = "default.yaml"
_LIST_FLAGS = ("methods", "models", "datasets", "formats", "faults")


def _default_suite_path() -> Path:
    return Path(str(resources.files("resbench.suites").joinpath(DEFAULT_SUITE)))


def _parse_bers(text: str) -> list[float]:
    try:
        return [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise UsageError(f"--bers: expected comma-separated numbers such as 1e-6,1e-5, got {text!r}") from None


def suite_from_arguments(args: argparse.Namespace) -> tuple[Suite, str]:
    """The suite file (or the default suite) with the command-line flags applied on top."""
    path = args.suite or _default_suite_path()
    suite = load_suite(path)
    data = suite.model_dump()
    if suite.seeds:  # several seeds in the file: the single seed's default is nobody's choice
        del data["seed"]
    for flag in _LIST_FLAGS:
        value = getattr(args, flag)
        if value is not None:
            data[flag] = [name.strip() for name in value.split(",") if name.strip()]
    if args.bers is not None:
        data["bers"] = _parse_bers(args.bers)
    trials = dict(data["trials"])
    if args.trials is not None:
        trials.update(trials=args.trials, max_trials=None, ci_halfwidth=None)  # fixed count, same sampling
    if args.max_trials is not None:
        trials["max_trials"] = args.max_trials
    if args.ci_halfwidth is not None:
        trials["ci_halfwidth"] = args.ci_halfwidth
    data["trials"] = trials
    if args.seed is not None:  # one seed, even for a suite that lists several
        data["seed"] = args.seed
        data["seeds"] = []
    data["executor"] = _executor_spec(args, data["executor"])
    source = str(path) if args.suite else "default suite"
    return parse_suite(data, f"{source} with command-line flags"), source


def _executor_spec(args: argparse.Namespace, suite_executor: dict[str, Any]) -> dict[str, Any]:
    """The suite's executor, or ``--executor``'s, with ``--workers``, ``--address`` and ``--trial-batch`` as
    its options."""
    spec = dict(suite_executor) if args.executor is None else {"name": args.executor, "options": {}}
    options = dict(spec.get("options", {}))
    takes = get_registries().executors.get(spec["name"]).options.model_fields
    for option in ("workers", "address", "trial_batch"):
        value = getattr(args, option)
        if value is None:
            continue
        if option not in takes:
            users = [entry.name for entry in get_registries().executors if option in entry.options.model_fields]
            raise UsageError(f"--{option.replace('_', '-')}: the {spec['name']} executor does not take it; it is for "
                             f"--executor {' or '.join(users)}")
        options[option] = value
    return {"name": spec["name"], "options": options}


def _device(name: str | None) -> torch.device:
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"--device: unknown device {name!r} (use cpu, cuda or cuda:N)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {name}: CUDA is not available on this machine")
    return device


def write_reports(store: Path, output: Path) -> list[Path]:
    """Leaderboard (markdown, HTML) and figures from ``store``, written under ``output``."""
    from resbench.report.plots import write_figures  # matplotlib is slow to import: only when needed

    tables, trials = load_leaderboard(store)
    write_atomically(output / "leaderboard.md", render_markdown(tables), "--report-dir")
    write_atomically(output / "leaderboard.html", render_html(tables), "--report-dir")
    figures = write_figures(tables, trials, output / "figures")
    return [output / "leaderboard.md", output / "leaderboard.html", *figures]


class RunCommand:
    """Run a benchmark suite and store every trial."""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """The suite file and the flags that override it."""
        parser.add_argument("suite", nargs="?", type=Path, help="suite file (default: the embedded default suite)")
        for flag in _LIST_FLAGS:
            parser.add_argument(f"--{flag}", help=f"comma-separated {flag} (overrides the suite)")
        parser.add_argument("--bers", help="comma-separated bit-error rates, e.g. 1e-7,1e-6")
        parser.add_argument("--trials", type=int, help="fixed number of trials per cell")
        parser.add_argument("--max-trials", type=int, help="adaptive: at most this many trials per cell")
        parser.add_argument("--ci-halfwidth", type=float, help="adaptive: target 95%% CI half-width (points)")
        parser.add_argument("--seed", type=int, help="base seed")
        parser.add_argument("--store", type=Path, default=DEFAULT_STORE,
                            help=f"results store (default {DEFAULT_STORE})")
        parser.add_argument("--executor", choices=get_registries().executors.names(),
                            help="where jobs run: local (this process), process (a pool of --workers), "
                                 "ray (a Ray cluster at --address)")
        parser.add_argument("--workers", type=int, help="process executor: worker processes (default: one per CPU)")
        parser.add_argument("--address", help="ray executor: the cluster to join (host:port; default: a local Ray)")
        parser.add_argument("--trial-batch", type=int, help="trials of a group per job, so that more workers than "
                            "groups have work (0: one job per group; default 10 for process and ray, 0 for local)")
        parser.add_argument("--data-root", type=Path, help="folder of torchvision datasets")
        parser.add_argument("--checkpoint", type=Path, help="state dict to load into the model instead of training")
        parser.add_argument("--cache-dir", type=Path, help="artifact cache (default .resbench-cache)")
        parser.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda when available)")
        parser.add_argument("--report-dir", type=Path, help="where to write leaderboard and figures "
                            "(default: the store's folder)")
        parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
        parser.add_argument("--rerun", help="comma-separated stored cells to replace: failed, stale (computed by "
                            "other plugin versions), a method as written in the suite, or a cell id")
        parser.add_argument("--reuse-memory", type=float, default=DEFAULT_REUSE_MEMORY / 2**30, metavar="GIB",
                            help="memory (GiB) for the clean values a weight-fault trial restarts from, per deployed "
                            "model (default %(default)g; 0: every trial runs the full forward pass; same results)")

    def run(self, args: argparse.Namespace) -> int:
        """Run the suite, write the reports, print the leaderboard."""
        from resbench.run.runner import RunSettings, run_suite

        suite, source = suite_from_arguments(args)
        if args.checkpoint is not None and not args.checkpoint.is_file():
            raise UsageError(f"--checkpoint {args.checkpoint}: no such file")
        if not math.isfinite(args.reuse_memory) or args.reuse_memory < 0:
            raise UsageError(f"--reuse-memory: expected a size in GiB, 0 or more, got {args.reuse_memory:g}")
        report_dir = args.report_dir or args.store.parent
        # Unusable output folders are bad input, found before any work rather than after the campaign.
        for folder, flag in ((args.store.parent, f"--store {args.store}: folder"), (report_dir, "--report-dir"),
                             (args.cache_dir or ArtifactCache().root, "--cache-dir")):
            check_folder(folder, flag)
        settings = RunSettings(
            store=args.store,
            device=_device(args.device),
            data_root=args.data_root,
            cache_dir=args.cache_dir,
            checkpoint=args.checkpoint,
            progress=not args.no_progress,
            rerun=tuple(token.strip() for token in (args.rerun or "").split(",") if token.strip()),
            reuse_memory=round(args.reuse_memory * 2**30),
        )
        summary = run_suite(suite, settings, source)
        tables, _ = load_leaderboard(args.store)
        if tables:
            write_reports(args.store, report_dir)
            print(render_markdown(tables))
        phases = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in summary.phases.items())
        replaced = f", {summary.trials_replaced} replaced" if summary.trials_replaced else ""
        print(
            f"{summary.cells} cells, {summary.trials_run} trials run{replaced}, "
            f"{summary.trials_skipped} already stored; "
            f"{summary.seconds:.1f} s{f' ({phases})' if phases else ''}. Store: {args.store}; reports: {report_dir}"
        )
        if summary.failures:
            if getattr(args, "verbose", False):
                for details in summary.failure_details:
                    print(details, file=sys.stderr)
            print(_failure_report(summary.failures), file=sys.stderr)
            return 1
        return 0


def _failure_report(failures: list[CellFailure]) -> str:
    """The failed cells, one line per group and fault model, and how to retry them."""
    lines: dict[tuple[str, ...], int] = {}
    for failure in failures:
        key = (failure.method, failure.model, failure.dataset, failure.format, failure.fault_model, failure.phase,
               failure.plugin, failure.error)
        lines[key] = lines.get(key, 0) + 1
    described = [
        f"  {method} on {model}/{dataset}, {number_format}, {fault}: {count} cells, {phase} failed in plugin "
        f"{plugin}: {error}"
        for (method, model, dataset, number_format, fault, phase, plugin, error), count in lines.items()
    ]
    return "\n".join([f"resbench: {len(failures)} cells failed (the others are stored):", *described,
                      "Run the same command again to retry them."])


@hookimpl
def register_commands(register: Any) -> None:
    """Register ``resbench run``."""
    register("run", RunCommand(), description="Run a benchmark suite and store every trial.")
