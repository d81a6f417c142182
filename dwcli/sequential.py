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

from . import refine
from .audio import SAMPLE_RATE, DecodeReport, decode_blocks
from .batching import FileFailed, release_device_cache, too_big_for_device
from .chunking import Span, Window
from .errors import DwError
from .features import WINDOW_SAMPLES, log_mel_batch
from .segments import SECONDS_PER_TIMESTAMP, Segment
from .vad import Region, SpeechFilter, VadOptions


@dataclass
class _FileCursor:
    """One file read window by window from its seek point.

    The stream it seeks in is the file's speech (the padded regions the detector found,
    one after another) or, without detection, the whole file; ``spans`` map stream samples
    back to the file's.
    """

    file_index: int
    speech: SpeechFilter
    pieces: Iterator
    report: DecodeReport = field(default_factory=DecodeReport)
    source_stamp: tuple[int, int] | None = None
    label: str = ""  # the file as messages name it
    buffer: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    buffer_offset: int = 0  # stream position (samples) of buffer[0]
    stream_length: int = 0  # stream samples read so far
    spans: list[Span] = field(default_factory=list)  # stream -> file, for what is buffered
    regions: list[Region] = field(default_factory=list)  # detected speech in the buffer
    seek: int = 0  # stream position of the next window
    exhausted: bool = False
    segments: list[Segment] = field(default_factory=list)
    languages: list[str] = field(default_factory=list)
    # The file's tokens so far (the initial prompt's first) and where the context of the
    # next window begins among them (openai-whisper's all_tokens and prompt_reset_since).
    tokens: list[int] = field(default_factory=list)
    context_from: int = 0
    voices: object = None  # with --speakers: a speakers.embed.SpeechEmbedder fed each piece

    @property
    def context(self) -> tuple[int, ...]:
        return tuple(self.tokens[self.context_from :])

    def _read(self) -> None:
        piece = next(self.pieces, None)
        if piece is None:
            self.exhausted = True
            return
        last = self.spans[-1] if self.spans else None
        if last is not None and last.start + last.length == piece.start:
            self.spans[-1] = Span(last.at, last.start, last.length + len(piece.samples))
        else:
            self.spans.append(Span(self.stream_length, piece.start, len(piece.samples)))
        self.regions.extend(piece.speech or ())
        if self.voices is not None:
            self.voices.add(piece.start, piece.samples, piece.speech or ())
        self.buffer = np.concatenate([self.buffer, piece.samples]) if len(self.buffer) else piece.samples
        self.stream_length += len(piece.samples)

    def window(self) -> Window | None:
        """The 30 s from the seek point (less at the end of the file); None when done."""
        self.buffer = self.buffer[self.seek - self.buffer_offset :]
        self.buffer_offset = self.seek
        self.spans = [span for span in self.spans if span.at + span.length > self.seek]
        while not self.exhausted and len(self.buffer) < WINDOW_SAMPLES:
            self._read()
        if len(self.buffer) == 0:
            return None
        samples = self.buffer[:WINDOW_SAMPLES]
        end = self.seek + len(samples)
        spans = tuple(
            Span(max(span.at - self.seek, 0), span.start + max(self.seek - span.at, 0),
                 min(span.at + span.length, end) - max(span.at, self.seek))
            for span in self.spans if span.at < end
        )
        speech = None
        ends_in_pause = True
        if self.speech.options.enabled:
            first, last = spans[0].start, spans[-1].start + spans[-1].length
            self.regions = [region for region in self.regions if region.end > first]
            speech = tuple(region for region in self.regions if region.start < last)
            # A window that stops short of the stream's end cuts into speech unless its last
            # sample lies outside every detected region.
            at_end = self.exhausted and end == self.stream_length
            ends_in_pause = at_end or not any(region.start < last < region.end for region in speech)
        return Window(0, spans[0].start / SAMPLE_RATE, samples, spans, speech, ends_in_pause)

    @property
    def duration_s(self) -> float:
        return self.speech.samples_read / SAMPLE_RATE


def _advance(window: Window, tokens: list[int], segments: list[Segment], timestamp_begin: int,
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


# openai-whisper's prompt_reset_on_temperature: text sampled this hot is no context to keep.
_RESET_CONTEXT_ABOVE_TEMPERATURE = 0.5


@dataclass
class FileTranscribed:
    """A file read to its end: its segments (file times) and the language of each window."""

    file_index: int
    segments: list[Segment]
    languages: list[str]
    duration_s: float
    source_stamp: tuple[int, int] | None = None
    decoding: dict | None = None
    speech: object = None  # with --speakers: the speakers.embed.FileSpeech of its speech


def _decode_fitting(engine, windows, contexts, options) -> list:
    """The engine's results for ``windows``; when the device runs out of memory, the two
    halves one after the other, so that nothing is lost (None for a window that does not fit
    even alone: its file fails, the others go on)."""
    import torch

    try:
        features = log_mel_batch([window.samples for window in windows], engine.n_mels)
        return engine.transcribe(features, windows, options, previous=contexts)
    except torch.OutOfMemoryError:
        release_device_cache()
        if len(windows) == 1:
            return [None]
        half = len(windows) // 2
        return (_decode_fitting(engine, windows[:half], contexts[:half], options)
                + _decode_fitting(engine, windows[half:], contexts[half:], options))


def sequential_transcripts(media_files, engine, options, batch_size: int, vad: VadOptions = VadOptions(),
                           allow_partial: bool = False, speakers=None) -> Iterator[FileTranscribed | FileFailed]:
    """Transcribe ``media_files`` (a list of ``(file_index, MediaFile)``) sequentially,
    ``batch_size`` files side by side; yield each file's result as it finishes (with
    ``speakers``, ``SpeakerOptions``, the speaker embeddings of its speech too)."""
    from .batching import decoding_notes
    from .resume import source_stamp
    from .speakers import embedder

    pending = list(media_files)
    active: list[_FileCursor] = []
    while pending or active:
        while pending and len(active) < batch_size:
            file_index, media = pending.pop(0)
            speech, report = SpeechFilter(vad), DecodeReport()
            stamp = source_stamp(media)
            cursor = _FileCursor(file_index, speech, speech.pieces(decode_blocks(media.source, report, allow_partial)),
                                 report, stamp, media.label)
            cursor.tokens = list(engine.prompt_tokens(options.initial_prompt))
            cursor.voices = embedder(speakers)
            active.append(cursor)
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
                yield FileTranscribed(cursor.file_index, cursor.segments, cursor.languages, cursor.duration_s,
                                      cursor.source_stamp, decoding_notes(cursor.report),
                                      cursor.voices.result() if cursor.voices is not None else None)
            else:
                windows.append(window)
                cursors.append(cursor)
        if not windows:
            continue
        results = _decode_fitting(engine, windows, [cursor.context for cursor in cursors], options)
        for cursor, window, result in zip(cursors, windows, results):
            if result is None:
                active.remove(cursor)
                yield FileFailed(cursor.file_index, too_big_for_device(cursor.label, engine.device))
                continue
            kept, kept_tokens, step = _advance(window, result.tokens, result.segments, engine.special.timestamp_begin)
            cursor.segments.extend(refine.settle(window, kept, options.word_timestamps))
            if result.language:
                cursor.languages.append(result.language)
            cursor.tokens.extend(kept_tokens)
            if not options.condition_on_previous_text or result.temperature > _RESET_CONTEXT_ABOVE_TEMPERATURE:
                cursor.context_from = len(cursor.tokens)
            cursor.seek += max(step, 1)
