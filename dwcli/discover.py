"""Command-line paths -> the media files to transcribe and where their outputs go."""

from __future__ import annotations

import glob
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from .audio import STDIN, STDIN_LABEL

# What a folder walk picks up; a file named explicitly is taken whatever its extension.
MEDIA_EXTENSIONS = frozenset(
    """
    wav wave flac mp3 m4a aac ogg oga opus webm weba mp4 m4v mkv mka mov avi wmv wma aiff aif
    aifc caf amr 3gp 3g2 mpg mpeg mp2 ts mts m2ts ac3 eac3 dts spx au snd ra flv vob mxf
    """.split()
)
STDIN_STEM = "stdin"  # output name for "-" when written to a folder


@dataclass(frozen=True)
class MediaFile:
    """One input and the path (without extension) its outputs are written to."""

    source: str  # a path, or "-" for standard input
    output_stem: Path

    @property
    def is_stdin(self) -> bool:
        return self.source == STDIN

    @property
    def label(self) -> str:
        """The input as messages name it."""
        return STDIN_LABEL if self.is_stdin else self.source

    def output_path(self, extension: str) -> Path:
        return self.output_stem.with_name(f"{self.output_stem.name}.{extension}")


@dataclass(frozen=True)
class Discovery:
    """The files found, and the named paths that do not exist (reported as failures)."""

    files: list[MediaFile]
    missing: list[str]


def _walk(folder: Path) -> list[Path]:
    return sorted(
        path for path in folder.rglob("*")
        if path.is_file() and path.suffix.lower().lstrip(".") in MEDIA_EXTENSIONS
        and not any(part.startswith(".") for part in path.relative_to(folder).parts)
    )


def _expand(argument: str) -> list[tuple[Path, Path | None]]:
    """(file, root it was found under or None) for one argument; [] if nothing matches."""
    path = Path(argument).expanduser()
    if path.is_dir():
        return [(found, path) for found in _walk(path)]
    if path.is_file():
        return [(path, None)]
    if glob.has_magic(argument):  # a quoted glob the shell did not expand
        matches = sorted(glob.glob(argument, recursive=True))
        return [item for match in matches for item in _expand(match)]
    return []


def discover(arguments: Iterable[str], output_dir: Path | None = None) -> Discovery:
    """Expand files, folders (recursively), globs and "-" into de-duplicated media files.

    Outputs go beside each input, or under ``output_dir`` with the tree below each named
    folder mirrored.  Two inputs that would share an output name (``talk.mp3`` and
    ``talk.wav``) keep their extension in it (``talk.mp3.srt``) instead of overwriting.
    """
    found: list[tuple[str, Path | None, Path | None]] = []  # (source, file, root)
    seen: set[Path | str] = set()
    missing: list[str] = []
    for argument in arguments:
        if argument == STDIN:
            if STDIN not in seen:
                seen.add(STDIN)
                found.append((STDIN, None, None))
            continue
        expanded = _expand(argument)
        if not expanded:
            missing.append(argument)
        for file, root in expanded:
            key = file.resolve()
            if key not in seen:
                seen.add(key)
                found.append((str(file), file, root))

    def stem(file: Path | None, root: Path | None) -> Path:
        if file is None:
            return (output_dir or Path(".")) / STDIN_STEM
        if output_dir is None:
            return file.with_suffix("")
        relative = file.relative_to(root) if root is not None else Path(file.name)
        return output_dir / relative.with_suffix("")

    stems = [stem(file, root) for _, file, root in found]
    counts: dict[Path, int] = {}
    for candidate in stems:
        counts[candidate] = counts.get(candidate, 0) + 1
    files = []
    for (source, file, _), candidate in zip(found, stems):
        if counts[candidate] > 1 and file is not None:
            candidate = candidate.with_name(file.name)
        files.append(MediaFile(source, candidate))
    return Discovery(files, missing)


def read_path_list(stream, nul_separated: bool) -> list[str]:
    """Paths from a --from-list stream: one per line, or NUL-separated (``find -print0``)."""
    data = stream.read()
    if isinstance(data, bytes):
        data = data.decode("utf-8", errors="surrogateescape")
    separator = "\0" if nul_separated else "\n"
    return [item.rstrip("\r") if not nul_separated else item for item in data.split(separator) if item.strip()]
