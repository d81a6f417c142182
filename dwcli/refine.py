"""A window's segments -> the file's timeline, fitted to the detected speech.

The decoder returns segments in window time.  ``settle`` maps them (and their words) onto
the file's timeline through the window's spans, then, where the speech detector ran, fits
them to the speech it found:

- edges: Whisper's timestamp tokens are coarse at pauses (a segment after a silence often
  starts where the previous one ended, or a few hundred milliseconds into its first words; a
  window's last segment often runs to its end), so each segment's start and end move onto
  the speech inside it, a segment that starts inside speech no earlier segment holds starts
  where that speech does, and a border two segments share moves into a nearby pause;
- words: DTW hands a pause to the word after it when no punctuation marks the phrase
  break; such a word starts (ends) at its speech;
- splits: a segment Whisper ran across a long pause (or across non-speech the window left
  out) is split there, at its words.
"""

from __future__ import annotations

from .sources import Window
from .segments import Segment, Word
from .vad import Region

# Keep this much margin around trimmed edges (consonant onsets are quiet).
_MARGIN_S = 0.1
# A pause between phrases: at least this long.  A shared border moves into the pause whose
# middle is at most _SNAP_DISTANCE_S away, leaving neither segment shorter than _MIN_SEGMENT_S.
_MIN_PAUSE_S = 0.3
_SNAP_DISTANCE_S = 2.0
_MIN_SEGMENT_S = 0.3
# A pause this long inside a segment splits it, at the words.
SPLIT_PAUSE_S = 0.8
# A segment that starts inside detected speech starts at that speech's onset instead (when
# no earlier segment holds it), reaching back over pauses shorter than this, by at most
# _MAX_ONSET_MOVE_S.  After a pause Whisper's first timestamp often lands inside the first
# word: on the benchmark's joined speech, 0.1-0.7 s after the detected onset.
_ONSET_GAP_S = 0.4
_MAX_ONSET_MOVE_S = 1.5

Speech = list[tuple[float, float]]  # detected speech, (start, end) seconds of the file, in order


def _speech_seconds(regions: tuple[Region, ...]) -> Speech:
    return [(region.start_s, region.end_s) for region in regions]


def _pauses(speech: Speech, minimum_s: float = _MIN_PAUSE_S) -> list[tuple[float, float]]:
    """The gaps between consecutive speech regions lasting at least ``minimum_s``."""
    return [(before[1], after[0]) for before, after in zip(speech, speech[1:]) if after[0] - before[1] >= minimum_s]


def _speech_within(start: float, end: float, speech: Speech) -> tuple[float, float] | None:
    """Where speech begins and ends inside [start, end], or None if there is none."""
    inside = [(max(a, start), min(b, end)) for a, b in speech if b > start and a < end]
    return (inside[0][0], inside[-1][1]) if inside else None


def _to_file(window: Window, segment: Segment) -> Segment:
    words = None
    if segment.words is not None:
        words = [Word(window.file_time(w.start), window.file_time(w.end, end=True), w.word, w.probability)
                 for w in segment.words]
    return Segment(window.file_time(segment.start), window.file_time(segment.end, end=True),
                   segment.text, words, segment.tokens)


def _long_inner_pauses(segment: Segment, speech: Speech) -> list[tuple[float, float]]:
    return [(a, b) for a, b in _pauses(speech, SPLIT_PAUSE_S) if a > segment.start and b < segment.end]


def needs_words(window: Window, segments: list[Segment]) -> bool:
    """Whether a window's (window-time) segments need word times to be split at a pause."""
    if not window.speech:
        return False
    speech = _speech_seconds(window.speech)
    return any(_long_inner_pauses(_to_file(window, segment), speech) for segment in segments)


def settle(window: Window, segments: list[Segment], keep_words: bool) -> list[Segment]:
    """``segments`` of ``window`` (window time) on the file's timeline, fitted to its speech;
    their words kept only with ``keep_words``."""
    settled = [_to_file(window, segment) for segment in segments]
    if window.speech:
        speech = _speech_seconds(window.speech)
        tighten(settled, speech)
        trim_words(settled, speech)
        settled = split_at_pauses(settled, speech)
        start_at_onsets(settled, speech)
    if not keep_words:
        for segment in settled:
            segment.words = None
    return settled


def _snap_shared_borders(segments: list[Segment], speech: Speech) -> None:
    """Where one segment ends exactly where the next begins, Whisper put the border
    somewhere in the speech; move it into the nearest pause, if one is close."""
    pauses = _pauses(speech)
    for before, after in zip(segments, segments[1:]):
        border = before.end
        if abs(after.start - border) > 0.02 or not pauses:
            continue
        start, end = min(pauses, key=lambda pause: abs((pause[0] + pause[1]) / 2 - border))
        if abs((start + end) / 2 - border) > _SNAP_DISTANCE_S:
            continue
        new_end, new_start = start + _MARGIN_S, end - _MARGIN_S
        if new_end - before.start >= _MIN_SEGMENT_S and after.end - new_start >= _MIN_SEGMENT_S:
            before.end, after.start = new_end, max(new_start, new_end)


def start_at_onsets(segments: list[Segment], speech: Speech) -> None:
    """Move a segment's start (and its first word's) back to the onset of the speech it
    starts in, when that speech began after the previous segment ended (no other segment
    holds it).  Last of the edge rules: the word times DTW gives start late there too."""
    previous_end = float("-inf")
    for segment in segments:
        inside = [index for index, (a, b) in enumerate(speech) if a < segment.start < b]
        if inside:
            index = inside[0]
            while index > 0 and speech[index][0] - speech[index - 1][1] < _ONSET_GAP_S \
                    and speech[index - 1][0] >= previous_end:
                index -= 1
            onset = speech[index][0]
            if onset >= previous_end and segment.start - onset <= _MAX_ONSET_MOVE_S:
                segment.start = max(onset - _MARGIN_S, previous_end)
                if segment.words:
                    segment.words[0].start = min(segment.start, segment.words[0].start)
        previous_end = max(previous_end, segment.end)


def tighten(segments: list[Segment], speech: Speech) -> None:
    """Move each segment's start and end onto the speech inside it, in place.  A segment
    with no detected speech at all is left as it is (the model heard something)."""
    _snap_shared_borders(segments, speech)
    for segment in segments:
        found = _speech_within(segment.start, segment.end, speech)
        if found is None:
            continue
        start = max(segment.start, found[0] - _MARGIN_S)
        end = min(segment.end, found[1] + _MARGIN_S)
        if end > start:
            segment.start, segment.end = start, end
        for word in segment.words or []:
            word.start = min(max(word.start, segment.start), segment.end)
            word.end = min(max(word.end, word.start), segment.end)


def trim_words(segments: list[Segment], speech: Speech) -> None:
    """Move a word's start (end) onto its speech when a pause of _MIN_PAUSE_S or more leads
    (trails) it inside the word.  Words stay inside their segment and in order."""
    for segment in segments:
        for word in segment.words or []:
            found = _speech_within(word.start, word.end, speech)
            if found is None:
                continue
            if found[0] - word.start >= _MIN_PAUSE_S:
                word.start = min(max(word.start, found[0] - _MARGIN_S), word.end)
            if word.end - found[1] >= _MIN_PAUSE_S:
                word.end = max(min(word.end, found[1] + _MARGIN_S), word.start)
        segment.span_words()  # as after alignment


def split_at_pauses(segments: list[Segment], speech: Speech) -> list[Segment]:
    """Split segments that have words at the long pauses inside them."""
    result: list[Segment] = []
    for segment in segments:
        pieces = [segment]
        for pause_start, pause_end in _long_inner_pauses(segment, speech):
            current = pieces[-1]
            if not current.words:
                break
            middle = (pause_start + pause_end) / 2
            before = [w for w in current.words if (w.start + w.end) / 2 < middle]
            after = [w for w in current.words if (w.start + w.end) / 2 >= middle]
            if not before or not after:
                continue
            pieces[-1] = Segment(current.start, max(pause_start + _MARGIN_S, before[-1].start),
                                 "".join(w.word for w in before).strip(), before)
            pieces.append(Segment(min(pause_end - _MARGIN_S, after[0].end), current.end,
                                  "".join(w.word for w in after).strip(), after))
        for piece in pieces:
            for word in piece.words or []:
                word.start = min(max(word.start, piece.start), piece.end)
                word.end = min(max(word.end, word.start), piece.end)
        result.extend(pieces)
    return result
