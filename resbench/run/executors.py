"""Executors: how a campaign's jobs run. ``local`` runs them one after another in this process."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

from resbench.options import NoOptions
from resbench.options import Options as OptionsModel
from resbench.plugins import hookimpl

__all__ = ["LocalExecutor", "register_executors"]

T = TypeVar("T")


class LocalExecutor:
    """Run jobs in this process, in order (the default; uses the device resbench was given)."""

    Options = NoOptions

    def __init__(self, options: OptionsModel) -> None:
        self.options = options

    def map(self, jobs: Iterable[Callable[[], T]]) -> Iterator[T]:
        """Run each job and yield its result as soon as it is done."""
        for job in jobs:
            yield job()


@hookimpl
def register_executors(register: Any) -> None:
    """Register ``local``."""
    register("local", LocalExecutor)
