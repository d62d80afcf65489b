"""A suite on PyTorch's quantized kernels runs end to end: every cell records the deployment scheme, every
trial flips int_repr() codes, and the stored bits are the quantized weights' (biases stay float32)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

from resbench.cli import main
from tests.helpers import TINY_SUITE, rows


def test_a_torch_ao_suite_records_its_scheme_in_every_cell(write_suite: Any, tmp_path: Path) -> None:
    text = TINY_SUITE.replace(
        "formats: [fp16]", "formats: [{name: int8, engine: torch-ao, granularity: channel, calibration_images: 32}]")
    store = tmp_path / "q.sqlite"
    status = main(["run", str(write_suite(text)), "--store", str(store), "--cache-dir", str(tmp_path / "cache"),
                   "--no-progress", "--report-dir", str(tmp_path / "reports")])
    assert status == 0
    trials = rows(store)
    assert len(trials) == 1 + 2 * 3 and (trials["flips"] > 0).sum() == 6
    with sqlite3.connect(f"file:{store}?mode=ro", uri=True) as connection:
        cells = connection.execute("SELECT fault_space, stored_bits FROM cells").fetchall()
    connection.close()
    assert len(cells) == 3
    for fault_space, stored_bits in cells:
        entries = json.loads(fault_space)
        scheme = next(entry["scheme"] for entry in entries if entry["kind"] == "scheme")
        assert scheme == {"engine": "torch-ao", "granularity": "channel", "faultable_parameters": False,
                          "backend": "fbgemm", "calibration_images": 32}
        weights = [entry for entry in entries if entry["kind"] == "model"]
        assert weights and all(entry["name"].endswith(".weight") for entry in weights)
        assert stored_bits == 8 * sum(entry["shape"][0] * entry["shape"][1] for entry in weights)


def test_a_torch_ao_suite_stores_the_same_rows_with_and_without_prefix_reuse(write_suite: Any,
                                                                              tmp_path: Path) -> None:
    """Faults written into the quantized modules' packed weights must be seen by prefix reuse (or reuse must
    stand aside): the rows are those of the full pass."""
    text = TINY_SUITE.replace(
        "formats: [fp16]", "formats: [{name: int8, engine: torch-ao, granularity: channel, calibration_images: 32}]")
    suite = write_suite(text)
    stores = []
    for memory in ("0", "1"):
        store = tmp_path / f"reuse-{memory}.sqlite"
        assert main(["run", str(suite), "--store", str(store), "--cache-dir", str(tmp_path / "cache"), "--no-progress",
                     "--reuse-memory", memory]) == 0
        stores.append(rows(store))
    assert (stores[0]["accuracy"] < stores[0]["accuracy"].max()).any() or len(stores[0]) > 1
    assert stores[0].equals(stores[1])


def test_ranger_on_a_residual_cnn_runs_on_torch_ao_kernels(write_suite: Any, tmp_path: Path) -> None:
    """Ranger's clamps after pooling trace into PyTorch's quantization, and the operation counts read the
    quantized kernels' packed weights: every cell is measured, none fails."""
    text = TINY_SUITE.replace("models: [test-mlp]", "models: [test-cnn]")
    text = text.replace("methods: [none]", "methods: [none, ranger]")
    text = text.replace("separation: 3.0}", "separation: 3.0, channels: 3, height: 8, width: 8}")
    text = text.replace("formats: [fp16]", "formats: [{name: int8, engine: torch-ao, calibration_images: 32}]")
    store = tmp_path / "q.sqlite"
    assert main(["run", str(write_suite(text)), "--store", str(store), "--cache-dir", str(tmp_path / "cache"),
                 "--no-progress"]) == 0
    with sqlite3.connect(f"file:{store}?mode=ro", uri=True) as connection:
        failures = connection.execute("SELECT count(*) FROM failures").fetchone()[0]
        timing = dict(connection.execute("SELECT method, timing FROM cells WHERE ber = 0").fetchall())
    connection.close()
    assert failures == 0 and len(rows(store)) == 2 * (1 + 2 * 3)
    operations = {method: json.loads(text)["operations"] for method, text in timing.items()}
    assert all(counts["baseline"]["multiply_adds"] > 0 for counts in operations.values())
    # Against the unprotected model on the same kernels: the unprotected model adds nothing.
    assert operations["none"]["baseline"] == operations["none"]["protected"]
