"""Leaderboards and plots built from the results store."""

from __future__ import annotations

__all__: list[str] = []
