"""``--long-form sequential``: Whisper's own long-form algorithm (openai-whisper, and
transformers' ``generate`` on long inputs), batched across files.

Each file is read as 30 s windows starting at a seek point.  After a window is decoded,
the seek point moves to the end of the last complete segment: when the window's tokens end
in a lone timestamp Whisper heard everything, so the whole window is consumed; otherwise
the unfinished last segment is dropped and decoded again at the start of the next window.
Temperature fallback and the no-speech, log-prob and compression-ratio thresholds are the
engine's (``DecodingOptions``), shared with the chunked mode.

Unlike the chunked mode, a file's windows depend on each other, so one file advances one
window at a time; several files advance side by side to fill a batch.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from .audio import SAMPLE_RATE, decode_blocks
from .batching import FileFailed
from .chunking import Window
from .errors import DwError
from .features import WINDOW_SAMPLES, log_mel_batch
from .segments import SECONDS_PER_TIMESTAMP, Segment


@dataclass
class _FileCursor:
    """One file being read window by window from its seek point."""

    file_index: int
    blocks: Iterator[np.ndarray]
    buffer: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    buffer_offset: int = 0  # stream position (samples) of buffer[0]
    seek: int = 0  # stream position of the next window
    exhausted: bool = False
    segments: list[Segment] = field(default_factory=list)
    languages: list[str] = field(default_factory=list)

    def window(self) -> Window | None:
        """The 30 s from the seek point (less at the end of the file); None when done."""
        self.buffer = self.buffer[self.seek - self.buffer_offset :]
        self.buffer_offset = self.seek
        while not self.exhausted and len(self.buffer) < WINDOW_SAMPLES:
            block = next(self.blocks, None)
            if block is None:
                self.exhausted = True
            else:
                self.buffer = np.concatenate([self.buffer, block])
        if len(self.buffer) == 0:
            return None
        return Window(0, self.seek / SAMPLE_RATE, self.buffer[:WINDOW_SAMPLES])

    @property
    def duration_s(self) -> float:
        return (self.buffer_offset + len(self.buffer)) / SAMPLE_RATE


def _advance(window: Window, tokens: list[int], segments: list[Segment], timestamp_begin: int) -> tuple[list[Segment], int]:
    """Which segments of a window to keep and how many samples to seek forward."""
    whole = len(window.samples)
    is_timestamp = [token >= timestamp_begin for token in tokens]
    pairs = [index for index in range(1, len(tokens)) if is_timestamp[index] and is_timestamp[index - 1]]
    single_timestamp_ending = len(tokens) >= 2 and is_timestamp[-1] and not is_timestamp[-2]
    if not pairs or single_timestamp_ending:
        return segments, whole
    # Keep the segments closed by the last pair; read the rest again from that timestamp.
    last_complete_s = (tokens[pairs[-1]] - timestamp_begin) * SECONDS_PER_TIMESTAMP
    seek = round(last_complete_s * SAMPLE_RATE)
    if seek <= 0:
        return segments, whole
    kept = [segment for segment in segments if segment.end <= last_complete_s + 1e-6]
    return kept, min(seek, whole)


@dataclass
class FileTranscribed:
    """A file read to its end: its segments (file times) and the language of each window."""

    file_index: int
    segments: list[Segment]
    languages: list[str]
    duration_s: float


def sequential_transcripts(media_sources, engine, options, batch_size: int) -> Iterator[FileTranscribed | FileFailed]:
    """Transcribe ``media_sources`` (a list of ``(file_index, source)``) sequentially,
    ``batch_size`` files side by side; yield each file's result as it finishes."""

    pending = list(media_sources)
    active: list[_FileCursor] = []
    while pending or active:
        while pending and len(active) < batch_size:
            file_index, source = pending.pop(0)
            active.append(_FileCursor(file_index, decode_blocks(source)))
        windows, cursors = [], []
        for cursor in list(active):
            try:
                window = cursor.window()
            except DwError as error:
                active.remove(cursor)
                yield FileFailed(cursor.file_index, str(error))
                continue
            if window is None:
                active.remove(cursor)
                yield FileTranscribed(cursor.file_index, cursor.segments, cursor.languages, cursor.duration_s)
            else:
                windows.append(window)
                cursors.append(cursor)
        if not windows:
            continue
        features = log_mel_batch([window.samples for window in windows], engine.n_mels)
        results = engine.transcribe(features, windows, options)
        for cursor, window, result in zip(cursors, windows, results):
            kept, step = _advance(window, result.tokens, result.segments, engine.special.timestamp_begin)
            cursor.segments.extend(segment.shifted(window.offset_s) for segment in kept)
            if result.language:
                cursor.languages.append(result.language)
            cursor.seek += max(step, 1)
