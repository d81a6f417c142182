"""Atomic writes: whole files or none, and no temporary files left behind."""

from __future__ import annotations

import errno
import os
import subprocess
from pathlib import Path

import pytest

from dwcli import atomic
from dwcli.atomic import write_atomic


def test_write_atomic_writes_the_text_and_leaves_nothing_else(tmp_path):
    target = tmp_path / "out" / "talk.srt"
    write_atomic(target, "première ligne\n")
    assert target.read_bytes() == "première ligne\n".encode("utf-8")
    assert os.listdir(target.parent) == ["talk.srt"]
    umask = os.umask(0)
    os.umask(umask)
    # Readable like any new file (tempfile.mkstemp would leave it private: 0600).
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask


def test_write_atomic_replaces_a_file_and_keeps_its_permissions(tmp_path):
    target = tmp_path / "talk.srt"
    target.write_text("old")
    target.chmod(0o640)
    write_atomic(target, "new")
    assert target.read_text() == "new"
    assert target.stat().st_mode & 0o777 == 0o640
    assert os.listdir(tmp_path) == ["talk.srt"]


class _DiskFullMidWrite:
    """A file stream that writes half of what it is given, then fails like a full disk."""

    def __init__(self, stream, seen: list):
        self.stream, self.seen = stream, seen

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.stream.close()

    def write(self, text: str) -> int:
        self.stream.write(text[: len(text) // 2])
        self.stream.flush()
        self.seen.append(os.fstat(self.stream.fileno()).st_size)  # the partial temporary file
        raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize("existing", [None, "the previous subtitles\n"])
def test_a_write_failing_midway_leaves_no_partial_file_and_no_temporary(tmp_path, monkeypatch, existing):
    target = tmp_path / "talk.vtt"
    if existing is not None:
        target.write_text(existing)
    real_fdopen, seen = os.fdopen, []
    monkeypatch.setattr(
        atomic.os, "fdopen", lambda *args, **kwargs: _DiskFullMidWrite(real_fdopen(*args, **kwargs), seen)
    )
    with pytest.raises(OSError, match="No space left"):
        write_atomic(target, "WEBVTT\n\n00:00.000 --> 00:01.000\nword\n" * 200)
    assert seen and seen[0] > 0, "the failure came after part of the text was written"
    if existing is None:
        assert os.listdir(tmp_path) == []
    else:
        assert os.listdir(tmp_path) == ["talk.vtt"] and target.read_text() == existing


def test_an_interrupt_before_the_rename_leaves_no_temporary(tmp_path, monkeypatch):
    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(atomic.os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_atomic(tmp_path / "talk.srt", "text")
    assert os.listdir(tmp_path) == []


def test_write_atomic_draws_a_new_temporary_name_when_one_is_taken(tmp_path, monkeypatch):
    names = iter(["taken", "taken", "free"])
    monkeypatch.setattr(atomic.secrets, "token_hex", lambda size: next(names))
    (tmp_path / ".talk.srt.taken.part").write_text("another writer's")
    write_atomic(tmp_path / "talk.srt", "text")
    assert (tmp_path / "talk.srt").read_text() == "text"
    assert sorted(os.listdir(tmp_path)) == [".talk.srt.taken.part", "talk.srt"]


def _temporary(folder: Path, name: str, host: str, pid: int) -> Path:
    path = folder / f".{name}.{host}-{pid}-0badcafe.part"
    path.write_text("half a subtitle file")
    return path


def test_temporaries_of_killed_writers_are_removed_and_no_others(tmp_path, monkeypatch):
    monkeypatch.setattr(atomic, "_swept_folders", set())
    dead_pid = _dead_pid()
    abandoned = _temporary(tmp_path, "a.srt", atomic._HOST_TAG, dead_pid)
    running = _temporary(tmp_path, "b.srt", atomic._HOST_TAG, os.getppid())  # a live process
    other_host = _temporary(tmp_path, "c.srt", "ffffff" if atomic._HOST_TAG != "ffffff" else "000000", dead_pid)
    users_file = tmp_path / ".notes.part"
    users_file.write_text("not dw's")
    write_atomic(tmp_path / "talk.srt", "text")
    assert not abandoned.exists()
    assert running.exists() and other_host.exists() and users_file.exists()
    assert (tmp_path / "talk.srt").read_text() == "text"


def _dead_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid
