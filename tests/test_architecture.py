"""The house's structure, read from the code's imports: no circles, every import runs down a layer.

Every ``import`` statement counts, those inside functions too (a late import does not hide an arrow),
except those under ``if TYPE_CHECKING:``, which never run.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: Layers, lowest first: a module may import its own layer and the ones below, never one above.
LAYERS: tuple[tuple[str, ...], ...] = (
    # leaves: errors, options, the plugin machinery, statistics, the artifact cache
    ("resbench", "resbench.errors", "resbench.options", "resbench.seeds", "resbench.statistics", "resbench.files",
     "resbench.hookspecs", "resbench.registry", "resbench.plugins", "resbench.cache", "resbench.moved",
     "resbench.suites"),
    # what is benchmarked
    ("resbench.models", "resbench.datasets", "resbench.training"),
    # how bits are stored, go wrong and are scored
    ("resbench.engine",),
    # suites, and the methods that protect a model
    ("resbench.config", "resbench.methods"),
    # running campaigns, and reporting their results
    ("resbench.run", "resbench.report"),
    # the command line
    ("resbench.cli", "resbench.__main__"),
)


def _package_modules() -> dict[str, Path]:
    modules = {}
    for path in sorted((ROOT / "resbench").rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = path
    return modules


def _type_checking_only(tree: ast.AST) -> set[int]:
    """Line numbers of imports under ``if TYPE_CHECKING:``."""
    lines = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                lines.update(range(child.lineno, (child.end_lineno or child.lineno) + 1))
    return lines


def imports_of(path: Path, name: str) -> Iterator[str]:
    """The modules ``path`` (module ``name``) imports, absolute, that run when it runs."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skipped = _type_checking_only(tree)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in skipped:
            continue
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            yield base
            yield from (f"{base}.{alias.name}" for alias in node.names)  # ``from pkg import module``


def _graph() -> dict[str, set[str]]:
    modules = _package_modules()
    return {name: {imported for imported in imports_of(path, name) if imported in modules and imported != name}
            for name, path in modules.items()}


def layer_of(module: str) -> int:
    """The layer of ``module``: that of the longest layer entry it lies in."""
    best, depth = -1, -1
    for index, entries in enumerate(LAYERS):
        for entry in entries:
            if (module == entry or module.startswith(f"{entry}.")) and entry.count(".") > depth:
                best, depth = index, entry.count(".")
    if best < 0:
        raise AssertionError(f"{module} belongs to no layer: add it to LAYERS")
    return best


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle of ``graph``, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                return [*path[path.index(target):], target]
            if target not in state and (found := visit(target)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_package_has_no_import_circle() -> None:
    assert _cycle(_graph()) is None


def test_no_module_imports_a_layer_above_its_own() -> None:
    upward = [f"{module} (layer {layer_of(module)}) -> {imported} (layer {layer_of(imported)})"
              for module, imported_modules in sorted(_graph().items()) for imported in sorted(imported_modules)
              if layer_of(imported) > layer_of(module)]
    assert upward == []


@pytest.mark.parametrize("folder", ["plugins/resbench_plugins", "plugins/example-plugin"])
def test_plugins_import_the_engine_and_methods_never_the_run_layer(folder: str) -> None:
    reaching_up = [f"{path.relative_to(ROOT)} -> {imported}"
                   for path in sorted((ROOT / folder).rglob("*.py"))
                   for imported in imports_of(path, path.stem)
                   if imported.startswith(("resbench.run", "resbench.cli", "resbench.report"))]
    assert reaching_up == []


def test_the_checker_sees_a_circle_and_an_upward_import() -> None:
    """The rules above would catch a regression: a circle and an engine module importing the runner."""
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert layer_of("resbench.engine.faults") < layer_of("resbench.run.runner")
    assert layer_of("resbench.methods.base") < layer_of("resbench.run.jobs")


def test_relative_and_function_level_imports_are_read(tmp_path: Path) -> None:
    source = tmp_path / "module.py"
    source.write_text("from typing import TYPE_CHECKING\n"
                      "def f():\n    from resbench.run import runner\n"
                      "from . import sibling\n"
                      "if TYPE_CHECKING:\n    from resbench.cli import main\n", encoding="utf-8")
    found = set(imports_of(source, "resbench.engine.module"))
    assert {"resbench.run", "resbench.run.runner", "resbench.engine.sibling"} <= found
    assert not any(name.startswith("resbench.cli") for name in found)


def test_tests_share_helpers_through_one_module_only() -> None:
    """A test module imports ``tests.helpers``, never another test module."""
    borrowed = [f"{path.relative_to(ROOT)} -> {imported}"
                for path in sorted((ROOT / "tests").rglob("*.py"))
                for imported in imports_of(path, "tests." + path.stem)
                if imported.startswith("tests.") and not imported.startswith("tests.helpers")]
    assert borrowed == []
