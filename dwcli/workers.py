"""Decoding workers: processes that read the media while the model runs.

Each worker takes files (every n-th, or the next unclaimed one from a counter shared with
other replicas), decodes each with FFmpeg, finds its speech, and streams what its window
source needs (``sources``: whole windows with their features for the chunked mode, speech
pieces for the sequential one), then one ``FileEnd`` (or a ``FileFailed``) per file.  A
file whose decoding fails, or whose worker dies, fails alone; the main process batches
windows of any files together.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Iterator

from .audio import SAMPLE_RATE, DecodeReport, decode_blocks
from .discover import MediaFile
from .errors import DwError, debug_requested
from .resume import source_stamp
from .long_form import reader_for
from .sources import FileBegin, FileEnd, FileFailed, Reading, WindowItem
from .speakers.stage import embedder


def decoding_notes(report: DecodeReport) -> dict | None:
    """What the outputs say of how a file decoded (None: one plain audio stream, whole, from
    the container's start)."""
    notes = {}
    if report.skipped_packets:
        notes["damaged_packets_skipped"] = report.skipped_packets
    if report.non_finite_samples:
        notes["non_finite_samples_replaced"] = report.non_finite_samples
    if report.short:
        notes.update(partial=True, decoded_s=round(report.decoded_s, 3), declared_s=round(report.declared_s, 3))
    if report.audio_tracks > 1:
        notes.update(audio_track=report.audio_track, audio_tracks=report.audio_tracks)
    if report.start_s:
        notes["audio_start_s"] = round(report.start_s, 3)
    return notes or None


def file_items(file_index: int, media: MediaFile, reading: Reading) -> Iterator:
    """Stream one file as its window source's items, then its end (or its failure)."""
    yield FileBegin(file_index)
    reader = reader_for(reading)
    voices = embedder(reading.speakers)
    report = DecodeReport()
    stamp = source_stamp(media)  # before a byte is read: a file still being copied in shows later
    try:
        for item in reader.items(file_index, decode_blocks(media.source, report, reading.allow_partial,
                                                           reading.audio_track)):
            yield item
            if voices is not None:  # after the item is on its way to the model
                _embed(voices, item)
    except DwError as error:
        yield FileFailed(file_index, str(error))
        return
    except Exception as error:  # an unexpected failure still fails only this file
        yield FileFailed(file_index, f"{media.label}: {type(error).__name__}: {error}", traceback.format_exc())
        return
    yield FileEnd(file_index, reader.samples_read / SAMPLE_RATE, stamp, decoding_notes(report), report.placement,
                  voices.result() if voices is not None else None)


def _embed(voices, item) -> None:
    """Feed an item's speech to the file's speaker embedder (--speakers)."""
    if isinstance(item, WindowItem):
        voices.add_window(item.window)
    else:
        piece = item.piece
        voices.add(piece.start, piece.samples, piece.speech or ())


def interleaved(streams: Iterator[Iterator], width: int) -> Iterator:
    """Items of several files' streams, ``width`` files at a time, one item from each in
    turn: the sequential mode decodes one window per file per batch, so a batch needs
    several files in flight, each fed at the same pace (memory stays flat however long
    each file is)."""
    active: list[Iterator] = []
    streams = iter(streams)
    exhausted = False
    while True:
        while not exhausted and len(active) < width:
            stream = next(streams, None)
            if stream is None:
                exhausted = True
            else:
                active.append(stream)
        if not active:
            return
        for stream in list(active):
            item = next(stream, None)
            if item is None:
                active.remove(stream)
            else:
                yield item


def _iterable_dataset_base():
    from torch.utils.data import IterableDataset

    return IterableDataset


class MediaStream(_iterable_dataset_base()):
    """An iterable dataset over files.  Worker ``k`` of ``n`` handles files k, k+n, k+2n...;
    with ``claims`` (a ``parallel.FileCounter`` shared with other processes), each worker
    takes the next unclaimed file instead, so whoever is free does the work.  Each worker
    reads ``reading.files_in_flight`` of its files at a time, their items interleaved."""

    def __init__(self, files: list[MediaFile], reading: Reading, claims=None, only: list[int] | None = None):
        self.files = files
        self.reading = reading
        self.claims = claims
        self.only = only  # the file indices to read (a restart after a lost worker); None: all

    def __iter__(self):
        import torch

        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        if info is not None:
            torch.set_num_threads(1)  # workers share the CPU with the model
        if self.claims is not None:
            indices = iter(self.claims.take, None)
        else:
            indices = iter((self.only if self.only is not None else range(len(self.files)))[worker::workers])
        streams = (file_items(index, self.files[index], self.reading) for index in indices)
        yield from interleaved(streams, max(1, self.reading.files_in_flight // workers))


def _unchanged(item):
    return item


_PR_SET_PDEATHSIG = 1  # prctl(2): a signal the kernel sends this process when its parent dies


def start_decoding_worker(_worker_id: int = 0) -> None:
    """Set up a decoding process: it dies with its parent, leaves Ctrl-C to it, and keeps
    Python's tracebacks off the terminal the two share."""
    import signal

    die_with_parent()
    # Ctrl-C in a terminal reaches the whole process group; the parent decides what stops
    # (it shuts its workers down and says so in one line).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sys.excepthook = _worker_excepthook


def _worker_excepthook(kind, error, trace) -> None:
    """Errors that end a file reach the parent with the item; what is left is the thread
    that hands tensors over (multiprocessing's resource sharer), which fails with
    ``ConnectionResetError`` when the parent stopped reading mid-handover, as an interrupted
    dw does.  That is not news: say nothing, unless DW_DEBUG=1 asks for everything."""
    if debug_requested():
        sys.__excepthook__(kind, error, trace)
    elif not issubclass(kind, (ConnectionError, EOFError)):
        print(f"dw: decoding worker: {kind.__name__}: {error}", file=sys.stderr)


def die_with_parent(_worker_id: int = 0) -> None:
    """Have the kernel kill this process when its parent dies, however it dies (kill -9, the
    OOM killer): a decoding worker left behind holds hundreds of MB and the parent's stderr,
    so ``dw ... 2>&1 | cat`` would never end.  Linux only; elsewhere a no-op."""
    import ctypes
    import signal

    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:  # the parent died before the request took effect
        os._exit(1)


def stream_items(files: list[MediaFile], reading: Reading, workers: int, claims=None,
                 only: list[int] | None = None) -> Iterator:
    """The files' items, decoded in ``workers`` background processes (0: in this one): all
    of them, or with ``claims`` those this process's workers take from that shared counter.
    The workers start at once, so they decode while the caller loads the model.

    A stream (standard input, a FIFO) can only be read once, by one process, so a run with
    one is decoded here.
    """
    if workers <= 0 or any(media.stream for media in files) or len(files) == 0:
        return iter(MediaStream(files, reading, claims, only))
    import torch

    workers = min(workers, len(files) if only is None else len(only))
    loader = torch.utils.data.DataLoader(
        MediaStream(files, reading, claims, only),
        batch_size=None,
        num_workers=workers,
        collate_fn=_unchanged,
        prefetch_factor=4,
        persistent_workers=False,
        worker_init_fn=start_decoding_worker,
    )
    from torch.utils.data._utils import signal_handling

    handler = signal_handling._set_SIGCHLD_handler
    signal_handling._set_SIGCHLD_handler = lambda: None  # _GuardedStream installs its own
    try:
        return _GuardedStream(iter(loader))
    finally:
        signal_handling._set_SIGCHLD_handler = handler


class LostWorker(RuntimeError):
    """A decoding process died (the OOM killer, a crash inside FFmpeg)."""


def death_from_message(text: str) -> str:
    """torch's words for a dead DataLoader worker, shortened."""
    if "killed by signal" in text:
        return "killed by signal: " + text.split("killed by signal:", 1)[-1].strip().rstrip(". ")
    return "exited unexpectedly"


class _GuardedStream:
    """The DataLoader's iterator, told at once when a worker dies, but only ever raising it
    from ``next()``.

    torch learns of a dead worker from SIGCHLD and raises from the signal handler, wherever
    the main process happens to be: loading the model, writing an output.  That cannot be
    handled cleanly, and ignoring the signal is worse: a worker killed in the middle of
    sending an item leaves half a message, and reading it would block for ever.  So the
    handler raises only while ``next()`` waits (the wait is interrupted); elsewhere it notes
    the death, and the next ``next()`` raises it."""

    def __init__(self, iterator):
        import signal

        self.iterator = iterator
        self.waiting = False
        self.lost: str | None = None
        self.previous = signal.signal(signal.SIGCHLD, self._child_changed)

    def _child_changed(self, signum, frame) -> None:
        import torch

        try:
            torch._C._error_if_any_worker_fails()
        except RuntimeError as error:
            self.lost = str(error)
            if self.waiting:
                self.waiting = False
                raise LostWorker(self.lost) from None
        if callable(self.previous):
            self.previous(signum, frame)

    def __iter__(self):
        return self

    def __next__(self):
        if self.lost is not None:
            raise LostWorker(self.lost)
        self.waiting = True
        try:
            return next(self.iterator)
        except StopIteration:
            self.close()
            raise
        except (ConnectionError, EOFError) as error:
            # A worker killed while it handed a tensor over: the shared memory behind the
            # item is gone with it (seen under heavy load instead of torch's own message).
            raise LostWorker(f"the hand-over from a decoding process failed ({type(error).__name__})") from None
        finally:
            self.waiting = False

    def close(self) -> None:
        import signal

        signal.signal(signal.SIGCHLD, self.previous if self.previous is not None else signal.SIG_DFL)

    def death(self, error: Exception) -> str:
        """How a worker died, in a few words: the signal that killed it when its exit status
        says so (torch's own message depends on which of its checks saw the death first),
        else torch's words."""
        import signal

        for worker in getattr(self.iterator, "_workers", ()):
            code = getattr(worker, "exitcode", None)
            if code is not None and code < 0:
                return f"killed by signal: {signal.strsignal(-code) or -code}"
        return death_from_message(str(error))

    def shutdown(self) -> None:
        """Stop the workers now (an interrupted run): whatever they still print comes before
        dw's last line, not after it."""
        self.close()
        stop = getattr(self.iterator, "_shutdown_workers", None)
        if stop is not None:
            stop()
