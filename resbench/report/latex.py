"""LaTeX leaderboards for papers: one ``table`` float per setup, ready to ``\\input``.

Each table has a caption (setup, what the numbers are), a label, the accuracy columns of the BERs kept
(``resbench leaderboard --bers``), the best value of each column in bold, methods statistically tied
with the table's first marked with a dagger, and a footnote with the fault model and the trial counts.
Every name is escaped. :func:`standalone_document` wraps the tables into a compilable document.
"""

from __future__ import annotations

import math
import re

import pandas as pd

from resbench.report.display import display_frame
from resbench.report.keys import ber_column, format_ber
from resbench.report.tables import LeaderboardTable

__all__ = ["latex_escape", "render_latex", "standalone_document"]

_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
            "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "\u00b1": r"$\pm$",
            "\u2013": "--"}
_PATTERN = re.compile("|".join(re.escape(character) for character in _SPECIAL))


def latex_escape(text: str) -> str:
    """``text`` with every LaTeX special character escaped (one pass, so escapes are never re-escaped)."""
    return _PATTERN.sub(lambda match: _SPECIAL[match.group()], text)


def _label(table: LeaderboardTable) -> str:
    slug = re.sub(r"[^A-Za-z0-9]+", "-", f"{table.dataset}-{table.model}-{table.format}-{table.fault_model}")
    return f"tab:resbench-{slug.strip('-').lower()}" + (f"-{table.setup}" if table.setup else "")


def _best(values: pd.Series) -> float:
    numbers = pd.to_numeric(values, errors="coerce")
    return float(numbers.max()) if numbers.notna().any() else math.nan


def _cell(value: float, best: float, digits: int = 1) -> str:
    if math.isnan(value):
        return "--"
    text = f"{value:.{digits}f}"
    return rf"\textbf{{{text}}}" if not math.isnan(best) and round(value, digits) == round(best, digits) else text


def _rows(table: LeaderboardTable) -> list[str]:
    columns = ["clean_accuracy", *(ber_column("acc", ber) for ber in table.bers)]
    best = {column: _best(table.rows[column]) for column in columns if column in table.rows}
    lines = []
    for index, row in table.rows.iterrows():
        name = latex_escape(str(row["method"]))
        if index != 0 and bool(row.get("tied_with_best", False)):
            name += r"$^\dagger$"
        values = [_cell(float(row.get(column, math.nan)), best.get(column, math.nan)) for column in columns]
        lines.append(" & ".join([name, *values]) + r" \\")
    return lines


def _footnote(table: LeaderboardTable) -> str:
    low, high = int(table.rows["trials_min"].min()), int(table.rows["trials_max"].max())
    trials = f"{low}" if low == high else f"{low}--{high}"
    tied = " $^\\dagger$: statistically tied with the first row." if "tied_with_best" in table.rows else ""
    return (rf"\footnotesize Fault model: {latex_escape(table.fault_model)}, faults in the stored "
            rf"{latex_escape(table.format)} values; {trials} trials per BER; mean accuracy (\%), best per column in "
            rf"bold.{tied}")


def _method_notes(table: LeaderboardTable) -> str:
    """How each method's setting differs from its paper, as a footnote paragraph ('' when none has notes)."""
    if not table.method_notes:
        return ""
    notes = "; ".join(rf"\textit{{{latex_escape(method)}}}: {latex_escape(text)}"
                      for method, text in table.method_notes)
    return rf"\par\footnotesize Notes: {notes}."


def _weight_table(table: LeaderboardTable) -> str:
    """Accuracy per BER, best per column in bold, ties marked."""
    header = ["Method", "Clean", *(latex_escape(format_ber(ber)) for ber in table.bers)]
    caption = (f"Accuracy (\\%) of {latex_escape(table.model)} on {latex_escape(table.dataset)} under bit flips "
               f"in {latex_escape(table.format)} weights, by bit-error rate (resbench).")
    lines = [r"\begin{table}[t]", r"\centering", rf"\caption{{{caption}}}", rf"\label{{{_label(table)}}}",
             rf"\begin{{tabular}}{{l{'r' * (len(header) - 1)}}}", r"\toprule",
             " & ".join(header) + r" \\", r"\midrule", *_rows(table), r"\bottomrule", r"\end{tabular}",
             r"\par\smallskip", _footnote(table), *filter(None, [_method_notes(table)]), r"\end{table}", ""]
    return "\n".join(lines)


def _activation_table(table: LeaderboardTable) -> str:
    """Rates in % of inferences with their Wilson intervals."""
    frame = display_frame(table).drop(columns=["citation", "overhead %", "prepare s", "trials"])
    header = " & ".join(latex_escape(str(column)) for column in frame.columns) + r" \\"
    body = [" & ".join(latex_escape(str(value)) for value in row) + r" \\" for row in frame.values]
    setting = "one bit flip per inference" if table.per_inference else "per-bit flips at each BER"
    caption = (f"Silent data corruption of {latex_escape(table.model)} on {latex_escape(table.dataset)} under "
               f"transient faults in activations ({setting}, {latex_escape(table.fault_model)}), in \\% of "
               "inferences with 95\\% Wilson intervals (resbench).")
    return "\n".join([r"\begin{table}[t]", r"\centering", rf"\caption{{{caption}}}",
                      rf"\begin{{tabular}}{{l{'r' * (len(frame.columns) - 1)}}}", r"\toprule", header, r"\midrule",
                      *body, r"\bottomrule", r"\end{tabular}", *filter(None, [_method_notes(table)]), r"\end{table}",
                      ""])


#: One LaTeX table per fault target.
_TABLES = {"weights": _weight_table, "activations": _activation_table}


def _table(table: LeaderboardTable) -> str:
    return _TABLES[table.target](table)


def render_latex(tables: list[LeaderboardTable]) -> str:
    """One ``table`` float per setup (booktabs rules); needs ``\\usepackage{booktabs}``."""
    return "\n".join(_table(table) for table in tables) if tables else "% No results in the store.\n"


def standalone_document(body: str) -> str:
    """``body`` (LaTeX tables) inside a minimal document that compiles with pdflatex."""
    return ("\\documentclass{article}\n\\usepackage[T1]{fontenc}\n\\usepackage{booktabs}\n"
            "\\usepackage[margin=2cm]{geometry}\n\\begin{document}\n" + body + "\\end{document}\n")
