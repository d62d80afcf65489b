"""The plugin documentation covers every hook, and its examples run."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pluggy
import pytest
import torch
import yaml

from resbench import hookspecs
from resbench.plugins import DISABLE_PLUGINS_VARIABLE, ENTRY_POINT_GROUP, FAMILIES
from resbench.registry import Registry

PLUGINS_DOC = Path(__file__).resolve().parent.parent / "docs" / "plugins.md"


def _hooks() -> dict[str, list[str]]:
    """Every hook in the specification with its argument names, as pluggy sees them."""
    manager = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    manager.add_hookspecs(hookspecs)
    hooks = {}
    for name in dir(manager.hook):
        caller = getattr(manager.hook, name)
        if isinstance(caller, pluggy.HookCaller) and caller.spec is not None:
            hooks[name] = list(caller.spec.argnames)
    return hooks


HOOKS = _hooks()


def _doc() -> str:
    return PLUGINS_DOC.read_text(encoding="utf-8")


def _sections() -> dict[str, str]:
    """Hook name -> its section of the page (from its heading to the next heading of any level <= 4)."""
    text = _doc()
    headings = list(re.finditer(r"^#{1,4} .*$", text, flags=re.MULTILINE))
    sections = {}
    for index, heading in enumerate(headings):
        match = re.match(r"^#### `(\w+)\(", heading.group())
        if match:
            end = headings[index + 1].start() if index + 1 < len(headings) else len(text)
            sections[match.group(1)] = text[heading.start() : end]
    return sections


def test_hooks_found() -> None:
    assert set(HOOKS) == set(FAMILIES.values())


@pytest.mark.parametrize("hook", sorted(HOOKS))
def test_hook_is_documented_with_its_signature(hook: str) -> None:
    signature = f"{hook}({', '.join(HOOKS[hook])})"
    assert re.search(rf"^#### `{re.escape(signature)}`$", _doc(), flags=re.MULTILINE), (
        f"docs/plugins.md has no heading '#### `{signature}`'"
    )


def test_no_documented_hook_is_missing_from_the_specification() -> None:
    assert set(_sections()) <= set(HOOKS)


@pytest.mark.parametrize("hook", sorted(HOOKS))
def test_hook_section_describes_item_and_lists_family(hook: str) -> None:
    section = _sections()[hook]
    family = next(family for family, name in FAMILIES.items() if name == hook)
    assert "`item` is" in section
    assert f"resbench list {family}" in section


def _examples(section: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```$", section, flags=re.MULTILINE | re.DOTALL)


def _example_module(hook: str, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """The section's example, imported as a module (as a plugin's module would be)."""
    examples = _examples(_sections()[hook])
    assert len(examples) == 1, f"the {hook} section needs one python example"
    module = ModuleType(f"resbench_docs_example_{hook}")
    monkeypatch.setitem(sys.modules, module.__name__, module)
    exec(compile(examples[0], f"docs/plugins.md ({hook})", "exec"), module.__dict__)
    return module


@pytest.mark.parametrize("hook", sorted(HOOKS))
def test_hook_example_runs_and_registers(hook: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run the section's example module and call its hook implementation the way resbench does."""
    namespace = _example_module(hook, monkeypatch).__dict__
    implementation = namespace.get(hook)
    assert implementation is not None, f"the {hook} example does not define {hook}()"
    assert hasattr(implementation, f"{hookspecs.PROJECT_NAME}_impl"), "hook implementations need @hookimpl"

    registry: Registry[Any] = Registry(hook)

    def register(name: str, item: Any, **keywords: Any) -> None:
        registry.add(name, item, "docs-example", **keywords)

    implementation(register=register)
    assert len(registry) >= 1
    for entry in registry:
        assert entry.description
        entry.make_options({})  # every documented option has a default


def test_format_example_round_trips() -> None:
    namespace: dict[str, Any] = {"__name__": "resbench_docs_example_format"}
    exec(_examples(_sections()["register_formats"])[0], namespace)
    fmt = namespace["sign_magnitude_4"](None)
    values = torch.tensor([-1.75, -0.25, 0.0, 0.5, 1.75])
    assert torch.equal(fmt.decode(fmt.encode(values)), values)


def test_packaging_and_disabling_are_documented() -> None:
    text = _doc()
    assert f"[project.entry-points.{ENTRY_POINT_GROUP}]" in text
    assert f"{DISABLE_PLUGINS_VARIABLE}=1" in text
    assert "plugins/example-plugin/" in text


# The method-side examples, installed as plugins and run through ``resbench run`` as a user would:
# hook -> (the suite's methods, its faults).
RUN_EXAMPLES = {
    "register_activation_schemes": ("[none, {name: recipe, activation: decay-above, optimizer: profile-max}]",
                                    "[bitflip]"),
    "register_threshold_optimizers": ("[none, {name: recipe, activation: clamp, optimizer: quantile-bounds}]",
                                      "[bitflip]"),
    "register_methods": ("[none, ranger-q99]", "[bitflip]"),
    "register_weight_transforms": ("[none, {name: transform, transform: clamp-on-read}, "
                                   "{name: compose, first: {name: transform, transform: clamp-on-read}, "
                                   "second: ranger}]", "[bitflip]"),
    "register_fault_models": ("[none]", "[word-burst]"),
}


@pytest.mark.parametrize("hook", sorted(RUN_EXAMPLES))
def test_method_side_examples_run_through_resbench_run(hook: str, monkeypatch: pytest.MonkeyPatch,
                                                        tmp_path: Path) -> None:
    from resbench import plugins
    from resbench.cli import main
    from resbench.run.store import ResultStore

    module = _example_module(hook, monkeypatch)
    monkeypatch.setattr(plugins, "BUILTIN_PLUGINS", (*plugins.BUILTIN_PLUGINS, module.__name__))
    plugins.reset_registries()
    methods, faults = RUN_EXAMPLES[hook]
    suite = tmp_path / "suite.yaml"
    suite.write_text("datasets: [{name: synthetic, train_size: 128, test_size: 32, separation: 3.0}]\n"
                     "models: [test-cnn]\nbers: [1.0e-3, 1.0e-2]\ntrials: 2\ntraining: {epochs: 1}\n"
                     f"methods: {methods}\nfaults: {faults}\n", encoding="utf-8")
    status = main(["run", str(suite), "--store", str(tmp_path / "r.sqlite"), "--cache-dir", str(tmp_path / "cache"),
                   "--report-dir", str(tmp_path / "reports"), "--no-progress"])
    assert status == 0
    with ResultStore(tmp_path / "r.sqlite") as store:
        cells = store.cells_frame()
    assert len(set(cells["method"])) == len(yaml.safe_load(methods))
    assert set(cells[cells["ber"] > 0]["fault_model"]) == {faults.strip("[]")}
    if hook == "register_weight_transforms":  # stored weights named as the plain ones; BER 0 unchanged
        clean = cells[cells["ber"] == 0].set_index("method")
        assert clean.loc["transform[transform=clamp-on-read]", "fault_space"] == clean.loc["none", "fault_space"]
        composed = cells[cells["method"].str.startswith("compose[")].iloc[0]
        assert {entry["kind"] for entry in json.loads(composed["fault_space"])} == {"model", "method"}
    elif hook != "register_fault_models":  # the example's method stores its bounds: they joined the fault space
        protected = cells[cells["method"] != "none"].iloc[0]
        assert any(entry["kind"] == "method" for entry in json.loads(protected["fault_space"]))
