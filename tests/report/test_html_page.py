"""The HTML leaderboard in a real headless browser: figures render, headers sort, filters hide, offline."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from resbench.cli import main

CHROMIUM = next((path for name in ("chromium", "chromium-browser", "google-chrome")
                 if (path := shutil.which(name))), None)
needs_chromium = pytest.mark.skipif(CHROMIUM is None,
                                    reason="needs Chromium (apt-get install chromium; .ci/run installs it)")

SUITE = """\
version: 1
datasets: [{name: synthetic, train_size: 128, test_size: 32, separation: 3.0}]
models: [test-mlp, test-cnn]
methods: [none, ranger]
formats: [fp32]
bers: [1.0e-3, 1.0e-2, 3.0e-2]
trials: 3
training: {epochs: 1}
"""

# Runs in the page after it loaded, then writes what it found into the DOM for --dump-dom to print.
PROBE = """
<script>
window.addEventListener('load', function () {
  var result = {};
  var sections = Array.prototype.slice.call(document.querySelectorAll('section.setup'));
  result.sections = sections.length;
  result.figureSizes = sections.map(function (s) {
    var box = s.querySelector('figure svg').getBoundingClientRect(); return [box.width, box.height]; });
  result.bands = sections.map(function (s) { return s.querySelectorAll('polygon.band').length; });
  var table = sections[0].querySelector('table');
  function column(index) {
    return Array.prototype.map.call(table.tBodies[0].rows, function (r) { return r.cells[index].textContent; });
  }
  var headers = table.querySelectorAll('thead th');
  result.titles = Array.prototype.map.call(headers, function (h) { return h.title; });
  headers[0].click();
  result.methodsAscending = column(0);
  headers[0].click();
  result.methodsDescending = column(0);
  var clean = Array.prototype.map.call(headers, function (h) { return h.textContent; }).indexOf('trials');
  headers[clean].click();
  result.sortedHeader = headers[clean].getAttribute('aria-sort');
  var select = document.querySelector('.controls select[name="model"]');
  select.value = 'test-cnn';
  select.dispatchEvent(new Event('change'));
  result.visibleModels = sections.filter(function (s) { return !s.hidden && s.offsetParent !== null; })
    .map(function (s) { return s.dataset.model; });
  result.resources = performance.getEntriesByType('resource').map(function (e) { return e.name; });
  var out = document.createElement('pre'); out.id = 'probe'; out.textContent = JSON.stringify(result);
  document.body.appendChild(out);
});
</script>
"""


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("html")
    (folder / "suite.yaml").write_text(SUITE, encoding="utf-8")
    assert main(["run", str(folder / "suite.yaml"), "--store", str(folder / "r.sqlite"), "--cache-dir",
                 str(folder / "cache"), "--report-dir", str(folder / "reports"), "--no-progress"]) == 0
    return folder / "reports" / "leaderboard.html"


def _probe(page: Path, tmp_path: Path) -> dict[str, object]:
    probed = tmp_path / "probed.html"
    probed.write_text(page.read_text(encoding="utf-8").replace("</body>", PROBE + "</body>"), encoding="utf-8")
    assert CHROMIUM is not None
    completed = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--window-size=1200,900",
         "--virtual-time-budget=3000", "--dump-dom", probed.as_uri()],
        capture_output=True, text=True, timeout=120, check=True,
    )
    start = completed.stdout.index('<pre id="probe">') + len('<pre id="probe">')
    return json.loads(completed.stdout[start: completed.stdout.index("</pre>", start)].replace("&quot;", '"'))


@needs_chromium
def test_page_renders_sorts_filters_and_stays_offline(page: Path, tmp_path: Path) -> None:
    result = _probe(page, tmp_path)
    assert result["sections"] == 2
    for width, height in result["figureSizes"]:  # type: ignore[attr-defined]
        assert width > 100 and height > 50
    assert result["bands"] == [2, 2]  # one interval band per method
    titles = result["titles"]
    assert all(titles) and any("95%" in title for title in titles)  # type: ignore[union-attr]
    assert result["methodsAscending"] == ["none", "ranger"] and result["methodsDescending"] == ["ranger", "none"]
    assert result["sortedHeader"] == "ascending"
    assert result["visibleModels"] == ["test-cnn"]
    assert result["resources"] == []  # no script, style, font or image was fetched


def test_page_has_no_external_reference(page: Path) -> None:
    text = page.read_text(encoding="utf-8")
    assert "baseline checksums" in text and "Provenance" in text
    for attribute in ('src="http', "src='http", '<link ', "@import", "url(http"):
        assert attribute not in text


def test_column_definitions_match_results_readme() -> None:
    """The hover text of every column is the definition results/README.md gives."""
    from resbench.report.columns import COLUMN_HELP

    readme = (Path(__file__).resolve().parents[2] / "results" / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Columns"):]
    rows = dict(re.findall(r"^\| (.+?) \| (.+) \|$", section, flags=re.MULTILINE)[2:len(COLUMN_HELP) + 2])
    assert rows == COLUMN_HELP
