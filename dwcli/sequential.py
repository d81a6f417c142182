"""``--long-form sequential``: Whisper's own long-form algorithm (openai-whisper, and
transformers' ``generate`` on long inputs), batched across files.

Each file is read as 30 s windows starting at a seek point.  After a window is decoded,
the seek point moves to the end of the last complete segment: when the window's tokens end
in a lone timestamp Whisper heard everything, so the whole window is consumed; otherwise
the unfinished last segment is dropped and decoded again at the start of the next window.
Temperature fallback and the no-speech, log-prob and compression-ratio thresholds are the
engine's (``DecodingOptions``), shared with the chunked mode.

Unlike the chunked mode, a file's windows depend on each other, so a file has one window
in the model at a time; the decoding workers read a batch's worth of files side by side
(``Reading.files_in_flight``) so that a batch holds one window of each.  The reader sends
the file's speech (the padded regions the detector found, or without detection every
sample); the source seeks in that speech stream, and its windows' spans map stream samples
back to the file's.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np

from . import refine
from .audio import SAMPLE_RATE
from .features import WINDOW_SAMPLES
from .segments import SECONDS_PER_TIMESTAMP, Segment
from .sources import PieceItem, Reading, Settled, Span, Window, WindowJob, WindowSource
from .vad import Region, SpeechFilter

# openai-whisper's prompt_reset_on_temperature: text sampled this hot is no context to keep.
_RESET_CONTEXT_ABOVE_TEMPERATURE = 0.5
# A source keeps this much of its file's speech ahead of the seek point: enough for the next
# window wherever the seek lands, and memory flat however long the file is.
_AHEAD_SAMPLES = 2 * WINDOW_SAMPLES


class SequentialReader:
    """The decoding worker's half: the file's speech, piece by piece."""

    def __init__(self, reading: Reading):
        self.filter = SpeechFilter(reading.vad)

    @property
    def samples_read(self) -> int:
        return self.filter.samples_read

    def items(self, file_index: int, blocks: Iterable[np.ndarray]) -> Iterator[PieceItem]:
        for piece in self.filter.pieces(blocks):
            yield PieceItem(file_index, piece)


def advance(window: Window, tokens: list[int], segments: list[Segment], timestamp_begin: int,
            ) -> tuple[list[Segment], list[int], int]:
    """Which segments of a window to keep, their tokens, and how many samples to seek
    forward: openai-whisper's rule.  After a pair of timestamps the model has begun a
    segment the window cuts off: the segments before it are kept and the next window
    starts at the pair's first timestamp; a window that ends on a lone timestamp (or holds
    no pair) was heard to its end."""
    whole = len(window.samples)
    is_timestamp = [token >= timestamp_begin for token in tokens]
    pairs = [index for index in range(1, len(tokens)) if is_timestamp[index] and is_timestamp[index - 1]]
    single_timestamp_ending = len(tokens) >= 2 and is_timestamp[-1] and not is_timestamp[-2]
    if not pairs or single_timestamp_ending:
        return segments, tokens, whole
    last_complete_s = (tokens[pairs[-1] - 1] - timestamp_begin) * SECONDS_PER_TIMESTAMP
    seek = round(last_complete_s * SAMPLE_RATE)
    if seek <= 0:
        return segments, tokens, whole
    kept = [segment for segment in segments if segment.end <= last_complete_s + 1e-6]
    return kept, tokens[: pairs[-1]], min(seek, whole)


class SequentialSource(WindowSource):
    """One file read window by window from its seek point, in its speech stream."""

    def __init__(self, file_index: int, settings):
        super().__init__(file_index, settings)
        self.buffer = np.zeros(0, np.float32)
        self.buffer_offset = 0  # stream position (samples) of buffer[0]
        self.stream_length = 0  # stream samples received so far
        self.spans: list[Span] = []  # stream -> file, for what is buffered
        self.regions: list[Region] = []  # detected speech in the buffer
        self.detected = True  # the pieces carry detected speech (False: --no-vad)
        self.seek = 0  # stream position of the next window
        # The file's tokens so far (the initial prompt's first) and where the context of the
        # next window begins among them (openai-whisper's all_tokens and prompt_reset_since).
        self.tokens: list[int] = list(settings.prompt)
        self.context_from = 0

    def take(self, item: PieceItem) -> None:
        piece = item.piece
        last = self.spans[-1] if self.spans else None
        if last is not None and last.start + last.length == piece.start:
            self.spans[-1] = Span(last.at, last.start, last.length + len(piece.samples))
        else:
            self.spans.append(Span(self.stream_length, piece.start, len(piece.samples)))
        self.detected = piece.speech is not None
        self.regions.extend(piece.speech or ())
        self.buffer = np.concatenate([self.buffer, piece.samples]) if len(self.buffer) else piece.samples
        self.stream_length += len(piece.samples)

    @property
    def _ahead(self) -> int:
        return self.stream_length - self.seek

    def ready(self) -> list[WindowJob]:
        if self.outstanding or self.finished or (self._ahead < WINDOW_SAMPLES and not self.ended):
            return []
        window = self._window()
        self.outstanding = 1
        return [WindowJob(self.file_index, window, None, tuple(self.tokens[self.context_from :]))]

    def _window(self) -> Window:
        """The 30 s from the seek point (less at the end of the file)."""
        self.buffer = self.buffer[self.seek - self.buffer_offset :]
        self.buffer_offset = self.seek
        self.spans = [span for span in self.spans if span.at + span.length > self.seek]
        samples = self.buffer[:WINDOW_SAMPLES]
        end = self.seek + len(samples)
        spans = tuple(
            Span(max(span.at - self.seek, 0), span.start + max(self.seek - span.at, 0),
                 min(span.at + span.length, end) - max(span.at, self.seek))
            for span in self.spans if span.at < end
        )
        speech = None
        ends_in_pause = True
        if self.detected:
            first, last = spans[0].start, spans[-1].start + spans[-1].length
            self.regions = [region for region in self.regions if region.end > first]
            speech = tuple(region for region in self.regions if region.start < last)
            # A window that stops short of the stream's end cuts into speech unless its last
            # sample lies outside every detected region.
            at_end = self.ended and end == self.stream_length
            ends_in_pause = at_end or not any(region.start < last < region.end for region in speech)
        return Window(0, spans[0].start / SAMPLE_RATE, samples, spans, speech, ends_in_pause)

    def decoded(self, job: WindowJob, result) -> Settled:
        self.outstanding = 0
        settings = self.settings
        kept, kept_tokens, step = advance(job.window, result.tokens, result.segments, settings.timestamp_begin)
        segments = refine.settle(job.window, kept, settings.word_timestamps)
        self.tokens.extend(kept_tokens)
        if not settings.condition_on_previous_text or result.temperature > _RESET_CONTEXT_ABOVE_TEMPERATURE:
            self.context_from = len(self.tokens)
        step = max(step, 1)
        self.seek += step
        return Settled(segments, result.language, step / SAMPLE_RATE)

    @property
    def waiting(self) -> bool:
        """Its window is in the model, and it holds enough speech for the next one."""
        return bool(self.outstanding) and (self.ended or self._ahead >= _AHEAD_SAMPLES)

    @property
    def buffered_samples(self) -> int:
        return self.stream_length - self.buffer_offset

    @property
    def finished(self) -> bool:
        return self.ended and not self.outstanding and self.seek >= self.stream_length
