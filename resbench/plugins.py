"""The plugin manager: built-in plugins, third-party plugins found by entry point, and the registries.

Third-party plugins declare themselves in their ``pyproject.toml``::

    [project.entry-points.resbench]
    my_plugin = "my_package.my_module"

and implement hooks from :mod:`resbench.hookspecs` with :data:`hookimpl`. Set
``RESBENCH_DISABLE_PLUGINS=1`` to load built-in plugins only.
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import os
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import pluggy

from resbench import __version__, hookspecs
from resbench.errors import ResbenchError
from resbench.registry import DuplicateNameError, Registry

__all__ = [
    "BUILTIN_PLUGINS",
    "DISABLE_PLUGINS_VARIABLE",
    "ENTRY_POINT_GROUP",
    "FAMILIES",
    "FAMILY_PRODUCTS",
    "PluginConflictError",
    "PluginInfo",
    "PluginLoadError",
    "Registries",
    "get_registries",
    "hookimpl",
    "provider_versions",
    "reset_registries",
    "third_party_disabled",
]

hookimpl = pluggy.HookimplMarker(hookspecs.PROJECT_NAME)
ENTRY_POINT_GROUP = "resbench"
DISABLE_PLUGINS_VARIABLE = "RESBENCH_DISABLE_PLUGINS"

# Family name -> hook name. The family names are also the ``resbench list`` arguments.
FAMILIES: dict[str, str] = {
    "formats": "register_formats",
    "faults": "register_fault_models",
    "activations": "register_activation_schemes",
    "optimizers": "register_threshold_optimizers",
    "transforms": "register_weight_transforms",
    "methods": "register_methods",
    "models": "register_models",
    "datasets": "register_datasets",
    "executors": "register_executors",
    "reports": "register_report_formats",
    "commands": "register_commands",
}

# Family name -> "module:Class" that every factory of the family must return (checked on building).
FAMILY_PRODUCTS: dict[str, str] = {
    "formats": "resbench.engine.formats:NumberFormat",
    "faults": "resbench.engine.faults:FaultModel",
    "activations": "resbench.methods.components:ActivationScheme",
    "optimizers": "resbench.methods.components:ThresholdOptimizer",
    "transforms": "resbench.methods.transforms:WeightTransform",
    "methods": "resbench.methods.base:Method",
    "models": "torch.nn:Module",
    "datasets": "resbench.datasets.base:DatasetSplits",
}

# Built-in plugins, registered through the same hooks as third-party ones.
BUILTIN_PLUGINS: tuple[str, ...] = (
    "resbench.cli.list_cmd",
    "resbench.cli.validate_cmd",
    "resbench.cli.run_cmd",
    "resbench.cli.report_cmds",
    "resbench.datasets",
    "resbench.models",
    "resbench.run.executors",
    "resbench.run.ray_executor",
    "resbench.report.renderers",
    "resbench_plugins.none",
    "resbench_plugins.ranger",
    "resbench_plugins.clipact",
    "resbench_plugins.fitact",
    "resbench_plugins.proact",
    "resbench_plugins.recipe",
    "resbench_plugins.saf",
    "resbench_plugins.wscale",
    "resbench_plugins.clip",
    "resbench_plugins.randbet",
    "resbench_plugins.compose",
    "resbench.engine.formats",
    "resbench.engine.quantization",
    "resbench.engine.faults",
    "resbench.engine.activation_faults",
)


class PluginLoadError(ResbenchError):
    """A plugin could not be imported or registered."""


class PluginConflictError(PluginLoadError):
    """Two installed plugins register the same name in one family: the installation is bad input (exit 2)."""

    exit_status = 2


@dataclass
class PluginInfo:
    """A loaded plugin: its name, where it comes from and its version."""

    name: str
    module: str
    version: str
    builtin: bool
    items: dict[str, list[str]] = field(default_factory=dict)


@dataclass
class Registries:
    """One registry per family, plus the plugins that filled them."""

    plugins: dict[str, PluginInfo]
    families: dict[str, Registry[Any]]

    def __getattr__(self, family: str) -> Registry[Any]:
        try:
            return self.__dict__["families"][family]
        except KeyError:
            raise AttributeError(family) from None


def third_party_disabled() -> bool:
    """Whether ``RESBENCH_DISABLE_PLUGINS`` is set (to anything but empty, ``0``, ``false`` or ``no``)."""
    return os.environ.get(DISABLE_PLUGINS_VARIABLE, "").strip().lower() not in ("", "0", "false", "no")


def _import_builtin(module_name: str) -> ModuleType:
    try:
        return importlib.import_module(module_name)
    except ImportError as error:
        raise PluginLoadError(f"error importing built-in plugin {module_name!r}: {error}") from error


def _third_party_plugins() -> list[tuple[str, ModuleType, str]]:
    found = []
    for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            module = entry_point.load()
        except Exception as error:
            raise PluginLoadError(
                f"error importing plugin {entry_point.name!r} ({entry_point.value}): "
                f"{type(error).__name__}: {error}"
            ) from error
        version = entry_point.dist.version if entry_point.dist is not None else "unknown"
        found.append((entry_point.name, module, version))
    return found


_SINGULAR = {
    "faults": "fault model",
    "activations": "activation scheme",
    "optimizers": "threshold optimizer",
    "transforms": "weight transform",
}


def _product_type(family: str) -> type | None:
    """The type a family's factories must return, imported on first use (None: not checked)."""
    target = FAMILY_PRODUCTS.get(family)
    if target is None:
        return None
    module_name, _, class_name = target.partition(":")
    product: type = getattr(importlib.import_module(module_name), class_name)
    return product


def _collect(manager: pluggy.PluginManager, plugins: dict[str, PluginInfo]) -> dict[str, Registry[Any]]:
    families: dict[str, Registry[Any]] = {}
    for family, hook_name in FAMILIES.items():
        singular = _SINGULAR.get(family, family.rstrip("s"))
        registry: Registry[Any] = Registry(singular, functools.partial(_product_type, family))
        families[family] = registry
        for implementation in getattr(manager.hook, hook_name).get_hookimpls():
            plugin_name = implementation.plugin_name
            info = plugins[plugin_name]

            def register(
                name: str,
                item: Any,
                *,
                options: type | None = None,
                description: str | None = None,
                pattern: str | None = None,
                _plugin: str = plugin_name,
                _info: PluginInfo = info,
                _family: str = family,
                _registry: Registry[Any] = registry,
            ) -> None:
                _registry.add(name, item, _plugin, options=options, description=description, pattern=pattern)
                _info.items.setdefault(_family, []).append(name)

            try:
                implementation.function(register=register)
            except DuplicateNameError as error:
                raise PluginConflictError(f"{error}; names are unique per family: uninstall one of the two "
                                          "plugins, or rename the item in one of them") from error
            except Exception as error:
                raise PluginLoadError(
                    f"plugin {plugin_name!r} failed in {hook_name}: {type(error).__name__}: {error}"
                ) from error
    return families


def _validation_message(manager: pluggy.PluginManager, error: pluggy.PluginValidationError) -> str:
    name = manager.get_name(error.plugin) or repr(error.plugin)
    return f"plugin {name!r}: " + " ".join(str(error).split())


def _register(manager: pluggy.PluginManager, module: ModuleType, name: str) -> None:
    """Register one plugin; a bad hook implementation or a taken name is an error naming the plugin."""
    try:
        manager.register(module, name=name)
    except pluggy.PluginValidationError as error:
        raise PluginLoadError(_validation_message(manager, error)) from error
    except ValueError as error:
        raise PluginLoadError(f"plugin {name!r} ({module.__name__}): {error}") from error


def _build() -> Registries:
    manager = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    manager.add_hookspecs(hookspecs)
    plugins: dict[str, PluginInfo] = {}
    for module_name in BUILTIN_PLUGINS:
        _register(manager, _import_builtin(module_name), module_name)
        plugins[module_name] = PluginInfo(module_name, module_name, __version__, builtin=True)
    if not third_party_disabled():
        for name, module, version in _third_party_plugins():
            if manager.is_registered(module):
                continue
            _register(manager, module, name)
            plugins[name] = PluginInfo(name, module.__name__, version, builtin=False)
    try:
        manager.check_pending()
    except pluggy.PluginValidationError as error:
        raise PluginLoadError(_validation_message(manager, error)) from error
    return Registries(plugins, _collect(manager, plugins))


@functools.cache
def get_registries() -> Registries:
    """Load all plugins once and return the filled registries."""
    return _build()


def provider_versions(*items: tuple[str, str]) -> dict[str, str]:
    """``{plugin: version}`` of the plugins providing the given ``(family, name)`` items (``("faults",
    "bitflip")``): what cell identities and cache keys record, so that results of another version of a
    plugin are never taken for this one's."""
    registries = get_registries()
    providers = {registries.families[family].resolve(name)[0].plugin for family, name in items}
    return {plugin: registries.plugins[plugin].version for plugin in sorted(providers)}


def reset_registries() -> None:
    """Forget the loaded plugins (tests use this after changing the environment)."""
    get_registries.cache_clear()
