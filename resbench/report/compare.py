"""Compare two stores: the cells whose estimates disagree beyond their intervals.

Tables are matched by (dataset, model, format, fault model, setup), rows by method, estimates by BER
and score. Two independent estimates ``a > b`` with intervals disagree when their difference exceeds
``sqrt(lower_a**2 + upper_b**2)``, the half-widths facing each other: an approximate 95% test of equal
means. Whether the stores evaluated the same trained baselines (same checksum) says which kind of
agreement to expect: bit for bit with the same checksum on the same kind of machine, statistical
otherwise.
"""

from __future__ import annotations

import math

import pandas as pd

from resbench.report.keys import format_ber
from resbench.report.tables import LeaderboardTable

__all__ = ["compare_tables"]

COLUMNS = ["table", "method", "estimate", "this", "this_low", "this_high", "other", "other_low", "other_high",
           "difference", "same_baseline"]


def _estimates(table: LeaderboardTable, row: pd.Series) -> dict[str, tuple[float, float, float]]:
    found = {f"acc@{format_ber(ber)}": (row[f"acc@{format_ber(ber)}"], row[f"ci_low@{format_ber(ber)}"],
                                        row[f"ci_high@{format_ber(ber)}"]) for ber in table.bers}
    found["score"] = (row["score"], row["score_low"], row["score_high"])
    return {key: tuple(float(value) for value in values) for key, values in found.items()}  # type: ignore[misc]


def _disagree(this: tuple[float, float, float], other: tuple[float, float, float]) -> bool:
    (a, a_low, a_high), (b, b_low, b_high) = this, other
    if any(math.isnan(value) for value in (*this, *other)):
        return False
    facing = math.hypot(a - a_low, b_high - b) if a >= b else math.hypot(a_high - a, b - b_low)
    return abs(a - b) > facing


def compare_tables(these: list[LeaderboardTable], others: list[LeaderboardTable]) -> pd.DataFrame:
    """One row per estimate that disagrees between matched tables (see the module docstring)."""
    def key(table: LeaderboardTable) -> tuple[str, ...]:
        return (table.dataset, table.model, table.format, table.fault_model, table.setup_id)

    by_key = {key(table): table for table in others}
    rows = []
    for table in these:
        other_table = by_key.get(key(table))
        if other_table is None:
            continue
        other_rows = other_table.rows.set_index("method")
        for _, row in table.rows.iterrows():
            if row["method"] not in other_rows.index:
                continue
            other_row = other_rows.loc[row["method"]]
            same = str(row.get("baseline_checksum", "")) == str(other_row.get("baseline_checksum", ""))
            other_estimates = _estimates(other_table, other_row)
            for name, this in _estimates(table, row).items():
                other = other_estimates.get(name)
                if other is not None and _disagree(this, other):
                    rows.append([table.title, row["method"], name, *this, *other, this[0] - other[0], same])
    return pd.DataFrame(rows, columns=COLUMNS)
