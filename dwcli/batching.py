"""Decode, cut and featurize in DataLoader workers while the model runs; batch across files.

Each worker takes every n-th file, decodes it with FFmpeg, cuts it into windows and computes
their log-mel features, and streams ``WindowItem``s followed by one ``FileEnd`` (or a
``FileFailed``) per file.  The main process groups windows of any files into batches, so a
folder of short clips fills batches as well as one long recording does.
"""

from __future__ import annotations

import os
import traceback
from collections.abc import Iterator
from dataclasses import dataclass

from .audio import SAMPLE_RATE, decode_blocks
from .chunking import Chunker, Window
from .discover import MediaFile
from .errors import DwError
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


@dataclass
class FileFailed:
    """``file_index`` could not be decoded; ``message`` says why, naming the file."""

    file_index: int
    message: str
    detail: str = ""  # the traceback, shown with DW_DEBUG=1


def file_items(file_index: int, media: MediaFile, n_mels: int,
               vad: VadOptions = VadOptions()) -> Iterator[WindowItem | FileEnd | FileFailed]:
    """Stream one file as windows with features, then its end (or its failure)."""
    from .features import log_mel

    chunker = Chunker(vad)
    try:
        for window in chunker.windows(decode_blocks(media.source)):
            yield WindowItem(file_index, window, log_mel(window.samples, n_mels))
    except DwError as error:
        yield FileFailed(file_index, str(error))
        return
    except Exception as error:  # an unexpected failure still fails only this file
        yield FileFailed(file_index, f"{media.label}: {type(error).__name__}: {error}", traceback.format_exc())
        return
    yield FileEnd(file_index, chunker.samples_read / SAMPLE_RATE)


def _iterable_dataset_base():
    from torch.utils.data import IterableDataset

    return IterableDataset


class WindowStream(_iterable_dataset_base()):
    """An iterable dataset over files.  Worker ``k`` of ``n`` handles files k, k+n, k+2n...;
    with ``claims`` (a multiprocessing queue of file indices shared with other processes),
    each worker takes the next unclaimed file instead, so whoever is free does the work."""

    def __init__(self, files: list[MediaFile], n_mels: int, claims=None, vad: VadOptions = VadOptions()):
        self.files = files
        self.n_mels = n_mels
        self.claims = claims
        self.vad = vad

    def __iter__(self):
        import torch

        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        if info is not None:
            torch.set_num_threads(1)  # workers share the CPU with the model
        indices = range(worker, len(self.files), workers) if self.claims is None else _claimed(self.claims)
        for file_index in indices:
            yield from file_items(file_index, self.files[file_index], self.n_mels, self.vad)


def _claimed(claims) -> Iterator[int]:
    """File indices taken from a shared queue until it is empty (it is filled before any
    process starts taking, so empty means done)."""
    import queue

    while True:
        try:
            yield claims.get_nowait()
        except queue.Empty:
            return


def _unchanged(item):
    return item


def default_workers(device: str) -> int:
    """Decoding workers: enough to keep a GPU fed; on CPU one, the model needs the cores."""
    cores = os.cpu_count() or 1
    if device.startswith("cuda"):
        return max(1, min(8, cores - 1))
    return 1 if cores > 1 else 0


def stream_items(files: list[MediaFile], n_mels: int, workers: int, claims=None,
                 vad: VadOptions = VadOptions()) -> Iterator[WindowItem | FileEnd | FileFailed]:
    """The files' items, decoded in ``workers`` background processes (0: in this one): all
    of them, or with ``claims`` those this process's workers take from that shared queue.

    Standard input can only be read once, by one process, so it is decoded here.
    """
    if workers <= 0 or any(media.is_stdin for media in files) or len(files) == 0:
        yield from WindowStream(files, n_mels, claims, vad)
        return
    import torch

    workers = min(workers, len(files))
    loader = torch.utils.data.DataLoader(
        WindowStream(files, n_mels, claims, vad),
        batch_size=None,
        num_workers=workers,
        collate_fn=_unchanged,
        prefetch_factor=4,
        persistent_workers=False,
    )
    yield from loader


def stack_features(items: list[WindowItem]):
    import torch

    return torch.stack([item.features for item in items])

