"""Deterministic cost columns beside the timed overhead: operations added per inference, the timing's
conditions, and a mark where its interval is too wide to read."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from resbench.engine.allocator import keep_freed_memory
from resbench.engine.operations import count_operations
from resbench.report.display import display_frame, legend
from resbench.report.tables import build_leaderboard
from resbench.run.measures import inference_cost
from resbench.run.store import ResultStore
from tests.helpers import CURVES, store_with


def test_multiply_adds_of_a_convolution_and_a_linear_layer() -> None:
    model = nn.Sequential(nn.Conv2d(2, 3, 3), nn.Flatten(), nn.Linear(3 * 4 * 4, 5))
    count = count_operations(model, torch.rand(4, 2, 6, 6))
    assert count.multiply_adds == 3 * 4 * 4 * (2 * 3 * 3) + 5 * 48


class _Clamped(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(6, 8)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return torch.clamp(torch.relu(self.linear(inputs)), max=1.0)


def test_a_clamp_adds_one_elementwise_operation_per_activation_and_no_multiply_add() -> None:
    plain = nn.Sequential(nn.Linear(6, 8), nn.ReLU())
    clamped = _Clamped()
    data = type("Data", (), {"images": torch.rand(5, 6), "batch_size": 5, "size": 5})()
    cost = inference_cost(plain, clamped, data)  # type: ignore[arg-type]
    operations = cost["operations"]
    assert isinstance(operations, dict)
    added = {key: operations["protected"][key] - operations["baseline"][key]
             for key in ("multiply_adds", "elementwise")}
    assert added == {"multiply_adds": 0, "elementwise": 8}
    assert cost["conditions"] == {"device": "cpu", "threads": torch.get_num_threads(), "batch_size": 5, "images": 5,
                                  "allocator": "freed memory kept" if keep_freed_memory() else "system"}


def _timing(spread: float, **conditions: object) -> str:
    baseline = [1.0 + 0.001 * index for index in range(15)]
    protected = [value * (1.1 + spread * (index % 3 - 1)) for index, value in enumerate(baseline)]
    return json.dumps({"baseline": baseline, "protected": protected,
                       "conditions": {"device": "cpu", "threads": 2, "batch_size": 1024, "images": 1000, **conditions},
                       "operations": {"baseline": {"multiply_adds": 1000.0, "elementwise": 500.0},
                                      "protected": {"multiply_adds": 1000.0, "elementwise": 2500.0}}})


def test_the_leaderboard_shows_added_operations_conditions_and_marks_a_wide_interval(tmp_path: Path) -> None:
    for spread, wide in ((0.01, False), (0.5, True)):
        store = tmp_path / f"{spread}.sqlite"
        store_with(store, CURVES, timing=_timing(spread))
        with ResultStore(store) as results:
            [table] = build_leaderboard(results.cells_frame(), results.trials_frame())
        shown = display_frame(table).set_index("method")
        assert shown.loc["guard", "added ops"] == "+0.0k / +2.0k"
        assert shown.loc["guard", "overhead %"].endswith("(wide)") == wide
        assert "Overhead timed on cpu, 2 threads, batch 1024, 1000 images." in legend(table)


def test_the_leaderboard_says_how_freed_memory_was_handled_where_the_cell_records_it(tmp_path: Path) -> None:
    for allocator, shown in (("freed memory kept", ", freed memory kept."), ("system", ", system malloc.")):
        store = tmp_path / f"{allocator}.sqlite"
        store_with(store, CURVES, timing=_timing(0.01, allocator=allocator))
        with ResultStore(store) as results:
            [table] = build_leaderboard(results.cells_frame(), results.trials_frame())
        assert f"Overhead timed on cpu, 2 threads, batch 1024, 1000 images{shown}" in legend(table)
