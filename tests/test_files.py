"""The one atomic write: whole files or none, through symlinks, never over a device, pipe or folder."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest

from resbench import files
from resbench.errors import UsageError
from resbench.files import replace_atomically, write_atomically


def test_text_and_bytes_replace_the_file_whole(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "board.md"
    write_atomically(path, "first ü\n")
    assert path.read_text(encoding="utf-8") == "first ü\n"
    write_atomically(path, b"\x00second")
    assert path.read_bytes() == b"\x00second"
    assert sorted(item.name for item in path.parent.iterdir()) == ["board.md"]


def test_the_file_is_flushed_to_disk_before_the_rename(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "board.md"
    events: list[str] = []
    fsync, replace = os.fsync, os.replace
    monkeypatch.setattr(files.os, "fsync", lambda descriptor: (events.append("fsync"), fsync(descriptor))[1])
    monkeypatch.setattr(files.os, "replace", lambda *args: (events.append("rename"), replace(*args))[1])
    write_atomically(path, "text")
    assert events == ["fsync", "rename"]


def test_the_new_file_follows_the_umask(tmp_path: Path) -> None:
    mask = os.umask(0o022)
    try:
        write_atomically(tmp_path / "board.md", "text")
    finally:
        os.umask(mask)
    assert stat.S_IMODE((tmp_path / "board.md").stat().st_mode) == 0o644


def test_a_symlink_is_written_through_to_its_target(tmp_path: Path) -> None:
    target = tmp_path / "real" / "board.md"
    target.parent.mkdir()
    target.write_text("old", encoding="utf-8")
    link = tmp_path / "board.md"
    link.symlink_to(target)
    write_atomically(link, "new")
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert target.read_text(encoding="utf-8") == "new"
    assert sorted(item.name for item in target.parent.iterdir()) == ["board.md"]


def test_a_dangling_symlink_creates_its_target(tmp_path: Path) -> None:
    link = tmp_path / "board.md"
    link.symlink_to(tmp_path / "made.md")
    write_atomically(link, "new")
    assert link.is_symlink() and (tmp_path / "made.md").read_text(encoding="utf-8") == "new"


@pytest.mark.skipif(not os.path.exists("/dev/null"), reason="needs /dev/null")
def test_a_character_device_is_refused_in_one_line() -> None:
    with pytest.raises(UsageError, match=r"^--output /dev/null: is a character device; name a file$"):
        write_atomically(Path("/dev/null"), "text")
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


def test_a_fifo_and_a_symlink_to_it_are_refused(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    link = tmp_path / "link"
    link.symlink_to(fifo)
    for path in (fifo, link):
        with pytest.raises(UsageError, match="is a FIFO"):
            write_atomically(path, "text", "--report")
    assert stat.S_ISFIFO(fifo.stat().st_mode) and link.is_symlink()
    assert sorted(item.name for item in tmp_path.iterdir()) == ["link", "pipe"]


def test_a_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="is a folder; name a file"):
        write_atomically(tmp_path, "text")


def test_a_folder_that_cannot_be_made_is_refused(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("", encoding="utf-8")
    with pytest.raises(UsageError, match="cannot be created"):
        write_atomically(tmp_path / "file" / "sub" / "board.md", "text")


def test_a_failed_write_keeps_the_previous_file_and_names_it(tmp_path: Path) -> None:
    path = tmp_path / "figure.svg"
    path.write_text("previous", encoding="utf-8")
    with pytest.raises(OSError, match=f"No space left on device: '{path}'"), replace_atomically(path) as temporary:
        temporary.write_text("half", encoding="utf-8")
        raise OSError(errno.ENOSPC, "No space left on device")
    assert path.read_text(encoding="utf-8") == "previous"
    assert sorted(item.name for item in tmp_path.iterdir()) == ["figure.svg"]


def test_an_interrupted_write_leaves_no_temporary_file(tmp_path: Path) -> None:
    path = tmp_path / "board.md"
    with pytest.raises(KeyboardInterrupt), replace_atomically(path) as temporary:
        temporary.write_text("half", encoding="utf-8")
        raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []
