"""A table whose last run did not finish (interrupted, or still running) says so."""

from __future__ import annotations

from pathlib import Path

from resbench.cli.report_cmds import load_leaderboard
from resbench.report.renderers import render_markdown
from resbench.run.store import ResultStore
from tests.helpers import CURVES, PROVENANCE, make_trial, store_with


def test_a_table_whose_last_run_did_not_finish_says_so_until_a_run_finishes(tmp_path: Path) -> None:
    store = tmp_path / "r.sqlite"
    store_with(store, CURVES)  # a finished run
    [table] = load_leaderboard(store)[0]
    assert "Incomplete" not in table.description
    with ResultStore(store) as results:  # a second run, stopped after one more trial
        run_id = results.start_run(PROVENANCE)
        results.add_trials([make_trial("none-1e-05-0", 3, 50.0)], run_id)
    [table] = load_leaderboard(store)[0]
    assert "Incomplete: the last run that wrote this table (started " in table.description
    assert "Incomplete: the last run" in render_markdown([table])
    with ResultStore(store) as results:  # the same command again, to its end
        run_id = results.start_run(PROVENANCE)
        results.add_trials([make_trial("guard-1e-05-0", 3, 97.0)], run_id)
        results.finish_run(run_id)
    [table] = load_leaderboard(store)[0]
    assert "Incomplete" not in table.description


def test_another_suites_unfinished_run_does_not_mark_this_table(tmp_path: Path) -> None:
    store = tmp_path / "r.sqlite"
    store_with(store, CURVES)
    with ResultStore(store) as results:
        results.start_run(PROVENANCE)  # wrote nothing of this table
    [table] = load_leaderboard(store)[0]
    assert "Incomplete" not in table.description
