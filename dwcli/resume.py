"""``--skip-existing``: which inputs a rerun (a cron job, a batch killed half-way) can leave alone.

Beside each input's outputs dw keeps a hidden record, ``.<name>.dw.json``: the model and the
options that made them, the formats written, and the source's identity (size, modification
and change times, inode, and a hash of its first and last 64 KiB).  The record is removed before a file's outputs are rewritten and written (atomically)
only after the last of them, so a run stopped at any moment, even by ``kill -9``, leaves for
each file either a record that tells the truth or none; a rerun with ``--skip-existing``
redoes exactly the files without a matching one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from . import __version__
from .atomic import write_atomic
from .discover import MediaFile
# Formats whose text also depends on the cue-shaping options (line width, reading speed...).
_SHAPED_FORMATS = frozenset({"srt", "vtt"})
# TranscribeOptions fields that change how a run goes, not what it writes.  Every other field
# (and every field added later) counts, so a new option can cost a redo but never a stale skip.
_NOT_IN_RESULT = frozenset({"formats", "batch_size", "workers", "to_stdout", "resume", "writer"})
# Decoding options added after records were first written, with the value that does what dw
# did before each existed: a record without one was made that way, and is not redone for it.
_ADDED_DECODING_OPTIONS = {"beam_size": 1, "initial_prompt": None, "condition_on_previous_text": False}
# The same for the run's own options (``TranscribeOptions`` fields).
_ADDED_OPTIONS = {"audio_track": None, "speakers": None}  # (--speakers: a record from before made no labels)
# How much of each end of a source its stamp hashes: a re-encode or a new recording changes
# both ends (headers, first and last frames) while reading 128 KiB costs nothing.
_HASHED_BYTES = 64 * 1024


def _encode(value):
    if dataclasses.is_dataclass(value):
        return dataclasses.asdict(value)
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    return str(value)  # paths, enums


def _plain(value) -> dict:
    """Dataclasses and dicts as plain JSON values, so a fresh value equals one read back."""
    return json.loads(json.dumps(_encode(value) if dataclasses.is_dataclass(value) else value,
                                 sort_keys=True, default=_encode))


@dataclass(frozen=True)
class Recipe:
    """What a file's outputs depend on besides the file: the model and the result options."""

    model: str  # the model id the outputs record (hub id, path or offline:tiny.en)
    options: dict  # decoding, long-form algorithm, dtype, quantization...
    subtitles: dict  # cue shaping; only srt and vtt depend on it

    @classmethod
    def of(cls, model: str, run_options, **settings) -> Recipe:
        """The recipe of a run: its ``TranscribeOptions`` (less what only changes speed or
        where outputs go) and ``settings`` decided with the model, e.g. ``dtype``, ``quantize``."""
        options = {field.name: getattr(run_options, field.name) for field in dataclasses.fields(run_options)
                   if field.name not in _NOT_IN_RESULT}
        # Whether timestamp tokens are decoded follows from the formats (plain text alone
        # needs none), which never count: a txt-only rerun may keep an srt run's text.
        options["decoding"] = {key: value for key, value in dataclasses.asdict(run_options.decoding).items()
                               if key != "timestamps"}
        if run_options.long_form != "sequential":  # only the sequential mode reads previous text
            options["decoding"]["condition_on_previous_text"] = False
        writer = run_options.writer
        options["writer"] = {field.name: getattr(writer, field.name) for field in dataclasses.fields(writer)
                             if field.name != "subtitles"}
        return cls(model, _plain({**options, **settings}), _plain(writer.subtitles))

    def makes_same(self, other: Recipe, formats: Iterable[str]) -> bool:
        """True when outputs in ``formats`` made by ``other`` are what this recipe would make."""
        if (self.model, self.options) != (other.model, other.options):
            return False
        return self.subtitles == other.subtitles or not _SHAPED_FORMATS.intersection(formats)


@dataclass(frozen=True)
class SourceStamp:
    """Who a source is, cheaply: taken before it is read, compared when it has been read (a
    file still being copied in) and by later runs (a file replaced since).

    Size and modification time alone were fooled by new content of the same length with the
    old time put back (``touch -r``, ``rsync -t``, copies that keep times): the change time
    and inode cannot be put back by such tools, and the hash catches a file replaced
    wholesale where those are not kept (some network file systems).  What a mismatch costs
    is a redo (after a chmod, say), never a stale transcript."""

    size: int
    mtime_ns: int
    ctime_ns: int
    inode: int
    digest: str  # blake2b of the first and last _HASHED_BYTES

    def to_json(self) -> dict:
        return {"source_size": self.size, "source_mtime_ns": self.mtime_ns, "source_ctime_ns": self.ctime_ns,
                "source_inode": self.inode, "source_digest": self.digest}

    @classmethod
    def from_json(cls, data: dict) -> SourceStamp | None:
        """None for a record written before dw kept all of it: such a record cannot tell a
        file with its old time put back from the one it was made from, so it matches no file
        and the file is done once more (a redo costs minutes once; a stale skip would keep
        a wrong transcript for ever)."""
        try:
            return cls(int(data["source_size"]), int(data["source_mtime_ns"]), int(data["source_ctime_ns"]),
                       int(data["source_inode"]), str(data["source_digest"]))
        except KeyError:
            return None


@dataclass(frozen=True)
class Record:
    """The content of a record file: how a file's outputs were made, and from which source."""

    recipe: Recipe
    formats: tuple[str, ...]
    source: SourceStamp | None  # None: a record from before stamps held all they do now

    def to_json(self) -> str:
        return json.dumps(
            {
                "dw": __version__,
                "model": self.recipe.model,
                "options": self.recipe.options,
                "subtitles": self.recipe.subtitles,
                "formats": list(self.formats),
                **(self.source.to_json() if self.source else {}),
            },
            indent=2, sort_keys=True,
        ) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Record:
        """Raises ValueError (json.JSONDecodeError included), KeyError or TypeError when malformed."""
        data = json.loads(text)
        options = {**_ADDED_OPTIONS, **data["options"]}
        if isinstance(options.get("decoding"), dict):
            options["decoding"] = {**_ADDED_DECODING_OPTIONS, **options["decoding"]}
        recipe = Recipe(str(data["model"]), options, dict(data["subtitles"]))
        return cls(recipe, tuple(map(str, data["formats"])), SourceStamp.from_json(data))


def record_path(media: MediaFile) -> Path:
    """``subs/talk`` -> ``subs/.talk.dw.json``: hidden, beside the outputs it describes."""
    return media.record_path


def source_stamp(media: MediaFile) -> SourceStamp | None:
    """The input's ``SourceStamp``, or None for standard input, a stream or a file that
    vanished or cannot be read."""
    if media.stream:
        return None
    try:
        with open(media.source, "rb") as stream:
            stat = os.fstat(stream.fileno())
            digest = hashlib.blake2b(digest_size=16)
            digest.update(stream.read(_HASHED_BYTES))
            if stat.st_size > _HASHED_BYTES:
                stream.seek(max(_HASHED_BYTES, stat.st_size - _HASHED_BYTES))
                digest.update(stream.read(_HASHED_BYTES))
    except OSError:
        return None
    return SourceStamp(stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino, digest.hexdigest())


def read_record(media: MediaFile) -> Record | None:
    """The record beside ``media``'s outputs, or None when there is none or it is unreadable."""
    try:
        return Record.from_json(record_path(media).read_text(encoding="utf-8"))
    except (OSError, ValueError, KeyError, TypeError):
        return None


@dataclass(frozen=True)
class Resume:
    """Records how each file's outputs were made; with ``skip_existing``, skips finished files."""

    recipe: Recipe
    skip_existing: bool = False

    def is_done(self, media: MediaFile, formats: Iterable[str]) -> bool:
        """Every output in ``formats`` exists and was made by this recipe from this source."""
        formats = list(formats)
        stamp = source_stamp(media)
        record = read_record(media)
        if stamp is None or record is None:
            return False
        return (
            record.source == stamp
            and set(formats) <= set(record.formats)
            and self.recipe.makes_same(record.recipe, formats)
            and all(media.output_path(fmt).is_file() for fmt in formats)
        )

    def partition(self, files: list[MediaFile], formats: Iterable[str]) -> tuple[list[MediaFile], list[MediaFile]]:
        """(files to transcribe, files to skip); nothing is skipped without ``skip_existing``."""
        formats = list(formats)
        if not self.skip_existing:
            return list(files), []
        todo, done = [], []
        for media in files:
            (done if self.is_done(media, formats) else todo).append(media)
        return todo, done

    def forget(self, media: MediaFile) -> Record | None:
        """Remove ``media``'s record before its outputs are rewritten; return what it said."""
        previous = read_record(media)
        record_path(media).unlink(missing_ok=True)
        return previous

    def remember(self, media: MediaFile, formats: Iterable[str], previous: Record | None = None,
                 stamp: SourceStamp | None = None) -> None:
        """Write ``media``'s record once all its outputs in ``formats`` are in place.

        Formats an earlier run made with the same recipe from the same source stay listed
        while their files exist, so alternating ``--format srt`` and ``--format vtt`` jobs
        do not redo each other's work.  ``stamp`` is the source's stamp from before
        it was read (a file that changed since then is recorded as it was read).
        """
        stamp = stamp or source_stamp(media)
        if stamp is None:
            return
        formats = list(formats)
        if previous is not None and previous.recipe == self.recipe and previous.source == stamp:
            formats += [fmt for fmt in previous.formats
                        if fmt not in formats and media.output_path(fmt).is_file()]
        write_atomic(record_path(media), Record(self.recipe, tuple(formats), stamp).to_json())
