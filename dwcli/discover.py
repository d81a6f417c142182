"""Command-line paths -> the media files to transcribe and where their outputs go.

Every input gets an output name no other input has, inside ``--output-dir`` (or beside it):
two inputs whose names clash keep their extension (``talk.mp3.srt``, ``talk.wav.srt``), and
inputs that still clash (``a/talk.flac`` and ``b/talk.flac`` under one ``-o``) keep the
folders that tell them apart (``out/a/talk.flac.srt``).  A name that would leave the output
folder (``..wav``) keeps its full name, and so does one whose output (or record) would be an
input of the run itself (a WAV named ``notes.txt`` transcribed to txt: ``notes.txt.txt``);
where no name is safe the input is refused, so no input is ever written over.  Paths that
cannot be inputs are reported with what they are: missing, a folder without media, a broken
or looping link (named, or found in a folder), unreadable, too long.
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
# FFmpeg's demuxers cannot give this list: they claim text, subtitle, image and playlist
# extensions (txt, sub, xml, jpg, m3u8) and miss common media ones FFmpeg reads by probing
# the content (ogv, opus, mpga, 3gpp).  So: the audio and video containers people keep whose
# audio PyAV's FFmpeg decodes (elementary video streams, DRM'd m4p and formats without a
# decoder in its build, such as DSD and OptimFROG, left out), and never one of dw's own
# output formats (tests/test_discover.py).
MEDIA_EXTENSIONS = frozenset(
    """
    wav wave bwf rf64 w64 flac mp3 mp2 mp1 mpa mpga m2a aac adts m4a m4b m4r f4a f4b ogg oga ogx
    opus spx webm weba mka wma asf aiff aif aifc caf amr awb 3ga ac3 eac3 ec3 dts dtshd thd mlp
    au snd ra rm ape wv tta tak mpc voc shn gsm sln oma aa3 aax
    mp4 m4v mkv mk3d mov qt avi divx wmv flv f4v ogv ogm 3gp 3gpp 3g2 3gpp2 mpg mpeg mpe vob ts
    mts m2t m2ts trp mxf dv dif nut rmvb wtv dvr-ms
    """.split()
)
STDIN = "-"  # the input name that means "read the media from standard input"
STDIN_LABEL = "<stdin>"  # how messages name it
RECORD_SUFFIX = ".dw.json"  # the --skip-existing record beside a file's outputs (resume.py)
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

    @property
    def record_path(self) -> Path:
        """``subs/talk`` -> ``subs/.talk.dw.json``: hidden, beside the outputs it describes."""
        return self.output_stem.with_name(f".{self.output_stem.name}{RECORD_SUFFIX}")


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


def _walk(folder: Path) -> tuple[list[Path], list[Unusable]]:
    """The media files under ``folder`` (hidden folders and files left out), and the links
    among them that lead nowhere (broken, or a loop): said like named ones, since a cron job
    that skips them in silence would never tell anyone its input is gone."""
    files, broken = [], []
    for path in sorted(folder.rglob("*")):
        if (path.suffix.lower().lstrip(".") not in MEDIA_EXTENSIONS
                or any(part.startswith(".") for part in path.relative_to(folder).parts)):
            continue
        if path.is_file():
            files.append(path)
        elif path.is_symlink() and not path.exists():
            broken.append(Unusable(str(path), _why_not(path)))
    return files, broken


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


def _expand(argument: str) -> tuple[list[tuple[Path, Path | None]], list[Unusable]]:
    """(file, root it was found under or None) for one argument, and the paths it names
    that cannot be inputs (itself, or links in its folder that lead nowhere)."""
    path = Path(argument).expanduser()
    try:
        if path.is_dir():
            files, broken = _walk(path)
            if not files and not broken:
                return [], [Unusable(argument, "folder with no media files in it")]
            return [(file, path) for file in files], broken
        if path.is_file() or _is_stream(path):
            return [(path, None)], []
    except OSError as error:  # a name too long, a folder that cannot be read
        reason = "file name too long" if error.errno == errno.ENAMETOOLONG else (error.strerror or str(error)).lower()
        return [], [Unusable(argument, reason)]
    if glob.has_magic(argument) and not path.exists():  # a quoted glob the shell did not expand
        expanded = [_expand(match) for match in sorted(glob.glob(argument, recursive=True))]
        found = [item for files, _ in expanded for item in files]
        if found:
            return found, [problem for _, problems in expanded for problem in problems]
    return [], [Unusable(argument, _why_not(path))]


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


def discover(arguments: Iterable[str], output_dir: Path | None = None, formats: Iterable[str] = ()) -> Discovery:
    """Expand files, folders (recursively), globs, streams and "-" into de-duplicated media
    files with output names no two share, and whose outputs in ``formats`` (and record) are
    none of the inputs (see the module docstring)."""
    found: list[tuple[str, Path | None, Path | None]] = []  # (source, file, root)
    seen: set = set()
    unusable: list[Unusable] = []
    for argument in arguments:
        if argument == STDIN:
            if STDIN not in seen:
                seen.add(STDIN)
                found.append((STDIN, None, None))
            continue
        expanded, problems = _expand(argument)
        unusable += problems
        for file, root in expanded:
            key = _identity(file)
            if key not in seen:
                seen.add(key)
                found.append((str(file), file, root))
    stems, refused = _unique_stems(found, output_dir, tuple(formats))
    files = [MediaFile(source, stem, stream=source == STDIN or _is_stream(file))
             for index, ((source, file, _), stem) in enumerate(zip(found, stems)) if index not in refused]
    unusable += [Unusable(found[index][0], f"every name for its outputs would write over an input of this run "
                                           f"({display_name(str(refused[index]))}); rename it or use --output-dir")
                 for index in sorted(refused)]
    return Discovery(files, unusable)


def _unique_stems(found, output_dir: Path | None, formats: tuple[str, ...]) -> tuple[list[Path], dict[int, Path]]:
    """Each input's output stem: its name, then its full name where two clash or where its
    outputs would be an input, then the folders that tell clashing inputs apart; and the
    inputs refused, with the input their outputs would write over, where no name is safe."""
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

    inputs = _inodes(file for _, file, _ in found if file is not None)
    levels = [0] * len(found)
    refused: dict[int, Path] = {}
    while True:
        stems = [candidate(file, root, level) for (_, file, root), level in zip(found, levels)]
        owners: dict[str, list[int]] = {}
        for index, stem in enumerate(stems):
            if index not in refused:
                owners.setdefault(os.path.normcase(str(stem)), []).append(index)
        clashes = [indices for indices in owners.values() if len(indices) > 1]
        overwriting = {index: victim for index, stem in enumerate(stems) if index not in refused
                       for victim in [_overwritten_input(stem, formats, inputs)] if victim is not None}
        if not clashes and not overwriting:
            return stems, refused
        changed = False
        for index in [index for indices in clashes for index in indices] + list(overwriting):
            file = found[index][1]
            if file is not None and levels[index] < len(_parents(file)) + 1:
                levels[index] += 1
                changed = True
            elif index in overwriting and index not in refused:
                refused[index] = overwriting[index]
                changed = True
        if not changed:  # cannot happen for distinct files; never loop
            return stems, refused


def _inodes(files: Iterable[Path]) -> set[tuple[int, int]]:
    """(device, inode) of each file, links followed: the same file by any name."""
    identities = set()
    for file in files:
        try:
            info = os.stat(file)
        except OSError:
            continue
        identities.add((info.st_dev, info.st_ino))
    return identities


def _overwritten_input(stem: Path, formats: tuple[str, ...], inputs: set[tuple[int, int]]) -> Path | None:
    """The first output of ``stem`` in ``formats`` (or its record) that is one of ``inputs``,
    else None."""
    if not formats:
        return None
    outputs = [stem.with_name(f"{stem.name}.{fmt}") for fmt in formats]
    for path in [*outputs, stem.with_name(f".{stem.name}{RECORD_SUFFIX}")]:
        try:
            info = os.stat(path)
        except OSError:
            continue
        if (info.st_dev, info.st_ino) in inputs:
            return path
    return None


def output_dir_problem(folder: Path) -> str | None:
    """Why ``folder`` cannot be the output folder (it, or a folder above it, is a file or a
    broken link), or None.  Said before any work: else every input is transcribed first and
    then fails to be written."""
    for path in (folder, *folder.parents):
        if not os.path.lexists(path):
            continue
        if path.is_dir():
            return None
        what = "a broken symbolic link" if path.is_symlink() and not path.exists() else "a file, not a folder"
        return what if path == folder else f"{display_name(str(path))} is {what}"
    return None


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
