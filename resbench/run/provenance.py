"""Provenance recorded with every run: versions, git revision, device, date."""

from __future__ import annotations

import contextlib
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

from resbench import __version__
from resbench.plugins import get_registries

__all__ = ["collect_provenance", "cpu_model", "git_revision"]


def git_revision(directory: Path | None = None) -> str | None:
    """The checked-out commit of the git work tree holding ``directory`` (resbench's own by default)."""
    where = directory or Path(__file__).resolve().parent
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip() or None if result.returncode == 0 else None


def cpu_model() -> str:
    """The processor's model name (Linux's /proc/cpuinfo, else what the platform says)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    return platform.processor() or platform.machine() or "unknown processor"


def collect_provenance(suite_name: str, suite_version: int, device: torch.device) -> dict[str, Any]:
    """Everything a reader needs to know where a run's rows came from."""
    plugins = {info.name: info.version for info in get_registries().plugins.values()}
    device_name = str(device)
    if device.type == "cuda":
        device_name += f" ({torch.cuda.get_device_name(device)})"
    elif device.type == "cpu":  # trained weights depend on the CPU's kernels: a reader comparing runs needs it
        device_name += f" ({cpu_model()}, {torch.backends.cpu.get_cpu_capability()} kernels)"
    return {
        "suite": suite_name,
        "suite_version": suite_version,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "resbench_version": __version__,
        "plugins": plugins,
        "git_revision": git_revision(),
        "torch_version": torch.__version__,
        "device": device_name,
        "command": " ".join(sys.argv),
    }
