"""LaTeX leaderboards: escaping, bold best values, chosen BER columns, a document that compiles."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from resbench.cli import main
from resbench.report.latex import latex_escape, render_latex, standalone_document
from resbench.report.tables import LeaderboardTable


def _table(methods: list[str], accuracies: list[list[float]], tied: list[bool] | None = None) -> LeaderboardTable:
    bers = [1e-6, 1e-5]
    rows = []
    for method, (clean, low, high) in zip(methods, accuracies, strict=True):
        rows.append({"method": method, "clean_accuracy": clean, "acc@1e-06": low, "acc@1e-05": high,
                     "trials_min": 30, "trials_max": 100})
    frame = pd.DataFrame(rows)
    if tied is not None:
        frame["tied_with_best"] = tied
    return LeaderboardTable("data_set", "model#1", "q2.5", "bit_flip", bers, frame)


def test_hostile_names_are_escaped() -> None:
    assert latex_escape("a_b 50% R&D #1 {x} ~y ^z \\w $") == (
        r"a\_b 50\% R\&D \#1 \{x\} \textasciitilde{}y \textasciicircum{}z \textbackslash{}w \$")
    text = render_latex([_table(["my_method 100%", "none"], [[98.0, 90.0, 50.0], [97.0, 91.0, 20.0]])])
    assert r"my\_method 100\%" in text and r"data\_set" in text and r"model\#1" in text and r"bit\_flip" in text
    for line in text.splitlines():
        if not line.startswith("\\") and "&" in line:
            assert "_" not in line.replace(r"\_", "")  # every underscore in the rows is escaped


def test_table_float_caption_label_bold_best_and_footnote() -> None:
    text = render_latex([_table(["fitact", "none"], [[98.0, 90.0, 50.0], [97.0, 91.0, 20.0]], [False, True])])
    assert text.count(r"\begin{table}") == 1 and r"\caption{" in text and r"\label{tab:resbench-" in text
    fitact = next(line for line in text.splitlines() if line.startswith("fitact"))
    none = next(line for line in text.splitlines() if line.startswith("none"))
    assert fitact == r"fitact & \textbf{98.0} & 90.0 & \textbf{50.0} \\"
    assert none == r"none$^\dagger$ & 97.0 & \textbf{91.0} & 20.0 \\"
    assert "30--100 trials per BER" in text and "bit\\_flip" in text and "tied with the first row" in text


def test_leaderboard_command_selects_bers_and_writes_a_standalone_document(tmp_path: Path) -> None:
    suite = tmp_path / "suite.yaml"
    suite.write_text("datasets: [{name: synthetic, train_size: 128, test_size: 32}]\nmodels: [test-mlp]\n"
                     "bers: [1.0e-4, 1.0e-3, 1.0e-2]\ntrials: 2\ntraining: {epochs: 1}\n", encoding="utf-8")
    assert main(["run", str(suite), "--store", str(tmp_path / "r.sqlite"), "--cache-dir", str(tmp_path / "c"),
                 "--report-dir", str(tmp_path / "reports"), "--no-progress"]) == 0
    output = tmp_path / "board.tex"
    assert main(["leaderboard", "--store", str(tmp_path / "r.sqlite"), "--format", "latex", "--bers", "1e-3",
                 "--standalone", "--output", str(output)]) == 0
    text = output.read_text(encoding="utf-8")
    assert text.startswith(r"\documentclass") and text.rstrip().endswith(r"\end{document}")
    assert "1e-03" in text and "1e-04" not in text and "1e-02" not in text
    assert main(["leaderboard", "--store", str(tmp_path / "r.sqlite"), "--bers", "5e-3"]) == 2
    assert main(["leaderboard", "--store", str(tmp_path / "r.sqlite"), "--standalone"]) == 2
    if shutil.which("pdflatex") is None:
        pytest.skip("no TeX engine installed: the document was checked, not compiled")
    compiled = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", output.name],
                              cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert compiled.returncode == 0, compiled.stdout[-2000:]
    assert (tmp_path / "board.pdf").stat().st_size > 0


def test_standalone_wraps_tables_in_a_document() -> None:
    document = standalone_document(render_latex([_table(["none"], [[97.0, 91.0, 20.0]])]))
    assert r"\usepackage{booktabs}" in document and document.count(r"\begin{table}") == 1
