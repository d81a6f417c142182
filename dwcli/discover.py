"""Command-line paths -> the media files to transcribe and where their outputs go.

Every input gets an output name no other input has, inside ``--output-dir`` (or beside it):
two inputs whose names clash keep their extension (``talk.mp3.srt``, ``talk.wav.srt``), and
inputs that still clash (``a/talk.flac`` and ``b/talk.flac`` under one ``-o``) keep the
folders that tell them apart (``out/a/talk.flac.srt``).  A name that would leave the output
folder (``..wav``) keeps its full name.  Paths that cannot be inputs are reported with what
they are: missing, a folder without media, a broken or looping link, unreadable, too long.
"""

from __future__ import annotations

import errno
import glob
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path


# What a folder walk picks up; a file named explicitly is taken whatever its extension.
MEDIA_EXTENSIONS = frozenset(
    """
    wav wave flac mp3 m4a aac ogg oga opus webm weba mp4 m4v mkv mka mov avi wmv wma aiff aif
    aifc caf amr 3gp 3g2 mpg mpeg mp2 ts mts m2ts ac3 eac3 dts spx au snd ra flv vob mxf
    """.split()
)
STDIN = "-"  # the input name that means "read the media from standard input"
STDIN_LABEL = "<stdin>"  # how messages name it
STDIN_STEM = "stdin"  # output name for "-" when written to a folder


def display_name(name: str) -> str:
    """A path as messages show it: as it is, unless it holds what would break a log line (a
    newline, a control character) or bytes that are not UTF-8; then quoted, with those
    escaped (``'new\\nline.wav'``, ``'caf\\xe9.flac'``), so every event stays one line."""
    if name.isprintable() and not any("\udc80" <= char <= "\udcff" for char in name):
        return name
    text = os.fsencode(name).decode("utf-8", errors="backslashreplace")  # bytes not UTF-8: \xe9
    return "'" + "".join(char if char.isprintable() else char.encode("unicode_escape").decode("ascii")
                         for char in text) + "'"


@dataclass(frozen=True)
class MediaFile:
    """One input and the path (without extension) its outputs are written to."""

    source: str  # a path, or "-" for standard input
    output_stem: Path
    stream: bool = False  # read once, front to back: standard input, a FIFO, a process substitution

    @property
    def is_stdin(self) -> bool:
        return self.source == STDIN

    @property
    def label(self) -> str:
        """The input as messages name it."""
        return STDIN_LABEL if self.is_stdin else display_name(self.source)

    def output_path(self, extension: str) -> Path:
        return self.output_stem.with_name(f"{self.output_stem.name}.{extension}")


@dataclass(frozen=True)
class Unusable:
    """A named path that is not an input, and why."""

    argument: str
    reason: str

    @property
    def message(self) -> str:
        return f"{display_name(self.argument)}: {self.reason}"


@dataclass(frozen=True)
class Discovery:
    """The files found, and the named paths that cannot be inputs (reported as failures)."""

    files: list[MediaFile]
    unusable: list[Unusable]


def _walk(folder: Path) -> list[Path]:
    return sorted(
        path for path in folder.rglob("*")
        if path.is_file() and path.suffix.lower().lstrip(".") in MEDIA_EXTENSIONS
        and not any(part.startswith(".") for part in path.relative_to(folder).parts)
    )


def _why_not(path: Path) -> str:
    """What a path that is neither a media file nor a folder of them is."""
    try:
        info = os.lstat(path)
    except OSError as error:
        if error.errno == errno.ENAMETOOLONG:
            return "file name too long"
        if error.errno == errno.EACCES:
            return "permission denied"
        return "no such file or directory"
    if stat.S_ISLNK(info.st_mode):
        try:
            os.stat(path)
        except OSError as error:
            return "symbolic link loop" if error.errno == errno.ELOOP else "broken symbolic link"
    if stat.S_ISDIR(os.stat(path).st_mode):
        return "folder with no media files in it"
    return "not a regular file, folder or stream"


def _is_stream(path: Path) -> bool:
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISCHR(mode) or stat.S_ISSOCK(mode)


def _expand(argument: str) -> tuple[list[tuple[Path, Path | None]], str | None]:
    """(file, root it was found under or None) for one argument, or the reason it is none."""
    path = Path(argument).expanduser()
    try:
        if path.is_dir():
            found = [(file, path) for file in _walk(path)]
            return found, None if found else "folder with no media files in it"
        if path.is_file() or _is_stream(path):
            return [(path, None)], None
    except OSError as error:  # a name too long, a folder that cannot be read
        return [], "file name too long" if error.errno == errno.ENAMETOOLONG else (error.strerror or str(error)).lower()
    if glob.has_magic(argument) and not path.exists():  # a quoted glob the shell did not expand
        matches = sorted(glob.glob(argument, recursive=True))
        found = [item for match in matches for item in _expand(match)[0]]
        if found:
            return found, None
    return [], _why_not(path)


def _safe_stem(file: Path) -> str:
    """The file's name without its extension, unless that would not name a file of the
    folder (``..wav`` -> ``..``): then the whole name."""
    stem = file.stem
    return file.name if stem in ("", ".", "..") else stem


def _identity(file: Path) -> object:
    try:
        return file.resolve()
    except (OSError, RuntimeError):  # a loop, a name too long: the path itself
        return file.absolute()


def discover(arguments: Iterable[str], output_dir: Path | None = None) -> Discovery:
    """Expand files, folders (recursively), globs, streams and "-" into de-duplicated media
    files with output names no two share (see the module docstring)."""
    found: list[tuple[str, Path | None, Path | None]] = []  # (source, file, root)
    seen: set = set()
    unusable: list[Unusable] = []
    for argument in arguments:
        if argument == STDIN:
            if STDIN not in seen:
                seen.add(STDIN)
                found.append((STDIN, None, None))
            continue
        expanded, reason = _expand(argument)
        if reason is not None:
            unusable.append(Unusable(argument, reason))
        for file, root in expanded:
            key = _identity(file)
            if key not in seen:
                seen.add(key)
                found.append((str(file), file, root))
    stems = _unique_stems(found, output_dir)
    files = [MediaFile(source, stem, stream=source == STDIN or _is_stream(file))
             for (source, file, _), stem in zip(found, stems)]
    return Discovery(files, unusable)


def _unique_stems(found, output_dir: Path | None) -> list[Path]:
    """Each input's output stem: its name, then its full name where two clash, then the
    folders that tell clashing inputs apart."""
    base = output_dir
    def candidate(file: Path | None, root: Path | None, level: int) -> Path:
        if file is None:
            return (base or Path(".")) / STDIN_STEM
        name = _safe_stem(file) if level == 0 else file.name
        if base is None:
            return file.parent / name
        relative_parent = file.parent.relative_to(root) if root is not None else Path()
        if level >= 2:
            relative_parent = _distinguishing_parent(file, level - 1)
        return base / relative_parent / name

    levels = [0] * len(found)
    while True:
        stems = [candidate(file, root, level) for (_, file, root), level in zip(found, levels)]
        owners: dict[str, list[int]] = {}
        for index, stem in enumerate(stems):
            owners.setdefault(os.path.normcase(str(stem)), []).append(index)
        clashes = [indices for indices in owners.values() if len(indices) > 1]
        if not clashes:
            return stems
        changed = False
        for indices in clashes:
            for index in indices:
                file = found[index][1]
                if file is not None and levels[index] < len(_parents(file)) + 1:
                    levels[index] += 1
                    changed = True
        if not changed:  # cannot happen for distinct files; never loop
            return stems


def _parents(file: Path) -> list[str]:
    return list(file.resolve(strict=False).parent.parts[1:])


def _distinguishing_parent(file: Path, depth: int) -> Path:
    """The last ``depth`` folders above ``file`` (absolute path), as a relative path."""
    parts = _parents(file)
    return Path(*parts[-depth:]) if parts and depth > 0 else Path()


def read_path_list(stream, nul_separated: bool) -> list[str]:
    """Paths from a --from-list stream: one per line, or NUL-separated (``find -print0``)."""
    data = stream.read()
    if isinstance(data, bytes):
        data = data.decode("utf-8", errors="surrogateescape")
    separator = "\0" if nul_separated else "\n"
    return [item.rstrip("\r") if not nul_separated else item for item in data.split(separator) if item.strip()]
