"""Speech detection: which stretches of a file are speech, by Silero VAD.

One learned detector answers every "is this speech?" dw asks: which audio reaches the model
(``chunking`` assembles windows from the speech found here), where the decoder may stop, and
where segment and word edges go (``refine``).  Loudness cannot tell music, noise or a
crowd from a voice; Silero VAD (MIT, its model files inside the ``silero-vad`` wheel) can.

Of the models that wheel ships, dw runs the *sequence* ONNX export through onnxruntime: it
takes a block of 32 ms frames per call and carries the LSTM state between calls, so a file is
read once, as it streams, at about 190x real time on one thread, with probabilities equal to
the frame-by-frame model's (the TorchScript model, frame by frame, ran at 26x; ONNX frame by
frame at 50x; both measured on 5 minutes of LJ Speech, RESULTS.md).  The probabilities
become speech regions through the package's own ``get_speech_timestamps_from_probs``.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from .audio import SAMPLE_RATE
from .options import VadOptions

FRAME_SAMPLES = 512  # Silero's frame at 16 kHz: 32 ms
_CONTEXT_SAMPLES = 64  # each frame is read with the 64 samples before it
_STATE_SHAPE = (1, 1, 128)  # the LSTM's hidden and cell state
_FRAMES_PER_CALL = 512  # ~16 s of audio per onnxruntime call: fewer calls, bounded memory
WINDOW_SECONDS = 30.0  # Whisper's window: no speech region is longer


@dataclass(frozen=True)
class Region:
    """A stretch of detected speech, in samples of the file: [start, end)."""

    start: int
    end: int

    @property
    def start_s(self) -> float:
        return self.start / SAMPLE_RATE

    @property
    def end_s(self) -> float:
        return self.end / SAMPLE_RATE


@dataclass(frozen=True)
class SpeechPiece:
    """Audio to transcribe: one padded speech region (or, without detection, a plain block).

    ``speech`` are the detected (unpadded) regions inside it, in file samples; ``None`` when
    no detector ran, so nothing is known about where the speech is.
    """

    start: int  # file sample of samples[0]
    samples: np.ndarray
    speech: tuple[Region, ...] | None

    @property
    def end(self) -> int:
        return self.start + len(self.samples)


@functools.lru_cache(maxsize=1)
def _session():
    """The Silero sequence model, loaded once per process (about 0.3 s)."""
    import torch

    # Importing silero_vad sets torch's thread count to 1 for the whole process (its
    # model.py does so at import); dw's model needs every core, so the count is restored.
    threads = torch.get_num_threads()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # its own use of importlib.resources
        from silero_vad import load_silero_vad

        model = load_silero_vad(sequence=True)
    torch.set_num_threads(threads)
    return model.session


class _FrameScorer:
    """Speech probability of each 32 ms frame of a stream fed block by block."""

    def __init__(self):
        self.session = _session()
        self.hidden = np.zeros(_STATE_SHAPE, np.float32)
        self.cell = np.zeros(_STATE_SHAPE, np.float32)
        self.context = np.zeros(_CONTEXT_SAMPLES, np.float32)
        self.leftover = np.zeros(0, np.float32)  # samples short of a whole frame

    def feed(self, block: np.ndarray, last: bool = False) -> np.ndarray:
        """Probabilities of the frames completed by ``block``; with ``last``, the final
        partial frame too (zero-padded, as the package pads it)."""
        samples = np.concatenate([self.leftover, block.astype(np.float32, copy=False)])
        count = len(samples) // FRAME_SAMPLES
        if last and len(samples) % FRAME_SAMPLES:
            count += 1
            samples = np.pad(samples, (0, count * FRAME_SAMPLES - len(samples)))
        self.leftover = samples[count * FRAME_SAMPLES:]
        frames = samples[: count * FRAME_SAMPLES].reshape(count, FRAME_SAMPLES)
        probabilities = []
        for first in range(0, count, _FRAMES_PER_CALL):
            chunk = frames[first : first + _FRAMES_PER_CALL]
            contexts = np.concatenate([self.context[None, :], chunk[:-1, -_CONTEXT_SAMPLES:]])
            self.context = chunk[-1, -_CONTEXT_SAMPLES:].copy()
            values, self.hidden, self.cell = self.session.run(
                ["speech_probs", "hn", "cn"],
                {"input": np.concatenate([contexts, chunk], axis=1), "h": self.hidden, "c": self.cell},
            )
            probabilities.append(np.asarray(values, np.float32).reshape(-1))
        return np.concatenate(probabilities) if probabilities else np.zeros(0, np.float32)


def speech_probabilities(samples: np.ndarray) -> np.ndarray:
    """Speech probability of every 32 ms frame of ``samples`` (16 kHz mono)."""
    return _FrameScorer().feed(samples, last=True)


def _regions(probabilities: np.ndarray, options: VadOptions, first_frame: int) -> list[Region]:
    """Unpadded speech regions of ``probabilities`` (frames from ``first_frame`` on), by the
    package's hysteresis: start at ``threshold``, end after ``min_silence_duration_ms`` below
    ``threshold - 0.15``, regions cut in their longest pause to fit a Whisper window."""
    from silero_vad import get_speech_timestamps_from_probs

    if len(probabilities) == 0:
        return []
    pad_s = options.speech_pad_ms / 1000
    found = get_speech_timestamps_from_probs(
        probabilities.tolist(),
        sampling_rate=SAMPLE_RATE,
        threshold=options.threshold,
        min_speech_duration_ms=options.min_speech_duration_ms,
        # Padded on both sides, a region still fits one window.
        max_speech_duration_s=WINDOW_SECONDS - pad_s,
        min_silence_duration_ms=options.min_silence_duration_ms,
        speech_pad_ms=0,
    )
    offset = first_frame * FRAME_SAMPLES
    return [Region(offset + item["start"], offset + item["end"]) for item in found]


def speech_regions(samples: np.ndarray, options: VadOptions = VadOptions()) -> list[Region]:
    """The unpadded speech regions of a whole clip (tests, short audio; files stream)."""
    regions = _regions(speech_probabilities(samples), options, 0)
    return [Region(region.start, min(region.end, len(samples))) for region in regions]


class SpeechFilter:
    """Reads a stream of blocks and hands on only its speech, as padded ``SpeechPiece``s.

    Streams: it holds the audio since the last piece it handed on (at most one window's
    worth of speech plus a block), and one float per 32 ms frame of the file.  After the
    stream ends, ``samples_read`` is the file's length.
    """

    def __init__(self, options: VadOptions):
        self.options = options
        self.samples_read = 0

    def pieces(self, blocks: Iterable[np.ndarray]) -> Iterator[SpeechPiece]:
        if not self.options.enabled:
            for block in blocks:
                yield SpeechPiece(self.samples_read, block, None)
                self.samples_read += len(block)
            return
        yield from _SpeechTracker(self).run(blocks)


class _SpeechTracker:
    """The bookkeeping of ``SpeechFilter.pieces`` for one stream."""

    def __init__(self, owner: SpeechFilter):
        self.owner = owner
        self.options = owner.options
        self.scorer = _FrameScorer()
        # Probabilities of the frames from scan_frame on: before it no speech is open, so
        # regions are looked for from there (and older frames are forgotten).
        self.scan_frame = 0
        self.probabilities = np.zeros(0, np.float32)
        self.frames = 0  # frames scored so far
        self.buffer = np.zeros(0, np.float32)
        self.buffer_start = 0  # file sample of buffer[0]
        self.previous_end = 0  # padded end of the last piece handed on (file samples)

    def run(self, blocks: Iterable[np.ndarray]) -> Iterator[SpeechPiece]:
        for block in blocks:
            yield from self._take(block, last=False)
        yield from self._take(np.zeros(0, np.float32), last=True)

    def _take(self, block: np.ndarray, last: bool) -> Iterator[SpeechPiece]:
        self.buffer = np.concatenate([self.buffer, block]) if len(self.buffer) else block
        self.owner.samples_read += len(block)
        scored = self.scorer.feed(block, last)
        self.probabilities = np.concatenate([self.probabilities, scored])
        self.frames += len(scored)
        total = self.owner.samples_read
        scanned_to = self.frames * FRAME_SAMPLES
        regions = [Region(region.start, min(region.end, total))
                   for region in _regions(self.probabilities, self.options, self.scan_frame)]
        pad = self.options.pad_samples
        for index, region in enumerate(regions):
            following = regions[index + 1] if index + 1 < len(regions) else None
            if following is None and not last:
                # The package ends a region only after min_silence of non-speech: one that
                # reaches the end of what was scored may go on.  A closed one's padded end
                # depends on whether speech starts again within two pads.
                if region.end >= scanned_to or scanned_to < region.end + 2 * pad:
                    break
            yield self._piece(region, following, total)
            self._forget_before(-(-region.end // FRAME_SAMPLES))
        if not regions:
            # No speech in sight: the next region cannot start before the last frame.
            self._forget_before(max(self.scan_frame, self.frames - 1))
        self._drop_audio_before(min(self.scan_frame * FRAME_SAMPLES - pad, total))

    def _forget_before(self, frame: int) -> None:
        self.probabilities = self.probabilities[frame - self.scan_frame:]
        self.scan_frame = frame

    def _piece(self, region: Region, following: Region | None, total: int) -> SpeechPiece:
        pad = self.options.pad_samples
        start = max(region.start - pad, self.previous_end, 0)
        end = min(region.end + pad, total)
        if following is not None and following.start - region.end < 2 * pad:
            end = min(end, region.end + (following.start - region.end) // 2)  # share the gap
        end = max(end, region.end)
        self.previous_end = end
        samples = self.buffer[start - self.buffer_start : end - self.buffer_start]
        return SpeechPiece(start, samples, (region,))

    def _drop_audio_before(self, sample: int) -> None:
        keep_from = max(sample, self.previous_end) - self.buffer_start
        if keep_from > 0:
            self.buffer = self.buffer[keep_from:]
            self.buffer_start += keep_from
