"""Registries of named plugin items, one per family."""

from __future__ import annotations

import difflib
import inspect
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from resbench.errors import UsageError
from resbench.options import NoOptions, Options, validate_options

__all__ = ["DuplicateNameError", "Entry", "Registry"]

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


def _first_doc_line(item: object) -> str:
    doc = inspect.getdoc(item) or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


class Registry(Generic[T]):
    """Named items of one family. Names are unique; unknown names are answered with close matches."""

    def __init__(self, family: str) -> None:
        self.family = family
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
