"""``resbench validate SUITE.yaml``: check a suite file without running it."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from resbench.config import load_suite
from resbench.plugins import hookimpl
from resbench.run.validation import SuiteSize, check_operator_choices, check_suite

__all__ = ["ValidateCommand", "register_commands"]


class ValidateCommand:
    """Check a suite file: YAML syntax, keys, value ranges, and that every named item exists."""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """The suite file."""
        parser.add_argument("suite", type=Path, help="suite file (YAML)")

    def run(self, args: argparse.Namespace) -> int:
        """Validate (what ``resbench run`` checks before any work) and print a one-line summary."""
        suite = load_suite(args.suite)
        check_suite(suite, str(args.suite))
        check_operator_choices(suite, str(args.suite))
        size = SuiteSize(suite)
        seeds = f" x {len(suite.seeds)} seeds" if suite.seeds else ""
        groups = f"{size.groups} group" + "s" * (size.groups != 1)
        print(
            f"{args.suite}: valid suite {suite.name!r} (version {suite.version}): {groups} (method x "
            f"model x dataset x format) x ({size.faulty} cells with faults + {size.clean} clean) = {size.cells} "
            f"cells{seeds}"
        )
        return 0


@hookimpl
def register_commands(register: Any) -> None:
    """Register ``resbench validate``."""
    register("validate", ValidateCommand(), description="Check a suite file without running it.")
