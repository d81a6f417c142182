"""The batcher: windows of any files -> batches -> the engine -> each window's result.

Windows wait in one queue whatever file and long-form mode they come from; a batch takes
the first ``batch_size`` of them.  Running out of device memory halves the batch for the
rest of the run (said once per halving) and runs the same windows again, so nothing is
lost; a window that does not fit even alone fails its file only.  Any other error the
model raises on a batch is narrowed down to the file it comes from by decoding each file's
windows alone, so one bad file never takes the others with it.
"""

from __future__ import annotations

import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from .decoding import DecodingOptions
from .features import log_mel_batch
from .sources import WindowJob


@dataclass(frozen=True)
class Failure:
    """A file the model could not decode."""

    file_index: int
    message: str
    detail: str = ""


def release_device_cache() -> None:
    """After running out of device memory: hand the allocator's cached blocks back before
    the smaller try."""
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def too_big_for_device(label: str, device: str) -> str:
    """Why a file fails whose single window does not fit on the device (the others go on)."""
    return f"{label}: out of memory on {device} with a single window"


class Batcher:
    """Queues windows and decodes them a batch at a time with ``engine``."""

    def __init__(self, engine, decoding: DecodingOptions, batch_size: int, label: Callable[[int], str],
                 note: Callable[[str], None], keep_encoded: bool = False):
        self.engine = engine
        self.keep_encoded = keep_encoded  # each job keeps its encoder states (dw distill label stores them)
        self.decoding = decoding
        self.batch_size = batch_size  # halved for good when the device runs out of memory
        self.label = label  # a file's name as messages say it
        self.note = note
        self.pending: deque[WindowJob] = deque()

    def add(self, jobs: list[WindowJob], front: bool = False) -> None:
        """Queue ``jobs``; ``front``: before the others (a window's rest or a file's next
        window, so a file's windows never wait behind files that came later)."""
        if front:
            self.pending.extendleft(reversed(jobs))
        else:
            self.pending.extend(jobs)

    def drop(self, file_index: int) -> None:
        """Forget a file's windows (it failed, or will be read again)."""
        self.pending = deque(job for job in self.pending if job.file_index != file_index)

    def __len__(self) -> int:
        return len(self.pending)

    @property
    def full(self) -> bool:
        return len(self.pending) >= self.batch_size

    @property
    def buffered_samples(self) -> int:
        return sum(job.samples for job in self.pending)

    def run(self) -> tuple[list[tuple[WindowJob, object]], list[Failure]]:
        """Decode the next batch: (each job with its ``WindowResult``, the files that failed)."""
        batch = [self.pending.popleft() for _ in range(min(self.batch_size, len(self.pending)))]
        return self._decode(batch)

    def _decode(self, batch: list[WindowJob]) -> tuple[list[tuple[WindowJob, object]], list[Failure]]:
        import torch

        try:
            missing = [job for job in batch if job.features is None]
            if missing:
                for job, features in zip(missing, log_mel_batch([job.window.samples for job in missing],
                                                                self.engine.n_mels)):
                    job.features = features
            features = torch.stack([job.features for job in batch])
            encoded = self.engine.encode(features) if self.keep_encoded else None
            results = self.engine.transcribe(features, [job.window for job in batch], self.decoding,
                                             previous=[job.context for job in batch], encoded=encoded)
            for row, job in enumerate(batch if encoded is not None else ()):
                job.encoded = encoded[row]
        except torch.OutOfMemoryError:
            release_device_cache()
            if len(batch) == 1:
                # Not even one window fits: this file cannot be done here; the others may.
                return [], [Failure(batch[0].file_index, too_big_for_device(self.label(batch[0].file_index),
                                                                            self.engine.device))]
            # Halve the batch and go again with the same windows: nothing is lost, and the
            # smaller size stays for the rest of the run.
            self.batch_size = max(1, len(batch) // 2)
            self.add(batch, front=True)
            self.note(f"out of device memory; batch size now {self.batch_size}")
            return [], []
        except Exception as error:  # noqa: BLE001 - whatever the model raises fails files, not the run
            return self._narrow(batch, error)
        return list(zip(batch, results)), []

    def _narrow(self, batch: list[WindowJob], error: Exception) -> tuple[list, list[Failure]]:
        """The model failed on a batch: decode each file's windows alone, so that only the
        file at fault fails."""
        files = list(dict.fromkeys(job.file_index for job in batch))
        if len(files) == 1:
            reason = (str(error).strip().splitlines() or [""])[0]  # one line, whatever the library says
            return [], [Failure(files[0], f"{self.label(files[0])}: the model failed on it "
                                          f"({type(error).__name__}: {reason})", traceback.format_exc())]
        decoded, failures = [], []
        for file_index in files:
            results, failed = self._decode([job for job in batch if job.file_index == file_index])
            decoded += results
            failures += failed
        return decoded, failures
