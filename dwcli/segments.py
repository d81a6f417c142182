"""Segments and transcripts: Whisper tokens -> timed text, windows -> one file's timeline."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

SECONDS_PER_TIMESTAMP = 0.02  # one timestamp token = 20 ms
# Whisper sometimes loops on a phrase; more than this many identical consecutive segments
# is a loop, not speech, and the repeats are dropped.
_MAX_REPEATS = 2


@dataclass
class Word:
    """One word with its time span (seconds in the file) and Whisper's confidence."""

    start: float
    end: float
    word: str  # as Whisper spells it, with its leading space
    probability: float
    speaker: str | None = None  # with --speakers


@dataclass
class Segment:
    """A stretch of speech: start/end seconds and its text (leading space stripped)."""

    start: float
    end: float
    text: str
    words: list[Word] | None = None  # with --word-timestamps
    tokens: list[int] = field(default_factory=list, repr=False, compare=False)  # text tokens
    speaker: str | None = None  # with --speakers: who says it

    def span_words(self) -> None:
        """Start at the first word and end at the last (word times are sharper than
        timestamp tokens); a segment without words keeps its times."""
        if self.words:
            self.start, self.end = self.words[0].start, max(self.words[-1].end, self.words[0].start)

    def shifted(self, offset_s: float) -> Segment:
        words = None
        if self.words is not None:
            words = [Word(w.start + offset_s, w.end + offset_s, w.word, w.probability) for w in self.words]
        return Segment(self.start + offset_s, self.end + offset_s, self.text, words, self.tokens)


@dataclass
class Transcript:
    """Everything the writers need about one transcribed file."""

    source: str  # the input as the user named it
    duration_s: float
    language: str | None
    model_id: str
    segments: list[Segment] = field(default_factory=list)
    options: dict = field(default_factory=dict)  # the settings that shaped the result
    decoding: dict = field(default_factory=dict)  # damage found decoding the media (empty: none)
    # With --speakers: each speaker's label and talk time, and the turns (None: not asked).
    speakers: list | None = None
    turns: list | None = None

    @property
    def text(self) -> str:
        return " ".join(segment.text for segment in self.segments)


def segments_from_tokens(
    tokens: list[int],
    special,
    decode_text: Callable[[list[int]], str],
    window_duration_s: float,
) -> tuple[list[Segment], float, bool]:
    """Split one window's tokens at timestamp tokens into window-local segments.

    Returns the segments, the last timestamp seen (seconds), and whether the tokens end in
    a pair of timestamps (Whisper's sign that it stopped before the end of the window).
    Text before any timestamp starts at 0; text after the last timestamp (Whisper left its
    end open) ends at the window's end, so no segment ever lacks an end time.
    """
    begin = special.timestamp_begin
    segments: list[Segment] = []
    start = 0.0
    last_timestamp = 0.0
    text_tokens: list[int] = []

    def close(end: float) -> None:
        text = decode_text(text_tokens).strip()
        if text:
            clamped_start = min(max(start, 0.0), window_duration_s)
            end_clamped = min(max(end, clamped_start), window_duration_s)
            segments.append(Segment(clamped_start, end_clamped, text, tokens=list(text_tokens)))

    for token in tokens:
        if token >= begin:
            last_timestamp = (token - begin) * SECONDS_PER_TIMESTAMP
            if text_tokens:
                close(last_timestamp)
                text_tokens = []
            start = last_timestamp
        else:
            text_tokens.append(token)
    if text_tokens:
        close(window_duration_s)
    ended_in_pair = len(tokens) >= 2 and tokens[-1] >= begin and tokens[-2] >= begin
    return segments, last_timestamp, ended_in_pair


def drop_repeats(segments: Iterable[Segment]) -> list[Segment]:
    """Drop the third and later copies of a segment text repeated back to back."""
    kept: list[Segment] = []
    run = 0
    for segment in segments:
        if kept and segment.text == kept[-1].text:
            run += 1
            if run >= _MAX_REPEATS:
                kept[-1].end = max(kept[-1].end, segment.end)
                continue
        else:
            run = 0
        kept.append(segment)
    return kept


def timeline(segments: Iterable[Segment], duration_s: float, start_s: float = 0.0) -> list[Segment]:
    """Order a file's segments by time and make the timeline monotonic inside [0, duration].

    ``start_s`` moves them from the decoded audio's clock to the container's, where the audio
    starts that late (``audio.Placement``), words included."""
    if start_s:
        segments = [segment.shifted(start_s) for segment in segments]
    ordered = sorted(segments, key=lambda segment: (segment.start, segment.end))
    result: list[Segment] = []
    for segment in drop_repeats(ordered):
        start = min(max(segment.start, result[-1].end if result else 0.0), duration_s)
        end = min(max(segment.end, start), duration_s)
        result.append(Segment(round(start, 3), round(end, 3), segment.text, segment.words, segment.tokens))
    return result
