"""resbench's built-in resilience methods, each registered through the same hooks a third party uses."""

from __future__ import annotations

__all__: list[str] = []
