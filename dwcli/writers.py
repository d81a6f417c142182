"""Output formats: a registry keyed by extension, and atomic writes.

Every writer turns a ``Transcript`` into text.  Files are written to a temporary name in the
target folder and renamed into place, so a reader (or a crash, or a kill -9) never sees a
half-written subtitle file.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import secrets
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from .errors import UsageError
from .segments import Transcript
from .subtitles import MS_PER_S, SubtitleOptions, shape_cues

_PROBABILITY_DIGITS = 4  # word confidences in JSON
_NEW_FILE_MODE = 0o666  # before the umask, as open() creates files
_TEMPORARY_NAME_BYTES = 4  # random hex in temporary names, so concurrent writers never clash


@dataclass(frozen=True)
class WriterOptions:
    """What shapes the written text beyond the transcript itself."""

    subtitles: SubtitleOptions = SubtitleOptions()


def _vtt_escape(text: str) -> str:
    # A WebVTT payload is markup: "<" opens a tag, "&" an entity, and "-->" may not appear.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _timestamp(milliseconds: int, decimal_marker: str) -> str:
    """``HH:MM:SS.mmm`` with the given decimal marker (hours grow past two digits)."""
    hours, milliseconds = divmod(max(0, milliseconds), 3_600_000)
    minutes, milliseconds = divmod(milliseconds, 60_000)
    seconds, milliseconds = divmod(milliseconds, 1000)
    return f"{hours:02d}:{minutes:02d}:{seconds:02d}{decimal_marker}{milliseconds:03d}"


def write_txt(transcript: Transcript, stream: TextIO, options: WriterOptions) -> None:
    """Plain text, one segment per line."""
    for segment in transcript.segments:
        stream.write(segment.text + "\n")


def write_srt(transcript: Transcript, stream: TextIO, options: WriterOptions) -> None:
    """SubRip through pysrt: numbered cues, ``HH:MM:SS,mmm`` times."""
    import pysrt

    subtitles = pysrt.SubRipFile(eol="\n")
    cues = shape_cues(transcript.segments, options.subtitles, end_s=transcript.duration_s)
    for number, cue in enumerate(cues, start=1):
        subtitles.append(
            pysrt.SubRipItem(
                index=number,
                start=pysrt.SubRipTime.from_ordinal(cue.start_ms),
                end=pysrt.SubRipTime.from_ordinal(cue.end_ms),
                text=cue.text(str),  # SRT has no escapes: players show "<" and "&" as they are
            )
        )
    subtitles.write_into(stream, eol="\n")


def write_vtt(transcript: Transcript, stream: TextIO, options: WriterOptions) -> None:
    """WebVTT: a ``WEBVTT`` header, then cues with ``HH:MM:SS.mmm`` times."""
    stream.write("WEBVTT\n\n")
    for cue in shape_cues(transcript.segments, options.subtitles, end_s=transcript.duration_s):
        start, end = _timestamp(cue.start_ms, "."), _timestamp(cue.end_ms, ".")
        stream.write(f"{start} --> {end}\n{cue.text(_vtt_escape)}\n\n")


def write_tsv(transcript: Transcript, stream: TextIO, options: WriterOptions) -> None:
    """Tab-separated start/end in integer milliseconds and text, like openai-whisper.

    Plain TSV (no quoting): tabs and line breaks in the text become spaces.
    """
    stream.write("start\tend\ttext\n")
    for segment in transcript.segments:
        text = " ".join(segment.text.split())
        stream.write(f"{_ms(segment.start)}\t{_ms(segment.end)}\t{text}\n")


def transcript_json(transcript: Transcript) -> dict:
    """openai-whisper's result schema plus duration, model and the options that shaped it.

    Times are seconds rounded to the millisecond, like every other format.
    """
    segments = []
    for index, segment in enumerate(transcript.segments):
        entry = {"id": index, "start": _seconds(segment.start), "end": _seconds(segment.end), "text": segment.text}
        if segment.words is not None:
            entry["words"] = [
                {
                    "word": word.word,
                    "start": _seconds(word.start),
                    "end": _seconds(word.end),
                    "probability": round(word.probability, _PROBABILITY_DIGITS),
                }
                for word in segment.words
            ]
        segments.append(entry)
    return {
        "text": transcript.text,
        "language": transcript.language,
        "duration": _seconds(transcript.duration_s),
        "model": transcript.model_id,
        "source": transcript.source,
        "options": transcript.options,
        "segments": segments,
    }


def write_json(transcript: Transcript, stream: TextIO, options: WriterOptions) -> None:
    """JSON close to openai-whisper's (``text``, ``language``, ``segments``) plus metadata."""
    json.dump(transcript_json(transcript), stream, ensure_ascii=False, indent=2)
    stream.write("\n")


def _ms(seconds: float) -> int:
    return round(seconds * MS_PER_S)


def _seconds(seconds: float) -> float:
    return _ms(seconds) / MS_PER_S


Writer = Callable[[Transcript, TextIO, WriterOptions], None]
WRITERS: dict[str, Writer] = {
    "txt": write_txt,
    "srt": write_srt,
    "vtt": write_vtt,
    "json": write_json,
    "tsv": write_tsv,
}


def parse_formats(value: str) -> list[str]:
    """``"srt,vtt"`` -> ["srt", "vtt"]; ``"all"`` -> every format."""
    names = [name.strip().lower().lstrip(".") for name in value.split(",") if name.strip()]
    if "all" in names:
        return list(WRITERS)
    unknown = [name for name in names if name not in WRITERS]
    if unknown or not names:
        raise UsageError(
            f"--format {value}: unknown format {', '.join(unknown) or '(none)'}; "
            f"choose from {', '.join(WRITERS)} or all"
        )
    return list(dict.fromkeys(names))


def render(transcript: Transcript, fmt: str, options: WriterOptions) -> str:
    """The text of one format, in memory."""
    buffer = io.StringIO()
    WRITERS[fmt](transcript, buffer, options)
    return buffer.getvalue()


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder and a rename.

    On any failure (a full disk, Ctrl-C) the temporary file is removed and ``path`` keeps
    its old content, if it had one.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
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
    while True:
        temporary = path.with_name(f".{path.name}.{secrets.token_hex(_TEMPORARY_NAME_BYTES)}.part")
        try:
            return temporary, os.open(temporary, flags, _NEW_FILE_MODE)
        except FileExistsError:  # another writer's name: draw again
            continue
