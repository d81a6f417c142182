"""``dw transcribe --ray``: a Ray cluster transcribes like one big machine and loses nothing.

Real speech, the real tiny.en model and real Ray clusters on this machine (Ray's own
``cluster_utils``: every node a set of processes, with small, explicit resources).  The
CPU float sums of a transcript's word times depend on torch's thread count, so the plain
run each cluster run is compared with byte for byte uses the replicas' thread count (1).

The checks that need no cluster (usage errors, the pool's size, the driver's bookkeeping,
Ray never imported off this path) run first and fast; the others carry the ``ray`` and
``slow`` markers and run in ``make test`` too.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conversations import write_three_speakers
from recorder import Recorder
from dwcli import cluster
from dwcli.cli import app
from dwcli.cluster_stages import END, FAILED, NOTE, RESULT, Ended
from dwcli.discover import MediaFile
from dwcli.events import RunSummary
from dwcli.options import ClusterOptions
from dwcli.sources import FileEnd, FileFailed, Settled

CLIPS = ["260-123286-0001.wav", "61-70968-0000.wav", "1995-1837-0001.wav", "jfk.flac", "2412-153948-0000.flac",
         "librispeech_test-other_3080-5032-0000_to_0009.flac"]
MODEL = ["--model", "offline:tiny.en"]
FORMATS = ["--format", "srt,json"]
MB = 2**20
WAIT_S = 600
ray_run = [pytest.mark.ray, pytest.mark.slow]


# -- without a cluster ------------------------------------------------------------------------
@pytest.mark.parametrize("arguments, message", [
    (["clip.wav", "--stdout"], "--ray writes files that every node can reach: it cannot write to standard output "
                               "(give --output-dir)"),
    (["-"], "--ray writes files that every node can reach: it cannot write to standard output (give --output-dir)"),
    (["-", "-o", "out"], "--ray: <stdin> is a stream, which only this machine can read; on a cluster every "
                         "input must be a file on storage the nodes share"),
    (["clip.wav", "--devices", "cpu,cpu"], "--devices and --ray: the cluster decides the devices (--ray-replicas, "
                                          "--ray-replica-cpus)"),
    (["clip.wav", "--device", "cuda:1"], "--device cuda:1 with --ray: name a kind (auto, cpu or cuda); each replica "
                                         "gets a device of its own"),
    (["clip.wav", "--long-form", "sequential"], "--long-form sequential needs each window's result before it can cut "
                                                "the next, so it cannot run on --ray; use --long-form chunked"),
    (["clip.wav", "--ray-replicas", "-1"], "--ray-replicas -1: expected 0 (one per GPU) or more"),
])
def test_what_cannot_run_on_a_cluster_is_a_usage_error_before_any_work(jfk, tmp_path, monkeypatch, arguments,
                                                                       message):
    monkeypatch.chdir(tmp_path)
    shutil.copy(jfk["path"], tmp_path / "clip.wav")
    monkeypatch.setattr(cluster, "connect", _no_cluster)
    result = CliRunner().invoke(app, ["transcribe", *arguments, "--ray", "local", *MODEL], input=b"")
    assert result.exit_code == 2, result.output
    assert result.stderr.splitlines() == [f"Error: {message}"]


def test_without_the_extra_ray_is_one_line_naming_it(jfk, tmp_path, monkeypatch):
    monkeypatch.setattr(cluster, "ray_installed", lambda: False)
    result = CliRunner().invoke(app, ["transcribe", str(jfk["path"]), "-o", str(tmp_path), "--ray", "auto", *MODEL])
    assert result.exit_code == 2
    assert result.stderr.splitlines() == ["Error: --ray needs Ray: pip install 'dw[ray]'"]


def _no_cluster(_options):
    raise AssertionError("a usage error must come before the cluster is reached")


def test_the_plain_and_devices_paths_never_import_ray(jfk, dw_env, tmp_path):
    """A ``ray`` that ends any process importing it, first on the path: a plain run and a
    --devices run (whose replicas are processes of their own) still succeed."""
    poison = tmp_path / "poison" / "ray"
    poison.mkdir(parents=True)
    (poison / "__init__.py").write_text("import os\nos._exit(97)\n")
    env = dict(dw_env, PYTHONPATH=str(poison.parent))
    for extra in ([], ["--devices", "cpu,cpu"]):
        result = subprocess.run(["dw", "transcribe", str(jfk["path"]), "-o", str(tmp_path / "out"), "-q", *MODEL,
                                 *extra], env=env, capture_output=True, timeout=WAIT_S)
        assert result.returncode == 0, (extra, result.stderr.decode()[-2000:])
    assert "ask not what your country" in (tmp_path / "out" / "jfk.txt").read_text()


@pytest.mark.parametrize("device, nodes, expected", [
    ("cuda", [{"CPU": 16, "GPU": 4}, {"CPU": 16, "GPU": 4}], cluster.Pool(8, 1, 1, 24)),  # one replica per GPU
    ("cpu", [{"CPU": 16}, {"CPU": 16}], cluster.Pool(6, 4, 0, 8)),  # 12 of 16 CPUs a node for models, 4 each
    ("cpu", [{"CPU": 2}], cluster.Pool(1, 1, 0, 1)),  # this machine: one CPU models, one reads
    ("cpu", [{"CPU": 1}, {"CPU": 1}, {"CPU": 1}], cluster.Pool(1, 1, 0, 2)),  # tiny nodes: one replica, the rest read
    ("cpu", [{"CPU": 0}, {"CPU": 2}, {"CPU": 2}], cluster.Pool(2, 1, 0, 2)),  # a head that runs no work
])
def test_the_pool_takes_one_replica_per_gpu_or_a_share_of_each_nodes_cpus(device, nodes, expected):
    assert cluster.size_pool(ClusterOptions("auto"), device, nodes) == expected
    assert cluster.size_pool(ClusterOptions("auto", replicas=3, replica_cpus=2), device, nodes).replicas == 3


class _Sink:
    def __init__(self):
        self.delivered = []

    def deliver(self, media, transcript, stamp):
        self.delivered.append((media.source, [segment.text for segment in transcript.segments]))
        return []


def test_the_driver_writes_each_file_once_when_all_its_windows_are_in():
    """Rows arrive in any order and a retried batch answers twice: each window counts once,
    a file is delivered once, when its end and every window are in; a file whose rows
    never came fails with one line saying which."""
    from dwcli.assembler import FileAssembler
    from dwcli.segments import Segment

    files = [MediaFile(f"/in/{name}.wav", Path(f"/out/{name}")) for name in ("a", "b", "c", "d")]
    seen, sink = Recorder(), _Sink()
    assembler = FileAssembler(files, "m", {}, sink, seen, RunSummary())
    gathering = cluster._Gathering(assembler, seen)

    def piece(text, start):
        return [Settled([Segment(start, start + 1, text)], "en", 30.0)]

    rows = [
        (RESULT, 0, 1, piece("second", 31.0)),
        (RESULT, 0, 0, piece("first", 1.0)),
        (RESULT, 0, 1, piece("second again", 31.0)),  # a retried batch's second answer
        (END, 0, -1, Ended(FileEnd(0, 60.0), 2)),
        (END, 0, -1, Ended(FileEnd(0, 60.0), 2)),
        (NOTE, -1, -1, "out of device memory; batch size now 8"),
        (END, 1, -1, Ended(FileEnd(1, 40.0), 2)),
        (RESULT, 1, 0, piece("only one", 2.0)),  # its other window was lost with its replica
        (FAILED, 2, -1, FileFailed(2, "/in/c.wav: no audio could be decoded")),
        (RESULT, 2, 0, piece("after its failure", 2.0)),
        # d: its reader died every time: no row at all
    ]
    for row in rows:
        gathering.take(*row)
    gathering.account(rounds=1)
    assert sink.delivered == [("/in/a.wav", ["first", "second"])]
    assert [(outcome.media.source, outcome.status, outcome.message) for outcome in seen.outcomes] == [
        ("/in/a.wav", "ok", ""),
        ("/in/c.wav", "failed", "/in/c.wav: no audio could be decoded"),
        ("/in/b.wav", "failed", "/in/b.wav: 1 of its 2 windows never came back from the model replicas (4 tries each)"),
        ("/in/d.wav", "failed", "/in/d.wav: the process reading it died (3 tries)"),
    ]
    assert seen.notes == ["out of device memory; batch size now 8"]


# -- on a cluster -------------------------------------------------------------------------------
# Decoding a file named crash.* kills its process outright, as a crash inside FFmpeg or the
# OOM killer would: PyAV's open is wrapped when a cluster's worker imports it (the workers
# inherit this folder on PYTHONPATH from the node that starts them), and every try is noted.
_SITECUSTOMIZE = '''
import importlib.abc, importlib.util, os, signal, sys

class _CrashOnOpen(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != "av":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec("av")
        execute = spec.loader.exec_module

        def exec_module(module):
            execute(module)
            real = module.open

            def open_(target, *args, **kwargs):
                if os.path.basename(str(target)).startswith("crash."):
                    with open(os.environ["DW_TEST_CRASH_LOG"], "a") as log:
                        log.write(f"{os.getpid()}\\n")
                    os.kill(os.getpid(), signal.SIGKILL)
                return real(target, *args, **kwargs)

            module.open = open_

        spec.loader.exec_module = exec_module
        return spec

sys.meta_path.insert(0, _CrashOnOpen())
'''


class _Cluster:
    """A Ray cluster of this machine's processes (``ray.cluster_utils``), started with the
    crash hook in its environment."""

    def __init__(self, folder: Path, head: dict, workers: list[dict] = ()):
        from ray.cluster_utils import Cluster

        hooks = folder / "hooks"
        hooks.mkdir(parents=True)
        (hooks / "sitecustomize.py").write_text(_SITECUSTOMIZE)
        self.crash_log = folder / "crash.log"
        saved = dict(os.environ)
        os.environ.update(PYTHONPATH=str(hooks), DW_TEST_CRASH_LOG=str(self.crash_log), RAY_USAGE_STATS_ENABLED="0")
        try:
            self.ray = Cluster(initialize_head=True, head_node_args=dict(include_dashboard=False, **head))
            self.workers = [self.ray.add_node(**node) for node in workers]
        finally:
            os.environ.clear()
            os.environ.update(saved)
        self.address = self.ray.address

    def shutdown(self):
        self.ray.shutdown()


@pytest.fixture(scope="module")
def one_node(tmp_path_factory):
    """One node with 2 logical CPUs (one replica of one thread, one reader) and a 200 MB
    object store, shared by this module's runs."""
    pytest.importorskip("ray")
    ray_cluster = _Cluster(tmp_path_factory.mktemp("one-node"), dict(num_cpus=2, object_store_memory=200 * MB))
    yield ray_cluster
    ray_cluster.shutdown()


@pytest.fixture(scope="module")
def inputs(speech, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("inputs")
    for name in CLIPS:
        shutil.copy(speech[name]["path"], folder / name)
    return folder


def _plain(inputs: Path, out: Path, dw_env, *extra: str) -> Path:
    """A plain run of the inputs with one thread, as each replica has."""
    result = subprocess.run(["dw", "transcribe", str(inputs), *FORMATS, "-o", str(out), "-q", *MODEL, *extra],
                            env=dict(dw_env, OMP_NUM_THREADS="1"), capture_output=True, timeout=WAIT_S)
    assert result.returncode == 0, result.stderr.decode()
    return out


@pytest.fixture(scope="module")
def reference(inputs, dw_env, tmp_path_factory) -> Path:
    """What a plain run writes: every window of these files fits one batch, in either run."""
    return _plain(inputs, tmp_path_factory.mktemp("reference"), dw_env)


@pytest.fixture(scope="module")
def reference_alone(inputs, dw_env, tmp_path_factory) -> Path:
    """What a plain run writes with each window decoded alone (--batch-size 1).  Word times'
    last digits depend on a window's batch-mates (float sums in batched matmuls), in a plain
    run as on a cluster; runs whose batches are cut differently are compared with this."""
    return _plain(inputs, tmp_path_factory.mktemp("reference-alone"), dw_env, "--batch-size", "1")


def _outputs(folder: Path, sourceless: bool = False) -> dict[str, bytes]:
    """Each output's bytes (``sourceless``: a JSON output without its "source", for inputs
    copied elsewhere than the reference's)."""
    found = {}
    for path in sorted(folder.iterdir()):
        if not path.name.startswith("."):
            data = path.read_bytes()
            if sourceless and path.suffix == ".json":
                data = json.dumps({**json.loads(data), "source": None}).encode()
            found[path.name] = data
    return found


def _json_lines(stderr: bytes) -> list[dict]:
    """Every line of stderr, each a JSON object (--log-json: nothing of Ray's gets through)."""
    return [json.loads(line) for line in stderr.decode().splitlines()]


def _file_events(events: list[dict]) -> list[tuple[str, str]]:
    return sorted((Path(event["source"]).name, event["status"]) for event in events if event["event"] == "file")


def _dw(address: str, inputs: Path, out: Path, *extra: str) -> list[str]:
    return ["dw", "transcribe", str(inputs), *FORMATS, "-o", str(out), "--log-json", "--ray", address, *MODEL, *extra]


@pytest.mark.ray
@pytest.mark.slow
def test_a_cluster_writes_what_a_plain_run_writes_byte_for_byte(one_node, inputs, reference, dw_env, tmp_path):
    result = subprocess.run(_dw(one_node.address, inputs, tmp_path), env=dw_env, capture_output=True,
                            timeout=WAIT_S)
    assert result.returncode == 0, result.stderr.decode()[-3000:]
    events = _json_lines(result.stderr)
    assert _file_events(events) == sorted((name, "ok") for name in CLIPS)  # each file once
    summary = events[-1]
    assert (summary["event"], summary["ok"], summary["failed"]) == ("summary", len(CLIPS), 0)
    assert summary["audio_s"] > 140 and summary["realtime_factor"] > 0
    assert _outputs(tmp_path) == _outputs(reference)
    assert result.stdout == b""


@pytest.mark.ray
@pytest.mark.slow
def test_speaker_labels_on_a_cluster_are_a_plain_runs(one_node, dw_env, tmp_path):
    """--speakers on a cluster: the readers embed the speech as the decoding workers do and
    the driver labels each file at its end, so the turns and labelled subtitles are a plain
    run's, byte for byte (each window decoded alone in both: word times, which place words
    in turns, depend on a window's batch-mates)."""
    speakers = ["--speakers", "--format", "rttm,srt", "--batch-size", "1"]
    (tmp_path / "in").mkdir()
    conversation = write_three_speakers(Path(__file__).parent / "data" / "speech", tmp_path / "in")
    plain = _plain(conversation["audio"], tmp_path / "plain", dw_env, *speakers)
    result = subprocess.run([*_dw(one_node.address, conversation["audio"], tmp_path / "out"), *speakers], env=dw_env,
                            capture_output=True, timeout=WAIT_S)
    assert result.returncode == 0, result.stderr.decode()[-3000:]
    assert _outputs(tmp_path / "out") == _outputs(plain)
    assert len({line.split()[7] for line in (plain / "three.rttm").read_text().splitlines()}) == 3


@pytest.mark.ray
@pytest.mark.slow
def test_a_file_that_kills_its_reader_fails_alone_after_bounded_tries(one_node, inputs, reference, dw_env, jfk,
                                                                      tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for name in CLIPS[:3]:
        shutil.copy(inputs / name, folder / name)
    shutil.copy(jfk["path"], folder / "crash.flac")
    result = subprocess.run(_dw(one_node.address, folder, tmp_path / "out"), env=dw_env, capture_output=True,
                            timeout=WAIT_S)
    assert result.returncode == 1, result.stderr.decode()[-3000:]
    events = _json_lines(result.stderr)
    assert _file_events(events) == sorted([*((name, "ok") for name in CLIPS[:3]), ("crash.flac", "failed")])
    failure = next(event for event in events if event.get("status") == "failed")
    # Bounded: Ray tries the reader 3 times; what is still lost goes round once more.
    tries = (cluster.READ_RETRIES + 1) * (cluster.LOST_ROUNDS + 1)
    assert failure["error"] == f"{folder / 'crash.flac'}: the process reading it died ({tries} tries)"
    assert len(one_node.crash_log.read_text().split()) == tries
    stems = {clip.rsplit(".", 1)[0] for clip in CLIPS[:3]}
    assert _outputs(tmp_path / "out", sourceless=True) == {
        name: data for name, data in _outputs(reference, sourceless=True).items() if name.rsplit(".", 1)[0] in stems}


def _replica_processes() -> dict[int, float]:
    """The model replicas running on this machine (Ray titles an actor's process by its
    class), with their start times."""
    import psutil

    found = {}
    for process in psutil.process_iter(["cmdline", "create_time"]):
        if any("MapBatches(Replica)" in part for part in process.info["cmdline"] or ()):
            found[process.pid] = process.info["create_time"]
    return found


def _wait_for(condition, timeout_s: float = WAIT_S, every_s: float = 0.2):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every_s)
    raise AssertionError("timed out waiting")


@pytest.mark.ray
@pytest.mark.slow
def test_a_replica_killed_mid_batch_is_restarted_and_its_batch_retried(one_node, inputs, reference_alone, dw_env,
                                                                       tmp_path):
    before = set(_replica_processes())
    process = subprocess.Popen(_dw(one_node.address, inputs, tmp_path, "--batch-size", "1"), env=dw_env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    # Once the first file is written the replica is decoding the next batch: kill it then.
    _wait_for(lambda: any(tmp_path.glob("*.json")))
    replicas = _wait_for(lambda: set(_replica_processes()) - before)
    for pid in replicas:
        os.kill(pid, signal.SIGKILL)
    stderr = process.communicate(timeout=WAIT_S)[1]
    assert process.returncode == 0, stderr.decode()[-3000:]
    assert _file_events(_json_lines(stderr)) == sorted((name, "ok") for name in CLIPS)  # each file once
    assert _outputs(tmp_path) == _outputs(reference_alone)


def _tree(pid: int) -> dict[int, float]:
    import psutil

    try:
        return {child.pid: child.create_time() for child in psutil.Process(pid).children(recursive=True)}
    except psutil.Error:
        return {}


def _alive(processes: dict[int, float]) -> list[int]:
    import psutil

    alive = []
    for pid, started in processes.items():
        try:
            process = psutil.Process(pid)
            if process.create_time() == started and process.status() != psutil.STATUS_ZOMBIE:
                alive.append(pid)
        except psutil.Error:
            pass
    return alive


@pytest.mark.ray
@pytest.mark.slow
def test_a_killed_driver_leaves_no_process_behind_and_a_rerun_redoes_only_the_rest(one_node, inputs, reference_alone,
                                                                                   dw_env, tmp_path):
    """``--ray local`` started a cluster of this machine's processes; ``kill -9`` of dw
    takes every one of them with it.  A rerun with --skip-existing (here on another
    cluster) transcribes exactly the files the killed run had not finished."""
    env = dict(dw_env, RAY_DEFAULT_OBJECT_STORE_MEMORY_PROPORTION="0.01")  # 1% of memory: a small object store
    process = subprocess.Popen(_dw("local", inputs, tmp_path, "--batch-size", "1"), env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    started: dict[int, float] = {}

    def first_file_written():
        started.update(_tree(process.pid))
        return any(tmp_path.glob(".*.dw.json"))

    _wait_for(first_file_written)
    started.update(_tree(process.pid))
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert len(started) >= 5  # GCS, raylet, agents, workers, the guard
    _wait_for(lambda: not _alive(started), timeout_s=20)
    done = sorted(record.name for record in tmp_path.glob(".*.dw.json"))
    assert 1 <= len(done) < len(CLIPS)

    rerun = subprocess.run(_dw(one_node.address, inputs, tmp_path, "--skip-existing", "--batch-size", "1"),
                           env=dw_env, capture_output=True, timeout=WAIT_S)
    assert rerun.returncode == 0, rerun.stderr.decode()[-3000:]
    summary = _json_lines(rerun.stderr)[-1]
    assert (summary["skipped"], summary["ok"]) == (len(done), len(CLIPS) - len(done))
    assert _outputs(tmp_path) == _outputs(reference_alone)


@pytest.mark.ray
@pytest.mark.slow
def test_a_node_killed_mid_run_loses_nothing(inputs, reference_alone, dw_env, tmp_path):
    """Three nodes, each its own processes: a head that runs no work (the driver joins it)
    and two workers of 2 CPUs (a replica and a reader each).  The node of a replica that is
    decoding is killed outright mid-run; every file still finishes, once, with the
    transcript a plain run writes."""
    import psutil

    nodes = _Cluster(tmp_path / "cluster", dict(num_cpus=0, object_store_memory=100 * MB),
                     [dict(num_cpus=2, object_store_memory=100 * MB)] * 2)
    try:
        out = tmp_path / "out"
        process = subprocess.Popen(_dw(nodes.address, inputs, out, "--batch-size", "1"), env=dw_env,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        _wait_for(lambda: any(out.glob("*.json")) if out.is_dir() else False)
        replica = next(iter(_replica_processes()))
        raylets = {node.all_processes["raylet"][0].process.pid: node for node in nodes.workers}
        victim = next(raylets[parent.pid] for parent in psutil.Process(replica).parents() if parent.pid in raylets)
        nodes.ray.remove_node(victim, allow_graceful=False)
        stderr = process.communicate(timeout=WAIT_S)[1]
    finally:
        nodes.shutdown()
    assert process.returncode == 0, stderr.decode()[-3000:]
    assert _file_events(_json_lines(stderr)) == sorted((name, "ok") for name in CLIPS)  # each file once
    assert _outputs(out) == _outputs(reference_alone)
