"""Speaker embeddings over a file's speech, computed where the audio is.

The decoding side (a ``batching`` worker in chunked mode, the sequential reader otherwise)
already holds each stretch of detected speech with its samples; a ``SpeechEmbedder`` fed
those stretches cuts every speech region into sub-windows of ``SUB_WINDOW_S`` every
``SHIFT_S``, embeds each with
CAM++ and keeps only the results: a ``FileSpeech`` of a few hundred bytes per second of
speech travels to the main process with the file's end, never the audio.

Each region's filter bank is computed once and the sub-windows are slices of it (the
sub-windows start on its 10 ms frame grid, so a slice is exactly the sub-window's own
filter bank), then mean-normalised one by one as CAM++ was trained.

The network runs on one CPU thread, wherever it runs: in a decoding worker that is the
worker's share of the CPU beside the model; in the main process (standard input, sequential
mode) the thread count is set to one for the call and restored.  A region's sub-windows are
a small batch, and on 2 cores already busy with other work, two threads were 10x slower than
one (1.4 s against 13.8 s for 11.7 s of speech, load average 10).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from ..audio import SAMPLE_RATE
from .fbank import FRAME_SAMPLES, HOP_SAMPLES, frame_count, log_fbank
from .weights import load_campplus

SUB_WINDOW_S = 1.5
# 3D-Speaker's diarization recipe takes a sub-window every 0.75 s; dw takes one every 1.5 s
# (each second of speech embedded once, not twice).  CAM++ is most of the speaker stage's cost
# (about 40 ms a sub-window on one thread), and on the tune split DER was the same (1.28%
# against 1.25%), with 21% fewer sub-windows (most regions are short: their sub-windows are
# not halved) and the stage 1.2x faster; the held-out dev split, checked afterwards, went from
# 3.43% to 2.53% (benchmarks/RESULTS.md, 2026-12-07).
SHIFT_S = 1.5
# Speech shorter than this is not embedded (a syllable says little about its speaker); its
# words take the nearest speaker found around it.
MIN_EMBED_S = 0.3
_SUB_WINDOW_FRAMES = frame_count(round(SUB_WINDOW_S * SAMPLE_RATE))
_SHIFT_FRAMES = round(SHIFT_S * SAMPLE_RATE) // HOP_SAMPLES


@dataclass
class FileSpeech:
    """A file's speech as the speaker stage needs it: the detected regions and, for each
    sub-window, its span (seconds) and its CAM++ embedding."""

    regions: list[tuple[float, float]] = field(default_factory=list)
    starts: list[float] = field(default_factory=list)
    ends: list[float] = field(default_factory=list)
    embeddings: np.ndarray = field(default_factory=lambda: np.zeros((0, 192), np.float32))


def sub_windows(frames: int) -> list[tuple[int, int]]:
    """(first frame, frame count) of the sub-windows of a region of ``frames`` frames: one
    every shift while a whole one fits, then one ending at the region's end."""
    if frames <= _SUB_WINDOW_FRAMES:
        return [(0, frames)] if frames > 0 else []
    spans, first = [], 0
    while first + _SUB_WINDOW_FRAMES < frames:
        spans.append((first, _SUB_WINDOW_FRAMES))
        first += _SHIFT_FRAMES
    spans.append((frames - _SUB_WINDOW_FRAMES, _SUB_WINDOW_FRAMES))
    return spans


class SpeechEmbedder:
    """Collects a file's speech regions (with their samples) and embeds them."""

    def __init__(self):
        self.speech = FileSpeech()
        self._embeddings: list[np.ndarray] = []

    def add(self, first_sample: int, samples: np.ndarray, regions: Iterable) -> None:
        """Audio ``samples`` that start at file sample ``first_sample``, and the detected
        speech ``regions`` (``vad.Region``, file samples) inside it."""
        for region in regions:
            start = max(region.start, first_sample)
            end = min(region.end, first_sample + len(samples))
            if end <= start:
                continue
            self.speech.regions.append((start / SAMPLE_RATE, end / SAMPLE_RATE))
            if end - start >= MIN_EMBED_S * SAMPLE_RATE:
                self._embed_region(start, samples[start - first_sample : end - first_sample])

    def add_window(self, window) -> None:
        """A chunked window (``chunking.Window``): its spans hold its regions' samples."""
        if not window.speech:
            return
        for span in window._spans():
            inside = [region for region in window.speech
                      if region.start < span.start + span.length and region.end > span.start]
            self.add(span.start, window.samples[span.at : span.at + span.length], inside)

    def _embed_region(self, start: int, samples: np.ndarray) -> None:
        import torch

        features = log_fbank(samples)
        spans = sub_windows(len(features))
        if not spans:
            return
        by_length: dict[int, list[int]] = {}
        for index, (_, count) in enumerate(spans):
            by_length.setdefault(count, []).append(index)
        result = np.zeros((len(spans), 192), np.float32)
        model = load_campplus()
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            with torch.inference_mode():
                for count, indices in by_length.items():
                    batch = torch.stack([features[spans[i][0] : spans[i][0] + count] for i in indices])
                    batch = batch - batch.mean(dim=1, keepdim=True)
                    result[indices] = model(batch).numpy()
        finally:
            torch.set_num_threads(threads)
        for first, count in spans:
            sub_start = start + first * HOP_SAMPLES
            self.speech.starts.append(sub_start / SAMPLE_RATE)
            self.speech.ends.append(min(sub_start + (count - 1) * HOP_SAMPLES + FRAME_SAMPLES, start + len(samples)) / SAMPLE_RATE)
        self._embeddings.append(result)

    def result(self) -> FileSpeech:
        """The file's speech, once all of it has been added."""
        if self._embeddings:
            self.speech.embeddings = np.concatenate(self._embeddings)
        return self.speech
