"""The HTML leaderboard: one self-contained page (inline SVG, style and script; no network request).

Per setup (dataset / model / number format / fault model): the accuracy-versus-BER figure with 95%
interval bands, and the table beside it, sortable by any column (click a header) and filterable by
dataset, model, format and fault model. Every header explains itself on hover (the definitions of
``results/README.md``), methods link their citations, and a footer gives the provenance of the results.
The page reads well on a narrow screen (the figure and the table stack) and in print (controls hidden).
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable
from typing import Any

from resbench import __version__
from resbench.report.columns import column_help
from resbench.report.display import citation_link, display_frame, short_citation, split_citations
from resbench.report.keys import format_ber
from resbench.report.tables import LeaderboardTable

__all__ = ["render_html"]

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f",
           "#bcbd22")
FILTERS = (("dataset", "dataset"), ("model", "model"), ("format", "format"), ("fault_model", "fault model"))

# Figure geometry (SVG user units).
WIDTH, HEIGHT = 560, 300
LEFT, RIGHT, TOP, BOTTOM = 48, 16, 12, 40

_STYLE = """
:root { color-scheme: light; }
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 1.5rem; color: #1d1d1f; }
header p { max-width: 60rem; }
.controls { display: flex; flex-wrap: wrap; gap: 0.8rem; margin: 1rem 0; }
.controls label { font-size: 0.9rem; }
section.setup { border-top: 1px solid #ddd; padding-top: 0.5rem; margin-bottom: 2rem; }
.pair { display: flex; flex-wrap: wrap; gap: 1.5rem; align-items: flex-start; }
figure { margin: 0; flex: 0 1 560px; min-width: 280px; }
figure svg { width: 100%; height: auto; }
figcaption { font-size: 0.8rem; color: #555; }
.legend { list-style: none; padding: 0; margin: 0.3rem 0; font-size: 0.85rem; display: flex; flex-wrap: wrap;
          gap: 0.2rem 1rem; }
.swatch { display: inline-block; width: 0.9rem; height: 0.9rem; margin-right: 0.3rem; vertical-align: -0.1rem; }
.scroll { overflow-x: auto; flex: 1 1 480px; }
table { border-collapse: collapse; font-size: 0.85rem; }
th, td { border: 1px solid #ccc; padding: 0.25rem 0.5rem; text-align: right; white-space: nowrap; }
th:first-child, td:first-child { text-align: left; }
td.citation { text-align: left; font-size: 0.8rem; }
thead th { background: #f2f2f2; cursor: pointer; position: sticky; top: 0; }
thead th[aria-sort="ascending"]::after { content: " \\25B2"; }
thead th[aria-sort="descending"]::after { content: " \\25BC"; }
tr.best td:first-child::after { content: " \\2605"; color: #b8860b; }
tr.tied td:first-child::after { content: " \\2248"; color: #555; }
footer { font-size: 0.8rem; color: #555; border-top: 1px solid #ddd; margin-top: 2rem; padding-top: 0.5rem; }
footer dl { display: grid; grid-template-columns: max-content 1fr; gap: 0.1rem 1rem; }
footer dd { margin: 0; overflow-wrap: anywhere; }
@media (max-width: 700px) { body { margin: 0.6rem; } figure { flex-basis: 100%; } }
@media print { .controls { display: none; } section.setup { break-inside: avoid; } thead th { position: static; }
               .scroll { overflow: visible; } table { font-size: 0.65rem; } th, td { padding: 0.1rem 0.25rem; } }
"""

_SCRIPT = """
(function () {
  function key(text) {
    var match = text.replace(/\\u2212/g, '-').match(/-?\\d+(\\.\\d+)?(e[-+]?\\d+)?/i);
    return match ? parseFloat(match[0]) : NaN;
  }
  document.querySelectorAll('table.leaderboard').forEach(function (table) {
    table.querySelectorAll('thead th').forEach(function (header, column) {
      header.addEventListener('click', function () {
        var ascending = header.getAttribute('aria-sort') !== 'ascending';
        table.querySelectorAll('thead th').forEach(function (other) { other.removeAttribute('aria-sort'); });
        header.setAttribute('aria-sort', ascending ? 'ascending' : 'descending');
        var body = table.tBodies[0];
        var rows = Array.prototype.slice.call(body.rows);
        rows.sort(function (a, b) {
          var x = a.cells[column].textContent.trim(), y = b.cells[column].textContent.trim();
          var kx = key(x), ky = key(y);
          var order;
          if (isNaN(kx) && isNaN(ky)) { order = x.localeCompare(y); }
          else if (isNaN(kx)) { return 1; }
          else if (isNaN(ky)) { return -1; }
          else { order = kx - ky; }
          return ascending ? order : -order;
        });
        rows.forEach(function (row) { body.appendChild(row); });
      });
    });
  });
  var selects = document.querySelectorAll('.controls select');
  function apply() {
    document.querySelectorAll('section.setup').forEach(function (section) {
      var shown = true;
      selects.forEach(function (select) {
        if (select.value && section.dataset[select.name] !== select.value) { shown = false; }
      });
      section.hidden = !shown;
    });
  }
  selects.forEach(function (select) { select.addEventListener('change', apply); });
})();
"""


def _escape(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _x(decade: float, low: float, high: float) -> float:
    span = high - low or 1.0
    return LEFT + (decade - low) / span * (WIDTH - LEFT - RIGHT)


def _y(accuracy: float) -> float:
    return TOP + (100.0 - max(0.0, min(100.0, accuracy))) / 100.0 * (HEIGHT - TOP - BOTTOM)


def _points(coordinates: Iterable[tuple[float, float]]) -> str:
    return " ".join(f"{x:.1f},{y:.1f}" for x, y in coordinates)


def _axes(bers: list[float], low: float, high: float) -> list[str]:
    parts = [f'<line x1="{LEFT}" y1="{HEIGHT - BOTTOM}" x2="{WIDTH - RIGHT}" y2="{HEIGHT - BOTTOM}" stroke="#444"/>',
             f'<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{HEIGHT - BOTTOM}" stroke="#444"/>']
    for accuracy in (0, 25, 50, 75, 100):
        y = _y(accuracy)
        parts.append(f'<line x1="{LEFT}" y1="{y:.1f}" x2="{WIDTH - RIGHT}" y2="{y:.1f}" stroke="#eee"/>')
        parts.append(f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="11">{accuracy}</text>')
    for ber in bers:
        x = _x(math.log10(ber), low, high)
        parts.append(f'<text x="{x:.1f}" y="{HEIGHT - BOTTOM + 16}" text-anchor="middle" font-size="10">'
                     f"{_escape(format_ber(ber))}</text>")
    parts.append(f'<text x="{(LEFT + WIDTH - RIGHT) / 2:.0f}" y="{HEIGHT - 4}" text-anchor="middle" '
                 'font-size="11">bit-error rate (log scale)</text>')
    parts.append(f'<text x="12" y="{(TOP + HEIGHT - BOTTOM) / 2:.0f}" text-anchor="middle" font-size="11" '
                 f'transform="rotate(-90 12 {(TOP + HEIGHT - BOTTOM) / 2:.0f})">accuracy (%)</text>')
    return parts


def _figure(table: LeaderboardTable, colors: dict[str, str]) -> str:
    """Mean accuracy against BER, one line per method, with its 95% interval as a band (inline SVG)."""
    bers = table.bers
    if not bers:
        return "<figure><figcaption>No faulty cells.</figcaption></figure>"
    decades = [math.log10(ber) for ber in bers]
    low, high = min(decades), max(decades)
    parts = _axes(bers, low, high)
    for _, row in table.rows.iterrows():
        method, color = str(row["method"]), colors[str(row["method"])]
        line, upper, lower = [], [], []
        for ber, decade in zip(bers, decades, strict=True):
            label = format_ber(ber)
            mean, ci_low, ci_high = (float(row.get(f"{prefix}@{label}", math.nan)) for prefix in ("acc", "ci_low",
                                                                                                    "ci_high"))
            if math.isnan(mean):
                continue
            x = _x(decade, low, high)
            line.append((x, _y(mean)))
            upper.append((x, _y(mean if math.isnan(ci_high) else ci_high)))
            lower.append((x, _y(mean if math.isnan(ci_low) else ci_low)))
        if not line:
            continue
        parts.append(f'<polygon class="band" points="{_points(upper + lower[::-1])}" fill="{color}" '
                     f'fill-opacity="0.15" stroke="none"><title>{_escape(method)}: 95% interval</title></polygon>')
        parts.append(f'<polyline points="{_points(line)}" fill="none" stroke="{color}" stroke-width="2">'
                     f"<title>{_escape(method)}</title></polyline>")
        parts.extend(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.5" fill="{color}"/>' for x, y in line)
    legend = "".join(f'<li><span class="swatch" style="background:{colors[m]}"></span>{_escape(m)}</li>'
                     for m in table.rows["method"].astype(str))
    return (f'<figure><svg viewBox="0 0 {WIDTH} {HEIGHT}" role="img" xmlns="http://www.w3.org/2000/svg" '
            f'aria-label="accuracy against bit-error rate, {_escape(table.title)}">{"".join(parts)}</svg>'
            f'<ul class="legend">{legend}</ul><figcaption>Estimated mean accuracy with its 95% interval band; '
            "the BER axis is logarithmic.</figcaption></figure>")


def _linked_short(text: str) -> str:
    short = _escape(short_citation(text))
    link = citation_link(text)
    return f'<a href="{_escape(link)}" rel="noopener">{short}</a>' if link else short


def _citation_cell(text: str) -> str:
    """The citations, short, linked to the papers when they have links; the full references on hover."""
    shown = " + ".join(_linked_short(part) for part in split_citations(text))
    return f'<td class="citation" title="{_escape(text)}">{shown}</td>'


def _row_class(table: LeaderboardTable, index: int) -> str:
    """``best`` for the first row (the table's order), ``tied`` for rows the paired test cannot separate."""
    row = table.rows.iloc[index]
    if index == 0:
        return ' class="best"'
    return ' class="tied"' if bool(row.get("tied_with_best", False)) else ""


def _table(table: LeaderboardTable) -> str:
    frame = display_frame(table)
    head = "".join(f'<th scope="col" title="{_escape(column_help(str(c)))}">{_escape(c)}</th>' for c in frame.columns)
    rows = []
    for index, values in enumerate(frame.itertuples(index=False)):
        cells = [_citation_cell(str(value)) if column == "citation" else f"<td>{_escape(value)}</td>"
                 for column, value in zip(frame.columns, values, strict=True)]
        rows.append(f"<tr{_row_class(table, index)}>{''.join(cells)}</tr>")
    return (f'<div class="scroll"><table class="leaderboard"><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table></div>")


def _section(table: LeaderboardTable, colors: dict[str, str]) -> str:
    data = " ".join(f'data-{name.replace("_", "")}="{_escape(getattr(table, name))}"' for name, _ in FILTERS)
    return (f'<section class="setup" {data}><h2>{_escape(table.title)}</h2><p>{_escape(table.description)}</p>'
            f'<div class="pair">{_figure(table, colors)}{_table(table)}</div>{_notes(table)}</section>')


def _notes(table: LeaderboardTable) -> str:
    """How each method's setting differs from its paper, under the table."""
    if not table.method_notes:
        return ""
    items = "".join(f"<li><b>{_escape(method)}</b>: {_escape(text)}</li>" for method, text in table.method_notes)
    return f'<ul class="notes">{items}</ul>'


def _controls(tables: list[LeaderboardTable]) -> str:
    selects = []
    for name, label in FILTERS:
        values = sorted({str(getattr(table, name)) for table in tables})
        options = "".join(f'<option value="{_escape(v)}">{_escape(v)}</option>' for v in values)
        selects.append(f'<label>{_escape(label)} <select name="{name.replace("_", "")}">'
                       f'<option value="">all</option>{options}</select></label>')
    return f'<div class="controls" role="search">{"".join(selects)}</div>'


def _footer(tables: list[LeaderboardTable]) -> str:
    merged: dict[str, set[str]] = {}
    for table in tables:
        for key, value in table.provenance.items():
            merged.setdefault(key, set()).update(value if isinstance(value, list | tuple | set) else [value])
    items = [("resbench (this page)", __version__), *((key, ", ".join(sorted(map(str, values))))
                                                      for key, values in sorted(merged.items()))]
    rows = "".join(f"<dt>{_escape(key)}</dt><dd>{_escape(value)}</dd>" for key, value in items)
    return f"<footer><h2>Provenance</h2><dl>{rows}</dl></footer>"


def _colors(tables: list[LeaderboardTable]) -> dict[str, str]:
    """One color per method, the same in every figure of the page."""
    methods = sorted({str(method) for table in tables for method in table.rows["method"]})
    return {method: PALETTE[index % len(PALETTE)] for index, method in enumerate(methods)}


def render_html(tables: list[LeaderboardTable]) -> str:
    """The leaderboard as one self-contained HTML page (see the module docstring)."""
    colors = _colors(tables)
    content = "\n".join(_section(table, colors) for table in tables) or "<p>No results in the store.</p>"
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>resbench leaderboard</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n"
        "<header><h1>resbench leaderboard</h1><p>How well each protection keeps a model accurate when the bits "
        "that store its weights flip. Accuracy in percent: the estimated mean over fault patterns [its 95% "
        "interval]; methods are ranked by a chance-corrected resilience score. Click a column header to sort; "
        "hover over it for its "
        "definition. \u2605 marks each table's first method, \u2248 methods statistically tied with it.</p></header>\n"
        f"{_controls(tables)}\n{content}\n{_footer(tables)}\n<script>{_SCRIPT}</script>\n</body>\n</html>\n"
    )
