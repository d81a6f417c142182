"""Decode, cut and featurize in DataLoader workers while the model runs; batch across files.

Each worker takes every n-th file, decodes it with FFmpeg, cuts it into windows and computes
their log-mel features, and streams ``WindowItem``s followed by one ``FileEnd`` (or a
``FileFailed``) per file.  The main process groups windows of any files into batches, so a
folder of short clips fills batches as well as one long recording does.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Iterator
from dataclasses import dataclass

from .audio import SAMPLE_RATE, DecodeReport, decode_blocks
from .chunking import Chunker, Window
from .discover import MediaFile
from .errors import DwError, debug_requested
from .vad import VadOptions


@dataclass
class WindowItem:
    """A window of file ``file_index`` with its features, ready for the model."""

    file_index: int
    window: Window
    features: object  # torch tensor (n_mels, 3000), float32


@dataclass
class FileEnd:
    """All windows of ``file_index`` have been sent; the file lasts ``duration_s``."""

    file_index: int
    duration_s: float
    source_stamp: tuple[int, int] | None = None  # (size, mtime) before decoding began
    decoding: dict | None = None  # what decoding found wrong: damaged packets skipped, partial
    speech: object = None  # with --speakers: the file's speakers.embed.FileSpeech


@dataclass
class FileFailed:
    """``file_index`` could not be decoded; ``message`` says why, naming the file."""

    file_index: int
    message: str
    detail: str = ""  # the traceback, shown with DW_DEBUG=1


def release_device_cache() -> None:
    """After running out of device memory: hand the allocator's cached blocks back before
    the smaller try."""
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def too_big_for_device(label: str, device: str) -> str:
    """Why a file fails whose single window does not fit on the device (the others go on)."""
    return f"{label}: out of memory on {device} with a single window"


def decoding_notes(report: DecodeReport) -> dict | None:
    """What the outputs say of a file that decoded with damage (None: it decoded whole)."""
    notes = {}
    if report.skipped_packets:
        notes["damaged_packets_skipped"] = report.skipped_packets
    if report.short:
        notes.update(partial=True, decoded_s=round(report.decoded_s, 3), declared_s=round(report.declared_s, 3))
    return notes or None


def file_items(file_index: int, media: MediaFile, n_mels: int, vad: VadOptions = VadOptions(),
               allow_partial: bool = False, speakers=None) -> Iterator[WindowItem | FileEnd | FileFailed]:
    """Stream one file as windows with features, then its end (or its failure).  With
    ``speakers`` (``SpeakerOptions``), the end carries the speaker embeddings of its speech."""
    from .features import log_mel
    from .resume import source_stamp
    from .speakers import embedder

    chunker = Chunker(vad)
    voices = embedder(speakers)
    report = DecodeReport()
    stamp = source_stamp(media)  # before a byte is read: a file still being copied in shows later
    try:
        for window in chunker.windows(decode_blocks(media.source, report, allow_partial)):
            yield WindowItem(file_index, window, log_mel(window.samples, n_mels))
            if voices is not None:
                voices.add_window(window)  # after the window is on its way to the model
    except DwError as error:
        yield FileFailed(file_index, str(error))
        return
    except Exception as error:  # an unexpected failure still fails only this file
        yield FileFailed(file_index, f"{media.label}: {type(error).__name__}: {error}", traceback.format_exc())
        return
    yield FileEnd(file_index, chunker.samples_read / SAMPLE_RATE, stamp, decoding_notes(report),
                  voices.result() if voices is not None else None)


def _iterable_dataset_base():
    from torch.utils.data import IterableDataset

    return IterableDataset


class WindowStream(_iterable_dataset_base()):
    """An iterable dataset over files.  Worker ``k`` of ``n`` handles files k, k+n, k+2n...;
    with ``claims`` (a ``parallel.FileCounter`` shared with other processes), each worker
    takes the next unclaimed file instead, so whoever is free does the work."""

    def __init__(self, files: list[MediaFile], n_mels: int, claims=None, vad: VadOptions = VadOptions(),
                 allow_partial: bool = False, only: list[int] | None = None, speakers=None):
        self.files = files
        self.speakers = speakers  # SpeakerOptions: embed each file's speech too
        self.n_mels = n_mels
        self.claims = claims
        self.vad = vad
        self.allow_partial = allow_partial
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
            indices = (self.only if self.only is not None else range(len(self.files)))[worker::workers]
        for file_index in indices:
            yield from file_items(file_index, self.files[file_index], self.n_mels, self.vad, self.allow_partial,
                                  self.speakers)


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


def stream_items(files: list[MediaFile], n_mels: int, workers: int, claims=None, vad: VadOptions = VadOptions(),
                 allow_partial: bool = False, only: list[int] | None = None,
                 speakers=None) -> Iterator[WindowItem | FileEnd | FileFailed]:
    """The files' items, decoded in ``workers`` background processes (0: in this one): all
    of them, or with ``claims`` those this process's workers take from that shared counter.
    The workers start at once, so they decode while the caller loads the model.

    A stream (standard input, a FIFO) can only be read once, by one process, so a run with
    one is decoded here.
    """
    if workers <= 0 or any(media.stream for media in files) or len(files) == 0:
        return iter(WindowStream(files, n_mels, claims, vad, allow_partial, only, speakers))
    import torch

    workers = min(workers, len(files) if only is None else len(only))
    loader = torch.utils.data.DataLoader(
        WindowStream(files, n_mels, claims, vad, allow_partial, only, speakers),
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
        finally:
            self.waiting = False

    def close(self) -> None:
        import signal

        signal.signal(signal.SIGCHLD, self.previous if self.previous is not None else signal.SIG_DFL)

    def shutdown(self) -> None:
        """Stop the workers now (an interrupted run): whatever they still print comes before
        dw's last line, not after it."""
        self.close()
        stop = getattr(self.iterator, "_shutdown_workers", None)
        if stop is not None:
            stop()


def stack_features(items: list[WindowItem]):
    import torch

    return torch.stack([item.features for item in items])

