"""Subtitle shaping: segments -> cues a viewer can read.

A cue holds at most ``max_line_count`` lines of ``max_line_width`` characters and lasts at
most ``max_cue_duration_s``; long segments are split at word boundaries, preferring a break
after punctuation.  With word timestamps the split times are the words' own; without them
time is shared out in proportion to characters.  Cue ends are then stretched, where the
next cue leaves room, so that no cue asks for more than ``max_cps`` characters per second.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from .segments import Segment

_PUNCTUATION_BREAK = (".", "?", "!", ",", ";", ":", "…")
# Break after punctuation once a cue is this full; a cue broken earlier would look ragged.
_PUNCTUATION_BREAK_FILL = 0.5
_MIN_CUE_S = 0.001  # players reject zero-length cues


@dataclass(frozen=True)
class SubtitleOptions:
    """Limits for SRT/VTT cues (the defaults follow common broadcast guidelines)."""

    max_line_width: int = 42  # characters per line
    max_line_count: int = 2  # lines per cue
    max_cue_duration_s: float = 7.0  # seconds on screen at most
    max_cps: float = 20.0  # reading speed: characters per second at most, where time allows
    highlight_words: bool = False  # karaoke: one cue per word with that word underlined


@dataclass(frozen=True)
class TimedWord:
    text: str  # without surrounding spaces
    start: float
    end: float


@dataclass(frozen=True)
class Cue:
    """One subtitle: its time span and its text, lines joined by newlines."""

    start: float
    end: float
    text: str


def timed_words(segment: Segment) -> list[TimedWord]:
    """The segment's words with times: Whisper's word timestamps, or shared out by length."""
    if segment.words:
        words = [TimedWord(w.word.strip(), w.start, w.end) for w in segment.words if w.word.strip()]
        if words:
            return words
    pieces = segment.text.split()
    total = sum(len(piece) + 1 for piece in pieces) or 1
    span = max(segment.end - segment.start, 0.0)
    words, cursor = [], segment.start
    for piece in pieces:
        duration = span * (len(piece) + 1) / total
        words.append(TimedWord(piece, cursor, cursor + duration))
        cursor += duration
    return words


def wrap_lines(words: list[str], width: int) -> list[str]:
    """Greedy word wrap; a word longer than ``width`` gets a line of its own."""
    lines: list[str] = []
    for word in words:
        if lines and len(lines[-1]) + 1 + len(word) <= width:
            lines[-1] += " " + word
        else:
            lines.append(word)
    return lines


def balanced_lines(words: list[str], options: SubtitleOptions) -> list[str]:
    """Lines for one cue; two lines are balanced (the bottom one not much longer)."""
    lines = wrap_lines(words, options.max_line_width)
    if len(lines) == 2 and options.max_line_count >= 2:
        best = lines
        for split in range(1, len(words)):
            top, bottom = " ".join(words[:split]), " ".join(words[split:])
            if len(top) <= options.max_line_width and len(bottom) <= options.max_line_width:
                if abs(len(top) - len(bottom)) < abs(len(best[0]) - len(best[1])):
                    best = [top, bottom]
        lines = best
    return lines


def _fits(words: list[str], options: SubtitleOptions) -> bool:
    return len(wrap_lines(words, options.max_line_width)) <= options.max_line_count


def _groups(words: list[TimedWord], options: SubtitleOptions) -> Iterator[list[TimedWord]]:
    """Pack words into cue-sized groups."""
    capacity = options.max_line_width * options.max_line_count
    group: list[TimedWord] = []
    for word in words:
        candidate = group + [word]
        too_long = group and (
            not _fits([w.text for w in candidate], options)
            or word.end - group[0].start > options.max_cue_duration_s
        )
        if too_long:
            yield group
            group = [word]
            continue
        group = candidate
        filled = len(" ".join(w.text for w in group)) / capacity
        if word.text.endswith(_PUNCTUATION_BREAK) and filled >= _PUNCTUATION_BREAK_FILL:
            yield group
            group = []
    if group:
        yield group


def shape_cues(segments: Iterable[Segment], options: SubtitleOptions = SubtitleOptions()) -> list[Cue]:
    """Cues for SRT/VTT that respect ``options``; never empty, never overlapping."""
    cues: list[Cue] = []
    for segment in segments:
        words = timed_words(segment)
        for group in _groups(words, options):
            start = max(group[0].start, cues[-1].end if cues else 0.0)
            end = max(group[-1].end, start)
            end = min(end, start + options.max_cue_duration_s)
            if options.highlight_words:
                cues.extend(_highlighted(group, start, end, options))
            else:
                cues.append(Cue(start, end, "\n".join(balanced_lines([w.text for w in group], options))))
    return _stretch_for_reading(cues, options)


def _highlighted(group: list[TimedWord], start: float, end: float, options: SubtitleOptions) -> list[Cue]:
    """Karaoke: the cue's text once per word, that word underlined, timed to the word."""
    texts = [w.text for w in group]
    cues = []
    for index, word in enumerate(group):
        shown = texts[:index] + [f"<u>{texts[index]}</u>"] + texts[index + 1:]
        cue_start = max(word.start, start, cues[-1].end if cues else start)
        cue_end = group[index + 1].start if index + 1 < len(group) else end
        cue_end = max(min(cue_end, end), cue_start)
        if cue_end > cue_start:
            lines = balanced_lines(texts, options)
            cues.append(Cue(cue_start, cue_end, "\n".join(_underline_lines(lines, shown))))
    return cues


def _underline_lines(lines: list[str], shown: list[str]) -> list[str]:
    """Re-split the underlined words into the same line breaks as the plain lines."""
    result, cursor = [], 0
    for line in lines:
        count = len(line.split())
        result.append(" ".join(shown[cursor : cursor + count]))
        cursor += count
    return result


def _stretch_for_reading(cues: list[Cue], options: SubtitleOptions) -> list[Cue]:
    """Lengthen cues that go by too fast to read, into the gap before the next cue; give
    every cue a positive duration and push a cue that would overlap its predecessor."""
    result: list[Cue] = []
    for index, cue in enumerate(cues):
        start = max(cue.start, result[-1].end if result else 0.0)
        visible = len(cue.text.replace("<u>", "").replace("</u>", "").replace("\n", " "))
        wanted = start + min(visible / options.max_cps, options.max_cue_duration_s)
        next_start = cues[index + 1].start if index + 1 < len(cues) else wanted
        end = max(cue.end, min(wanted, next_start), start + _MIN_CUE_S)
        result.append(Cue(round(start, 3), round(end, 3), cue.text))
    return result
