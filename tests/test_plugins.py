"""The plugin manager: built-ins, third-party entry points, attribution and loading errors."""

from __future__ import annotations

import importlib.metadata
import sys
from collections.abc import Callable
from types import ModuleType
from typing import Any

import pytest

from resbench import plugins
from resbench.options import Options
from resbench.plugins import PluginLoadError, get_registries, hookimpl, reset_registries

THIRD_PARTY = "resbench_fake_third_party"


def _module(name: str, **hooks: Callable[..., None]) -> ModuleType:
    module = ModuleType(name)
    for hook_name, function in hooks.items():
        setattr(module, hook_name, function)
    return module


def _add_builtin(monkeypatch: pytest.MonkeyPatch, module: ModuleType) -> None:
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setattr(plugins, "BUILTIN_PLUGINS", (*plugins.BUILTIN_PLUGINS, module.__name__))
    reset_registries()


def _fake_entry_points(monkeypatch: pytest.MonkeyPatch, *entry_points: importlib.metadata.EntryPoint) -> None:
    """Pretend these entry points are installed in the ``resbench`` group (as pytest's own tests do)."""

    installed = list(entry_points)

    def fake_entry_points(**selection: Any) -> list[importlib.metadata.EntryPoint]:
        assert selection == {"group": plugins.ENTRY_POINT_GROUP}
        return installed

    monkeypatch.setattr(importlib.metadata, "entry_points", fake_entry_points)
    reset_registries()


def _third_party_module() -> ModuleType:
    @hookimpl
    def register_fault_models(register: Any) -> None:
        def stuck_at_half(options: Options) -> None:
            """Every faulty bit reads 0.5, for tests."""

        register("stuck-at-half", stuck_at_half)

    return _module(THIRD_PARTY, register_fault_models=register_fault_models)


@pytest.fixture
def third_party(monkeypatch: pytest.MonkeyPatch) -> None:
    """One third-party plugin, ``half``, installed through a (fake) entry point."""
    monkeypatch.setitem(sys.modules, THIRD_PARTY, _third_party_module())
    _fake_entry_points(monkeypatch, importlib.metadata.EntryPoint("half", THIRD_PARTY, plugins.ENTRY_POINT_GROUP))


def test_builtin_plugins_load_and_are_listed() -> None:
    registries = get_registries()
    assert set(plugins.BUILTIN_PLUGINS) <= set(registries.plugins)
    assert all(registries.plugins[name].builtin for name in plugins.BUILTIN_PLUGINS)
    assert registries.commands.get("list").plugin == "resbench.cli.list_cmd"
    assert registries.plugins["resbench.cli.validate_cmd"].items == {"commands": ["validate"]}
    assert set(registries.families) == set(plugins.FAMILIES)


def test_every_family_has_a_hook() -> None:
    from resbench import hookspecs

    assert all(callable(getattr(hookspecs, hook)) for hook in plugins.FAMILIES.values())
    specs = {name for name in dir(hookspecs) if name.startswith("register_")}
    assert specs == set(plugins.FAMILIES.values())


def test_every_builtin_item_is_described_with_strict_options() -> None:
    """What ``resbench list`` shows: a one-line description and an options model refusing unknown keys."""
    for family, registry in get_registries().families.items():
        for entry in registry:
            assert entry.description, f"{family} {entry.name!r} has no description"
            assert "\n" not in entry.description
            assert issubclass(entry.options, Options), f"{family} {entry.name!r}: options must subclass Options"
            assert entry.options.model_config.get("extra") == "forbid"


@pytest.mark.usefixtures("test_items")
def test_entry_remembers_registering_plugin() -> None:
    registries = get_registries()
    assert registries.formats.get("dummy-fp").plugin == "resbench_test_items"
    assert registries.methods.get("dummy-clip").plugin == "resbench_test_items"
    items = registries.plugins["resbench_test_items"].items
    assert items["formats"] == ["dummy-fp", "dummy-qM.N"]
    assert items["methods"] == ["dummy-none", "dummy-clip"]


@pytest.mark.usefixtures("third_party")
@pytest.mark.parametrize(("value", "loaded"), [(None, True), ("", True), ("0", True), ("1", False), ("yes", False)])
def test_environment_variable_turns_third_party_loading_off(
    monkeypatch: pytest.MonkeyPatch, value: str | None, loaded: bool
) -> None:
    if value is None:
        monkeypatch.delenv(plugins.DISABLE_PLUGINS_VARIABLE)
    else:
        monkeypatch.setenv(plugins.DISABLE_PLUGINS_VARIABLE, value)
    reset_registries()
    registries = get_registries()
    assert ("half" in registries.plugins) is loaded
    assert ("stuck-at-half" in registries.faults) is loaded
    assert set(plugins.BUILTIN_PLUGINS) <= set(registries.plugins)


@pytest.mark.usefixtures("third_party")
def test_third_party_plugin_is_attributed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(plugins.DISABLE_PLUGINS_VARIABLE)
    registries = get_registries()
    info = registries.plugins["half"]
    assert (info.module, info.builtin, info.version) == (THIRD_PARTY, False, "unknown")
    assert info.items == {"faults": ["stuck-at-half"]}
    entry = registries.faults.get("stuck-at-half")
    assert (entry.plugin, entry.description) == ("half", "Every faulty bit reads 0.5, for tests.")


def test_plugin_failing_to_import_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(plugins.DISABLE_PLUGINS_VARIABLE)
    broken = importlib.metadata.EntryPoint("broken", "resbench_no_such_module_anywhere", plugins.ENTRY_POINT_GROUP)
    _fake_entry_points(monkeypatch, broken)
    with pytest.raises(PluginLoadError) as raised:
        get_registries()
    message = str(raised.value)
    assert message.startswith("error importing plugin 'broken' (resbench_no_such_module_anywhere): ")
    assert "ModuleNotFoundError" in message


def test_plugin_raising_at_import_is_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    (tmp_path / "resbench_raising_plugin.py").write_text("raise RuntimeError('needs a GPU')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv(plugins.DISABLE_PLUGINS_VARIABLE)
    _fake_entry_points(
        monkeypatch, importlib.metadata.EntryPoint("gpu", "resbench_raising_plugin", plugins.ENTRY_POINT_GROUP)
    )
    with pytest.raises(PluginLoadError, match=r"^error importing plugin 'gpu' .*RuntimeError: needs a GPU$"):
        get_registries()


def test_third_party_plugin_taking_a_builtin_name_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(plugins.DISABLE_PLUGINS_VARIABLE)
    monkeypatch.setitem(sys.modules, THIRD_PARTY, _third_party_module())
    taken = importlib.metadata.EntryPoint("resbench.cli.list_cmd", THIRD_PARTY, plugins.ENTRY_POINT_GROUP)
    _fake_entry_points(monkeypatch, taken)
    with pytest.raises(PluginLoadError, match=rf"^plugin 'resbench.cli.list_cmd' \({THIRD_PARTY}\): "):
        get_registries()


def test_broken_builtin_plugin_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(plugins, "BUILTIN_PLUGINS", (*plugins.BUILTIN_PLUGINS, "resbench.no_such_plugin"))
    reset_registries()
    with pytest.raises(PluginLoadError, match=r"^error importing built-in plugin 'resbench.no_such_plugin'"):
        get_registries()


def test_misspelt_hook_is_caught_by_check_pending(monkeypatch: pytest.MonkeyPatch) -> None:
    @hookimpl
    def register_format(register: Any) -> None:  # missing the final "s"
        register("fp99", object())

    _add_builtin(monkeypatch, _module("resbench_misspelt_plugin", register_format=register_format))
    with pytest.raises(PluginLoadError) as raised:
        get_registries()
    message = str(raised.value)
    assert message.startswith("plugin 'resbench_misspelt_plugin': ")
    assert "register_format" in message
    assert "\n" not in message


def test_wrong_hook_argument_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    @hookimpl
    def register_formats(registry: Any) -> None:
        registry("fp99", object())

    _add_builtin(monkeypatch, _module("resbench_wrong_argument", register_formats=register_formats))
    with pytest.raises(PluginLoadError, match="resbench_wrong_argument"):
        get_registries()


def test_duplicate_name_across_plugins_names_both(monkeypatch: pytest.MonkeyPatch) -> None:
    @hookimpl
    def register_commands(register: Any) -> None:
        register("list", object(), description="a second list")

    _add_builtin(monkeypatch, _module("resbench_duplicate_list", register_commands=register_commands))
    with pytest.raises(PluginLoadError) as raised:
        get_registries()
    message = str(raised.value)
    assert raised.value.exit_status == 2  # an installation with two plugins claiming one name is bad input
    assert "command 'list' registered twice: by plugin 'resbench.cli.list_cmd' and by 'resbench_duplicate_list'" in (
        message
    )


def test_plugin_failing_in_its_hook_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    @hookimpl
    def register_models(register: Any) -> None:
        raise KeyError("weights")

    _add_builtin(monkeypatch, _module("resbench_failing_hook", register_models=register_models))
    with pytest.raises(PluginLoadError, match=r"^plugin 'resbench_failing_hook' failed in register_models: KeyError"):
        get_registries()


def test_registries_are_loaded_once_until_reset(monkeypatch: pytest.MonkeyPatch) -> None:
    first = get_registries()
    assert get_registries() is first
    reset_registries()
    assert get_registries() is not first


def test_unknown_family_attribute() -> None:
    with pytest.raises(AttributeError):
        _ = get_registries().widgets
