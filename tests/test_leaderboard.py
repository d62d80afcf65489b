"""Leaderboard columns and output formats on a small synthetic store."""

from __future__ import annotations

import json
import math
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest

from resbench.report.formats import render_csv, render_html, render_json, render_latex, render_markdown
from resbench.report.leaderboard import LeaderboardTable, build_leaderboard
from resbench.report.plots import write_figures
from resbench.statistics import wilson_interval
from resbench.store import ResultStore
from tests.test_store import PROVENANCE, make_cell, make_trial

BERS = [1e-6, 1e-5, 1e-4]
# method -> (clean accuracy, trial accuracies per BER)
CURVES = {
    "none": (99.0, {1e-6: [99.0, 98.0, 99.0], 1e-5: [90.0, 80.0, 70.0], 1e-4: [10.0, 10.0, 10.0]}),
    "guard": (98.0, {1e-6: [98.0, 98.0, 98.0], 1e-5: [97.5, 97.0, 97.5], 1e-4: [60.0, 50.0, 40.0]}),
}


@pytest.fixture
def tables(tmp_path: Path) -> tuple[list[LeaderboardTable], pd.DataFrame]:
    with ResultStore(tmp_path / "r.sqlite") as store:
        run_id = store.start_run(PROVENANCE)
        for method, (clean, curve) in CURVES.items():
            bits = 3200 if method == "none" else 3264
            seconds = 1.0 if method == "none" else 1.1
            store.upsert_cell(make_cell(f"{method}-0", method, 0.0, stored_bits=bits, clean_eval_seconds=seconds,
                                        prepare_seconds=2.5), run_id)
            store.add_trials([make_trial(f"{method}-0", 0, clean, flips=0)], run_id)
            for ber, accuracies in curve.items():
                cell_id = f"{method}-{ber}"
                store.upsert_cell(make_cell(cell_id, method, ber, stored_bits=bits, clean_eval_seconds=seconds,
                                            prepare_seconds=2.5), run_id)
                store.add_trials([make_trial(cell_id, i, a) for i, a in enumerate(accuracies)], run_id)
        cells, trials = store.cells_frame(), store.trials_frame()
    return build_leaderboard(cells, trials), trials


def _expected_score(clean: float, means: list[float], chance: float = 10.0) -> float:
    """Chance-corrected accuracy averaged over log10 BER, trapezoid over the decades -6, -5, -4."""
    normalized = [min(1.0, max(0.0, (mean - chance) / (clean - chance))) for mean in means]
    return ((normalized[0] + normalized[1]) / 2 + (normalized[1] + normalized[2]) / 2) / 2


def test_columns_and_order(tables: tuple[list[LeaderboardTable], pd.DataFrame]) -> None:
    [table] = tables[0]
    assert table.bers == BERS
    rows = table.rows.set_index("method")
    assert list(table.rows["method"]) == ["guard", "none"]  # sorted by score
    assert rows.loc["none", "clean_accuracy"] == 99.0
    assert rows.loc["none", "acc@1e-05"] == pytest.approx(80.0)
    for method in CURVES:
        for ber in BERS:
            key = f"{ber:.0e}"
            low, mean, high = (rows.loc[method, f"{prefix}@{key}"] for prefix in ("ci_low", "acc", "ci_high"))
            assert 0.0 <= low < mean < high <= 100.0 or 0.0 <= low <= mean <= high <= 100.0 and high > low
    assert rows.loc["none", "score"] == pytest.approx(_expected_score(99.0, [98.0 + 2 / 3, 80.0, 10.0]))
    assert rows.loc["guard", "score"] == pytest.approx(_expected_score(98.0, [98.0, 97.0 + 1 / 3, 50.0]))
    assert rows.loc["none", "score_low"] < rows.loc["none", "score"] < rows.loc["none", "score_high"]
    assert rows.loc["none", "score_range"] == "1e-06..1e-04"
    # Three trials per cell are too few trials with flips to claim a tolerable BER.
    assert math.isnan(rows.loc["none", "tolerable_ber"]) and math.isnan(rows.loc["guard", "tolerable_ber"])
    assert rows.loc["guard", "added_bits_pct"] == pytest.approx(2.0)
    assert rows.loc["guard", "added_bits"] == 64
    assert rows.loc["guard", "prepare_s"] == 2.5
    assert rows.loc["guard", "trials_min"] == rows.loc["guard", "trials_max"] == 3
    assert rows.loc["none", "median@1e-05"] == 80.0
    assert rows.loc["none", "catastrophic@1e-04"] == 100.0  # 10 % is below halfway from chance to clean
    assert rows.loc["guard", "catastrophic@1e-05"] == 0.0


def test_text_formats(tables: tuple[list[LeaderboardTable], pd.DataFrame]) -> None:
    board = tables[0]
    markdown = render_markdown(board)
    assert "## d / m / fp32 / bitflip" in markdown
    assert "| guard | 98.0 |" in markdown
    assert "80.0 [" in markdown and "log10 BER 1e-06..1e-04" in markdown
    assert "Paired difference to none" in markdown
    data = json.loads(render_json(board))
    assert data["tables"][0]["rows"][0]["method"] == "guard"
    csv_lines = render_csv(board).splitlines()
    assert csv_lines[0].startswith("fault_model,format,model,dataset,rank,method")
    assert len(csv_lines) == 3
    latex = render_latex(board)
    assert "\\begin{tabular}" in latex and "none & \\textbf{99.0}" in latex  # the best clean accuracy, bold


class _Checker(HTMLParser):
    """Collects tags and flags anything that would load an external resource."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.external: list[str] = []
        self.seen: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.seen.add(tag)
        # Anything the browser would fetch: src attributes and <link> (a citation's <a href> is not fetched).
        self.external += [value or "" for name, value in attrs if name == "src" or (tag == "link" and name == "href")]
        if tag not in {"meta", "br", "img", "link"}:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        assert self.stack and self.stack[-1] == tag, f"unbalanced </{tag}>"
        self.stack.pop()


def test_html_is_a_valid_self_contained_page(tables: tuple[list[LeaderboardTable], pd.DataFrame]) -> None:
    page = render_html(tables[0])
    assert page.startswith("<!DOCTYPE html>")
    checker = _Checker()
    checker.feed(page)
    assert checker.stack == []
    assert {"html", "head", "body", "table", "style", "title"} <= checker.seen
    assert checker.external == [] and "<script src" not in page
    assert page.count("<svg") == len(tables[0]) and "polygon" in page  # a figure with interval bands per setup


def test_figures_written_as_png_and_svg(tables: tuple[list[LeaderboardTable], pd.DataFrame], tmp_path: Path) -> None:
    written = write_figures(tables[0], tables[1], tmp_path / "figures")
    assert sorted(path.suffix for path in written) == [".png", ".png", ".svg", ".svg"]
    for path in written:
        assert path.stat().st_size > 1000
    assert written[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_figure_names_keep_dotted_format_names(tables: tuple[list[LeaderboardTable], pd.DataFrame],
                                               tmp_path: Path) -> None:
    [table] = tables[0]
    dotted = LeaderboardTable(table.dataset, table.model, "q15.16", table.fault_model, table.bers, table.rows,
                              table.cell_ids)
    trials = tables[1].assign(format="q15.16")
    names = sorted(path.name for path in write_figures([dotted], trials, tmp_path))
    assert names[0] == "accuracy_d_m_q15.16_bitflip.png"
    assert len(set(names)) == 4


def test_a_method_without_its_clean_row_gets_no_tolerable_ber(tmp_path: Path) -> None:
    """Without a BER-0 row there is nothing to be within 1 point of: no tolerable BER, no score."""
    with ResultStore(tmp_path / "r.sqlite") as store:
        run_id = store.start_run(PROVENANCE)
        for ber, accuracies in CURVES["none"][1].items():
            store.upsert_cell(make_cell(f"none-{ber}", "none", ber), run_id)
            store.add_trials([make_trial(f"none-{ber}", i, a) for i, a in enumerate(accuracies)], run_id)
        [table] = build_leaderboard(store.cells_frame(), store.trials_frame())
    row = table.rows.set_index("method").loc["none"]
    assert math.isnan(row["clean_accuracy"])
    assert math.isnan(row["tolerable_ber"])
    assert math.isnan(row["score"])


def test_rates_carry_wilson_intervals(tables: tuple[list[LeaderboardTable], pd.DataFrame]) -> None:
    [table] = tables[0]
    row = table.rows.set_index("method").loc["none"]
    assert row["sdc@1e-05"] == 0.0
    assert row["due_trials@1e-05"] == 0.0
    assert row["due_low@1e-05"] == pytest.approx(0.0, abs=1e-9)
    assert row["due_high@1e-05"] == pytest.approx(100 * wilson_interval(0, 3)[1])


def test_different_setups_are_never_pooled(tmp_path: Path) -> None:
    with ResultStore(tmp_path / "r.sqlite") as store:
        run_id = store.start_run(PROVENANCE)
        for seed, accuracy in ((0, 90.0), (1, 50.0)):
            definition = json.dumps({"method": "none", "ber": 1e-5, "training": {"epochs": seed}})
            clean = json.dumps({"method": "none", "ber": 0.0, "training": {"epochs": seed}})
            store.upsert_cell(make_cell(f"c{seed}", ber=0.0, definition=clean), run_id)
            store.upsert_cell(make_cell(f"f{seed}", ber=1e-5, definition=definition), run_id)
            store.add_trials([make_trial(f"c{seed}", 0, 99.0, flips=0)], run_id)
            store.add_trials([make_trial(f"f{seed}", i, accuracy) for i in range(3)], run_id)
        board = build_leaderboard(store.cells_frame(), store.trials_frame())
    assert len(board) == 2
    assert sorted(float(table.rows.loc[0, "acc@1e-05"]) for table in board) == [50.0, 90.0]
    assert all(" / setup " in table.title for table in board)
    assert board[0].title != board[1].title
