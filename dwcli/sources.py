"""Window sources: how a file's audio becomes the windows the model decodes.

A long-form mode is two halves that share this module's types:

- a *reader*, run in a decoding worker: it turns the file's decoded blocks into items
  (``WindowItem``: a whole window with its features; ``PieceItem``: a stretch of speech);
- a *window source*, one per file in the main process: it takes those items, says which
  windows are ready to decode, and what a decoded window means for the next ones.

The chunked mode (``chunking``) cuts independent windows in the pauses, so its reader sends
finished windows and its source only decodes again the rest of a window Whisper stopped
early in.  The sequential mode (``sequential``) is Whisper's seek loop: each window starts
where the previous one's last complete segment ended, so its reader sends speech and its
source cuts one window at a time.  ``long_form`` picks the pair; the decoding workers, the
batcher and the run loop are the same for both.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, replace

import numpy as np

from .audio import Placement
from .options import SAMPLE_RATE, VadOptions
from .vad import Region


@dataclass(frozen=True)
class Span:
    """``length`` samples of a window, from ``at`` on, taken from the file at ``start``."""

    at: int
    start: int
    length: int


@dataclass(frozen=True)
class Window:
    """One model input: ``samples`` of a file, which start at ``offset_s`` in it.

    ``spans`` say where each stretch of ``samples`` lies in the file when the window leaves
    non-speech out (empty: one stretch from ``offset_s``).  ``speech`` are the detected
    speech regions the window holds (file samples), or None when no detector ran.
    ``ends_in_pause`` is False when the window's end cuts into speech (a sequential window
    ends wherever 30 s fall).
    """

    index: int  # 0-based position of the window in its file
    offset_s: float
    samples: np.ndarray  # 16 kHz mono float32, at most 30 s
    spans: tuple[Span, ...] = ()
    speech: tuple[Region, ...] | None = None
    ends_in_pause: bool = True

    @property
    def duration_s(self) -> float:
        return len(self.samples) / SAMPLE_RATE

    def _spans(self) -> tuple[Span, ...]:
        return self.spans or (Span(0, round(self.offset_s * SAMPLE_RATE), len(self.samples)),)

    def file_time(self, local_s: float, end: bool = False) -> float:
        """The file's time (seconds) of a time in the window.  At a join between two spans,
        a start belongs to the later span and an ``end`` to the earlier one."""
        spans = self._spans()
        sample = local_s * SAMPLE_RATE
        ats = [span.at for span in spans]
        index = (bisect.bisect_left(ats, sample) - 1) if end else (bisect.bisect_right(ats, sample) - 1)
        span = spans[max(0, index)]
        return (span.start + min(max(sample - span.at, 0), span.length)) / SAMPLE_RATE

    def local_time(self, file_sample: int) -> float:
        """The window's time (seconds) of a file sample, clamped into the window."""
        for span in self._spans():
            if file_sample < span.start + span.length:
                return (span.at + max(file_sample - span.start, 0)) / SAMPLE_RATE
        return self.duration_s

    @property
    def end_s(self) -> float:
        """The file's time at the window's last sample."""
        return self.file_time(self.duration_s, end=True)

    @property
    def speech_end_s(self) -> float | None:
        """Window time where its last detected speech ends, while the window ends in a pause:
        the decoder may not end the text before it.  None: no such rule (no detector, or a
        window that cuts into speech, where Whisper must be free to stop after its last
        complete phrase)."""
        if self.speech is None or not self.ends_in_pause:
            return None
        if not self.speech:
            return 0.0
        return self.local_time(self.speech[-1].end)

    def rest_from(self, cut: int) -> Window:
        """The window from sample ``cut`` on (decoded again when Whisper stopped early)."""
        spans = tuple(
            Span(max(span.at - cut, 0), span.start + max(cut - span.at, 0), span.length - max(cut - span.at, 0))
            for span in self._spans() if span.at + span.length > cut
        )
        offset = spans[0].start / SAMPLE_RATE if spans else self.offset_s + cut / SAMPLE_RATE
        return replace(self, offset_s=offset, samples=self.samples[cut:], spans=spans if self.spans else ())


@dataclass(frozen=True)
class Reading:
    """What a decoding worker needs to read files for a run."""

    long_form: str  # "chunked" or "sequential": which reader
    n_mels: int  # the model's log-mel bins (features computed in the worker)
    vad: VadOptions = VadOptions()
    allow_partial: bool = False
    files_in_flight: int = 1  # files read side by side, their items interleaved (sequential: a batch's worth)
    audio_track: int | None = None  # which audio stream of each file, 0-based (None: the one a player starts with)
    speakers: object = None  # options.SpeakerOptions: embed each file's speech for speaker labels too


@dataclass
class FileBegin:
    """A worker starts reading ``file_index`` (a worker that dies names its files by these)."""

    file_index: int


@dataclass
class WindowItem:
    """A window of file ``file_index`` with its features, ready for the model."""

    file_index: int
    window: Window
    features: object  # torch tensor (n_mels, 3000), float32


@dataclass
class PieceItem:
    """A stretch of file ``file_index``'s speech (``vad.SpeechPiece``) for a source that cuts
    its windows itself."""

    file_index: int
    piece: object


@dataclass
class FileEnd:
    """All items of ``file_index`` have been sent; ``duration_s`` of audio were decoded."""

    file_index: int
    duration_s: float
    source_stamp: object = None  # resume.SourceStamp before decoding began (None: a stream)
    decoding: dict | None = None  # what decoding found: damage, the audio track, where the audio starts
    placement: Placement = Placement()  # where the audio lies on the container's timeline
    speech: object = None  # with --speakers: the file's speakers.embed.FileSpeech


@dataclass
class FileFailed:
    """``file_index`` could not be decoded; ``message`` says why, naming the file."""

    file_index: int
    message: str
    detail: str = ""  # the traceback, shown with DW_DEBUG=1


@dataclass(frozen=True)
class SourceSettings:
    """What every window source of a run shares."""

    prompt: tuple[int, ...]  # the initial prompt's tokens (context of every chunked window; the first sequential one)
    timestamp_begin: int  # the model's <|0.00|> token id (sequential seeks by timestamp tokens)
    word_timestamps: bool  # keep words in the settled segments
    condition_on_previous_text: bool  # sequential: each window reads the file's text so far


@dataclass
class WindowJob:
    """A window handed to the batcher: its file, its features (None: the batcher computes
    them) and the tokens it is conditioned on."""

    file_index: int
    window: Window
    features: object | None
    context: tuple[int, ...]
    encoded: object = None  # its encoder states, when the batcher was asked to keep them

    @property
    def samples(self) -> int:
        return len(self.window.samples)


@dataclass
class Settled:
    """What one decoded window gave its file: segments on the file's timeline, the window's
    language, and the seconds of the file it accounts for (progress)."""

    segments: list
    language: str | None
    progress_s: float


class WindowSource:
    """One file's windows in the main process (the base of the chunked and sequential
    sources): items in, ready windows out, results back."""

    def __init__(self, file_index: int, settings: SourceSettings):
        self.file_index = file_index
        self.settings = settings
        self.ended = False  # every item of the file has arrived
        self.outstanding = 0  # windows handed out and not decoded yet

    def take(self, item) -> None:
        """An item of this file from its reader."""
        raise NotImplementedError

    def end(self) -> None:
        self.ended = True

    def ready(self) -> list[WindowJob]:
        """The windows that can be decoded now (each handed out once)."""
        raise NotImplementedError

    def decoded(self, job: WindowJob, result) -> Settled:
        """What the engine's ``WindowResult`` for ``job`` settles."""
        raise NotImplementedError

    @property
    def waiting(self) -> bool:
        """Whether it can offer nothing more until a result comes back (the run loop then
        decodes rather than reading on).  Independent windows never wait."""
        return False

    @property
    def buffered_samples(self) -> int:
        """Audio held, not yet handed out (the run loop bounds the total)."""
        return 0

    @property
    def finished(self) -> bool:
        """Every window decoded: the file's transcript is complete."""
        raise NotImplementedError
