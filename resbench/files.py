"""The one atomic file write: a temporary file in the target's folder, flushed to disk, renamed over the target.

A reader (or a crash) never sees half a file: until the rename the previous file is whole, after it the new
one. A symlink is written through to its target (the link stays a link). A path that exists and is not a
regular file (a folder, a device such as ``/dev/null``, a FIFO, a socket) is refused as bad input: renaming
over it would replace the device or pipe with a regular file.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

from resbench.errors import UsageError

__all__ = ["check_folder", "replace_atomically", "write_atomically"]

_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"))


def check_folder(folder: Path, what: str) -> None:
    """Refuse, as bad input, a folder that cannot be created or written: a file on its path, no permission,
    a name the file system refuses (too long)."""
    existing = folder
    try:
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
    except OSError as error:
        raise UsageError(f"{what} {folder}: {error.strerror}") from None
    if existing.exists() and not existing.is_dir():
        problem = "is a file" if existing == folder else f"cannot be created: {existing} is a file"
        raise UsageError(f"{what} {folder}: {problem}, not a folder")
    if existing.exists() and not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"{what} {folder}: no permission to write in {existing}")


def _target(path: Path, what: str) -> Path:
    """The file a write to ``path`` replaces: ``path`` itself, or the file a symlink points to.

    A path that exists and is not a regular file is bad input.
    """
    try:
        target = Path(os.path.realpath(path))
        mode = target.stat().st_mode
    except (FileNotFoundError, NotADirectoryError):  # a new file; check_folder says why its folder cannot be made
        return target
    except OSError as error:  # a name the file system refuses (too long), a symlink loop
        raise UsageError(f"{what} {path}: {error.strerror}") from None
    for is_kind, kind in _KINDS:
        if is_kind(mode):
            raise UsageError(f"{what} {path}: is {kind}; name a file")
    return target


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


@contextlib.contextmanager
def replace_atomically(path: Path, what: str = "--output") -> Iterator[Path]:
    """Yield a temporary path beside ``path``'s target; once the block has written it, flush it to disk and
    rename it over the target.

    The folder is created when absent; a folder that cannot be, and a target that is not a regular file, are
    bad input (:class:`UsageError`, ``what`` names the option). On any failure the temporary file is removed,
    the previous file is left as it was, and an :class:`OSError` names ``path``.
    """
    target = _target(path, what)
    check_folder(target.parent, what)
    target.parent.mkdir(parents=True, exist_ok=True)
    descriptor, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(descriptor)
    temporary = Path(name)
    try:
        yield temporary
        _fsync(temporary)
        temporary.chmod(0o666 & ~_umask())  # mkstemp makes 0600 files; written files are for sharing
        os.replace(temporary, target)
    except BaseException as error:
        temporary.unlink(missing_ok=True)
        if isinstance(error, OSError) and error.filename is None:  # a failed write names no file
            raise OSError(error.errno, error.strerror, str(path)) from None
        raise


def write_atomically(path: Path, data: str | bytes, what: str = "--output") -> None:
    """Replace ``path``'s content with ``data`` (text is written as UTF-8) in one atomic step; see
    :func:`replace_atomically`."""
    with replace_atomically(path, what) as temporary:
        mode, encoding = ("w", "utf-8") if isinstance(data, str) else ("wb", None)
        with os.fdopen(os.open(temporary, os.O_WRONLY | os.O_TRUNC), mode, encoding=encoding) as handle:
            handle.write(data)
