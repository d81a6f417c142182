"""``--ray``: a run on a Ray cluster, driven from this process.

The driver plans as any run does (``plan.make_plan``: inputs, output names, --skip-existing,
every check before any work).  Then one Ray Data dataset does the work: a CPU stage reads
each file (``cluster_stages.read_file``: one file per task, so a crash costs one file) and
an actor pool of model replicas (``cluster_stages.Replica``: one per GPU, or per few CPUs)
decodes windows of many files together.  The driver iterates the results as they stream
in, and each file goes through dw's own assembler and atomic writers once all its windows
are in: the same transcript, byte for byte, as a plain run of the same model and options.

Nothing is lost and nothing doubled.  Replicas never write; the driver keeps the first
result of each window (a batch Ray retried may answer twice) and writes a file once.
Retries are bounded and set here on purpose (Ray's own defaults retry for ever, and abort
the whole dataset on the first block that fails): a file whose reader dies every time
fails alone, said in one line, and the others finish.

Ray is imported only here, inside functions, and only on this path: ``dw[ray]`` is an
optional extra, and a plain or ``--devices`` run never loads it.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import pickle
import sys
import time
import warnings
from collections import defaultdict
from dataclasses import dataclass

from .assembler import FileAssembler
from .cluster_stages import END, FAILED, NOTE, RESULT, Replica, ReplicaSpec, read_file, rows_of
from .devices import cores_for_this_process
from .errors import DwError, ModelLoadError, UsageError, debug_requested
from .events import Reporter, RunSummary, report_settled
from .network import mel_bins
from .options import ClusterOptions
from .pipeline import assembler_for, reading_for
from .precision import Accelerator, describe
from .sinks import FileSink, WritingImpossible

EXTRA_MISSING = "--ray needs Ray: pip install 'dw[ray]'"

# A file's reader is tried this many times more after its process died.  A node lost
# mid-read is the usual cause, and one more try on another node cures it; a file that kills
# its reader every time (a crash inside FFmpeg) then fails alone, after three tries.
READ_RETRIES = 2
# A batch of windows whose replica died is tried this many times more (on the restarted
# replica, or another).  A batch that kills every replica it meets is given up after that,
# and its files fail; innocent batches queued behind it are retried with it, which is why
# each replica holds at most two batches (one decoding, one arriving).
BATCH_RETRIES = 3
BATCHES_PER_REPLICA = 2
# Replicas are restarted whenever their process dies (a lost node, the OOM killer), without
# a limit: Ray Data does not replace a replica that has used up its restarts, so a finite
# budget would let a long run on preemptible nodes lose its pool one replica at a time.
# What bounds the work is BATCH_RETRIES, per batch.
REPLICA_RESTARTS = -1
# What is still missing when the stream ends (a file whose rows were in the object store
# of a node that died, a batch whose retries all met its dead replica before Ray noticed
# the node was gone: measured, Ray gives such a batch up within a second) goes round once
# more, in a dataset of its own: dw's own bounded retry, whatever Ray's semantics.
LOST_ROUNDS = 1
# A replica whose process dies while it loads the model is replaced this many times in a
# row before the run stops (a model that cannot load at all is a ModelLoadError at once).
REPLICA_START_DEATHS = 3
# On a cluster without GPUs a replica takes this many CPUs by default (tiny.en on CPU:
# throughput per core falls beyond ~4 threads), and a quarter of the CPUs, at least one,
# are left to the readers (decoding and speech detection run at ~200x real time per core,
# log-mel beside them: far less than the model needs).
CPU_REPLICA_THREADS = 4


def ray_installed() -> bool:
    return importlib.util.find_spec("ray") is not None


def check(cluster: ClusterOptions, choice, options, to_stdout: bool, streams: list, rank) -> None:
    """UsageError for what cannot run on a cluster; before any work."""
    if not ray_installed():
        raise UsageError(EXTRA_MISSING)
    if rank is not None:
        raise UsageError("--ray under torchrun: the cluster shares out the work; run one dw, not one per rank")
    if to_stdout:
        raise UsageError("--ray writes files that every node can reach: it cannot write to standard output "
                         "(give --output-dir)")
    if streams:
        raise UsageError(f"--ray: {streams[0].label} is a stream, which only this machine can read; "
                         "on a cluster every input must be a file on storage the nodes share")
    if choice.devices:
        raise UsageError("--devices and --ray: the cluster decides the devices (--ray-replicas, --ray-replica-cpus)")
    if choice.device not in ("auto", "cpu", "cuda"):
        raise UsageError(f"--device {choice.device} with --ray: name a kind (auto, cpu or cuda); "
                         "each replica gets a device of its own")
    if options.long_form != "chunked":
        raise UsageError("--long-form sequential needs each window's result before it can cut the next, "
                         "so it cannot run on --ray; use --long-form chunked")


# -- connecting ---------------------------------------------------------------------------------
@contextlib.contextmanager
def terminal_kept_for_dw():
    """While a run talks to Ray, standard error is dw's alone (unless DW_DEBUG=1).

    Ray's core, in this process and in the processes a local cluster starts here, writes its
    warnings straight to file descriptor 2 (one about restartable actors, on every run):
    lines dw cannot reword, which would break --log-json's one JSON object a line.  So fd 2
    points at /dev/null for the run (Ray keeps its own logs, in its session folder), and
    ``sys.stderr``, where every dw message goes, at a copy of the real one."""
    if debug_requested():
        yield
        return
    sys.stderr.flush()
    real = os.dup(2)
    quiet = os.open(os.devnull, os.O_WRONLY)
    os.dup2(quiet, 2)
    os.close(quiet)
    kept = sys.stderr
    sys.stderr = open(real, "w", buffering=1, encoding=kept.encoding, errors=kept.errors, closefd=False)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(real, 2)
        os.close(real)
        sys.stderr = kept


def _quiet(debug: bool) -> None:
    """Ray's environment before it starts: no usage statistics sent (dw runs offline), and,
    unless DW_DEBUG=1, no report of errors in results nobody read (a failed file's blocks:
    dw accounts for every file itself).  Its loggers are held to CRITICAL by ``connect``:
    they find ``sys.stderr`` when they write, which is dw's during a run."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # a run never phones home
    if not debug:
        os.environ.setdefault("RAY_IGNORE_UNHANDLED_ERRORS", "1")


def connect(cluster: ClusterOptions) -> None:
    """Join (``auto``, an address) or start (``local``) the cluster, once."""
    import ray

    if ray.is_initialized():
        return
    debug = debug_requested()
    _quiet(debug)
    settings = dict(log_to_driver=debug, logging_level=logging.INFO if debug else logging.CRITICAL,
                    runtime_env={"env_vars": _worker_environment()})
    try:
        if cluster.address == "local":
            import torch

            # This machine only; its processes die with this one (Ray's kernel fate-sharing,
            # and dw's reaper for the two agents that outlive it).
            _start_reaper()
            ray.init(address="local", num_cpus=cores_for_this_process(), num_gpus=torch.cuda.device_count(),
                     include_dashboard=False, **settings)
        else:
            ray.init(address=cluster.address, **settings)
    except (ConnectionError, RuntimeError, ValueError) as error:
        raise UsageError(f"--ray {cluster.address}: cannot reach the cluster ({_first_line(error)})") from None


def _worker_environment() -> dict[str, str]:
    """What dw reads from the environment, for its processes on the cluster (another node too)."""
    env = {name: os.environ[name] for name in ("DW_CACHE_DIR", "DW_DEBUG", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
           if name in os.environ}
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # cli.app.prepare_process: idle threads sleep
    return env


_reaper = None  # the guard of a local cluster; its pipe closes when this process ends


def _start_reaper() -> None:
    import subprocess

    global _reaper
    # Its own session: a Ctrl-C at the terminal is this process's to handle, not the guard's.
    _reaper = subprocess.Popen([sys.executable, "-m", "dwcli.reaper", str(os.getpid())], stdin=subprocess.PIPE,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def disconnect() -> None:
    import ray

    ray.shutdown()


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


# -- what the replicas run on -----------------------------------------------------------------
@dataclass(frozen=True)
class Target:
    """The kind of device the replicas run on, as the plan needs it."""

    device: str  # "cpu" or "cuda"
    accelerator: Accelerator

    def describe(self, device: str) -> Accelerator:
        return self.accelerator


def target(cluster: ClusterOptions, requested: str) -> Target:
    """Where the replicas run: GPUs when the cluster has them (``--device auto``) or when
    asked (``cuda``), else CPUs; described where they run.  A local cluster is this
    machine; another is asked (it is joined now: the precision plan, and so what
    --skip-existing compares, depends on it)."""
    import torch

    if cluster.address == "local":
        gpus = torch.cuda.device_count()
    else:
        import ray

        connect(cluster)
        gpus = int(ray.cluster_resources().get("GPU", 0))
    if requested == "cuda" and not gpus:
        raise UsageError("--device cuda: the Ray cluster has no GPUs")
    device = "cuda" if gpus and requested != "cpu" else "cpu"
    here = cluster.address == "local"
    return Target(device, describe(device) if here else _describe_remotely(device))


def _describe_remotely(device: str) -> Accelerator:
    """The device as a replica will see it: described by a task with a replica's resources."""
    import ray

    task = ray.remote(describe).options(num_gpus=1 if device == "cuda" else 0, num_cpus=1, max_retries=READ_RETRIES)
    return ray.get(task.remote("cuda:0" if device == "cuda" else "cpu"))


@dataclass(frozen=True)
class Pool:
    """The model pool's size and each replica's share of a node."""

    replicas: int
    cpus: int  # CPUs per replica (its torch threads)
    gpus: int  # GPUs per replica (0 or 1)
    readers: int = 1  # files read at once: the CPUs the replicas leave


def size_pool(cluster: ClusterOptions, device: str, nodes: list[dict]) -> Pool:
    """The pool for a cluster whose alive nodes have these resources (``ray.nodes()``):
    one replica per GPU; without GPUs, replicas of ``replica_cpus`` threads in three
    quarters of each node's CPUs (a replica lives on one node), the rest, at least one CPU
    a node, left to reading.  A cluster too small for that still gets one replica."""
    cpus = sum(int(node.get("CPU", 0)) for node in nodes)
    if device == "cuda":
        gpus = sum(int(node.get("GPU", 0)) for node in nodes)
        replicas, threads = cluster.replicas or max(1, gpus), cluster.replica_cpus or 1
        return Pool(replicas, threads, 1, max(1, cpus - replicas * threads))
    for_models = [count - max(1, count // 4) for count in (int(node.get("CPU", 0)) for node in nodes) if count]
    threads = max(1, min(cluster.replica_cpus or CPU_REPLICA_THREADS, max(for_models, default=1)))
    replicas = cluster.replicas or max(1, sum(count // threads for count in for_models))
    return Pool(replicas, threads, 0, max(1, cpus - replicas * threads))


# -- the run ------------------------------------------------------------------------------------
def _dataset(plan, pool: Pool, indices: list[int]):
    """The files ``indices`` of the plan -> their windows (CPU tasks) -> their results (the
    model pool)."""
    import ray.data

    if not debug_requested():
        for handler in logging.getLogger("ray.data").handlers:  # its console; its log file stays
            if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
                handler.setLevel(logging.CRITICAL)
    run = plan.devices[0]
    options = run.options
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = debug_requested()  # dw shows its own
    context.print_on_execution_start = debug_requested()
    # dw accounts for every file itself (one whose rows never came fails with its own
    # line), so Ray Data's tally of failed blocks would only stop the files still fine.
    context.max_errored_blocks = -1
    context.max_consecutive_actor_init_deaths = REPLICA_START_DEATHS
    items = [{"file": index, "window": -1, "kind": "media", "payload": pickle.dumps(plan.files[index])}
             for index in indices]
    spec = ReplicaSpec(plan.model, run.precision, plan.assistant, options, pool.cpus)
    with warnings.catch_warnings():
        # max_retries, max_restarts and max_task_retries are still Ray's own remote
        # arguments (deprecated without a named replacement yet: hence ray < 2.64).
        warnings.simplefilter("ignore")
        dataset = ray.data.from_items(items, override_num_blocks=len(items))  # one file a block, a task
        # Readers ask Ray for no CPU of their own and are counted instead (as many at once
        # as the replicas leave CPUs): a replica restarted after its node died lands on a
        # node whose CPUs are all taken, and readers that waited for a free CPU would then
        # wait for ever (measured: two replicas on the last 2-CPU node, reading stopped).
        dataset = dataset.map_batches(read_file, batch_size=1, fn_kwargs={"reading": reading_for(options, mel_bins(
            plan.model))}, compute=ray.data.TaskPoolStrategy(size=pool.readers), num_cpus=0,
            max_retries=READ_RETRIES)
        return dataset.map_batches(
            Replica, fn_constructor_kwargs={"spec": spec}, batch_size=options.batch_size,
            compute=ray.data.ActorPoolStrategy(min_size=1, max_size=pool.replicas, initial_size=pool.replicas,
                                               max_tasks_in_flight_per_actor=BATCHES_PER_REPLICA),
            num_cpus=pool.cpus, num_gpus=pool.gpus, max_restarts=REPLICA_RESTARTS, max_task_retries=BATCH_RETRIES,
            # Each replica process starts with its thread count in its environment (a
            # restarted one too): OpenBLAS and OpenMP size their pools when they load, and
            # word times' last digits depend on how sums are split among threads.
            runtime_env={"env_vars": {**_worker_environment(), "OMP_NUM_THREADS": str(pool.cpus)}})


class _Gathering:
    """The driver's side of the stream: each file's results to the assembler, once."""

    def __init__(self, assembler: FileAssembler, reporter: Reporter):
        self.assembler = assembler
        self.reporter = reporter
        self.received: dict[int, set[int]] = defaultdict(set)  # windows in, per file
        self.expected: dict[int, int] = {}  # windows per file, from its end row

    def take(self, kind: str, index: int, window: int, payload) -> None:
        if kind == NOTE:
            self.reporter.note(payload)
            return
        if not self.assembler.is_open(index):
            return  # done or failed already: a retried batch's second answer, or a failed file's rest
        if kind == RESULT:
            if window in self.received[index]:
                return
            self.received[index].add(window)
            for settled in payload:
                self.assembler.add(index, settled.segments, settled.language, settled.progress_s)
        elif kind == END:
            if index in self.expected:
                return
            self.assembler.begun(index)
            self.assembler.ended(payload.end)
            self.expected[index] = payload.windows
        elif kind == FAILED:
            self.assembler.fail(index, payload.message, payload.detail)
            return
        if self.expected.get(index) == len(self.received[index]):
            self.assembler.finish(index)

    def lost(self) -> list[int]:
        """The files whose rows did not all come (once the stream has ended)."""
        return [index for index in range(len(self.assembler.files)) if self.assembler.is_open(index)]

    def again(self, indices: list[int]) -> None:
        """Forget what came of ``indices``: they go round again from the start."""
        for index in indices:
            self.received.pop(index, None)
            self.expected.pop(index, None)
            self.assembler.reset(index)

    def account(self, rounds: int, stopped: str | None = None) -> None:
        """The last stream ended: every file still open lost its rows on the way, and says how."""
        for index in self.lost():
            label = self.assembler.label(index)
            if stopped is not None:
                message = f"{label}: not transcribed (the cluster run stopped: {stopped})"
            elif index not in self.expected:
                message = f"{label}: the process reading it died ({(READ_RETRIES + 1) * rounds} tries)"
            else:
                missing = self.expected[index] - len(self.received[index])
                message = (f"{label}: {missing} of its {self.expected[index]} windows never came back from the "
                           f"model replicas ({(BATCH_RETRIES + 1) * rounds} tries each)")
            self.assembler.fail(index, message)


def transcribe_on_cluster(plan, reporter: Reporter) -> RunSummary:
    """Run ``plan`` on its Ray cluster (``plan.cluster``); the files are written here."""
    import ray

    started = time.monotonic()
    reporter.start([*(outcome.media for outcome in plan.settled), *plan.files])
    summary = RunSummary()
    report_settled(plan.settled, reporter, summary)
    run = plan.devices[0]
    sink = FileSink(run.options.formats, run.options.writer, run.options.resume)
    assembler = assembler_for(plan.files, plan.model.model_id, run.precision, run.options, sink, reporter, summary)
    gathering = _Gathering(assembler, reporter)
    connect(plan.cluster)
    try:
        stopped, rounds, left = None, 0, list(range(len(plan.files)))
        while left and rounds <= LOST_ROUNDS and stopped is None:
            rounds += 1
            gathering.again(left if rounds > 1 else [])
            # Sized on the nodes alive now: a second round runs on what is left of the cluster.
            nodes = [node["Resources"] for node in ray.nodes() if node["Alive"]]
            pool = size_pool(plan.cluster, run.device.split(":")[0], nodes)
            try:
                with warnings.catch_warnings():
                    # Ray Data warns through Python's warnings too (about the pool's size when
                    # few files are left): its business, said in its log, not on dw's stderr.
                    if not debug_requested():
                        warnings.simplefilter("ignore")
                    for batch in _dataset(plan, pool, left).iter_batches(batch_size=None, batch_format="numpy"):
                        for kind, index, window, payload in rows_of(batch):
                            gathering.take(kind, index, window, payload)
            except WritingImpossible as error:
                assembler.abandon(str(error))
            except DwError:
                raise
            except Exception as error:  # noqa: BLE001 - whatever stops the dataset stops the run, said once
                stopped = _why_stopped(error)
            left = gathering.lost()
        gathering.account(rounds, stopped)
    finally:
        disconnect()
    summary.wall_s = time.monotonic() - started
    reporter.finish(summary)
    return summary


def _why_stopped(error: BaseException) -> str:
    """One line for what stopped the dataset; a model no replica could load is the model's
    error (exit status 3), as in a plain run."""
    text = str(error)
    if "ModelLoadError" in text:
        reason = text.split("ModelLoadError:", 1)[-1].strip().splitlines()[0]
        raise ModelLoadError(reason)
    return _first_line(error)
