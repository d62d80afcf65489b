"""Errors the command line turns into one plain line and an exit status."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["PluginError", "ResbenchError", "UsageError", "blame_plugin"]


class ResbenchError(Exception):
    """A failure while running (exit status 1)."""

    exit_status = 1


class UsageError(ResbenchError):
    """Bad input from the user: unknown name, invalid value, malformed file (exit status 2)."""

    exit_status = 2


class PluginError(ResbenchError):
    """A plugin item raised, or returned the wrong thing: names the plugin, the item and the phase.

    The original exception is the ``__cause__``; ``resbench -v`` prints its traceback.
    """

    def __init__(self, plugin: str, item: str, phase: str, problem: str) -> None:
        super().__init__(f"plugin {plugin!r}, {item}, in {phase}: {problem}")
        self.plugin = plugin
        self.item = item
        self.phase = phase


@contextmanager
def blame_plugin(plugin: str, item: str, phase: str) -> Iterator[None]:
    """Turn an exception raised by plugin code inside the block into a :class:`PluginError`.

    ``item`` names the item (``method 'fitact'``), ``phase`` what it was doing (``fit``). resbench's own
    errors (bad input found by the plugin, for example) pass through unchanged.
    """
    try:
        yield
    except ResbenchError:
        raise
    except Exception as error:
        raise PluginError(plugin, item, phase, f"{type(error).__name__}: {error}") from error
