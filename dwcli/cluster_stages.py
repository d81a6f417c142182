"""What runs on a Ray cluster's workers under ``--ray``: the two stages of the dataset, and
the rows between them and the driver.

- ``read_file`` (a CPU task, one file per task): the chunked reader, as in a decoding worker
  (``workers.file_items``: decode, speech detection, windows, log-mel), turned into rows:
  one per window, then one end row (duration, source stamp, decoding notes, and how many
  windows the file has) or one failed row.
- ``Replica`` (an actor of the model pool): decodes the window rows of a batch together,
  whatever files they come from, and decodes the rest of any window Whisper stopped early
  in before it returns, so that what it returns for a window is final.  It returns one
  result row per window (every piece of it, settled on the file's timeline) and passes end
  and failed rows through.  It writes nothing: a batch Ray retries after a replica died
  may run twice, and the driver keeps the first result of each window.

Rows are plain columns (file, window, kind) and one pickled payload, so that Ray Data
moves them as opaque bytes (no tensor or variable-shape columns to cast).  This module
imports neither Ray nor torch at the top: the driver imports it to read the rows.
"""

from __future__ import annotations

import pickle
from collections import defaultdict
from dataclasses import dataclass

from .batcher import Batcher
from .chunking import ChunkedSource
from .engine import Engine
from .models import resolve_model
from .sources import FileEnd, FileFailed, SourceSettings, WindowItem
from .workers import file_items

# Row kinds.
WINDOW = "window"  # a window with its features, for the replicas
END = "end"  # the file's reader finished: its FileEnd and its window count
FAILED = "failed"  # the file failed (its reader, or the model on it): a FileFailed
RESULT = "result"  # what a replica made of one window: its Settled pieces
NOTE = "note"  # a remark of a replica (its batch size halved after running out of memory)


@dataclass(frozen=True)
class Ended:
    """An end row's payload."""

    end: FileEnd
    windows: int  # how many window rows the file's reader sent


@dataclass(frozen=True)
class Labelled:
    """A window row's payload: the window with its features, and its file's name as
    messages say it (a replica that fails the file names it)."""

    label: str
    item: WindowItem


def row(kind: str, file_index: int, payload, window: int = -1) -> dict:
    """One row as Ray Data batches hold them (columns of one value each)."""
    return {"file": [file_index], "window": [window], "kind": [kind], "payload": [pickle.dumps(payload)]}


def rows_of(batch: dict):
    """(kind, file index, window index, payload) of each row of a batch."""
    for kind, file_index, window, payload in zip(batch["kind"], batch["file"], batch["window"], batch["payload"]):
        yield str(kind), int(file_index), int(window), pickle.loads(payload)


def _columns(rows: list[dict]) -> dict:
    columns: dict[str, list] = {"file": [], "window": [], "kind": [], "payload": []}
    for one in rows:
        for name, values in one.items():
            columns[name] += values
    return columns


# -- the CPU stage ----------------------------------------------------------------------------
def read_file(batch: dict, reading):
    """The reader of the files of ``batch`` (one, as the dataset is built): its rows, as a
    stream, so that a long file's first windows reach the replicas while it is still read.
    An error decoding a file is its failed row; only a crash of the process (which Ray
    retries a bounded number of times) loses its rows, and the driver notices."""
    import torch

    torch.set_num_threads(1)  # log-mel of one window at a time: the model needs the cores
    for file_index, media in zip(batch["file"], batch["payload"]):
        file_index, media = int(file_index), pickle.loads(media)
        windows = 0
        for item in file_items(file_index, media, reading):
            if isinstance(item, WindowItem):
                yield row(WINDOW, file_index, Labelled(media.label, item), item.window.index)
                windows += 1
            elif isinstance(item, FileEnd):
                yield row(END, file_index, Ended(item, windows))
            elif isinstance(item, FileFailed):
                yield row(FAILED, file_index, item)


# -- the model replicas -----------------------------------------------------------------------
@dataclass(frozen=True)
class ReplicaSpec:
    """What a replica needs to build its engine and decode like the plan says."""

    resolved: object  # models.ResolvedModel (its path read again on the node when it is not there)
    precision: object  # precision.PrecisionPlan of the replicas' kind of device
    assistant: object  # models.ResolvedModel, or None
    options: object  # TranscribeOptions resolved for that device
    threads: int  # CPU threads for torch


def _on_this_node(resolved, device: str):
    """The driver's model, or the same model found on this node (its own cache) when the
    driver's path is not shared with it."""
    if resolved is None or resolved.path.is_dir():
        return resolved
    return resolve_model(resolved.model_id, device)


class Replica:
    """One model replica of the pool: a batch of rows in, a batch of rows out."""

    def __init__(self, spec: ReplicaSpec):
        import torch

        torch.set_num_threads(spec.threads)
        device = spec.precision.device
        self.engine = Engine(_on_this_node(spec.resolved, device), spec.precision,
                             _on_this_node(spec.assistant, device))
        self.options = spec.options
        decoding = spec.options.decoding
        self.settings = SourceSettings(self.engine.prompt_tokens(decoding.initial_prompt),
                                       self.engine.special.timestamp_begin, decoding.word_timestamps, False)
        self.notes: list[str] = []
        self.labels: dict[int, str] = {}
        # One batcher for the replica's life: a batch size halved after running out of
        # memory stays halved, as in a plain run.
        self.batcher = Batcher(self.engine, decoding, spec.options.batch_size,
                               lambda index: self.labels.get(index, str(index)), self.notes.append)

    def __call__(self, batch: dict) -> dict:
        out, windows = [], []
        for kind, file_index, window, payload in rows_of(batch):
            if kind == WINDOW:
                windows.append(payload)
            else:  # end and failed rows go on to the driver as they are
                out.append(row(kind, file_index, payload, window))
        out += self._decode(windows)
        return _columns(out)

    def _decode(self, windows: list[Labelled]) -> list[dict]:
        """Every window decoded to its end: one Whisper stopped early in goes round again
        from where it stopped (``ChunkedSource``), within this call; a result row per
        window holds all its pieces, in the order they were decoded."""
        sources: dict[int, ChunkedSource] = {}
        for labelled in windows:
            index = labelled.item.file_index
            self.labels[index] = labelled.label
            sources.setdefault(index, ChunkedSource(index, self.settings)).take(labelled.item)
        pieces: dict[tuple[int, int], list] = defaultdict(list)
        failed: dict[int, FileFailed] = {}
        self.notes.clear()
        while True:
            for source in sources.values():
                self.batcher.add(source.ready())
            if not len(self.batcher):
                break
            results, failures = self.batcher.run()
            for failure in failures:
                failed[failure.file_index] = FileFailed(failure.file_index, failure.message, failure.detail)
                sources.pop(failure.file_index, None)
                self.batcher.drop(failure.file_index)
            for job, result in results:
                source = sources.get(job.file_index)
                if source is not None:
                    pieces[(job.file_index, job.window.index)].append(source.decoded(job, result))
        self.labels.clear()
        out = [row(NOTE, -1, note) for note in self.notes]
        out += [row(FAILED, index, failure) for index, failure in failed.items()]
        out += [row(RESULT, index, settled, window) for (index, window), settled in pieces.items()
                if index not in failed]
        return out
