"""The README's examples work: its suite validates and its commands exist."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from resbench.cli import main
from resbench.plugins import get_registries

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_suite_examples_validate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    suite, *fragments = re.findall(r"```yaml\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.DOTALL)
    path = tmp_path / "suite.yaml"
    path.write_text(suite, encoding="utf-8")
    assert main(["validate", str(path)]) == 0
    assert "valid suite 'my-suite'" in capsys.readouterr().out
    for fragment in fragments:  # parts of a suite (faults: ...), valid with every other key at its default
        path.write_text(fragment, encoding="utf-8")
        assert main(["validate", str(path)]) == 0


def test_readme_tour_uses_registered_commands() -> None:
    shell = "".join(re.findall(r"```sh\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.DOTALL))
    used = set(re.findall(r"^resbench (\w+)", shell, flags=re.MULTILINE))
    assert used == set(get_registries().commands.names())


def test_readme_bring_your_own_model_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    section = README.read_text(encoding="utf-8").split("## Bring your own model", 1)[1].split("\n## ", 1)[0]
    (factory,) = re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)
    (command,) = re.findall(r"```sh\n(.*?)```", section, flags=re.DOTALL)
    assert len(factory.strip().splitlines()) + len(command.strip().splitlines()) <= 10
    (tmp_path / factory.splitlines()[0].removeprefix("# ")).write_text(factory, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    arguments = command.split()[1:]
    assert main([*arguments, "--store", "r.sqlite", "--cache-dir", "cache", "--no-progress", "--device", "cpu"]) == 0
    assert "| ranger |" in capsys.readouterr().out
