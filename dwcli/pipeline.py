"""The run: files -> windows -> batches -> engine -> per-file transcripts -> writers.

A file's outputs are written the moment its last window is decoded, so a long batch job
leaves finished files behind it as it goes, and a failure in one file never touches another.
"""

from __future__ import annotations

import errno
import sys
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from .atomic import write_atomic
from .audio import SAMPLE_RATE
from .batching import (FileEnd, FileFailed, LostWorker, WindowItem, release_device_cache, stack_features,
                       stream_items, too_big_for_device)
from .decoding import DecodingOptions
from .discover import MediaFile
from .errors import Terminated
from .features import log_mel
from . import refine
from .resume import Resume
from .speakers import SpeakerOptions, label_speakers
from .vad import VadOptions
from .segments import Segment, Transcript, timeline
from .writers import WriterOptions, render


@dataclass(frozen=True)
class TranscribeOptions:
    """Everything about a run that is not the model or the inputs."""

    formats: tuple[str, ...] = ("txt",)
    batch_size: int = 8  # windows per model call
    workers: int = 1  # decoding processes beside the model (0: decode in this process)
    decoding: DecodingOptions = DecodingOptions()
    writer: WriterOptions = WriterOptions()
    to_stdout: bool = False  # write the single format to stdout instead of files
    long_form: str = "chunked"  # "chunked" (windows cut in pauses, batched) or "sequential"
    vad: VadOptions = VadOptions()  # what is speech: only it reaches the model
    allow_partial: bool = False  # transcribe what a truncated file holds (marked partial) instead of failing it
    resume: Resume | None = None  # records how each file's outputs were made (--skip-existing)
    speakers: SpeakerOptions | None = None  # --speakers: label who speaks (None: no labels)


@dataclass
class FileOutcome:
    """How one input ended."""

    media: MediaFile
    status: str  # "ok", "failed" or "skipped"
    message: str = ""
    duration_s: float = 0.0
    outputs: list[Path] = field(default_factory=list)
    detail: str = ""  # traceback for DW_DEBUG


@dataclass
class RunSummary:
    """Totals for the final summary line and the exit code."""

    ok: int = 0
    failed: int = 0
    skipped: int = 0
    audio_s: float = 0.0
    wall_s: float = 0.0

    @property
    def realtime_factor(self) -> float:
        return self.audio_s / self.wall_s if self.wall_s > 0 else 0.0

    def add(self, other: RunSummary) -> None:
        """Count another run's files and audio in (a replica's, under --devices)."""
        self.ok += other.ok
        self.failed += other.failed
        self.skipped += other.skipped
        self.audio_s += other.audio_s


class Reporter:
    """Receives run events; the CLI picks a rich, plain, JSON or quiet implementation."""

    def start(self, files: list[MediaFile]) -> None: ...
    def advance(self, audio_s: float) -> None: ...
    def file_done(self, outcome: FileOutcome) -> None: ...
    def note(self, message: str) -> None: ...  # a remark worth a line (not under --quiet)
    def finish(self, summary: RunSummary) -> None: ...


@dataclass
class _FileState:
    media: MediaFile
    segments: list[Segment] = field(default_factory=list)
    languages: Counter = field(default_factory=Counter)
    open_windows: int = 0
    duration_s: float | None = None  # known once the worker has sent FileEnd
    failed: bool = False
    started: bool = False  # a window of it has arrived
    source_stamp: tuple[int, int] | None = None  # (size, mtime) before it was read
    decoding: dict | None = None  # damage decoding found
    speech: object = None  # with --speakers: the speaker embeddings of its speech (FileEnd's)

    @property
    def complete(self) -> bool:
        return self.duration_s is not None and self.open_windows == 0 and not self.failed


class _Run:
    def __init__(self, files, engine, options: TranscribeOptions, reporter: Reporter, stdout, collect=None):
        self.collect = collect  # takes (MediaFile, Transcript) instead of writing outputs
        self.engine = engine
        self.options = options
        self.reporter = reporter
        self.stdout = stdout
        self.states = [_FileState(media) for media in files]
        self.pending: list[WindowItem] = []
        self.summary = RunSummary()
        self.batch_size = options.batch_size  # halved for good when the device runs out of memory

    def feed(self, item) -> None:
        state = self.states[item.file_index]
        if state.failed:
            return  # the file already failed: the rest of its windows are not decoded
        if isinstance(item, WindowItem):
            state.open_windows += 1
            state.started = True
            self.pending.append(item)
        elif isinstance(item, FileEnd):
            state.duration_s = item.duration_s
            state.source_stamp, state.decoding, state.speech = item.source_stamp, item.decoding, item.speech
            self._maybe_finish(item.file_index)
        elif isinstance(item, FileFailed):
            self._fail(item.file_index, item.message, item.detail)
        while len(self.pending) >= self.batch_size:
            self._run_batch()

    def drain(self) -> None:
        while self.pending:
            self._run_batch()

    def _run_batch(self) -> None:
        import torch

        batch = self.pending[: self.batch_size]
        self.pending = self.pending[self.batch_size :]
        try:
            results = self.engine.transcribe(
                stack_features(batch), [item.window for item in batch], self.options.decoding
            )
        except torch.OutOfMemoryError:
            release_device_cache()
            if len(batch) == 1:
                # Not even one window fits: this file cannot be done here; the others may.
                (item,) = batch
                self._fail(item.file_index, too_big_for_device(self.states[item.file_index].media.label,
                                                               self.engine.device))
                return
            # Halve the batch and go again with the same windows: nothing is lost, and the
            # smaller size stays for the rest of the run.
            self.batch_size = max(1, len(batch) // 2)
            self.pending = batch + self.pending
            self.reporter.note(f"out of device memory; batch size now {self.batch_size}")
            return
        touched = set()
        for item, result in zip(batch, results):
            state = self.states[item.file_index]
            window = item.window
            state.segments.extend(refine.settle(window, result.segments, self.options.decoding.word_timestamps))
            if result.language:
                state.languages[result.language] += 1
            done_s = window.duration_s
            if result.resume_at_s is not None:
                # Whisper stopped early: the rest of this window goes round again.
                cut = round(result.resume_at_s * SAMPLE_RATE)
                rest = window.rest_from(cut)
                self.pending.insert(0, WindowItem(item.file_index, rest, log_mel(rest.samples, self.engine.n_mels)))
                done_s = cut / SAMPLE_RATE
            else:
                state.open_windows -= 1
            self.reporter.advance(done_s)
            touched.add(item.file_index)
        for file_index in sorted(touched):
            self._maybe_finish(file_index)

    def sequential(self) -> None:
        """Whisper's seek-based long-form algorithm instead of pause-cut windows."""
        from .sequential import sequential_transcripts

        files = [(index, state.media) for index, state in enumerate(self.states)]
        for event in sequential_transcripts(files, self.engine, self.options.decoding, self.options.batch_size,
                                            self.options.vad, self.options.allow_partial, self.options.speakers):
            if isinstance(event, FileFailed):
                self._fail(event.file_index, event.message, event.detail)
                continue
            state = self.states[event.file_index]
            state.segments = event.segments
            state.languages = Counter(event.languages)
            state.duration_s = event.duration_s
            state.source_stamp, state.decoding, state.speech = event.source_stamp, event.decoding, event.speech
            self.reporter.advance(event.duration_s)
            self._maybe_finish(event.file_index)

    def _fail(self, file_index: int, message: str, detail: str = "") -> None:
        state = self.states[file_index]
        if state.failed:
            return
        state.failed = True
        self.pending = [item for item in self.pending if item.file_index != file_index]
        self.summary.failed += 1
        self.reporter.file_done(FileOutcome(state.media, "failed", message, detail=detail))

    def _maybe_finish(self, file_index: int) -> None:
        state = self.states[file_index]
        if not state.complete:
            return
        from .resume import source_stamp

        if state.source_stamp is not None and source_stamp(state.media) != state.source_stamp:
            self._fail(file_index, f"{state.media.label}: changed while dw read it (still being written?); "
                                   "transcribe it again once it is complete")
            return
        if state.decoding:
            self._say_damage(state.media, state.decoding)
        language = state.languages.most_common(1)[0][0] if state.languages else None
        transcript = Transcript(
            source=state.media.source,
            duration_s=state.duration_s,
            language=language,
            model_id=self.engine.model_id,
            segments=timeline(state.segments, state.duration_s),
            options=result_options(self.engine, self.options),
            decoding=state.decoding or {},
        )
        transcript = label_speakers(transcript, state.speech, self.options.speakers)
        try:
            outputs = self._write(state.media, transcript, state.source_stamp) if self.collect is None else []
            if self.collect is not None:
                self.collect(state.media, transcript)
        except OSError as error:
            reason = error.strerror or str(error)
            self._fail(file_index, f"{state.media.label}: cannot write output ({reason})", traceback.format_exc())
            if error.errno in _CANNOT_WRITE:
                raise WritingImpossible(reason) from None
            return
        state.segments, state.speech = [], None
        state.failed = True  # finished: never finish twice
        self.summary.ok += 1
        self.summary.audio_s += transcript.duration_s
        self.reporter.file_done(FileOutcome(state.media, "ok", duration_s=transcript.duration_s, outputs=outputs))

    def _say_damage(self, media: MediaFile, decoding: dict) -> None:
        if decoding.get("partial"):
            self.reporter.note(f"{media.label}: transcribed {decoding['decoded_s']:.1f} s of the "
                               f"{decoding['declared_s']:.1f} s its container declares (marked partial in JSON)")
        if decoding.get("damaged_packets_skipped"):
            self.reporter.note(f"{media.label}: {decoding['damaged_packets_skipped']} damaged packet(s) skipped")

    def abandon(self, reason: str) -> None:
        """Writing is impossible: every file not finished yet fails, said once."""
        left = [index for index, state in enumerate(self.states) if not state.failed]
        for index in left:
            self.states[index].failed = True
            self.summary.failed += 1
        self.pending = []
        self.reporter.note(f"stopped: outputs cannot be written ({reason}); {len(left)} file(s) left undone")

    def lost_worker(self, reason: str) -> list[int]:
        """A decoding process died: the files it held fail; returns the files to read again."""
        unfinished = [index for index, state in enumerate(self.states) if not state.failed and state.duration_s is None]
        culprits = [index for index in unfinished if self.states[index].started] or unfinished[:1]
        for index in culprits:
            self._fail(index, f"{self.states[index].media.label}: the decoding process died ({reason})")
        return [index for index in unfinished if index not in culprits]

    def _write(self, media: MediaFile, transcript: Transcript, stamp=None) -> list[Path]:
        outputs = []
        resume = None if self.options.to_stdout else self.options.resume
        previous = resume.forget(media) if resume else None  # no record while outputs change
        for fmt in self.options.formats:
            text = render(transcript, fmt, self.options.writer)
            if self.options.to_stdout:
                self.stdout.write(text)
                self.stdout.flush()
            else:
                path = media.output_path(fmt)
                write_atomic(path, text)
                outputs.append(path)
        if resume:
            resume.remember(media, self.options.formats, previous, stamp)  # last: the file is finished
        return outputs


# Write errors after which no other file can be written either: stop instead of decoding on.
_CANNOT_WRITE = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS})


class WritingImpossible(Exception):
    """The output folder takes no more files (full disk, quota, read-only)."""


def _lost_worker(error: Exception) -> str | None:
    """torch's words when a DataLoader worker died (killed, crashed), else None."""
    text = str(error)
    if not isinstance(error, LostWorker) and "DataLoader worker" not in text:
        return None
    if "killed by signal" in text:
        return "killed by signal: " + text.split("killed by signal:", 1)[-1].strip().rstrip(". ")
    return "exited unexpectedly"


def _feed_resilient(run: _Run, files, engine, options: TranscribeOptions, items) -> None:
    """Feed the decoded stream to the run; a decoding process that dies (the OOM killer, a
    crash inside FFmpeg) fails the file it held, and the others are read again by new ones."""
    if not files:
        return
    only = None
    while True:
        if items is None:
            items = stream_items(files, engine.n_mels, options.workers, vad=options.vad,
                                 allow_partial=options.allow_partial, only=only, speakers=options.speakers)
        try:
            for item in items:
                run.feed(item)
        except (KeyboardInterrupt, Terminated):
            getattr(items, "shutdown", lambda: None)()
            raise
        except RuntimeError as error:
            reason = _lost_worker(error)
            if reason is None:
                raise
            getattr(items, "close", lambda: None)()
            only, items = run.lost_worker(reason), None
            if only:
                continue
        run.drain()
        return


def result_options(engine, options: TranscribeOptions) -> dict:
    """The settings that change what a transcript says (recorded in JSON, compared by
    --skip-existing)."""
    return {
        "language": options.decoding.language,
        "task": options.decoding.task,
        "timestamps": options.decoding.timestamps,
        "dtype": engine.plan.weights,
    }


def report_settled(settled, reporter: Reporter, summary: RunSummary) -> None:
    """Report and count the outcomes decided before a run (skipped inputs, missing paths)."""
    for outcome in settled:
        summary.skipped += outcome.status == "skipped"
        summary.failed += outcome.status == "failed"
        reporter.file_done(outcome)


def transcribe_files(files: list[MediaFile], engine, options: TranscribeOptions, reporter: Reporter,
                     stdout=None, settled: list[FileOutcome] = (), items=None, collect=None,
                     announce: bool = True) -> RunSummary:
    """Transcribe ``files`` with ``engine``, writing each file's outputs when it is done.

    ``settled`` are outcomes decided before the run (inputs skipped as already done, named
    paths that do not exist): only reported and counted.  With no ``files``, ``engine`` may
    be None.  ``items``, when given, is the decoded stream of ``files`` (started before the
    model loaded; a replica of ``--devices`` passes only the files it claims).  ``collect``,
    a function of a ``MediaFile`` and its ``Transcript``, receives each transcript instead of
    the writers.  ``announce`` False leaves ``reporter.start`` to the caller (``--devices``).
    """
    started = time.monotonic()
    run = _Run(files, engine, options, reporter, stdout or sys.stdout, collect)
    if announce:
        reporter.start([*(outcome.media for outcome in settled), *files])
    report_settled(settled, reporter, run.summary)
    try:
        if files and options.long_form == "sequential":
            run.sequential()
        else:
            _feed_resilient(run, files, engine, options, items)
    except WritingImpossible as error:
        run.abandon(str(error))
    run.summary.wall_s = time.monotonic() - started
    reporter.finish(run.summary)
    return run.summary
