"""Provenance recorded with every run: versions of resbench, its plugins and torch, device, git revision."""

from __future__ import annotations

import subprocess
from pathlib import Path

import torch

from resbench import __version__
from resbench.run.provenance import collect_provenance, cpu_model, git_revision


def test_a_run_records_versions_plugins_device_and_suite() -> None:
    provenance = collect_provenance("default", 1, torch.device("cpu"))
    assert provenance["suite"] == "default" and provenance["suite_version"] == 1
    assert provenance["resbench_version"] == __version__ and provenance["torch_version"] == torch.__version__
    # the CPU model and the instruction set of torch's kernels: trained weights depend on them
    assert provenance["device"] == f"cpu ({cpu_model()}, {torch.backends.cpu.get_cpu_capability()} kernels)"
    assert cpu_model() and "unknown" not in cpu_model()
    assert provenance["plugins"]["resbench_plugins.ranger"] == __version__  # built-ins carry resbench's version
    assert provenance["started"][:2] == "20"


def test_git_revision_is_the_checked_out_commit_and_none_outside_a_work_tree(tmp_path: Path) -> None:
    assert git_revision(tmp_path) is None
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    subprocess.run(["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q",
                    "--allow-empty", "-m", "x"], check=True)
    head = subprocess.run(["git", "-C", str(tmp_path), "rev-parse", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()
    assert git_revision(tmp_path) == head
