"""Loading users' trained weights into a model, refusing anything that does not fit exactly."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from resbench.errors import UsageError

__all__ = ["load_checkpoint"]

SHOWN_KEYS = 8


def _names(keys: list[str]) -> str:
    shown = ", ".join(keys[:SHOWN_KEYS])
    return shown + (f" and {len(keys) - SHOWN_KEYS} more" if len(keys) > SHOWN_KEYS else "")


def _written_by_torch_save(path: Path) -> bool:
    """torch.save writes a zip archive (or, in its legacy format, a pickle: protocol byte 0x80)."""
    with path.open("rb") as handle:
        head = handle.read(4)
    return head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"


def _load_problem(error: Exception, path: Path) -> str:
    """One line saying why ``torch.load`` failed (its own messages span lines and carry colour codes)."""
    if not _written_by_torch_save(path):
        return "not a file written by torch.save (neither a zip archive nor a pickle)"
    if "Weights only load failed" in str(error) and "GLOBAL" in str(error):
        return "it holds Python objects, not only tensors (save model.state_dict(), not the model)"
    first_line = next((line.strip() for line in str(error).splitlines() if line.strip()), "")
    detail = f"{type(error).__name__}: {first_line}" if first_line else type(error).__name__
    return f"not a file written by torch.save ({detail})"


def _read_state_dict(path: Path) -> Mapping[str, Any]:
    if not path.is_file():
        raise UsageError(f"checkpoint {path} does not exist")
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        problem = _load_problem(error, path)
        raise UsageError(f"checkpoint {path} cannot be read as a torch state dict: {problem}") from None
    if isinstance(loaded, Mapping) and isinstance(loaded.get("state_dict"), Mapping):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, Mapping) or not all(isinstance(key, str) for key in loaded):
        raise UsageError(f"checkpoint {path} holds a {type(loaded).__name__}, not a state dict")
    if loaded and all(key.startswith("module.") for key in loaded):  # saved from DataParallel
        loaded = {key.removeprefix("module."): value for key, value in loaded.items()}
    return loaded


def _problems(expected: Mapping[str, torch.Tensor], loaded: Mapping[str, Any]) -> list[str]:
    missing = [key for key in expected if key not in loaded]
    unexpected = [key for key in loaded if key not in expected]
    mismatched = [
        f"{key} (checkpoint {tuple(loaded[key].shape)}, model {tuple(expected[key].shape)})"
        for key in expected
        if key in loaded and isinstance(loaded[key], torch.Tensor) and loaded[key].shape != expected[key].shape
    ]
    problems = []
    for label, keys in (("missing keys", missing), ("unexpected keys", unexpected), ("wrong shapes", mismatched)):
        if keys:
            problems.append(f"{label}: {_names(keys)}")
    return problems


def load_checkpoint(model: nn.Module, path: str | Path) -> nn.Module:
    """Load the state dict at ``path`` into ``model`` (in place) and return the model.

    Accepts a plain state dict, a dict with a ``state_dict`` entry, or keys prefixed ``module.``
    (DataParallel). Missing, unexpected or wrongly shaped keys raise :class:`UsageError` naming them.
    """
    path = Path(path)
    loaded = _read_state_dict(path)
    problems = _problems(model.state_dict(), loaded)
    if problems:
        raise UsageError(f"checkpoint {path} does not fit the model: {'; '.join(problems)}")
    model.load_state_dict(loaded)
    return model
