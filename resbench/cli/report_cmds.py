"""``resbench leaderboard``, ``resbench plot`` and ``resbench export``: reports from the results store."""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from resbench.errors import UsageError, blame_plugin
from resbench.plugins import get_registries, hookimpl
from resbench.store import DEFAULT_STORE, ResultStore

if TYPE_CHECKING:
    from resbench.report.leaderboard import LeaderboardTable

__all__ = ["ExportCommand", "LeaderboardCommand", "PlotCommand", "check_folder", "load_leaderboard",
           "register_commands", "write_text_atomically"]


def check_folder(folder: Path, what: str) -> None:
    """Refuse, as bad input, a folder that cannot be created or written: a file on its path, no permission."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        problem = "is a file" if existing == folder else f"cannot be created: {existing} is a file"
        raise UsageError(f"{what} {folder}: {problem}, not a folder")
    if existing.exists() and not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"{what} {folder}: no permission to write in {existing}")


def write_text_atomically(path: Path, text: str, what: str = "--output") -> None:
    """Write ``text`` to ``path`` through a temporary file, so a reader never sees half a file.

    A path that is a folder, or whose folder cannot be made, is bad input; on any failure nothing is left.
    """
    if path.is_dir():
        raise UsageError(f"{what} {path}: is a folder; name a file")
    check_folder(path.parent, what)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(temporary, 0o666 & ~_umask())  # mkstemp makes 0600 files; reports are for sharing
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def load_leaderboard(store_path: Path) -> tuple[list[LeaderboardTable], Any]:
    """Leaderboard tables and the trial frame of the store at ``store_path``."""
    from resbench.report.leaderboard import build_leaderboard  # scipy is slow to import: only when needed

    with ResultStore.open_existing(store_path) as store:
        cells, trials = store.cells_frame(), store.trials_frame()
    return build_leaderboard(cells, trials), trials


def _add_store_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--store", type=Path, default=DEFAULT_STORE, help=f"results store (default {DEFAULT_STORE})")


class LeaderboardCommand:
    """Print or write the leaderboard tables."""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """``--store``, ``--format``, ``--output``."""
        _add_store_argument(parser)
        formats = get_registries().reports.names()
        parser.add_argument("--format", default="md", choices=formats, help="output format (default md)")
        parser.add_argument("--output", type=Path, help="write to this file instead of printing")

    def run(self, args: argparse.Namespace) -> int:
        """Render the tables in the chosen format."""
        tables, _ = load_leaderboard(args.store)
        entry = get_registries().reports.get(args.format)
        with blame_plugin(entry.plugin, f"report format {entry.name!r}", "render"):
            text = entry.item(tables)
        if args.output:
            write_text_atomically(args.output, text)
        else:
            print(text, end="" if text.endswith("\n") else "\n")
        return 0


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
            if args.output.is_dir():
                raise UsageError(f"--output {args.output}: is a folder; name a file")
            check_folder(args.output.parent, "--output")
            args.output.parent.mkdir(parents=True, exist_ok=True)
            temporary = args.output.with_name(f".{args.output.name}.tmp")
            trials.to_parquet(temporary, index=False)
            os.replace(temporary, args.output)
        elif args.output:
            write_text_atomically(args.output, trials.to_csv(index=False))
        else:
            print(trials.to_csv(index=False), end="")
        return 0


@hookimpl
def register_commands(register: Any) -> None:
    """Register the report commands."""
    register("leaderboard", LeaderboardCommand(), description="Print or write the leaderboard tables.")
    register("plot", PlotCommand(), description="Draw accuracy curves and distributions (PNG and SVG).")
    register("export", ExportCommand(), description="Export one row per trial (csv or parquet).")
