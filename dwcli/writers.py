"""Output formats: a registry keyed by extension, and atomic writes.

Every writer turns a ``Transcript`` into text.  Files are written to a temporary name in the
target folder and renamed into place, so a reader (or a crash, or a kill -9) never sees a
half-written subtitle file.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .errors import UsageError
from .segments import Transcript
from .subtitles import Cue, SubtitleOptions, shape_cues


@dataclass(frozen=True)
class WriterOptions:
    """What shapes the written text beyond the transcript itself."""

    subtitles: SubtitleOptions = SubtitleOptions()


def _timestamp(seconds: float, decimal_marker: str, always_hours: bool = True) -> str:
    milliseconds = max(0, round(seconds * 1000))
    hours, milliseconds = divmod(milliseconds, 3_600_000)
    minutes, milliseconds = divmod(milliseconds, 60_000)
    secs, milliseconds = divmod(milliseconds, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{decimal_marker}{milliseconds:03d}"


def write_txt(transcript: Transcript, stream, options: WriterOptions) -> None:
    """Plain text, one segment per line."""
    for segment in transcript.segments:
        stream.write(segment.text + "\n")


def _cues(transcript: Transcript, options: WriterOptions) -> list[Cue]:
    return shape_cues(transcript.segments, options.subtitles)


def write_srt(transcript: Transcript, stream, options: WriterOptions) -> None:
    """SubRip through pysrt: numbered cues, ``HH:MM:SS,mmm`` times."""
    import pysrt

    subtitles = pysrt.SubRipFile()
    for index, cue in enumerate(_cues(transcript, options), start=1):
        subtitles.append(
            pysrt.SubRipItem(
                index=index,
                start=pysrt.SubRipTime.from_ordinal(round(cue.start * 1000)),
                end=pysrt.SubRipTime.from_ordinal(round(cue.end * 1000)),
                text=cue.text,
            )
        )
    subtitles.write_into(stream)


def write_vtt(transcript: Transcript, stream, options: WriterOptions) -> None:
    """WebVTT: a ``WEBVTT`` header, then cues with ``HH:MM:SS.mmm`` times."""
    stream.write("WEBVTT\n\n")
    for cue in _cues(transcript, options):
        stream.write(f"{_timestamp(cue.start, '.')} --> {_timestamp(cue.end, '.')}\n{cue.text}\n\n")


def write_tsv(transcript: Transcript, stream, options: WriterOptions) -> None:
    """Tab-separated start/end in integer milliseconds and text, like openai-whisper."""
    stream.write("start\tend\ttext\n")
    for segment in transcript.segments:
        text = segment.text.replace("\t", " ")
        stream.write(f"{round(segment.start * 1000)}\t{round(segment.end * 1000)}\t{text}\n")


def transcript_json(transcript: Transcript) -> dict:
    """openai-whisper's result schema plus duration, model and the options that shaped it."""
    segments = []
    for index, segment in enumerate(transcript.segments):
        entry = {"id": index, "start": segment.start, "end": segment.end, "text": segment.text}
        if segment.words is not None:
            entry["words"] = [
                {"word": w.word, "start": round(w.start, 3), "end": round(w.end, 3), "probability": round(w.probability, 4)}
                for w in segment.words
            ]
        segments.append(entry)
    return {
        "text": transcript.text,
        "language": transcript.language,
        "duration": round(transcript.duration_s, 3),
        "model": transcript.model_id,
        "source": transcript.source,
        "options": transcript.options,
        "segments": segments,
    }


def write_json(transcript: Transcript, stream, options: WriterOptions) -> None:
    """JSON close to openai-whisper's (``text``, ``language``, ``segments``) plus metadata."""
    json.dump(transcript_json(transcript), stream, ensure_ascii=False, indent=2)
    stream.write("\n")


Writer = Callable[[Transcript, "io.TextIOBase", WriterOptions], None]
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
    """Write ``text`` to ``path`` through a temporary file in the same folder and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="\n") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
