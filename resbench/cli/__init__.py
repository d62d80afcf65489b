"""The ``resbench`` command: subcommands come from plugins through ``register_commands``."""

from __future__ import annotations

import argparse
import contextlib
import difflib
import logging
import re
import signal
import sys
import threading
import traceback
from collections.abc import Iterator, Sequence
from typing import Any

from resbench import __version__
from resbench.errors import ResbenchError

__all__ = ["build_parser", "main"]


class _Parser(argparse.ArgumentParser):
    """argparse that exits with status 2 and one line on bad usage (its default, made explicit).

    Negative numbers in scientific notation (``--bers -1e-5``) are values, not options, so that the
    value's own check answers them.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._negative_number_matcher = re.compile(r"^-(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?(,.*)?$")

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"resbench: error: {message}\n")

    def _check_value(self, action: argparse.Action, value: Any) -> None:
        """An unknown command or family is answered with close matches, then what exists."""
        if action.choices is None or value in action.choices:
            return
        choices = [str(choice) for choice in action.choices]
        close = difflib.get_close_matches(str(value), choices, n=3, cutoff=0.5)
        hint = f" (did you mean {', '.join(repr(choice) for choice in close)}?)" if close else ""
        message = f"invalid choice: {value!r}{hint}; choose from {', '.join(choices)}"
        raise argparse.ArgumentError(action, message)


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with one subparser per registered command."""
    from resbench.plugins import get_registries

    parser = _Parser(prog="resbench", description="Benchmark neural-network resilience to memory faults.")
    parser.add_argument("--version", action="version", version=f"resbench {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for entry in get_registries().commands:
        subparser = subparsers.add_parser(entry.name, help=entry.description, description=entry.description)
        entry.item.add_arguments(subparser)
        subparser.set_defaults(handler=entry.item.run)
    return parser


def _print_cause(error: BaseException) -> None:
    """With ``-v``: the traceback of what a plugin raised (the cause of a one-line error)."""
    if error.__cause__ is not None:
        traceback.print_exception(error.__cause__, file=sys.stderr)


class _Terminated(KeyboardInterrupt):
    """SIGTERM, what job schedulers and ``kill`` send: stopped as Ctrl-C stops a run."""


def _terminated(signum: int, frame: object) -> None:
    raise _Terminated


@contextlib.contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """Inside the block, SIGTERM interrupts the main thread as Ctrl-C does (the store keeps what it received)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the exit status."""
    with _sigterm_interrupts():
        return _main(list(sys.argv[1:] if argv is None else argv))


def _main(arguments: list[str]) -> int:
    verbose = "-v" in arguments or "--verbose" in arguments
    try:
        parser = build_parser()
        args = parser.parse_args(arguments)
        logging.basicConfig(
            level=logging.INFO if args.verbose else logging.WARNING,
            format="%(levelname)s %(name)s: %(message)s",
        )
        if args.command is None:
            parser.print_help()
            return 2
        return int(args.handler(args))
    except ResbenchError as error:
        if verbose:
            _print_cause(error)
        for problem in str(error).splitlines():  # several problems: each its own line, each marked as an error
            print(f"resbench: error: {problem}", file=sys.stderr)
        return error.exit_status
    except OSError as error:  # a disk, permission or file-system failure while running: one line, no traceback
        print(f"resbench: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as interrupt:
        print("resbench: interrupted; the trials received so far are stored: run the same command again to resume",
              file=sys.stderr)
        return 128 + signal.SIGTERM if isinstance(interrupt, _Terminated) else 130


if __name__ == "__main__":
    sys.exit(main())
