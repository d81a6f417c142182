"""Output formats: a registry keyed by extension, and atomic writes.

Every writer turns a ``Transcript`` into text; ``atomic.write_atomic`` puts it on disk.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Callable
from typing import TextIO

from .errors import UsageError
from .segments import Transcript
from .options import WriterOptions
from .speakers.rttm import write_turns
from .subtitles import MS_PER_S, shape_cues

_PROBABILITY_DIGITS = 4  # word confidences in JSON
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


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
    """Plain text, one segment per line; with speakers, one line per turn, ``SPEAKER_00: ...``."""
    if transcript.speakers is None:
        for segment in transcript.segments:
            stream.write(segment.text + "\n")
        return
    for speaker, segments in _turns(transcript.segments):
        text = " ".join(segment.text for segment in segments)
        stream.write(f"{speaker}: {text}\n" if speaker is not None else text + "\n")


def _turns(segments):
    """Consecutive segments grouped by speaker: (speaker, segments)."""
    groups: list[tuple[str | None, list]] = []
    for segment in segments:
        if groups and groups[-1][0] == segment.speaker:
            groups[-1][1].append(segment)
        else:
            groups.append((segment.speaker, [segment]))
    return groups


def _srt_label(speaker: str | None) -> str:
    return f"[{speaker}] " if speaker is not None else ""


# Columns SRT's speaker label takes on a cue's first line ("[SPEAKER_00] ").
_SRT_LABEL_COLUMNS = len(_srt_label("SPEAKER_00"))


def write_srt(transcript: Transcript, stream: TextIO, options: WriterOptions) -> None:
    """SubRip through pysrt: numbered cues, ``HH:MM:SS,mmm`` times."""
    import pysrt

    subtitles = pysrt.SubRipFile(eol="\n")
    cues = shape_cues(transcript.segments, options.subtitles, end_s=transcript.duration_s,
                      speaker_columns=_SRT_LABEL_COLUMNS)
    for number, cue in enumerate(cues, start=1):
        subtitles.append(
            pysrt.SubRipItem(
                index=number,
                start=pysrt.SubRipTime.from_ordinal(cue.start_ms),
                end=pysrt.SubRipTime.from_ordinal(cue.end_ms),
                # SRT has no escapes: players show "<" and "&" as they are
                text=_srt_label(cue.speaker) + cue.text(str),
            )
        )
    subtitles.write_into(stream, eol="\n")


def write_vtt(transcript: Transcript, stream: TextIO, options: WriterOptions) -> None:
    """WebVTT: a ``WEBVTT`` header, then cues with ``HH:MM:SS.mmm`` times; with speakers,
    each cue opens with a voice tag, ``<v SPEAKER_00>``."""
    stream.write("WEBVTT\n\n")
    for cue in shape_cues(transcript.segments, options.subtitles, end_s=transcript.duration_s):
        start, end = _timestamp(cue.start_ms, "."), _timestamp(cue.end_ms, ".")
        voice = f"<v {cue.speaker}>" if cue.speaker is not None else ""
        stream.write(f"{start} --> {end}\n{voice}{cue.text(_vtt_escape)}\n\n")


def write_tsv(transcript: Transcript, stream: TextIO, options: WriterOptions) -> None:
    """Tab-separated start/end in integer milliseconds and text, like openai-whisper.

    Plain TSV (no quoting): tabs and line breaks in the text become spaces.  With speakers, a
    fourth column, ``speaker``.
    """
    labelled = transcript.speakers is not None
    stream.write("start\tend\ttext\tspeaker\n" if labelled else "start\tend\ttext\n")
    for segment in transcript.segments:
        text = " ".join(segment.text.split())
        speaker = f"\t{segment.speaker or ''}" if labelled else ""
        stream.write(f"{_ms(segment.start)}\t{_ms(segment.end)}\t{text}{speaker}\n")


def transcript_json(transcript: Transcript) -> dict:
    """openai-whisper's result schema plus duration, model and the options that shaped it.

    Times are seconds rounded to the millisecond, like every other format.
    """
    segments = []
    for index, segment in enumerate(transcript.segments):
        entry = {"id": index, "start": _seconds(segment.start), "end": _seconds(segment.end), "text": segment.text}
        if transcript.speakers is not None:
            entry["speaker"] = segment.speaker
        if segment.words is not None:
            entry["words"] = [
                {
                    "word": word.word,
                    "start": _seconds(word.start),
                    "end": _seconds(word.end),
                    "probability": round(word.probability, _PROBABILITY_DIGITS),
                    **({"speaker": word.speaker} if transcript.speakers is not None else {}),
                }
                for word in segment.words
            ]
        segments.append(entry)
    speakers = {}
    if transcript.speakers is not None:
        speakers = {"speakers": [{"label": speaker.label, "talk_time": _seconds(speaker.talk_s)}
                                 for speaker in transcript.speakers]}
    return {
        "text": transcript.text,
        "language": transcript.language,
        "duration": _seconds(transcript.duration_s),
        "model": transcript.model_id,
        "source": transcript.source,
        "options": transcript.options,
        **({"decoding": transcript.decoding} if transcript.decoding else {}),
        **speakers,
        "segments": segments,
    }


def write_json(transcript: Transcript, stream: TextIO, options: WriterOptions) -> None:
    """JSON close to openai-whisper's (``text``, ``language``, ``segments``) plus metadata.

    A file name with bytes that are not UTF-8 (legal on Linux) reaches Python as lone
    surrogates; they are written as ``\\udcXX`` escapes, so the file stays UTF-8 and
    ``os.fsencode(json.load(...)["source"])`` gives back the name's bytes."""
    stream.write(json_text(transcript_json(transcript), indent=2))
    stream.write("\n")


def json_text(value, **options) -> str:
    """``json.dumps`` that keeps non-ASCII text as it is but escapes lone surrogates (file
    names that are not UTF-8), so the result always encodes as UTF-8."""
    text = json.dumps(value, ensure_ascii=False, **options)
    return _LONE_SURROGATE.sub(lambda match: f"\\u{ord(match.group()):04x}", text)


def _ms(seconds: float) -> int:
    return round(seconds * MS_PER_S)


def _seconds(seconds: float) -> float:
    return _ms(seconds) / MS_PER_S


def write_rttm(transcript: Transcript, stream: TextIO, options: WriterOptions) -> None:
    """RTTM, the diarization format: one ``SPEAKER`` line per speaker turn (``--speakers``)."""
    write_turns(transcript.turns or [], transcript.source, stream)


Writer = Callable[[Transcript, TextIO, WriterOptions], None]
WRITERS: dict[str, Writer] = {
    "txt": write_txt,
    "srt": write_srt,
    "vtt": write_vtt,
    "json": write_json,
    "tsv": write_tsv,
    "rttm": write_rttm,
}
# Formats that only speaker labels give: not in "all" without --speakers.
SPEAKER_FORMATS = frozenset({"rttm"})


def parse_formats(value: str, speakers: bool = False) -> list[str]:
    """``"srt,vtt"`` -> ["srt", "vtt"]; ``"all"`` -> every format (rttm with ``speakers``)."""
    names = [name.strip().lower().lstrip(".") for name in value.split(",") if name.strip()]
    if "all" in names:
        return [name for name in WRITERS if speakers or name not in SPEAKER_FORMATS]
    unknown = [name for name in names if name not in WRITERS]
    if unknown or not names:
        raise UsageError(
            f"--format {value}: unknown format {', '.join(unknown) or '(none)'}; "
            f"choose from {', '.join(WRITERS)} or all"
        )
    if not speakers and SPEAKER_FORMATS.intersection(names):
        raise UsageError(f"--format {value}: rttm holds speaker turns: add --speakers")
    return list(dict.fromkeys(names))


def render(transcript: Transcript, fmt: str, options: WriterOptions) -> str:
    """The text of one format, in memory."""
    buffer = io.StringIO()
    WRITERS[fmt](transcript, buffer, options)
    return buffer.getvalue()
