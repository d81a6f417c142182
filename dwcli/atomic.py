"""Atomic file writes: a temporary name in the target folder, then a rename.

A reader (or a crash, or a kill -9) never sees a half-written output.  A process killed
between creating its temporary file and renaming it leaves that file behind; the next dw
that writes into the same folder removes it, once it can tell the writer is gone.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import secrets
import socket
import stat
from pathlib import Path

_NEW_FILE_MODE = 0o666  # before the umask, as open() creates files
_TEMPORARY_NAME_BYTES = 4  # random hex in temporary names, so concurrent writers never clash
# Temporary names carry the writing host and process, so a later run can tell an abandoned
# file (its writer no longer runs) from one being written right now by another dw.  On a
# shared folder (NFS) a process id says nothing about another host's processes: only this
# host's files are ever judged.
_HOST_TAG = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:6]
_TEMPORARY_NAME = re.compile(r"\..+\.(?P<host>[0-9a-f]{6})-(?P<pid>\d+)-[0-9a-f]+\.part")
_swept_folders: set[Path] = set()  # each folder is looked through once per process


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder and a rename.

    On any failure (a full disk, Ctrl-C) the temporary file is removed and ``path`` keeps
    its old content, if it had one.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    _sweep_abandoned_temporaries(path.parent)
    temporary, handle = _create_temporary(path)
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="\n") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        with contextlib.suppress(FileNotFoundError):
            # Replacing a file keeps its permissions, as an editor saving it would.
            os.chmod(temporary, stat.S_IMODE(path.stat().st_mode))
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def _create_temporary(path: Path) -> tuple[Path, int]:
    """A new hidden file beside ``path`` and its descriptor.

    Not ``tempfile.mkstemp``: its files are private (mode 0600), and after the rename the
    subtitles would be unreadable to anyone else, a web server for one; ``os.open`` with
    mode 0666 lets the umask decide, as for any new file.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    # The temporary name adds ~25 bytes; where that would pass the folder's name limit (a
    # legal 240-byte name), the final name is replaced by its digest in it.
    shown = path.name
    if len(os.fsencode(f".{shown}.{_HOST_TAG}-{os.getpid()}-{'0' * 2 * _TEMPORARY_NAME_BYTES}.part")) > _name_max(path.parent):
        shown = hashlib.sha256(os.fsencode(path.name)).hexdigest()[:16]
    while True:
        token = secrets.token_hex(_TEMPORARY_NAME_BYTES)
        temporary = path.with_name(f".{shown}.{_HOST_TAG}-{os.getpid()}-{token}.part")
        try:
            return temporary, os.open(temporary, flags, _NEW_FILE_MODE)
        except FileExistsError:  # another writer's name: draw again
            continue


def _name_max(folder: Path) -> int:
    try:
        return os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError):
        return 255


def _sweep_abandoned_temporaries(folder: Path) -> None:
    """Remove temporary files that a dw process of this host left behind when it was killed."""
    if folder in _swept_folders:
        return
    _swept_folders.add(folder)
    with contextlib.suppress(OSError), os.scandir(folder) as entries:
        for entry in entries:
            match = _TEMPORARY_NAME.fullmatch(entry.name)
            if match and match["host"] == _HOST_TAG and not _process_runs(int(match["pid"])):
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)


def _process_runs(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except OSError:  # exists but is another user's (EPERM), or the platform cannot tell
        return True
    return True
