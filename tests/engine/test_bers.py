"""The one BER rule, shared by suites and the fault engine, and the per-inference sentinel."""

from __future__ import annotations

import pytest

from resbench.engine.bers import ONE_FAULT_PER_INFERENCE, check_bers, sorted_bers
from resbench.errors import UsageError


def test_a_sweep_is_sorted_and_kept_whole() -> None:
    assert sorted_bers([1e-4, 1e-6, 1.0]) == [1e-6, 1e-4, 1.0]
    assert check_bers([1e-6, 2.5e-6]) == [1e-6, 2.5e-6]


@pytest.mark.parametrize(
    ("bers", "message"),
    [([], "at least one"), ([0.0], r"\(0, 1\]"), ([1.5], "got 1.5"), ([-1e-5], "got -1e-05"),
     ([1e-5, 1e-5], "distinct")],
)
def test_every_sweep_breaking_the_rule_is_refused_in_one_line(bers: list[float], message: str) -> None:
    for check in (sorted_bers, check_bers):
        with pytest.raises(UsageError, match=message) as raised:
            check(bers)
        assert "\n" not in str(raised.value)


def test_the_engine_refuses_an_unsorted_sweep_rather_than_pairing_sites_with_the_wrong_ber() -> None:
    with pytest.raises(UsageError, match="sorted ascending"):
        check_bers([1e-4, 1e-6])


def test_one_fault_per_inference_is_not_a_rate() -> None:
    with pytest.raises(UsageError):
        sorted_bers([ONE_FAULT_PER_INFERENCE])
