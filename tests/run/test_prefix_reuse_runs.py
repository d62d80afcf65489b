"""A run with prefix reuse stores the rows of a run without it (``--reuse-memory 0``), and uses it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from resbench.cli import main
from resbench.config import parse_suite
from resbench.engine.prefix_reuse import PrefixReuse
from resbench.run.runner import RunSettings, run_suite
from tests.helpers import one_line_error, rows

SUITE = {
    "name": "reuse",
    "datasets": [{"name": "synthetic", "train_size": 128, "test_size": 48, "separation": 3.0}],
    "models": ["test-cnn"],
    "methods": ["none", "ranger", "saf-tanh+ranger"],
    "formats": ["fp32", "q15.16"],
    "faults": ["bitflip", "stuck-at-0"],
    "bers": [1e-4, 1e-3],
    "trials": 4,
    "seed": 3,
    "training": {"epochs": 1},
    "eval_batch_size": 16,
}


def test_rows_with_and_without_reuse_are_identical(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    logits = PrefixReuse.logits

    def counted(self: PrefixReuse, sites: object) -> torch.Tensor:
        calls.append(1)
        return logits(self, sites)  # type: ignore[arg-type]

    monkeypatch.setattr(PrefixReuse, "logits", counted)
    suite = parse_suite(SUITE, "test")
    for store, memory in (("full.sqlite", 0), ("reuse.sqlite", 2**30)):
        run_suite(suite, RunSettings(store=tmp_path / store, device=torch.device("cpu"), cache_dir=tmp_path / "cache",
                                     progress=False, reuse_memory=memory))
        if memory == 0:
            assert not calls
    assert calls
    full, reused = rows(tmp_path / "full.sqlite"), rows(tmp_path / "reuse.sqlite")
    assert len(full) > 0 and full.equals(reused)


def test_a_negative_reuse_memory_is_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--reuse-memory", "-1", "--store", str(tmp_path / "r.sqlite")]) == 2
    assert "--reuse-memory" in one_line_error(capsys)
    assert not (tmp_path / "r.sqlite").exists()
