"""``resbench leaderboard``, ``resbench plot`` and ``resbench export``: reports from the results store."""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from resbench.errors import UsageError, blame_plugin
from resbench.files import check_folder, replace_atomically, write_atomically
from resbench.plugins import get_registries, hookimpl
from resbench.run.store import DEFAULT_STORE, ResultStore

if TYPE_CHECKING:
    from resbench.report.tables import LeaderboardTable

__all__ = ["ExportCommand", "LeaderboardCommand", "PlotCommand", "check_folder", "load_leaderboard",
           "register_commands"]


def load_leaderboard(store_path: Path) -> tuple[list[LeaderboardTable], Any]:
    """Leaderboard tables, each with the provenance of its cells, and the trial frame of the store.

    The trials of a cell whose latest attempt failed are left out: a partial cell is never ranked as if complete.
    """
    from resbench.report.tables import build_leaderboard  # scipy is slow to import: only when needed

    with ResultStore.open_existing(store_path) as store:
        cells, trials, runs = store.cells_frame(), store.trials_frame(), store.runs_frame()
        failed = store.failures_frame()["cell_id"]
    trials = trials[~trials["cell_id"].isin(failed)]
    tables = build_leaderboard(cells, trials)
    return [dataclasses.replace(table, provenance=_provenance(table, cells, runs),
                                notes=(*table.notes, *_unfinished(table, cells, trials, runs)))
            for table in tables], trials


def _unfinished(table: LeaderboardTable, cells: Any, trials: Any, runs: Any) -> list[str]:
    """A note when the newest run that wrote ``table``'s cells has not finished (it was interrupted, or it is
    still running): its cells may be missing, or hold fewer trials than its suite asks."""
    wrote = {*cells[cells["cell_id"].isin(table.cell_ids)]["run_id"],
             *trials[trials["cell_id"].isin(table.cell_ids)]["run_id"]}
    if not wrote:
        return []
    newest = runs[runs["run_id"] == max(wrote)]
    if newest.empty or not newest["finished"].isna().all():
        return []
    started = str(newest["started"].iloc[0])
    return [f"Incomplete: the last run that wrote this table (started {started}) has not finished (interrupted, or "
            "still running), so cells may be missing or hold fewer trials than its suite asks; run the same command "
            "again to complete them."]


def _provenance(table: LeaderboardTable, cells: Any, runs: Any) -> dict[str, Any]:
    """Versions, suites, seeds and dates of the runs that produced ``table``'s cells."""
    own = cells[cells["cell_id"].isin(table.cell_ids)]
    used = runs[runs["run_id"].isin(own["run_id"])]
    plugins = {f"{name} {version}" for text in used["plugins"] for name, version in json.loads(text).items()}
    return {
        "resbench (results)": sorted(set(used["resbench_version"])),
        "plugins": sorted(plugins),
        "suites": sorted(f"{suite} v{version}" for suite, version in zip(used["suite"], used["suite_version"],
                                                                          strict=True)),
        "seeds": sorted({str(seed) for seed in own["seed"]}),
        "baseline checksums (SHA-256)": sorted({str(value)[:16] for value in own.get("baseline_checksum", [])
                                                if value}),
        "torch": sorted(set(used["torch_version"])),
        "devices": sorted(set(used["device"])),
        "git revisions": sorted({str(revision) for revision in used["git_revision"] if revision}),
        "run dates": sorted({str(date)[:10] for date in used["started"]}),
    }


def _add_store_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--store", type=Path, default=DEFAULT_STORE, help=f"results store (default {DEFAULT_STORE})")


def select_bers(tables: list[LeaderboardTable], text: str) -> list[LeaderboardTable]:
    """The tables with only the BER columns listed in ``text`` (comma-separated); others are bad input."""
    try:
        wanted = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise UsageError(f"--bers: expected comma-separated numbers such as 1e-6,1e-5, got {text!r}") from None
    if not wanted:
        raise UsageError("--bers: name at least one BER")
    selected = []
    for table in tables:
        if table.per_inference:  # one fault per inference: no BER columns to choose from
            selected.append(table)
            continue
        kept = [ber for ber in table.bers if any(abs(ber - value) <= 1e-9 * ber for value in wanted)]
        missing = [value for value in wanted if not any(abs(ber - value) <= 1e-9 * ber for ber in table.bers)]
        if missing:
            grid = ", ".join(f"{ber:g}" for ber in table.bers)
            raise UsageError(f"--bers: {', '.join(f'{v:g}' for v in missing)} not in the grid of "
                             f"{table.title} ({grid})")
        selected.append(dataclasses.replace(table, bers=kept))
    return selected


class LeaderboardCommand:
    """Print or write the leaderboard tables."""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """``--store``, ``--format``, ``--output``."""
        _add_store_argument(parser)
        formats = get_registries().reports.names()
        parser.add_argument("--format", default="md", choices=formats, help="output format (default md)")
        parser.add_argument("--output", type=Path, help="write to this file instead of printing")
        parser.add_argument("--bers", help="show only these BER columns, e.g. 1e-6,1e-5 (each must be in the grid)")
        parser.add_argument("--standalone", action="store_true",
                            help="with --format latex: a complete document that compiles on its own")
        parser.add_argument("--compare", type=Path, metavar="OTHER.sqlite",
                            help="instead, list the estimates that disagree with OTHER's beyond their intervals")

    def run(self, args: argparse.Namespace) -> int:
        """Render the tables in the chosen format (or, with ``--compare``, the disagreeing estimates)."""
        if args.standalone and args.format != "latex":
            raise UsageError("--standalone needs --format latex")
        tables, _ = load_leaderboard(args.store)
        if args.bers is not None:
            tables = select_bers(tables, args.bers)
        if args.compare is not None:
            text = _comparison_text(tables, load_leaderboard(args.compare)[0], args.format)
        else:
            entry = get_registries().reports.get(args.format)
            with blame_plugin(entry.plugin, f"report format {entry.name!r}", "render"):
                text = entry.item(tables)
        if args.standalone and args.compare is None:
            from resbench.report.latex import standalone_document

            text = standalone_document(text)
        if args.output:
            write_atomically(args.output, text)
        else:
            print(text, end="" if text.endswith("\n") else "\n")
        return 0


def _comparison_text(tables: list[LeaderboardTable], others: list[LeaderboardTable], output_format: str) -> str:
    from resbench.report.compare import compare_tables

    differences = compare_tables(tables, others)
    if output_format == "csv":
        return str(differences.to_csv(index=False))
    if output_format == "json":
        return str(differences.to_json(orient="records", indent=2))
    if differences.empty:
        return "No estimate disagrees beyond its interval.\n"
    header = "| " + " | ".join(differences.columns) + " |"
    lines = [header, "| " + " | ".join("---" for _ in differences.columns) + " |"]
    for values in differences.itertuples(index=False):
        lines.append("| " + " | ".join(f"{value:.3f}" if isinstance(value, float) else str(value)
                                       for value in values) + " |")
    return "\n".join(lines) + "\n"


class PlotCommand:
    """Draw accuracy-against-BER curves and accuracy distributions (PNG and SVG)."""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """``--store``, ``--output``."""
        _add_store_argument(parser)
        parser.add_argument("--output", type=Path, default=Path("results/figures"), help="folder for the figures")

    def run(self, args: argparse.Namespace) -> int:
        """Write the figures and list them."""
        from resbench.report.plots import write_figures  # matplotlib is slow to import: only when needed

        check_folder(args.output, "--output")
        tables, trials = load_leaderboard(args.store)
        for path in write_figures(tables, trials, args.output):
            print(path)
        return 0


class ExportCommand:
    """Export one row per trial (csv, or parquet when pyarrow is installed)."""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """``--store``, ``--format``, ``--output``."""
        _add_store_argument(parser)
        parser.add_argument("--format", default="csv", choices=["csv", "parquet"], help="file format")
        parser.add_argument("--output", type=Path, help="output file (csv: default standard output)")

    def run(self, args: argparse.Namespace) -> int:
        """Write the trial rows."""
        with ResultStore.open_existing(args.store) as store:
            trials = store.trials_frame()
        if args.format == "parquet":
            if importlib.util.find_spec("pyarrow") is None:
                raise UsageError("parquet export needs pyarrow: pip install pyarrow, or use --format csv")
            if args.output is None:
                raise UsageError("parquet export needs --output FILE")
            with replace_atomically(args.output) as temporary:
                trials.to_parquet(temporary, index=False)
        elif args.output:
            write_atomically(args.output, trials.to_csv(index=False))
        else:
            print(trials.to_csv(index=False), end="")
        return 0


@hookimpl
def register_commands(register: Any) -> None:
    """Register the report commands."""
    register("leaderboard", LeaderboardCommand(), description="Print or write the leaderboard tables.")
    register("plot", PlotCommand(), description="Draw accuracy curves and distributions (PNG and SVG).")
    register("export", ExportCommand(), description="Export one row per trial (csv or parquet).")
