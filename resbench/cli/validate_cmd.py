"""``resbench validate SUITE.yaml``: check a suite file without running it."""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

from resbench.activation_faults import ActivationFaultModel, cell_bers
from resbench.config import Suite, check_suite_names, load_suite
from resbench.datasets import load_dataset
from resbench.faults import resolve_fault_model
from resbench.plugins import hookimpl
from resbench.run.runner import check_fault_formats, check_operator_choice

__all__ = ["ValidateCommand", "register_commands"]


class ValidateCommand:
    """Check a suite file: YAML syntax, keys, value ranges, and that every named item exists."""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """The suite file."""
        parser.add_argument("suite", type=Path, help="suite file (YAML)")

    def run(self, args: argparse.Namespace) -> int:
        """Validate and print a one-line summary."""
        suite = load_suite(args.suite)
        check_suite_names(suite, str(args.suite))
        check_fault_formats(suite, str(args.suite))
        _check_operator_choice(suite, str(args.suite))
        groups = math.prod(len(components) for components in (suite.methods, suite.models, suite.datasets,
                                                               suite.formats))
        # Per group: a clean cell per fault model, and a faulty cell per BER (one per-inference cell for act-single).
        faulty = sum(len(cell_bers(resolve_fault_model(spec.name, spec.options), suite.bers)) for spec in suite.faults)
        clean = len(suite.faults)
        seeds = f" x {len(suite.seeds)} seeds" if suite.seeds else ""
        print(
            f"{args.suite}: valid suite {suite.name!r} (version {suite.version}): {groups} groups (method x model "
            f"x dataset x format) x ({faulty} cells with faults + {clean} clean) = {groups * (faulty + clean)} "
            f"cells{seeds}"
        )
        return 0


def _check_operator_choice(suite: Suite, source: str) -> None:
    """Which operators an activation fault model chooses depends on the model built for the dataset's images."""
    if not any(isinstance(resolve_fault_model(spec.name, spec.options), ActivationFaultModel) for spec in suite.faults):
        return
    for dataset_spec in suite.datasets:
        check_operator_choice(suite, load_dataset(dataset_spec.name, dataset_spec.options), source)


@hookimpl
def register_commands(register: Any) -> None:
    """Register ``resbench validate``."""
    register("validate", ValidateCommand(), description="Check a suite file without running it.")
