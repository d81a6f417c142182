"""Subtitle shaping: segments -> cues a viewer can read.

Each segment is cut into units that a line may break between (words; single characters in
Chinese and Japanese, which are written without spaces), timed by Whisper's word timestamps
or, without them, by sharing the segment's time out in proportion to characters (then split
times are estimates: ``has_word_times`` and ``Cue.estimated`` say so).  A segment is split
into cues of at most ``max_line_count`` lines of ``max_line_width`` columns lasting at most
``max_cue_duration_s``, choosing among all the ways to split it the one that ends cues after
punctuation or in pauses and leaves no orphan (a small dynamic programme, as in Knuth-Plass
line breaking); lines are balanced the same way.  Finally cues whose text goes by faster than
``max_cps`` are lengthened into the silence before the next cue.

All times are whole milliseconds, as SRT and WebVTT write them, so rounding can never make
two cues overlap or a cue last zero milliseconds.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from functools import cached_property

from .options import SubtitleOptions
from .segments import Segment

MS_PER_S = 1000
# No cue is shown for less than this (a flash nobody can read), unless the media is too short
# to give every cue as much; cues borrow the time from the silence around them first.
MIN_CUE_MS = 500

# Where a cue or a line may end, best first.
_SENTENCE_END = frozenset(".?!…。？！")
_CLAUSE_END = frozenset(",;:—、，；：")
_CLOSING_QUOTES = "\"'”’»)]）」』"  # looked through: `end."` ends a sentence too
# Cost of ending a cue after a word, by what the word ends with; a segment's end costs nothing.
_BREAK_COST = {"sentence": 0.0, "clause": 0.3, "word": 1.0}
# Every cue costs this much, so a segment that fits one cue stays one cue.
_CUE_COST = 1.0
# Times (1 - fill)², fill being the share of the cue's character capacity used: a full cue
# plus an orphan word costs more than two half-full cues.
_EMPTY_CUE_COST = 1.0
# Per second of silence inside a cue: its words show before they are spoken, so a long
# pause is a good place to end a cue even mid-sentence.
_SILENCE_COST_PER_S = 0.3
# Inside a cue lines are balanced first (cost: the sum of (length / width)²); a break after
# punctuation wins only when the lines stay close to even.
_LINE_BREAK_WEIGHT = 0.1
# Lines above the last count this much more, so near-even lines put the longer one at the
# bottom, as broadcasters prefer.
_UPPER_LINE_WEIGHT = 1.05

# Line-breaking between characters written without spaces (Chinese, Japanese): never before
# a closing mark nor after an opening one (the Japanese kinsoku rule, simplified).
_NO_BREAK_BEFORE = frozenset("、。，．,.:;?!！？：；)）」』】〉》”’…")
_NO_BREAK_AFTER = frozenset("(（「『【〈《“‘")
_WIDE = ("W", "F")  # East Asian Width classes: two columns on screen, written without spaces
_JOINERS = ("Mn", "Mc", "Me", "Cf", "Sk")  # combining marks, ZWJ, emoji modifiers: never split
_ZERO_WIDTH = ("Mn", "Me", "Cf")  # combining marks and format characters take no column
# Karaoke: a pause shorter than this keeps the last word underlined, not blinking between words.
_KARAOKE_BRIDGE_MS = 300
_WORD = re.compile(r"\s*\S+")


@dataclass(frozen=True)
class Cue:
    """One subtitle: its time span in milliseconds and its lines of words."""

    start_ms: int
    end_ms: int
    # Each line's words, each word with the separator written before it (" " or "" where
    # the script uses no spaces); a line's first separator is not shown.
    lines: tuple[tuple[str, ...], ...]
    underline: int | None = None  # karaoke: index (over the cue's words) of the word sung now
    # A boundary of this cue was estimated (time shared out by characters), not a word time.
    estimated: bool = False
    speaker: str | None = None  # with --speakers: its segment's speaker

    def text(self, escape: Callable[[str], str] = str) -> str:
        """The lines joined by newlines, each word passed through ``escape`` (VTT needs
        ``&lt;``), the karaoke word in ``<u>…</u>``."""
        rendered, index = [], 0
        for line in self.lines:
            parts = []
            for position, word in enumerate(line):
                bare = word.lstrip()
                shown = escape(bare)
                if index == self.underline:
                    shown = f"<u>{shown}</u>"
                parts.append(shown if position == 0 else word[: len(word) - len(bare)] + shown)
                index += 1
            rendered.append("".join(parts))
        return "\n".join(rendered)


@dataclass(frozen=True)
class _Unit:
    """What a line may break between: a word, or one CJK character, with its time."""

    text: str  # with its separator: " word", or "字" after another character
    start_ms: int
    end_ms: int
    start_estimated: bool = False  # shared out by characters, not a word or segment time
    end_estimated: bool = False

    # Cached: the cue and line searches ask for these many times over.
    @cached_property
    def bare(self) -> str:
        return self.text.lstrip()

    @cached_property
    def bare_columns(self) -> int:
        return _columns(self.bare)

    @cached_property
    def columns(self) -> int:
        """Columns on screen after another unit on the same line (its separator included)."""
        return self.bare_columns + len(self.text) - len(self.bare)

    @cached_property
    def break_cost(self) -> float:
        """The cost of ending a cue or line after this unit: the less punctuation, the more."""
        last = self.bare.rstrip(_CLOSING_QUOTES)[-1:]
        if last in _SENTENCE_END:
            return _BREAK_COST["sentence"]
        if last in _CLAUSE_END:
            return _BREAK_COST["clause"]
        return _BREAK_COST["word"]


def has_word_times(segments: Iterable[Segment]) -> bool:
    """Whether every segment with text has word timestamps; if not, cue splits inside a
    segment are timed by sharing its time out by characters (the CLI says so)."""
    return all(_usable_words(segment) or not segment.text.strip() for segment in segments)


def shape_cues(
    segments: Iterable[Segment], options: SubtitleOptions = SubtitleOptions(), end_s: float | None = None,
    speaker_columns: int = 0,
) -> list[Cue]:
    """Cues for SRT/VTT that respect ``options``.

    No cue is empty, none overlaps the next, none lasts less than ``MIN_CUE_MS`` (unless the
    media, up to ``end_s`` or the last segment's end, is too short to give every cue that
    much) and each lasts long enough to read at ``max_cps`` wherever silence around it
    allows: a cue too short or too fast takes time from the silence after it, then before
    it.  A word lasting longer than ``max_cue_duration_s`` is cut short.  Segments are never
    merged: each starts a new cue, carrying the segment's speaker.  ``speaker_columns``: the
    columns a speaker label written before each cue's first line takes (SRT's ``[SPEAKER_00] ``),
    kept free within ``max_line_width`` when segments have speakers.
    """
    max_ms = max(1, _ms(options.max_cue_duration_s))
    groups: list[list[_Unit]] = []
    speakers: list[str | None] = []
    last_ms = 0
    segments = list(segments)
    for segment, (_, end_ms, units) in zip(segments, _timeline(segments)):
        last_ms = end_ms
        lead = speaker_columns if segment.speaker is not None else 0
        split = _split_segment(units, options, max_ms, lead)
        groups.extend(split)
        speakers.extend([segment.speaker] * len(split))
    if not groups:
        return []
    spans = [(group[0].start_ms, min(group[-1].end_ms, group[0].start_ms + max_ms)) for group in groups]
    limit_ms = max(last_ms, _ms(end_s)) if end_s is not None else last_ms
    # Every cue gets the minimum, unless the media cannot hold that many (then they share it).
    min_ms = max(1, min(MIN_CUE_MS, max_ms, limit_ms // len(spans)))
    spans = _settle(_widen(spans, [min_ms] * len(spans), limit_ms), min_ms, limit_ms)
    reading = [min(math.ceil(_characters(group) * MS_PER_S / options.max_cps), max_ms) for group in groups]
    spans = _widen(spans, reading, limit_ms)
    cues = []
    for (start_ms, end_ms), group, speaker in zip(spans, groups, speakers):
        estimated = group[0].start_estimated or group[-1].end_estimated
        lead = speaker_columns if speaker is not None else 0
        cue = Cue(start_ms, end_ms, _layout(group, options, lead), estimated=estimated, speaker=speaker)
        cues.extend(_karaoke(cue, group) if options.highlight_words else [cue])
    return cues


def _ms(seconds: float) -> int:
    return round(seconds * MS_PER_S)


def _usable_words(segment: Segment) -> bool:
    return bool(segment.words) and any(word.word.strip() for word in segment.words)


def _timeline(segments: Iterable[Segment]) -> Iterator[tuple[int, int, list[_Unit]]]:
    """Each segment's span (ms) and units, made monotonic: Whisper's times can run backwards
    at window joins, and word times can stray outside their segment."""
    cursor = 0
    for segment in segments:
        start = max(_ms(segment.start), cursor)
        end = cursor = max(_ms(segment.end), start)
        if _usable_words(segment):
            spans = [(word.word, _ms(word.start), _ms(word.end)) for word in segment.words]
        else:
            spans = [(segment.text, start, end)]
        units: list[_Unit] = []
        word_cursor = start
        for text, word_start, word_end in spans:
            word_start = min(max(word_start, word_cursor), end)
            word_end = word_cursor = min(max(word_end, word_start), end)
            units.extend(_share_out(text, word_start, word_end))
        units = _glue(units)
        if units:
            # Segments are separate sentences: a space before each, even in Chinese.
            units[0] = replace(units[0], text=" " + units[0].bare)
        yield start, end, units


def _share_out(text: str, start_ms: int, end_ms: int) -> list[_Unit]:
    """Cut ``text`` where lines may break and share its time out by characters."""
    pieces = _pieces(text)
    total = sum(len(piece) for piece in pieces)
    units, done = [], 0
    for index, piece in enumerate(pieces):
        piece_start = start_ms + (end_ms - start_ms) * done // total
        done += len(piece)
        piece_end = start_ms + (end_ms - start_ms) * done // total
        units.append(_Unit(piece, piece_start, piece_end, index > 0, index < len(pieces) - 1))
    return units


def _pieces(text: str) -> list[str]:
    """``" Hello 世界"`` -> ``[" Hello", " 世", "界"]``: whitespace becomes one space."""
    pieces = []
    for match in _WORD.finditer(text):
        bare = match.group().lstrip()
        current = (" " if match.group()[0].isspace() else "") + bare[0]
        for previous, char in zip(bare, bare[1:]):
            if _breakable(previous, char):
                pieces.append(current)
                current = ""
            current += char
        pieces.append(current)
    return pieces


def _breakable(previous: str, char: str) -> bool:
    """Whether a line may break between two characters written with no space between."""
    if char in _NO_BREAK_BEFORE or previous in _NO_BREAK_AFTER:
        return False
    if unicodedata.category(char) in _JOINERS or unicodedata.category(previous) in _JOINERS:
        return False
    return unicodedata.east_asian_width(previous) in _WIDE or unicodedata.east_asian_width(char) in _WIDE


def _glue(units: list[_Unit]) -> list[_Unit]:
    """Join units no line may break between: Whisper's word list can hold " don" + "'t" or
    " end" + "." as separate words."""
    glued: list[_Unit] = []
    for unit in units:
        if glued and not unit.text[0].isspace() and not _breakable(glued[-1].text[-1], unit.text[0]):
            last = glued[-1]
            glued[-1] = _Unit(
                last.text + unit.text, last.start_ms, unit.end_ms, last.start_estimated, unit.end_estimated
            )
        else:
            glued.append(unit)
    return glued


def _columns(text: str) -> int:
    """Width on screen: CJK characters and emoji take two columns, combining marks none."""
    width = 0
    for char in text:
        if unicodedata.category(char) not in _ZERO_WIDTH:
            width += 2 if unicodedata.east_asian_width(char) in _WIDE else 1
    return width


def _characters(units: Sequence[_Unit]) -> int:
    """Characters to read in ``units`` (reading speed counts characters, not columns)."""
    return sum(len(unit.text) for unit in units) - (len(units[0].text) - len(units[0].bare))


def _split_segment(units: list[_Unit], options: SubtitleOptions, max_ms: int, lead: int = 0) -> list[list[_Unit]]:
    """The cheapest split of one segment's units into cues that fit the limits (each cue's
    first line starting ``lead`` columns in)."""
    width, capacity = options.max_line_width, options.max_line_width * options.max_line_count
    best = [0.0] + [math.inf] * len(units)  # best[j]: cheapest split of units[:j]
    cut = [0] * (len(units) + 1)  # cut[j]: where the last cue of that split starts
    for i in range(len(units)):
        lines, silence_ms = 1, 0
        line_columns = cue_columns = lead + units[i].bare_columns
        for j in range(i, len(units)):
            if j > i:
                cue_columns += units[j].columns
                silence_ms += units[j].start_ms - units[j - 1].end_ms
                # Greedy wrapping needs the fewest lines; a too-long word gets its own line.
                if line_columns + units[j].columns <= width:
                    line_columns += units[j].columns
                else:
                    lines, line_columns = lines + 1, units[j].bare_columns
                too_long = units[j].end_ms - units[i].start_ms > max_ms
                if lines > options.max_line_count or too_long:
                    break
            fill = min(1.0, cue_columns / capacity)
            cost = best[i] + _CUE_COST + _EMPTY_CUE_COST * (1.0 - fill) ** 2
            cost += _SILENCE_COST_PER_S * silence_ms / MS_PER_S
            if j + 1 < len(units):
                cost += units[j].break_cost
            if cost < best[j + 1]:
                best[j + 1], cut[j + 1] = cost, i
    groups, end = [], len(units)
    while end > 0:
        groups.append(units[cut[end] : end])
        end = cut[end]
    return groups[::-1]


def _layout(units: list[_Unit], options: SubtitleOptions, lead: int = 0) -> tuple[tuple[str, ...], ...]:
    """The cue's words in as few lines as fit, as even as possible (the bottom one the
    longer), broken after punctuation where that costs little evenness; the first line
    starts ``lead`` columns in."""
    width, n = options.max_line_width, len(units)
    count = 1
    line_columns = lead + units[0].bare_columns
    for unit in units[1:]:
        if line_columns + unit.columns <= width:
            line_columns += unit.columns
        else:
            count, line_columns = count + 1, unit.bare_columns
    if count == 1:
        return (tuple(unit.text for unit in units),)

    ends = [0]  # ends[j]: columns of units[:j], separators included
    for unit in units:
        ends.append(ends[-1] + unit.columns)
    # best[k][j]: the cheapest way to set units[:j] on k lines; cut[k][j]: where its last
    # line starts.  A line costs (columns / width)², more for upper lines, plus its break.
    best = [[math.inf] * (n + 1) for _ in range(count + 1)]
    cut = [[0] * (n + 1) for _ in range(count + 1)]
    best[0][0] = 0.0
    for k in range(1, count + 1):
        for j in range(k, n + 1) if k < count else (n,):
            weight, break_cost = (
                (1.0, 0.0) if j == n else (_UPPER_LINE_WEIGHT, _LINE_BREAK_WEIGHT * units[j - 1].break_cost)
            )
            for i in range(j - 1, k - 2, -1):  # longer and longer lines
                columns = ends[j] - ends[i] - (units[i].columns - units[i].bare_columns) + (lead if i == 0 else 0)
                if columns > width and j - i > 1:
                    break
                cost = best[k - 1][i] + weight * (columns / width) ** 2 + break_cost
                if cost <= best[k][j]:  # on a tie the longer last line wins
                    best[k][j], cut[k][j] = cost, i
    lines, end = [], n
    for k in range(count, 0, -1):
        lines.append(tuple(unit.text for unit in units[cut[k][end] : end]))
        end = cut[k][end]
    return tuple(lines[::-1])


def _settle(spans: list[tuple[int, int]], min_ms: int, limit_ms: int) -> list[tuple[int, int]]:
    """Give every cue at least ``min_ms`` without overlapping the next.

    Cues too short for the silence around them (zero-length words and segments pile up at
    window ends) push the ones after them later, and if the last then runs past
    ``limit_ms``, they are pulled back from there (possible whenever ``len(spans) *
    min_ms <= limit_ms``).
    """
    pushed, previous_end = [], 0
    for start, end in spans:
        start = max(start, previous_end)
        end = previous_end = max(end, start + min_ms)
        pushed.append((start, end))
    if pushed[-1][1] <= limit_ms or len(pushed) * min_ms > limit_ms:
        return pushed
    pulled, next_start = [], limit_ms
    for start, end in reversed(pushed):
        end = min(end, next_start)
        start = next_start = min(start, end - min_ms)
        pulled.append((start, end))
    return pulled[::-1]


def _widen(spans: list[tuple[int, int]], wanted: list[int], limit_ms: int) -> list[tuple[int, int]]:
    """Let each cue last ``wanted`` milliseconds where the silence around it allows: first
    into the silence after it (up to the next cue, or ``limit_ms``), then into the silence
    before it (after the previous cue, or from 0).  A cue with no room stays as it is."""
    widened: list[tuple[int, int]] = []
    for index, ((start, end), duration) in enumerate(zip(spans, wanted)):
        room_until = spans[index + 1][0] if index + 1 < len(spans) else max(limit_ms, end)
        end = max(end, min(start + duration, room_until))
        room_from = widened[-1][1] if widened else 0
        start = min(start, max(end - duration, room_from))
        widened.append((start, end))
    return widened


def _karaoke(cue: Cue, units: list[_Unit]) -> Iterator[Cue]:
    """The cue once per word, that word underlined while it is spoken; in a pause between
    words (and before the first, after the last) the cue shows with no word underlined.  A
    word that lasts no time at all is never underlined."""
    cursor = cue.start_ms
    for index, unit in enumerate(units):
        start = min(max(unit.start_ms, cursor), cue.end_ms)
        end = min(max(unit.end_ms, start), cue.end_ms)
        following = units[index + 1].start_ms if index + 1 < len(units) else cue.end_ms
        if following - end < _KARAOKE_BRIDGE_MS:
            end = min(max(end, following), cue.end_ms)
        if start > cursor:
            yield replace(cue, start_ms=cursor, end_ms=start)
        if end > start:
            yield replace(cue, start_ms=start, end_ms=end, underline=index)
        cursor = end
    if cue.end_ms > cursor:
        yield replace(cue, start_ms=cursor)
