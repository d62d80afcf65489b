"""The command line: ``list``, ``validate``, ``--version``; bad input is exit 2 and one line, no traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
from collections.abc import Callable
from pathlib import Path

import pytest

from resbench import __version__, plugins
from resbench.cli import main
from resbench.plugins import FAMILIES

WriteSuite = Callable[..., Path]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run ``resbench ARGV`` in process; argparse's own exits become exit statuses."""
    try:
        status = main(list(argv))
    except SystemExit as exit_:
        status = exit_.code if isinstance(exit_.code, int) else 1
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def assert_usage_error(status: int, out: str, err: str) -> str:
    """Exit status 2, nothing on stdout, a single ``resbench: error:`` line on stderr."""
    assert status == 2
    assert out == ""
    assert err.startswith("resbench: error: ")
    assert err.endswith("\n")
    assert err.count("\n") == 1, err
    assert "Traceback" not in err
    return err


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(capsys, "--version")
    assert (status, out) == (0, f"resbench {__version__}\n")


def test_no_command_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(capsys)
    assert status == 2
    assert "list" in out
    assert "validate" in out


def test_list_plugins_json(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = run(capsys, "list", "plugins", "--json")
    assert (status, err) == (0, "")
    records = json.loads(out)
    by_name = {record["name"]: record for record in records}
    assert set(plugins.BUILTIN_PLUGINS) <= set(by_name)
    listed = by_name["resbench.cli.list_cmd"]
    assert listed == {
        "name": "resbench.cli.list_cmd",
        "module": "resbench.cli.list_cmd",
        "version": __version__,
        "builtin": True,
        "items": {"commands": ["list"]},
    }


def test_list_everything_json(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(capsys, "list", "--json")
    assert status == 0
    listing = json.loads(out)
    assert set(listing) == set(FAMILIES)
    assert {"list", "validate"} <= {record["name"] for record in listing["commands"]}


@pytest.mark.usefixtures("test_items")
@pytest.mark.parametrize("family", list(FAMILIES))
def test_list_family_json_is_valid(capsys: pytest.CaptureFixture[str], family: str) -> None:
    status, out, _ = run(capsys, "list", family, "--json")
    assert status == 0
    records = json.loads(out)
    assert isinstance(records, list)
    expected = {"name", "plugin", "description", "options"} | ({"targets"} if family == "faults" else set())
    expected |= {"layout"} if family == "formats" else set()
    for record in records:
        assert set(record) == expected


@pytest.mark.usefixtures("test_items")
def test_list_family_shows_plugin_description_and_options(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(capsys, "list", "methods", "--json")
    assert status == 0
    clip = next(record for record in json.loads(out) if record["name"] == "dummy-clip")
    assert clip["plugin"] == "resbench_test_items"
    assert clip["description"] == "Clip activations, for tests."
    assert clip["options"] == [
        {
            "name": "bound",
            "type": "float",
            "default": 1.0,
            "required": False,
            "description": "activation bound",
            "range": "> 0 and <= 100",
        }
    ]

    status, out, _ = run(capsys, "list", "methods")
    assert status == 0
    assert out.startswith("methods:\n")
    line = next(line for line in out.splitlines() if "dummy-clip" in line)
    assert "Clip activations, for tests." in line
    assert "[resbench_test_items]" in line
    assert "options: bound=1.0" in out


def test_list_plugins_text(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(capsys, "list", "plugins")
    assert status == 0
    assert f"resbench.cli.validate_cmd {__version__} (built-in)" in out.splitlines()


@pytest.mark.usefixtures("test_items")
def test_validate_accepts_valid_suite(capsys: pytest.CaptureFixture[str], valid_suite: Path) -> None:
    status, out, err = run(capsys, "validate", str(valid_suite))
    assert (status, err) == (0, "")
    assert out == (f"{valid_suite}: valid suite 'tiny' (version 1): 4 groups (method x model x dataset x format) "
                   "x (2 cells with faults + 1 clean) = 12 cells\n")


def test_unknown_command_has_close_matches(capsys: pytest.CaptureFixture[str]) -> None:
    err = assert_usage_error(*run(capsys, "lsit"))
    assert "invalid choice: 'lsit' (did you mean 'list'" in err
    assert "; choose from " in err
    assert "validate" in err.split("; choose from ")[1]


def test_unknown_family_has_close_matches(capsys: pytest.CaptureFixture[str]) -> None:
    err = assert_usage_error(*run(capsys, "list", "method"))
    assert "invalid choice: 'method' (did you mean 'methods'" in err
    assert "plugins" in err


def test_unknown_flag(capsys: pytest.CaptureFixture[str]) -> None:
    err = assert_usage_error(*run(capsys, "list", "--jsn"))
    assert "--jsn" in err


def test_validate_missing_argument(capsys: pytest.CaptureFixture[str]) -> None:
    assert "suite" in assert_usage_error(*run(capsys, "validate"))


def test_validate_missing_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "absent.yaml"
    err = assert_usage_error(*run(capsys, "validate", str(path)))
    assert f"{path}: cannot read suite file" in err


def test_validate_malformed_yaml(capsys: pytest.CaptureFixture[str], write_suite: WriteSuite) -> None:
    path = write_suite("version: 1\nbers: [1.0e-6, 1.0e-5\nseed: 1\n", name="broken.yaml")
    err = assert_usage_error(*run(capsys, "validate", str(path)))
    assert err.startswith(f"resbench: error: {path}, line 3: malformed YAML: ")


@pytest.mark.usefixtures("test_items")
@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("trials: 5", "trails: 5", "trails: unknown option (allowed: "),
        ("seed: 7", "seed: -7", "seed: Input should be greater than or equal to 0 (allowed range: >= 0 and <="),
        ("bers: [1.0e-6, 1.0e-5]", "bers: [1.0e-6, 2]", "bers: each BER must lie in (0, 1]"),
        ("version: 1", "version: 9", "version: Input should be 1"),
        ("[dummy-flip]", "[dummy-flp]", "unknown fault model 'dummy-flp' (did you mean 'dummy-flip'?); available: "),
        ("executor: dummy-inline", "executor: dummy-online", "executor: unknown executor 'dummy-online' (did you"),
        ("bound: 2.5", "bund: 2.5", "methods[1] (dummy-clip): bund: unknown option (allowed: bound)"),
        ("bound: 2.5", "bound: 0", "methods[1] (dummy-clip): bound: Input should be greater than 0 (allowed range"),
        ("dummy-q3.4", "dummy-q3.99", "formats[1] (dummy-q3.99): fraction_bits: Input should be less than or equal"),
    ],
)
def test_validate_bad_suite_is_one_line(
    capsys: pytest.CaptureFixture[str], write_suite: WriteSuite, valid_suite: Path, old: str, new: str, expected: str
) -> None:
    text = valid_suite.read_text()
    assert old in text
    path = write_suite(text.replace(old, new), name="bad.yaml")
    err = assert_usage_error(*run(capsys, "validate", str(path)))
    assert err.startswith(f"resbench: error: {path}: ")
    assert expected in err


def test_plugin_load_error_is_exit_1_without_traceback(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(plugins, "BUILTIN_PLUGINS", (*plugins.BUILTIN_PLUGINS, "resbench.no_such_plugin"))
    plugins.reset_registries()
    status, out, err = run(capsys, "list")
    assert (status, out) == (1, "")
    assert err.startswith("resbench: error: error importing built-in plugin 'resbench.no_such_plugin'")
    assert "Traceback" not in err


def test_file_system_failure_while_running_is_exit_1_without_traceback(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from resbench.cli.list_cmd import ListCommand

    def full_disk(self: ListCommand, args: object) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ListCommand, "run", full_disk)
    status, out, err = run(capsys, "list")
    assert (status, out, err) == (1, "", "resbench: error: [Errno 28] No space left on device\n")


def _console_script() -> Path:
    name = "resbench.exe" if sys.platform == "win32" else "resbench"
    for folder in (Path(sysconfig.get_path("scripts")), Path(sys.executable).parent):
        if (folder / name).exists():
            return folder / name
    pytest.fail("the resbench console script is not installed next to this Python (pip install -e .)")


def test_console_script(tmp_path: Path) -> None:
    environment = {**os.environ, plugins.DISABLE_PLUGINS_VARIABLE: "1"}
    script = str(_console_script())
    listed = subprocess.run([script, "list", "plugins", "--json"], capture_output=True, text=True, env=environment)
    assert listed.returncode == 0, listed.stderr
    assert {record["name"] for record in json.loads(listed.stdout)} >= set(plugins.BUILTIN_PLUGINS)

    bad = tmp_path / "bad.yaml"
    bad.write_text("seed: [1\n", encoding="utf-8")
    failed = subprocess.run([script, "validate", str(bad)], capture_output=True, text=True, env=environment)
    assert failed.returncode == 2
    assert failed.stdout == ""
    assert failed.stderr.startswith(f"resbench: error: {bad}, line 2: malformed YAML")
    assert failed.stderr.count("\n") == 1

    version = subprocess.run([script, "--version"], capture_output=True, text=True, env=environment)
    assert (version.returncode, version.stdout) == (0, f"resbench {__version__}\n")


def test_leaderboard_compare_reports_disagreeing_estimates(capsys: pytest.CaptureFixture[str],
                                                           tmp_path: Path) -> None:
    from tests.helpers import store_with

    curve = {1e-6: [97.0] * 40, 1e-5: [80.0, 90.0] * 20, 1e-4: [10.0, 20.0] * 20}
    store_with(tmp_path / "a.sqlite", {"none": (97.0, curve)})
    store_with(tmp_path / "b.sqlite", {"none": (97.0, {**curve, 1e-5: [60.0, 70.0] * 20})})
    status, out, _ = run(capsys, "leaderboard", "--store", str(tmp_path / "a.sqlite"), "--compare",
                         str(tmp_path / "b.sqlite"))
    assert status == 0 and "acc@1e-05" in out and "acc@1e-06" not in out
    status, out, _ = run(capsys, "leaderboard", "--store", str(tmp_path / "a.sqlite"), "--compare",
                         str(tmp_path / "a.sqlite"))
    assert status == 0 and out.startswith("No estimate disagrees")
    status, out, err = run(capsys, "leaderboard", "--store", str(tmp_path / "a.sqlite"), "--compare",
                           str(tmp_path / "missing.sqlite"))
    assert_usage_error(status, out, err)


def test_validate_counts_one_per_inference_cell_for_single_activation_faults(
    capsys: pytest.CaptureFixture[str], write_suite: Callable[[str], Path]
) -> None:
    suite = write_suite("name: v\ndatasets: [synthetic]\nmodels: [test-mlp]\nmethods: [none, ranger]\n"
                        "formats: [fp32]\nfaults: [bitflip, act-single]\nbers: [1.0e-4, 1.0e-3]\n")
    status, out, _ = run(capsys, "validate", str(suite))
    assert status == 0
    # Per group: bitflip has a cell per BER, act-single one cell (one fault per inference); a clean cell each.
    assert out.endswith("2 groups (method x model x dataset x format) x (3 cells with faults + 2 clean) = 10 cells\n")
