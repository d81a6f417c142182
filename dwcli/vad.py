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


def tighten(segments: list[Segment], samples: np.ndarray) -> None:
    """Move each segment's start/end (window-local) onto the speech inside it, in place.

    A segment with no loud frame at all is left as it is (the model heard something).
    """
    active = speech_frames(samples)
    if len(active) == 0 or active.all():
        return
    for segment in segments:
        first = int(segment.start / FRAME_S)
        last = min(int(np.ceil(segment.end / FRAME_S)), len(active))
        inside = np.flatnonzero(active[first:last])
        if len(inside) == 0:
            continue
        start = max(segment.start, (first + inside[0]) * FRAME_S - _MARGIN_S)
        end = min(segment.end, (first + inside[-1] + 1) * FRAME_S + _MARGIN_S)
        if end > start:
            segment.start, segment.end = start, end
