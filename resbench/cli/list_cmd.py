"""``resbench list [family] [--json]``: what the loaded plugins provide."""

from __future__ import annotations

import argparse
import json
from typing import Any

from resbench.errors import UsageError
from resbench.options import describe_options
from resbench.plugins import FAMILIES, Registries, get_registries, hookimpl
from resbench.registry import Entry

__all__ = ["ListCommand", "register_commands"]


def _fault_targets(entry: Entry[Any]) -> list[str]:
    """The fault targets (weights, activations) a fault model supports, from one built with default options."""
    try:
        made = entry.item(entry.make_options({}))
    except UsageError:  # an option without a default: the model cannot be built to ask
        return []
    return list(getattr(made, "targets", ()))


def _format_layout(entry: Entry[Any]) -> str:
    """The bit layout of a number format built with default options; for a family of formats (``qM.N``,
    ``uintM-asym``), of its first example name."""
    options = _EXAMPLES.get(entry.name, {})
    try:
        made = entry.item(entry.make_options(options))
    except UsageError:  # an option without a default and no example: the format cannot be built to ask
        return ""
    layout = str(made.describe_layout())
    return f"{made.name}: {layout}" if entry.name in _EXAMPLES else layout


#: Options that build an example of a format family, for its layout line.
_EXAMPLES: dict[str, dict[str, Any]] = {"qM.N": {"integer_bits": 2, "fraction_bits": 5}, "uintM-asym": {"bits": 4}}


def _entry_record(entry: Entry[Any], family: str) -> dict[str, Any]:
    record = {
        "name": entry.name,
        "plugin": entry.plugin,
        "description": entry.description,
        "options": describe_options(entry.options),
    }
    if family == "faults":
        record["targets"] = _fault_targets(entry)
    if family == "formats":
        record["layout"] = _format_layout(entry)
    return record


def _plugin_records(registries: Registries) -> list[dict[str, Any]]:
    return [
        {
            "name": info.name,
            "module": info.module,
            "version": info.version,
            "builtin": info.builtin,
            "items": info.items,
        }
        for info in registries.plugins.values()
    ]


def _format_options(entry: Entry[Any]) -> str:
    return ", ".join(
        f"{option['name']} (required)" if option["required"] else f"{option['name']}={option['default']!r}"
        for option in describe_options(entry.options)
    )


class ListCommand:
    """List plugins, or the items of one family with their options."""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """``family`` (optional) and ``--json``."""
        parser.add_argument("family", nargs="?", choices=["plugins", *FAMILIES], help="what to list")
        parser.add_argument("--json", action="store_true", help="print JSON")

    def run(self, args: argparse.Namespace) -> int:
        """Print the listing."""
        registries = get_registries()
        if args.family == "plugins":
            records: Any = _plugin_records(registries)
        elif args.family:
            records = [_entry_record(entry, args.family) for entry in registries.families[args.family]]
        else:
            records = {family: [_entry_record(e, family) for e in registries.families[family]] for family in FAMILIES}
        if args.json:
            print(json.dumps(records, indent=2, default=str))
        else:
            print(self._as_text(args.family, registries))
        return 0

    def _as_text(self, family: str | None, registries: Registries) -> str:
        if family == "plugins":
            return "\n".join(
                f"{info.name} {info.version}{' (built-in)' if info.builtin else ''}"
                for info in registries.plugins.values()
            )
        lines = []
        for name in [family] if family else list(FAMILIES):
            lines.append(f"{name}:")
            for entry in registries.families[name]:
                options = _format_options(entry)
                lines.append(f"  {entry.name:<16} {entry.description}  [{entry.plugin}]")
                if options:
                    lines.append(f"  {'':<16} options: {options}")
                if name == "faults":
                    lines.append(f"  {'':<16} targets: {', '.join(_fault_targets(entry)) or 'unknown'}")
                if name == "formats" and (layout := _format_layout(entry)):
                    lines.append(f"  {'':<16} layout: {layout}")
        return "\n".join(lines)


@hookimpl
def register_commands(register: Any) -> None:
    """Register ``resbench list``."""
    register("list", ListCommand(), description="List plugins and what they register.")
