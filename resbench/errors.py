"""Errors the command line turns into one plain line and an exit status."""

from __future__ import annotations

__all__ = ["ResbenchError", "UsageError"]


class ResbenchError(Exception):
    """A failure while running (exit status 1)."""

    exit_status = 1


class UsageError(ResbenchError):
    """Bad input from the user: unknown name, invalid value, malformed file (exit status 2)."""

    exit_status = 2
