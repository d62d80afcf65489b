"""``resbench run --trials`` overrides the number of trials and keeps the rest of the suite's trial policy."""

from __future__ import annotations

from pathlib import Path

import pytest

from resbench.cli import main
from resbench.run.store import ResultStore

SUITE = """\
version: 1
name: tiny-sampling
datasets: [{{name: synthetic, train_size: 128, test_size: 32, separation: 3.0}}]
models: [test-mlp]
methods: [none]
formats: [fp16]
faults: [bitflip]
bers: [1.0e-3]
trials: {{trials: 5, sampling: {sampling}}}
training: {{epochs: 1}}
"""


@pytest.mark.parametrize("sampling", ["bernoulli", "conditional"])
def test_trials_flag_keeps_the_suites_sampling_design(sampling: str, tmp_path: Path) -> None:
    suite = tmp_path / "suite.yaml"
    suite.write_text(SUITE.format(sampling=sampling), encoding="utf-8")
    store_path = tmp_path / "r.sqlite"
    assert main(["run", str(suite), "--trials", "2", "--store", str(store_path), "--cache-dir",
                 str(tmp_path / "cache"), "--no-progress", "--device", "cpu"]) == 0
    with ResultStore(store_path) as store:
        cells, trials = store.cells_frame(), store.trials_frame()
    # Every cell, the clean (BER 0) one included, names the design the suite asked for.
    assert set(cells["sampling"]) == {sampling}
    assert len(trials[trials["ber"] > 0]) == 2
