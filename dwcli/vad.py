"""Energy-based speech activity: where in a window the audio is loud enough to be speech.

Whisper's timestamp tokens are coarse at the edges of pauses: a segment that follows a
silence often starts where the previous one ended, and the last segment of a window often
ends at the window's end.  Trimming each segment's start and end past frames that are
quiet relative to the window's own loudness moves those edges onto the speech.  A relative
threshold (not a fixed dB level) keeps this working for quiet and loud recordings alike.
"""

from __future__ import annotations

import numpy as np

from .audio import SAMPLE_RATE
from .segments import Segment

FRAME_S = 0.02  # 20 ms analysis frames, the resolution of Whisper's timestamps
_FRAME_SAMPLES = round(FRAME_S * SAMPLE_RATE)
# A frame is speech when it is within this many dB of the window's loud frames...
_BELOW_LOUD_DB = 35.0
# ...and this far above the window's noise floor.
_ABOVE_FLOOR_DB = 12.0
_LOUD_PERCENTILE = 95
_FLOOR_PERCENTILE = 10
# Keep this much margin around the trimmed edges (consonant onsets are quiet).
_MARGIN_S = 0.1
# A pause between phrases: at least this long.  A shared border moves into the pause whose
# middle is at most _SNAP_DISTANCE_S away, leaving neither segment shorter than _MIN_SEGMENT_S.
_MIN_PAUSE_S = 0.3
_SNAP_DISTANCE_S = 2.0
_MIN_SEGMENT_S = 0.3
# Whisper sometimes runs one segment across a long silence (often in sequential mode, when a
# window starts mid-phrase); a pause this long inside a segment splits it, at the words.
_SPLIT_PAUSE_S = 0.8


def frame_levels_db(samples: np.ndarray) -> np.ndarray:
    """RMS level of each 20 ms frame, in dBFS."""
    count = len(samples) // _FRAME_SAMPLES
    if count == 0:
        return np.zeros(0)
    frames = samples[: count * _FRAME_SAMPLES].reshape(count, _FRAME_SAMPLES).astype(np.float64)
    return 10 * np.log10(np.mean(frames**2, axis=1) + 1e-12)


def speech_frames(samples: np.ndarray) -> np.ndarray:
    """Boolean per 20 ms frame: loud enough, relative to this window, to be speech."""
    levels = frame_levels_db(samples)
    if len(levels) == 0:
        return np.zeros(0, dtype=bool)
    loud = np.percentile(levels, _LOUD_PERCENTILE)
    floor = np.percentile(levels, _FLOOR_PERCENTILE)
    threshold = max(loud - _BELOW_LOUD_DB, floor + _ABOVE_FLOOR_DB)
    if loud < floor + _ABOVE_FLOOR_DB:  # no contrast at all: cannot tell, trim nothing
        return np.ones(len(levels), dtype=bool)
    return levels >= threshold


def speech_end_s(active: np.ndarray) -> float:
    """Seconds into a window where its last speech frame ends (0 when there is none).

    This and the functions below take ``speech_frames`` of the window, computed once."""
    voiced = np.flatnonzero(active)
    return float((voiced[-1] + 1) * FRAME_S) if len(voiced) else 0.0


def _pauses(active: np.ndarray) -> list[tuple[float, float]]:
    """(start, end) seconds of every run of non-speech frames at least _MIN_PAUSE_S long."""
    padded = np.concatenate([[True], active, [True]])
    edges = np.flatnonzero(np.diff(padded.astype(np.int8)))
    runs = edges.reshape(-1, 2)  # falling edge (pause starts), rising edge (pause ends)
    return [(a * FRAME_S, b * FRAME_S) for a, b in runs if (b - a) * FRAME_S >= _MIN_PAUSE_S]


def _snap_shared_boundaries(segments: list[Segment], active: np.ndarray) -> None:
    """Where one segment ends exactly where the next begins, Whisper put the border
    somewhere in the speech; move it into the nearest pause, if one is close."""
    pauses = _pauses(active)
    for before, after in zip(segments, segments[1:]):
        border = before.end
        if abs(after.start - border) > FRAME_S or not pauses:
            continue
        start, end = min(pauses, key=lambda pause: abs((pause[0] + pause[1]) / 2 - border))
        if abs((start + end) / 2 - border) > _SNAP_DISTANCE_S:
            continue
        new_end, new_start = start + _MARGIN_S, end - _MARGIN_S
        if new_end - before.start >= _MIN_SEGMENT_S and after.end - new_start >= _MIN_SEGMENT_S:
            before.end, after.start = new_end, max(new_start, new_end)


def _speech_frames_in(start_s: float, end_s: float, active: np.ndarray) -> tuple[int, int, np.ndarray]:
    """The frames ``first``..``last`` (exclusive) covering start_s..end_s, and the offsets
    from ``first`` of the speech frames among them."""
    first = int(start_s / FRAME_S)
    last = min(int(np.ceil(end_s / FRAME_S)), len(active))
    return first, last, np.flatnonzero(active[first:last])


def tighten(segments: list[Segment], active: np.ndarray) -> None:
    """Move each segment's start/end (window-local) onto the speech inside it, in place.

    Borders shared by two segments move into a nearby pause first.  A segment with no
    loud frame at all is left as it is (the model heard something).
    """
    if len(active) == 0 or active.all():
        return
    _snap_shared_boundaries(segments, active)
    for segment in segments:
        first, _, inside = _speech_frames_in(segment.start, segment.end, active)
        if len(inside) == 0:
            continue
        start = max(segment.start, (first + inside[0]) * FRAME_S - _MARGIN_S)
        end = min(segment.end, (first + inside[-1] + 1) * FRAME_S + _MARGIN_S)
        if end > start:
            segment.start, segment.end = start, end


def trim_words(segments: list[Segment], active: np.ndarray) -> None:
    """Move a word's start (end) onto its speech when a pause of _MIN_PAUSE_S or more leads
    (trails) it: DTW hands a pause to the word after it when no punctuation marks the
    phrase break.  Words stay inside their segment and in order."""
    if len(active) == 0 or active.all():
        return
    for segment in segments:
        for word in segment.words or []:
            first, last, inside = _speech_frames_in(word.start, word.end, active)
            if len(inside) == 0:
                continue
            if inside[0] * FRAME_S >= _MIN_PAUSE_S:
                word.start = min(max(word.start, (first + inside[0]) * FRAME_S - _MARGIN_S), word.end)
            if (last - first - 1 - inside[-1]) * FRAME_S >= _MIN_PAUSE_S:
                word.end = max(min(word.end, (first + inside[-1] + 1) * FRAME_S + _MARGIN_S), word.start)
        segment.span_words()  # as after alignment


def long_inner_pauses(segment: Segment, active: np.ndarray) -> list[tuple[float, float]]:
    """Pauses of at least _SPLIT_PAUSE_S lying wholly inside ``segment``."""
    return [
        (start, end)
        for start, end in _pauses(active)
        if end - start >= _SPLIT_PAUSE_S and start > segment.start and end < segment.end
    ]


def needs_split(segments: list[Segment], active: np.ndarray) -> bool:
    """Whether any segment holds a long pause (and so needs word times to be split)."""
    return len(active) > 0 and not active.all() and any(long_inner_pauses(s, active) for s in segments)


def split_at_pauses(segments: list[Segment], active: np.ndarray) -> list[Segment]:
    """Split segments that have words at the long pauses inside them."""
    if len(active) == 0 or active.all():
        return segments
    result: list[Segment] = []
    for segment in segments:
        pieces = [segment]
        for pause_start, pause_end in long_inner_pauses(segment, active):
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
