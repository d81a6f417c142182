"""Several devices in one command, and several machines under torchrun / accelerate.

``--devices cuda:0,cuda:1`` starts one process per device, each with its own replica of the
model and its own device's precision plan.  Files are handed out one at a time from a
shared counter, as each replica's pipeline asks for more, so a replica that drew long files simply takes fewer: no device idles while
another still has a queue.  Each replica batches the windows of the files it holds.

Under ``torchrun``/``accelerate launch`` (``WORLD_SIZE`` > 1), rank 0 decides which files are
left to do (``--skip-existing`` included) and sends that list to the others (over gloo);
every rank then takes a fixed, disjoint shard of it (rank r: files r, r+n, r+2n...), so no
file is done twice, none is missed, and a rerun spreads what is left over every rank.  At
the end the ranks agree on the worst exit status, so the launcher's status reflects every
rank.  (A cluster that shares out work as it goes, and survives a lost node: ``--ray``.)
"""

from __future__ import annotations

import dataclasses
import os
import queue
from dataclasses import dataclass

from .engine import Engine
from .errors import ModelLoadError
from .events import FileOutcome, Reporter, RunSummary, report_settled
from .network import mel_bins
from .pipeline import reading_for, transcribe_files
from .workers import die_with_parent, stream_items


@dataclass(frozen=True)
class Replica:
    """What one device's process needs (an engine cannot be pickled itself)."""

    resolved: object  # models.ResolvedModel
    precision: object  # precision.PrecisionPlan of this replica's device
    assistant: object  # models.ResolvedModel of --assistant, or None
    options: object  # TranscribeOptions resolved for this device (its resume record names its precision)

    @property
    def device(self) -> str:
        return self.precision.device


class FileCounter:
    """The next file to take, shared by every replica and their decoding workers: a number
    in shared memory, not a queue, so there is no pipe to fill and nothing for a process to
    wait on at exit, however many files are left when a run stops."""

    def __init__(self, context, total: int):
        self.value = context.Value("q", 0)
        self.total = total

    def take(self) -> int | None:
        with self.value.get_lock():
            index = self.value.value
            if index >= self.total:
                return None
            self.value.value = index + 1
            return index


class _ForwardingReporter(Reporter):
    """Sends a replica's events to the parent process."""

    def __init__(self, events):
        self.events = events

    def advance(self, audio_s: float) -> None:
        self.events.put(("advance", audio_s))

    def file_done(self, outcome: FileOutcome) -> None:
        self.events.put(("file", outcome))

    def note(self, message: str) -> None:
        self.events.put(("note", message))


def _replica(replica: Replica, threads: int, files, claims: FileCounter, events) -> None:
    """One device's process: build the engine, transcribe claimed files, report back."""
    import torch

    die_with_parent()
    torch.set_num_threads(threads)
    try:
        options = replica.options
        # The replica's decoding workers take files from the counter all replicas share,
        # and start reading while the model loads.
        stream = stream_items(files, reading_for(options, mel_bins(replica.resolved)), options.workers, claims=claims)
        engine = Engine(replica.resolved, replica.precision, replica.assistant)
        for note in engine.notes:
            events.put(("note", note))
        summary = transcribe_files(files, engine, options, _ForwardingReporter(events), stream=stream, claims=claims)
        events.put(("summary", summary))
    except BaseException as error:  # the parent must hear of it, or it would wait forever
        events.put(("crashed", f"{replica.device}: {type(error).__name__}: {error}"))


def transcribe_on_devices(files, replicas: list[Replica], reporter: Reporter, settled=()) -> RunSummary:
    """Transcribe ``files`` with one model replica per device; returns the merged summary.

    ``settled`` outcomes (skipped or missing inputs) are only reported and counted."""
    import multiprocessing
    import time

    context = multiprocessing.get_context("spawn")  # CUDA cannot be used in forked children
    claims, events = FileCounter(context, len(files)), context.Queue()
    cores = os.cpu_count() or 1
    cpu_replicas = sum(replica.device == "cpu" for replica in replicas)
    threads = max(1, cores // max(cpu_replicas, 1))
    # Each replica's decoding workers share the machine's cores with the other replicas'.
    replicas = [dataclasses.replace(replica, options=dataclasses.replace(
        replica.options, workers=min(replica.options.workers, max(1, cores // len(replicas) - 1))))
        for replica in replicas]
    started = time.monotonic()
    reporter.start([*(outcome.media for outcome in settled), *files])
    total = RunSummary()
    report_settled(settled, reporter, total)
    # Not daemonic: a replica starts its own decoding workers, which a daemon may not.  The
    # finally below stops them if this process is interrupted.
    processes = [context.Process(target=_replica, args=(replica, threads, files, claims, events))
                 for replica in replicas]
    completed = False
    try:
        crashes, reported = _collect(processes, events, reporter, total)
        completed = True
    finally:
        for process in processes:
            if completed:
                process.join(timeout=30)  # it has reported; let it shut its workers down
            if process.is_alive():
                process.terminate()
                process.join(timeout=10)
        events.cancel_join_thread()  # never wait at exit for events nobody will read
    if crashes:
        raise ModelLoadError("; ".join(crashes))
    for media in files:  # taken by a decoding process that died before it began, or left by a stopped replica
        if media.source not in reported:
            outcome = FileOutcome(media, "failed", f"{media.label}: not transcribed (the process reading it stopped)")
            total.count(outcome)
            reporter.file_done(outcome)
    total.wall_s = time.monotonic() - started
    reporter.finish(total)
    return total


def _collect(processes, events, reporter: Reporter, total: RunSummary) -> tuple[list[str], set[str]]:
    """Start the replicas and relay their events until each has finished or crashed;
    returns the crash messages and the sources whose outcome was reported."""
    for process in processes:
        process.start()
    finished = 0
    crashes = []
    reported = set()
    while finished < len(processes):
        try:
            kind, payload = events.get(timeout=1.0)
        except queue.Empty:
            if any(not process.is_alive() and process.exitcode not in (0, None) for process in processes) \
                    and events.empty():
                crashes.append("a device process died")
                break
            continue
        if kind == "advance":
            reporter.advance(payload)
        elif kind == "file":
            reported.add(payload.media.source)
            reporter.file_done(payload)
        elif kind == "note":
            reporter.note(payload)
        elif kind == "summary":
            finished += 1
            total.add(payload)
        elif kind == "crashed":
            finished += 1
            crashes.append(payload)
    return crashes, reported


@dataclass(frozen=True)
class Rank:
    """This process's place among the processes a launcher started."""

    rank: int
    world_size: int
    local_rank: int


def launched_rank() -> Rank | None:
    """The rank from torchrun / accelerate launch environment variables, if launched so."""
    world_size = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world_size <= 1:
        return None
    rank = int(os.environ.get("RANK", "0"))
    return Rank(rank, world_size, int(os.environ.get("LOCAL_RANK", str(rank))))


def shard(files: list, rank: Rank) -> list:
    """Rank r of n takes files r, r+n, r+2n... of the (sorted, de-duplicated) inputs."""
    return files[rank.rank :: rank.world_size]


def _joined(rank: Rank):
    """torch.distributed, with this rank in the launcher's gloo group (joined once)."""
    import datetime

    import torch.distributed as dist

    if not dist.is_initialized():
        # Ranks meet here at the start and again at the end, when the slowest has finished.
        dist.init_process_group("gloo", rank=rank.rank, world_size=rank.world_size,
                                timeout=datetime.timedelta(hours=24))
    return dist


def share_from_first_rank(files: list, rank: Rank) -> list:
    """Rank 0's list of files, on every rank."""
    message = [files if rank.rank == 0 else None]
    _joined(rank).broadcast_object_list(message, src=0)
    return message[0]


def agree_on_status(status: int, rank: Rank) -> int:
    """The worst exit status over all ranks (gloo all-reduce), so each rank exits with it."""
    import torch

    dist = _joined(rank)
    value = torch.tensor([status], dtype=torch.int64)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    dist.destroy_process_group()
    return int(value.item())
