"""Long audio -> windows of at most 30 s, cut in pauses.

Whisper reads 30 s at a time.  Rather than overlapping fixed windows and stitching the
overlaps back together afterwards (the transformers pipeline's approach, whose merge breaks
words and timestamps at the borders), dw cuts the stream where it is quietest within the
last few seconds before each 30 s limit.  Windows then never overlap, a word is almost never
split, every window is transcribed independently (so windows of many files batch
together), and the segments of consecutive windows join without any stitching: the
timeline stays continuous and monotonic by construction.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from .audio import SAMPLE_RATE
from .features import WINDOW_SAMPLES

# Where a cut may fall: between this many seconds and the full 30 s of a window.
MIN_CUT_SECONDS = 22.0
_FRAME_SAMPLES = SAMPLE_RATE // 100  # 10 ms energy frames
# A pause between words lasts ~0.15-0.5 s: the quietest stretch of this length is the cut.
_PAUSE_FRAMES = 20  # 200 ms


@dataclass(frozen=True)
class Window:
    """One model input: ``samples`` of a file starting at ``offset_s`` seconds."""

    index: int  # 0-based position of the window in its file
    offset_s: float
    samples: np.ndarray  # 16 kHz mono float32, at most 30 s

    @property
    def duration_s(self) -> float:
        return len(self.samples) / SAMPLE_RATE


def quietest_cut(samples: np.ndarray, earliest: int, latest: int) -> int:
    """Sample index in [earliest, latest] at the centre of the quietest 200 ms stretch."""
    region = samples[earliest:latest]
    n_frames = len(region) // _FRAME_SAMPLES
    if n_frames <= _PAUSE_FRAMES:
        return latest
    frames = region[: n_frames * _FRAME_SAMPLES].reshape(n_frames, _FRAME_SAMPLES)
    energy = np.square(frames, dtype=np.float64).mean(axis=1)
    # Sum of energy over every 200 ms run of frames, via a cumulative sum.
    cumulative = np.concatenate([[0.0], np.cumsum(energy)])
    run_energy = cumulative[_PAUSE_FRAMES:] - cumulative[:-_PAUSE_FRAMES]
    # On ties (digital silence) prefer the latest run: longer windows, fewer of them.
    best_run = len(run_energy) - 1 - int(np.argmin(run_energy[::-1]))
    return earliest + (best_run + _PAUSE_FRAMES // 2) * _FRAME_SAMPLES


def split_windows(blocks: Iterable[np.ndarray]) -> Iterator[Window]:
    """Cut a stream of sample blocks into consecutive windows of at most 30 s.

    Holds at most one window plus one block in memory, whatever the stream's length.
    """
    buffer = np.zeros(0, dtype=np.float32)
    consumed = 0  # samples of the stream already emitted in earlier windows
    index = 0
    earliest = int(MIN_CUT_SECONDS * SAMPLE_RATE)
    for block in blocks:
        buffer = np.concatenate([buffer, block]) if len(buffer) else block
        while len(buffer) > WINDOW_SAMPLES:
            cut = quietest_cut(buffer, earliest, WINDOW_SAMPLES)
            yield Window(index, consumed / SAMPLE_RATE, buffer[:cut])
            index += 1
            consumed += cut
            buffer = buffer[cut:]
    if len(buffer) == 0:
        return
    yield Window(index, consumed / SAMPLE_RATE, buffer)

