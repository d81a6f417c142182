"""The run: files -> decoding workers -> window sources -> batcher -> engine -> assembler -> sink.

``transcribe_files`` pulls the items the decoding workers stream (``workers``), hands each to
its file's window source (``sources``: chunked or sequential), queues the windows the
sources make ready in the batcher, and runs a batch whenever a full one is waiting (or no
more audio could make it fuller); each result goes back to its source, whose settled
segments the assembler gathers until the file is complete and goes to the sink.  It is
the same loop for both long-form modes, for every device, for ``dw eval`` (a collecting
sink) and ``dw distill label``.
"""

from __future__ import annotations

import sys
import time
from dataclasses import replace

from .assembler import FileAssembler
from .batcher import Batcher
from .discover import MediaFile
from .errors import Terminated
from .events import FileOutcome, Reporter, RunSummary, report_settled
from .features import WINDOW_SAMPLES
from .long_form import source_for
from .options import TranscribeOptions
from .sinks import Sink, WritingImpossible, sink_for
from .sources import FileBegin, FileEnd, FileFailed, Reading, SourceSettings
from .workers import LostWorker, death_from_message, stream_items

# Audio the window sources and the batcher may hold, in windows' worth per batch slot: the
# sequential mode reads ahead of its seek points, and this bounds it however long the files.
_BUFFERED_WINDOWS_PER_SLOT = 4


def reading_for(options: TranscribeOptions, n_mels: int) -> Reading:
    """What the decoding workers need for a run with ``options`` (resolved for its device)."""
    in_flight = options.batch_size if options.long_form == "sequential" else max(1, options.workers)
    return Reading(options.long_form, n_mels, options.vad, options.allow_partial, in_flight, options.audio_track,
                   options.speakers)


def assembler_for(files: list[MediaFile], model_id: str, precision, options: TranscribeOptions, sink: Sink,
                  reporter: Reporter, summary: RunSummary) -> FileAssembler:
    """The assembler of a run with ``options`` (resolved) on ``precision``: in this process,
    or on a Ray cluster's driver."""
    # The settings that change what a transcript says (recorded in JSON, compared by --skip-existing).
    said = {
        "language": options.decoding.language,
        "task": options.decoding.task,
        "timestamps": options.decoding.timestamps,
        "dtype": precision.weights,
    }
    return FileAssembler(files, model_id, said, sink, reporter, summary, options.speakers,
                         track_asked=options.audio_track is not None)


class _Run:
    """One run's state: a window source per file being read, the batcher, the assembler."""

    def __init__(self, files: list[MediaFile], engine, options: TranscribeOptions, assembler: FileAssembler,
                 reporter: Reporter):
        self.files = files
        self.engine = engine
        self.options = options
        self.assembler = assembler
        self.batcher = Batcher(engine, options.decoding, options.batch_size, assembler.label, reporter.note)
        decoding = options.decoding
        self.settings = SourceSettings(engine.prompt_tokens(decoding.initial_prompt), engine.special.timestamp_begin,
                                       decoding.word_timestamps, decoding.condition_on_previous_text)
        self.sources: dict = {}
        self.buffer_limit = _BUFFERED_WINDOWS_PER_SLOT * options.batch_size * WINDOW_SAMPLES

    # -- items from the decoding workers ---------------------------------------------------
    def take(self, item) -> None:
        index = item.file_index
        if not self.assembler.is_open(index):
            return  # the file already failed: the rest of its items are not decoded
        if isinstance(item, FileBegin):
            self.assembler.begun(index)
            self.sources[index] = source_for(self.options.long_form, index, self.settings)
        elif isinstance(item, FileFailed):
            self._fail(index, item.message, item.detail)
        elif isinstance(item, FileEnd):
            self.assembler.ended(item)
            self.sources[index].end()
            self._offer(index, front=False)
        else:
            self.sources[index].take(item)
            self._offer(index, front=False)

    def _offer(self, index: int, front: bool) -> None:
        source = self.sources[index]
        self.batcher.add(source.ready(), front=front)
        if source.finished:
            del self.sources[index]
            self.assembler.finish(index)

    def _fail(self, index: int, message: str, detail: str = "") -> None:
        self.sources.pop(index, None)
        self.batcher.drop(index)
        self.assembler.fail(index, message, detail)

    # -- batches ---------------------------------------------------------------------------
    def should_decode(self) -> bool:
        """Decode now, rather than read more: a full batch waits, the audio held reached its
        bound, or every file being read waits for a result before it can offer a window."""
        if not len(self.batcher):
            return False
        if self.batcher.full:
            return True
        held = self.batcher.buffered_samples + sum(source.buffered_samples for source in self.sources.values())
        return held >= self.buffer_limit or all(source.waiting for source in self.sources.values())

    def decode(self) -> None:
        results, failures = self.batcher.run()
        for failure in failures:
            self._fail(failure.file_index, failure.message, failure.detail)
        touched = []
        for job, result in results:
            source = self.sources.get(job.file_index)
            if source is None:
                continue  # its file failed meanwhile
            settled = source.decoded(job, result)
            self.assembler.add(job.file_index, settled.segments, settled.language, settled.progress_s)
            touched.append(job.file_index)
        for index in dict.fromkeys(touched):
            if index in self.sources:
                self._offer(index, front=True)  # a window's rest, a file's next window: before later files

    def drain(self) -> None:
        while len(self.batcher):
            self.decode()

    # -- decoding workers that die ---------------------------------------------------------
    def suspects(self, unread_in_flight: int) -> list[int]:
        """A decoding process died: the files it may have been reading, forgotten so that each
        is read again on its own.  That is every file a worker began and did not finish, and
        the next ``unread_in_flight`` it had not begun: a process killed outright loses the
        items it had not handed over yet, its files' beginnings and ends among them."""
        suspects = self.assembler.in_flight() + self.assembler.unread()[:unread_in_flight]
        for index in suspects:
            self.forget(index)
        return suspects

    def forget(self, index: int) -> None:
        self.sources.pop(index, None)
        self.batcher.drop(index)
        self.assembler.reset(index)


def _death(stream, error: Exception) -> str | None:
    """How the decoding process behind ``stream`` died, or None when ``error`` is not that."""
    if not isinstance(error, LostWorker) and "DataLoader worker" not in str(error):
        return None
    describe = getattr(stream, "death", None)
    return describe(error) if describe is not None else death_from_message(str(error))


def _consume(run: _Run, stream, reread, in_flight: int | None) -> None:
    """Feed the decoded stream to the run.  A decoding process that dies (the OOM killer, a
    crash inside FFmpeg) takes the files it was reading with it: each is read again in a
    process of its own, where a death names its file, which fails alone; the files no
    worker began are read by new workers.  ``reread(index)`` makes a one-file stream,
    ``reread(None)`` one of the files not begun; ``in_flight``: how many files a stream's
    workers may read before their beginnings arrive (None: unknown, files are claimed)."""
    queue: list[int | None] = []
    alone: int | None = None  # the one file ``stream`` reads, when it reads one
    while True:
        try:
            for item in stream:
                run.take(item)
                while run.should_decode():
                    run.decode()
        except (KeyboardInterrupt, Terminated):
            getattr(stream, "shutdown", lambda: None)()
            raise
        except RuntimeError as error:
            reason = _death(stream, error)
            if reason is None:
                raise
            getattr(stream, "close", lambda: None)()
            if alone is not None:
                run.forget(alone)
                run.assembler.fail(alone, f"{run.assembler.label(alone)}: the decoding process died ({reason})")
            else:
                queue = [*run.suspects(in_flight or 0), None]
        if not queue:
            run.drain()
            return
        alone = queue.pop(0)
        if alone is None and not run.assembler.unread():
            continue
        stream = reread(alone)


def transcribe_files(files: list[MediaFile], engine, options: TranscribeOptions, reporter: Reporter,
                     sink: Sink | None = None, settled: list[FileOutcome] = (), stream=None,
                     stdout=None, claims=None) -> RunSummary:
    """Transcribe ``files`` with ``engine``, handing each file to ``sink`` when it is done
    (default: what ``options`` ask for, files or ``stdout``).

    ``settled`` are outcomes decided before the run (inputs skipped as already done, named
    paths that do not exist): only reported and counted.  With no ``files``, ``engine`` may
    be None.  ``stream``, when given, is the decoded stream of ``files`` (started before the
    model loaded).  ``claims``: a counter of ``files`` shared with other replicas
    (``--devices``): this run reads only the files it takes from it.
    """
    started = time.monotonic()
    reporter.start([*(outcome.media for outcome in settled), *files])
    summary = RunSummary()
    report_settled(settled, reporter, summary)
    if files:
        if not options.resolved:
            options = options.for_device(engine.device)
        sink = sink or sink_for(options, stdout or sys.stdout)
        assembler = assembler_for(files, engine.model_id, engine.plan, options, sink, reporter, summary)
        run = _Run(files, engine, options, assembler, reporter)
        reading = reading_for(options, engine.n_mels)

        def reread(alone: int | None):
            if alone is not None:  # a process of its own: a death names its file
                return stream_items(files, replace(reading, files_in_flight=1), 1, only=[alone])
            if claims is not None:  # the files no replica has taken yet
                return stream_items(files, reading, options.workers, claims=claims)
            return stream_items(files, reading, options.workers, only=run.assembler.unread())

        in_flight = None if claims is not None else reading.files_in_flight + max(1, options.workers)
        try:
            _consume(run, stream or stream_items(files, reading, options.workers, claims=claims), reread, in_flight)
        except WritingImpossible as error:
            assembler.abandon(str(error), begun_only=claims is not None)
    summary.wall_s = time.monotonic() - started
    reporter.finish(summary)
    return summary
