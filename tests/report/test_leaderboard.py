"""Leaderboard columns and output formats on a small synthetic store."""

from __future__ import annotations

import json
import math
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from resbench.report.compare import compare_tables
from resbench.report.display import display_frame
from resbench.report.keys import format_ber
from resbench.report.plots import write_figures
from resbench.report.renderers import render_csv, render_html, render_json, render_latex, render_markdown
from resbench.report.tables import LeaderboardTable, build_leaderboard
from resbench.run.store import ResultStore
from resbench.statistics import wilson_interval
from tests.helpers import CURVES, PROVENANCE, make_cell, make_trial, store_with

BERS = [1e-6, 1e-5, 1e-4]
# method -> (clean accuracy, trial accuracies per BER)


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
            assert 0.0 <= low <= mean <= high <= 100.0 and high > low
    assert rows.loc["none", "score"] == pytest.approx(_expected_score(99.0, [98.0 + 2 / 3, 80.0, 10.0]))
    # Every method is normalized by the unprotected model's clean accuracy (99), guard's own is 98.
    assert rows.loc["guard", "score"] == pytest.approx(_expected_score(99.0, [98.0, 97.0 + 1 / 3, 50.0]))
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
    assert re.search(r"\| guard \| 1=? \| 98\.0 \|", markdown)
    assert "80.0 [" in markdown and "log10 BER 1e-06..1e-04" in markdown
    assert "Paired difference to none" in markdown
    data = json.loads(render_json(board))
    assert data["tables"][0]["rows"][0]["method"] == "guard"
    csv_lines = render_csv(board).splitlines()
    assert csv_lines[0].startswith("fault_model,format,model,dataset,rank,method")
    assert len(csv_lines) == 3
    latex = render_latex(board)
    assert "\\begin{tabular}" in latex
    assert re.search(r"none(\$\^\\dagger\$)? & \\textbf\{99\.0\}", latex)  # the best clean accuracy, bold


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


def _board(path: Path) -> list[LeaderboardTable]:
    with ResultStore(path) as store:
        return build_leaderboard(store.cells_frame(), store.trials_frame())


def test_trials_without_flips_never_show_a_zero_width_interval_nor_a_tolerable_ber(tmp_path: Path) -> None:
    """Plain Bernoulli cells at a low BER: every trial reused the clean result."""
    store_with(tmp_path / "r.sqlite", {"none": (97.7, {1e-7: [97.7] * 30, 1e-5: [97.0] * 30})}, flips=0)
    [table] = _board(tmp_path / "r.sqlite")
    row = table.rows.iloc[0]
    assert row["ci_high@1e-07"] - row["ci_low@1e-07"] > 1.0
    assert row["flip_trials_min"] == 0
    assert math.isnan(row["tolerable_ber"])


def test_tolerable_ber_comes_from_means_and_its_bracket_from_the_interval_bounds(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    steady = [99.0] * 400
    shaky = (99.0 - 3.0 * (rng.random(400) < 0.2)).tolist()  # mean 98.4: within 1 point, lower bound not
    store_with(tmp_path / "r.sqlite", {
        "none": (99.0, {1e-6: steady, 1e-5: shaky, 1e-4: [10.0] * 400}),
        "weak": (99.0, {1e-6: [90.0] * 400, 1e-5: [80.0] * 400, 1e-4: [10.0] * 400}),
    })
    [table] = _board(tmp_path / "r.sqlite")
    rows = table.rows.set_index("method")
    none = rows.loc["none"]
    assert none["acc@1e-05"] > 99.0 - 1.0 > none["ci_low@1e-05"]
    assert none["ci_high@1e-04"] < 99.0 - 1.0
    assert (none["tolerable_ber"], none["tolerable_ber_low"], none["tolerable_ber_high"]) == (1e-5, 1e-6, 1e-5)
    assert (rows.loc["weak", "tolerable_ber"], rows.loc["weak", "tolerable_ber_high"]) == (0.0, 0.0)
    shown = display_frame(table).set_index("method")["tolerable BER"]
    assert shown["none"] == "1e-05 [1e-06, 1e-05]"
    assert shown["weak"] == "<1e-06 [<1e-06, <1e-06]"  # fails already at the smallest BER of the grid


def test_statistically_indistinguishable_methods_share_a_rank(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    base = {ber: (97.0 - 60 * (rng.random(60) < rate)).tolist() for ber, rate in ((1e-6, 0.02), (1e-5, 0.2),
                                                                                   (1e-4, 0.8))}
    twin = {ber: values[::-1] for ber, values in base.items()}
    strong = {ber: [97.0] * 60 for ber in base}
    store_with(tmp_path / "r.sqlite", {"none": (97.0, base), "twin": (97.0, twin), "strong": (97.0, strong)})
    [table] = _board(tmp_path / "r.sqlite")
    ranks = dict(zip(table.rows["method"], table.rows["rank"], strict=True))
    assert ranks["strong"] == "1"
    assert ranks["none"] == ranks["twin"] == "2="
    markdown = render_markdown([table])
    assert "| 2= |" in markdown


def test_paired_differences_to_none_are_tested_with_holm_correction(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    none = {ber: (90.0 - 40 * (rng.random(40) < 0.3)).tolist() for ber in BERS}
    better = {ber: [value + 2.0 for value in values] for ber, values in none.items()}  # +2 on every trial
    same = {ber: list(values) for ber, values in none.items()}
    store_with(tmp_path / "r.sqlite", {"none": (95.0, none), "better": (95.0, better), "same": (95.0, same)})
    [table] = _board(tmp_path / "r.sqlite")
    rows = table.rows.set_index("method")
    for ber in BERS:
        key = f"{ber:.0e}"
        assert rows.loc["better", f"diff@{key}"] == pytest.approx(2.0)
        # Paired on identical trials the interval reaches above +2 only by an unseen catastrophe in none alone
        # and below it by one in better alone: one pseudo-trial at each end of [-100, 100] among 40 trials.
        low, high = rows.loc["better", f"diff_low@{key}"], rows.loc["better", f"diff_high@{key}"]
        assert -15.0 < low < 2.0 < high < 15.0
        assert rows.loc["better", f"p_holm@{key}"] < 0.05
        assert rows.loc["same", f"diff@{key}"] == 0.0 and rows.loc["same", f"p_holm@{key}"] == 1.0
    assert math.isnan(rows.loc["none", "diff@1e-05"])


def test_several_seeds_are_pooled_with_their_spread(tmp_path: Path) -> None:
    path = tmp_path / "r.sqlite"
    for seed, level in ((0, 90.0), (1, 80.0), (2, 70.0)):
        store_with(path, {"none": (95.0, {ber: [level] * 30 for ber in BERS})}, seed=seed)
    [table] = _board(path)
    assert table.seeds == (0, 1, 2)
    row = table.rows.iloc[0]
    assert row["acc@1e-05"] == pytest.approx(80.0)
    assert row["seeds"] == 3
    per_seed = [(level - 10) / 85 for level in (90.0, 80.0, 70.0)]
    assert row["score"] == pytest.approx(np.mean(per_seed))
    assert row["score_seed_sd"] == pytest.approx(np.std(per_seed, ddof=1))
    assert row["score_seeds_low"] < row["score"] < row["score_seeds_high"]
    assert "seed sd" in render_markdown([table])


def test_ber_labels_never_round_to_another_ber() -> None:
    assert format_ber(1e-7) == "1e-07"
    assert format_ber(3e-4) == "3e-04"
    assert format_ber(0.999) == "9.99e-01"
    assert format_ber(2.5e-5) == "2.5e-05"


def test_compare_lists_estimates_that_disagree(tmp_path: Path) -> None:
    curve = {1e-6: [97.0] * 40, 1e-5: [80.0, 90.0] * 20, 1e-4: [10.0, 20.0] * 20}
    store_with(tmp_path / "a.sqlite", {"none": (97.0, curve)}, baseline_checksum="abc")
    shifted = {**curve, 1e-5: [60.0, 70.0] * 20}
    store_with(tmp_path / "b.sqlite", {"none": (97.0, shifted)}, baseline_checksum="def")
    store_with(tmp_path / "c.sqlite", {"none": (97.0, curve)}, baseline_checksum="abc")
    found = compare_tables(_board(tmp_path / "a.sqlite"), _board(tmp_path / "b.sqlite"))
    assert set(found["estimate"]) == {"acc@1e-05", "score"}
    assert not found["same_baseline"].any()
    assert compare_tables(_board(tmp_path / "a.sqlite"), _board(tmp_path / "c.sqlite")).empty


def test_conditional_cells_mix_in_the_zero_flip_share_exactly(tmp_path: Path) -> None:
    """Trials given a flip, weighted by P(K >= 1); the rest of the mass is clean accuracy."""
    given_flip = [90.0] * 10 + [10.0] * 10  # conditional mean 50
    store_with(tmp_path / "r.sqlite", {"none": (98.0, {1e-6: given_flip, 1e-5: given_flip, 1e-4: given_flip})},
                sampling="conditional", zero_flip_probability=0.9)
    [table] = _board(tmp_path / "r.sqlite")
    row = table.rows.iloc[0]
    assert row["acc@1e-06"] == pytest.approx(0.9 * 98.0 + 0.1 * 50.0)
    assert 0.9 * 98.0 <= row["ci_low@1e-06"] < row["acc@1e-06"] < row["ci_high@1e-06"] <= 0.9 * 98.0 + 10.0
    assert row["median@1e-06"] == 98.0  # 90 % of fault patterns flip nothing
    assert row["catastrophic@1e-06"] == pytest.approx(5.0)  # half of the 10 % that flip something


@pytest.mark.parametrize("target", ["weights", "activations"])
def test_every_format_renders_bers_that_need_two_digits_under_one_key_spelling(target: str, tmp_path: Path) -> None:
    """2.5e-6 and 1.5e-4 are spelled alike in every table of either fault target (never rounded to 3e-06 or
    2e-04, which would collide with a neighbouring BER or miss its column)."""
    curve = {2.5e-6: [97.0] * 30, 3e-6: [96.0] * 30, 1.5e-4: [60.0, 70.0] * 15, 2e-4: [50.0] * 30}
    store_with(tmp_path / "r.sqlite", {"none": (97.0, curve), "guard": (96.5, curve)}, target=target)
    with ResultStore(tmp_path / "r.sqlite") as store:
        [table] = build_leaderboard(store.cells_frame(), store.trials_frame())
    assert table.target == target and table.bers == [2.5e-6, 3e-6, 1.5e-4, 2e-4]
    for key in ("2.5e-06", "3e-06", "1.5e-04", "2e-04"):
        assert f"acc@{key}" in table.rows.columns
    assert table.rows.loc[table.rows["method"] == "none", "acc@1.5e-04"].item() == pytest.approx(65.0)
    rendered = {name: render([table]) for name, render in (("md", render_markdown), ("html", render_html),
                                                            ("latex", render_latex), ("csv", render_csv),
                                                            ("json", render_json))}
    for key in ("2.5e-06", "1.5e-04"):
        assert key in rendered["md"] and key in rendered["html"] and f"acc@{key}" in rendered["csv"]
    assert "2.5e-06" in rendered["latex"] and "1.5e-04" in rendered["latex"]
    assert set(display_frame(table).columns) >= ({"BER 2.5e-06", "BER 1.5e-04"} if target == "weights"
                                                 else {"acc 2.5e-06", "SDC % 1.5e-04", "DUE % 2e-04"})


def test_a_difference_is_marked_significant_only_when_its_interval_agrees(tmp_path: Path) -> None:
    """A constant 0.2-point gain over 30 trials passes the sign-flip test, but 30 trials cannot rule out an
    unseen catastrophe in either method: no mark. A 70-point gain is marked."""
    from resbench.report.display import differences_frame

    path = tmp_path / "r.sqlite"
    store_with(path, {"none": (97.0, {1e-5: [27.0] * 30, 1e-4: [97.0] * 30}),
                      "small": (97.2, {1e-5: [97.0] * 30, 1e-4: [97.2] * 30})})
    with ResultStore(path) as store:
        [table] = build_leaderboard(store.cells_frame(), store.trials_frame())
    row = table.rows[table.rows["method"] == "small"].iloc[0]
    assert row[f"p_holm@{format_ber(1e-4)}"] < 0.05  # the test alone rejects
    assert row[f"diff_low@{format_ber(1e-4)}"] < 0 < row[f"diff_high@{format_ber(1e-4)}"]
    shown = differences_frame(table).iloc[0]
    assert not shown[f"BER {format_ber(1e-4)}"].endswith("*")
    assert shown[f"BER {format_ber(1e-5)}"].endswith("*")


def test_the_trial_count_of_seeds_with_unequal_trials_is_their_range(tmp_path: Path) -> None:
    store = tmp_path / "seeds.sqlite"
    store_with(store, CURVES, seed=0)  # three trials per BER
    store_with(store, {method: (clean, {ber: accuracies[:2] for ber, accuracies in curve.items()})
                       for method, (clean, curve) in CURVES.items()}, seed=1)  # two
    with ResultStore(store) as results:
        [table] = build_leaderboard(results.cells_frame(), results.trials_frame())
    assert list(table.rows["trials_min"]) == [2, 2] and list(table.rows["trials_max"]) == [3, 3]
    assert set(display_frame(table)["trials"]) == {"2\u20133"}
    assert "2 to 3 trials per BER" in render_markdown([table])
