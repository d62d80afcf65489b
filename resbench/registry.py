"""Registries of named plugin items, one per family."""

from __future__ import annotations

import difflib
import inspect
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from resbench.errors import PluginError, UsageError, blame_plugin
from resbench.options import NoOptions, Options, validate_options

__all__ = ["Built", "DuplicateNameError", "Entry", "Registry"]

T = TypeVar("T")


class DuplicateNameError(Exception):
    """Two plugins registered the same name in one family: a packaging error, not user input."""


@dataclass(frozen=True)
class Entry(Generic[T]):
    """One registered item: its name, the item, the plugin that registered it and its options model."""

    name: str
    item: T
    plugin: str
    description: str
    options: type[Options]

    def make_options(self, raw: dict[str, Any] | None = None, where: str | None = None) -> Options:
        """Validate ``raw`` against this item's options model (unknown keys refused)."""
        return validate_options(self.options, dict(raw or {}), where or self.name)


@dataclass(frozen=True)
class Built(Generic[T]):
    """An item made from its registry entry: the product, the entry and the validated options.

    :attr:`identity` is what cache keys and cell identities hash: the registered name and *every*
    option, defaults included, so ``fitact`` and ``{name: fitact, <its defaults>}`` are one cell.
    """

    value: Any
    entry: Entry[T]
    options: Options

    @property
    def identity(self) -> dict[str, Any]:
        """``{"name": ..., "options": {...}}`` with every option, as plain JSON values."""
        return {"name": self.entry.name, "options": self.options.model_dump(mode="json")}


def _first_doc_line(item: object) -> str:
    doc = inspect.getdoc(item) or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


class Registry(Generic[T]):
    """Named items of one family. Names are unique; unknown names are answered with close matches."""

    def __init__(self, family: str, product: Callable[[], type | None] | None = None) -> None:
        self.family = family
        #: Returns the type every factory of this family must return (None: unchecked); imported lazily.
        self.product = product or (lambda: None)
        self._entries: dict[str, Entry[T]] = {}
        self._patterns: list[tuple[re.Pattern[str], Entry[T]]] = []

    def add(
        self,
        name: str,
        item: T,
        plugin: str,
        *,
        options: type[Options] | None = None,
        description: str | None = None,
        pattern: str | None = None,
    ) -> Entry[T]:
        """Register ``item`` under ``name``; a second registration of the same name is refused.

        With ``pattern`` (a regular expression with named groups) the entry also answers every name the
        pattern matches, the groups giving option values: ``qM.N`` answers ``q3.4``.
        """
        if name in self._entries:
            previous = self._entries[name].plugin
            raise DuplicateNameError(
                f"{self.family} {name!r} registered twice: by plugin {previous!r} and by {plugin!r}"
            )
        options = options or getattr(item, "Options", None) or NoOptions
        entry = Entry(name, item, plugin, description or _first_doc_line(item), options)
        self._entries[name] = entry
        if pattern is not None:
            self._patterns.append((re.compile(pattern), entry))
        return entry

    def resolve(self, name: str) -> tuple[Entry[T], dict[str, Any]]:
        """The entry answering ``name`` and the options its name implies (``q3.4``: 3 and 4 bits)."""
        if name in self._entries:
            return self._entries[name], {}
        for pattern, entry in self._patterns:
            match = pattern.fullmatch(name)
            if match:
                implied = {
                    key: int(value) if value.isdigit() else value
                    for key, value in match.groupdict().items()
                    if value is not None  # an optional group that did not match leaves the default
                }
                return entry, implied
        raise UsageError(self.unknown_name_message(name))

    def options_for(
        self, name: str, given: dict[str, Any] | None = None, where: str | None = None
    ) -> tuple[Entry[T], Options]:
        """The entry answering ``name`` and its validated options.

        Three merge rules: an option the user did not give takes its default; an option the name implies
        (``q3.4``: ``integer_bits=3``) is set by the name; a given option that contradicts the name is bad
        input. Unknown options and values out of range are bad input naming ``where``, key and range.
        """
        entry, implied = self.resolve(name)
        given = dict(given or {})
        where = where or f"{self.family} {name}"
        for key, value in implied.items():
            if key in given and given[key] != value:
                raise UsageError(f"{where}: option {key}={given[key]!r} contradicts the name {name!r}")
        return entry, entry.make_options({**given, **implied}, where=where)

    def build(
        self,
        name: str,
        given: dict[str, Any] | None = None,
        where: str | None = None,
        call: Callable[[Any, Options], Any] | None = None,
    ) -> Built[T]:
        """Make the item called ``name``: resolve, merge and validate options, instantiate, type-check.

        ``call(item, options)`` instantiates (default ``item(options)``; models and datasets pass more
        arguments). An exception raised by the factory, or a product of the wrong type, is a
        :class:`PluginError` naming the plugin and the item. This is the one way resbench makes items.
        """
        entry, options = self.options_for(name, given, where)
        item_label = f"{self.family} {entry.name!r}"
        with blame_plugin(entry.plugin, item_label, "construction"):
            value = call(entry.item, options) if call is not None else entry.item(options)  # type: ignore[operator]
        expected = self.product()
        if expected is not None and not isinstance(value, expected):
            raise PluginError(entry.plugin, item_label, "construction",
                              f"the factory returned {type(value).__name__}, not a {expected.__name__}")
        return Built(value, entry, options)

    def get(self, name: str) -> Entry[T]:
        """The entry named ``name``; an unknown name raises :class:`UsageError` with close matches."""
        try:
            return self._entries[name]
        except KeyError:
            raise UsageError(self.unknown_name_message(name)) from None

    def unknown_name_message(self, name: str) -> str:
        """``unknown format 'fp31' (did you mean 'fp32'?); available: fp16, fp32, ...``."""
        close = difflib.get_close_matches(name, list(self._entries), n=3, cutoff=0.5)
        hint = f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""
        available = ", ".join(sorted(self._entries)) or "(none registered)"
        return f"unknown {self.family} {name!r}{hint}; available: {available}"

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[Entry[T]]:
        return iter(sorted(self._entries.values(), key=lambda entry: entry.name))

    def __len__(self) -> int:
        return len(self._entries)

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._entries)
