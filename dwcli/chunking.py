"""Long audio -> windows of at most 30 s for the model.

With speech detection (the default), a window is assembled from the speech regions ``vad``
finds: padded regions are joined one after another, non-speech between them left out (a
pause of up to two pads stays, so phrasing survives), until the next region would not fit in
30 s; the window is then cut at the longest pause among its last few regions.  Music,
noise and silence never reach the model, and a window's ``spans`` map its samples back to
the file's timeline (faster-whisper's batched pipeline and whisperX work the same way).

Without detection (``--no-vad``), windows cover every sample: the stream is cut where it is
quietest within the last few seconds before each 30 s limit, so a word is almost never split.

Either way windows never overlap and are transcribed independently, so windows of many
files share a batch and segments of consecutive windows join without stitching.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator

import numpy as np

from . import refine
from .audio import SAMPLE_RATE
from .features import WINDOW_SAMPLES, log_mel
from .sources import Reading, Settled, Span, Window, WindowItem, WindowJob, WindowSource
from .vad import SpeechFilter, SpeechPiece, VadOptions

__all__ = ["Chunker", "ChunkedReader", "ChunkedSource", "Span", "Window", "quietest_cut", "speech_windows",
           "split_windows"]

# Where a cut may fall: between this many seconds and the full 30 s of a window.
MIN_CUT_SECONDS = 22.0
_FRAME_SAMPLES = SAMPLE_RATE // 100  # 10 ms energy frames
# A pause between words lasts ~0.15-0.5 s: the quietest stretch of this length is the cut.
_PAUSE_FRAMES = 20  # 200 ms


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
    """Cut a stream of sample blocks into consecutive windows of at most 30 s (``--no-vad``).

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


def _assemble(index: int, pieces: list[SpeechPiece]) -> Window:
    """One window of consecutive speech pieces; pieces that touch share a span."""
    spans: list[Span] = []
    at = 0
    for piece in pieces:
        if spans and spans[-1].start + spans[-1].length == piece.start:
            last = spans[-1]
            spans[-1] = Span(last.at, last.start, last.length + len(piece.samples))
        else:
            spans.append(Span(at, piece.start, len(piece.samples)))
        at += len(piece.samples)
    samples = np.concatenate([piece.samples for piece in pieces]) if len(pieces) > 1 else pieces[0].samples
    speech = tuple(region for piece in pieces for region in piece.speech or ())
    return Window(index, pieces[0].start / SAMPLE_RATE, samples, tuple(spans), speech)


def _best_cut(pieces: list[SpeechPiece]) -> int:
    """How many of ``pieces`` (which together fill a window) the window takes: the cut
    falls at the longest pause between regions once the window holds MIN_CUT_SECONDS."""
    earliest = MIN_CUT_SECONDS * SAMPLE_RATE
    best, best_pause, length = len(pieces), -1, 0
    for count in range(1, len(pieces)):
        length += len(pieces[count - 1].samples)
        if length < earliest:
            continue
        pause = pieces[count].speech[0].start - pieces[count - 1].speech[-1].end
        if pause > best_pause:
            best, best_pause = count, pause
    return best


def speech_windows(pieces: Iterable[SpeechPiece]) -> Iterator[Window]:
    """Pack padded speech pieces, in order, into windows of at most 30 s."""
    held: list[SpeechPiece] = []
    held_samples = 0
    index = 0
    for piece in pieces:
        if held and held_samples + len(piece.samples) > WINDOW_SAMPLES:
            count = _best_cut(held)
            yield _assemble(index, held[:count])
            index += 1
            held = held[count:]
            held_samples = sum(len(kept.samples) for kept in held)
        held.append(piece)
        held_samples += len(piece.samples)
    if held:
        yield _assemble(index, held)


class Chunker:
    """A file's blocks -> its windows, by ``vad`` options; then ``samples_read`` is the
    file's length (trailing non-speech included)."""

    def __init__(self, vad: VadOptions):
        self.filter = SpeechFilter(vad)
        self._plain_samples = 0

    @property
    def samples_read(self) -> int:
        return self.filter.samples_read if self.filter.options.enabled else self._plain_samples

    def windows(self, blocks: Iterable[np.ndarray]) -> Iterator[Window]:
        if self.filter.options.enabled:
            yield from speech_windows(self.filter.pieces(blocks))
            return
        for window in split_windows(blocks):
            self._plain_samples = round(window.offset_s * SAMPLE_RATE) + len(window.samples)
            yield window


class ChunkedReader:
    """The decoding worker's half of the chunked mode: whole windows with their features."""

    def __init__(self, reading: Reading):
        self.reading = reading
        self.chunker = Chunker(reading.vad)

    @property
    def samples_read(self) -> int:
        return self.chunker.samples_read

    def items(self, file_index: int, blocks: Iterable[np.ndarray]) -> Iterator[WindowItem]:
        for window in self.chunker.windows(blocks):
            yield WindowItem(file_index, window, log_mel(window.samples, self.reading.n_mels))


class ChunkedSource(WindowSource):
    """The main process's half: every window arrives ready; one that Whisper stopped early
    in goes round again from where it stopped (no speech at a window's end is lost)."""

    def __init__(self, file_index: int, settings):
        super().__init__(file_index, settings)
        self.queue: deque[WindowJob] = deque()

    def take(self, item: WindowItem) -> None:
        self.queue.append(WindowJob(self.file_index, item.window, item.features, self.settings.prompt))

    def ready(self) -> list[WindowJob]:
        jobs = list(self.queue)
        self.queue.clear()
        self.outstanding += len(jobs)
        return jobs

    def decoded(self, job: WindowJob, result) -> Settled:
        self.outstanding -= 1
        window = job.window
        segments = refine.settle(window, result.segments, self.settings.word_timestamps)
        done_s = window.duration_s
        if result.resume_at_s is not None:
            cut = round(result.resume_at_s * SAMPLE_RATE)
            self.queue.append(WindowJob(self.file_index, window.rest_from(cut), None, self.settings.prompt))
            done_s = cut / SAMPLE_RATE
        return Settled(segments, result.language, done_s)

    @property
    def buffered_samples(self) -> int:
        return sum(job.samples for job in self.queue)

    @property
    def finished(self) -> bool:
        return self.ended and not self.queue and not self.outstanding
