"""Several replicas in one command (--devices) and several ranks under a launcher.

Both run here on the CPU (two replicas / two gloo ranks), so CI covers the scheduling, the
sharding and the exit-status agreement that GPUs and machines use.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys

import pytest

from dwcli.parallel import Rank, shard

MODEL = ["--model", "offline:tiny.en"]
CLIPS = ["260-123286-0001.wav", "61-70968-0000.wav", "1995-1837-0001.wav", "jfk.flac", "2412-153948-0000.flac"]
WAIT_S = 300


def _inputs(speech, folder, bad: bool):
    folder.mkdir()
    for name in CLIPS:
        shutil.copy(speech[name]["path"], folder / name)
    if bad:
        (folder / "zz-broken.mp3").write_bytes(b"not audio at all" * 64)
    return folder


def _events(stderr: bytes) -> list[dict]:
    return [event for event in map(json.loads, stderr.decode().splitlines()) if event["event"] != "note"]


def test_shards_are_disjoint_and_complete():
    files = list(range(11))
    shards = [shard(files, Rank(rank, 3, rank)) for rank in range(3)]
    assert sorted(sum(shards, [])) == files
    assert all(len(part) in (3, 4) for part in shards)


def test_two_replicas_share_the_files(speech, dw_env, tmp_path):
    folder = _inputs(speech, tmp_path / "in", bad=True)
    result = subprocess.run(
        ["dw", "transcribe", str(folder), "--devices", "cpu,cpu", "--format", "txt", "-o", str(tmp_path / "out"),
         "--log-json", *MODEL],
        env=dw_env, capture_output=True, timeout=WAIT_S,
    )
    assert result.returncode == 1, result.stderr.decode()
    events = _events(result.stderr)
    files = [event for event in events if event["event"] == "file"]
    assert sorted(event["source"] for event in files) == sorted(str(folder / name) for name in [*CLIPS, "zz-broken.mp3"])
    assert [event["status"] for event in files].count("failed") == 1
    assert (events[-1]["ok"], events[-1]["failed"]) == (len(CLIPS), 1)
    assert "horizon" in (tmp_path / "out" / "260-123286-0001.txt").read_text().lower()
    assert result.stdout == b""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _launch(folder, out, dw_env, world_size=2):
    """Start the ranks as torchrun would: RANK, WORLD_SIZE, MASTER_ADDR/PORT per process."""
    port = _free_port()
    processes = []
    for rank in range(world_size):
        env = dict(dw_env, RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size),
                   MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1")
        processes.append(subprocess.Popen(
            [sys.executable, "-m", "dwcli", "transcribe", str(folder), "--format", "txt", "-o", str(out),
             "--log-json", "--workers", "0", *MODEL],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        ))
    return [(process.wait(timeout=WAIT_S), process.stderr.read()) for process in processes]


def test_ranks_split_the_inputs_and_agree_on_the_exit_status(speech, dw_env, tmp_path):
    folder = _inputs(speech, tmp_path / "in", bad=True)  # the broken file sorts last: rank 1's shard
    results = _launch(folder, tmp_path / "out", dw_env)
    sources = []
    for status, stderr in results:
        # Rank 0 had only good files, yet exits 1 like rank 1: the run as a whole failed.
        assert status == 1, stderr.decode()
        sources += [event["source"] for event in _events(stderr) if event["event"] == "file"]
    assert sorted(sources) == sorted(str(folder / name) for name in [*CLIPS, "zz-broken.mp3"])  # each once
    assert sorted(path.name for path in (tmp_path / "out").glob("*.txt")) == sorted(
        name.rsplit(".", 1)[0] + ".txt" for name in CLIPS)


def test_ranks_exit_0_when_every_file_succeeds(speech, dw_env, tmp_path):
    folder = _inputs(speech, tmp_path / "in", bad=False)
    assert [status for status, _ in _launch(folder, tmp_path / "out", dw_env)] == [0, 0]


@pytest.mark.parametrize("requested, expected", [("auto", "cuda:3"), ("cuda", "cuda:3"), ("cuda:1", "cuda:1"),
                                                 ("cpu", "cpu")])
def test_each_torchrun_rank_takes_its_own_gpu(monkeypatch, requested, expected):
    """Under torchrun, --device auto or cuda means this rank's GPU (cuda:LOCAL_RANK); an
    explicit index is kept (checked without a GPU: the device lookup is made up)."""
    from dwcli import plan
    from dwcli.options import ModelChoice
    from dwcli.parallel import Rank

    monkeypatch.setattr(plan, "pick_device", lambda name: "cuda" if name == "auto" else name)
    choice = ModelChoice(None, None, requested, None, "auto", "auto", "auto")
    assert plan._devices(choice, Rank(3, 8, 3)) == [expected]


def test_a_torchrun_rerun_spreads_the_files_left_over_every_rank(speech, dw_env, tmp_path):
    """Rank 0 decides which files are left (--skip-existing included) and shares that list
    before the files are dealt out: the files rank 0's static share would have held are
    already done, yet both ranks get one of the two left (before, rank 0 skipped its two
    and rank 1 did the other two alone)."""
    folder = tmp_path / "in"
    folder.mkdir()
    names = sorted(CLIPS[:4])
    for name in names:
        shutil.copy(speech[name]["path"], folder / name)
    out = tmp_path / "out"
    first = subprocess.run(["dw", "transcribe", *(str(folder / name) for name in names[::2]), "-o", str(out), "-q",
                            *MODEL], env=dw_env, capture_output=True, timeout=WAIT_S)
    assert first.returncode == 0, first.stderr.decode()
    run = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "dwcli",
         "transcribe", str(folder), "-o", str(out), "--skip-existing", "--log-json", "--workers", "0", *MODEL],
        env={**dw_env, "OMP_NUM_THREADS": "1"}, capture_output=True, timeout=WAIT_S)
    assert run.returncode == 0, run.stderr.decode()[-3000:]
    summaries = [json.loads(line) for line in run.stderr.decode().splitlines()
                 if line.startswith("{") and '"summary"' in line]
    assert sorted((summary["ok"], summary["skipped"]) for summary in summaries) == [(1, 0), (1, 2)]
    assert sorted(path.name for path in out.glob("*.txt")) == sorted(name.rsplit(".", 1)[0] + ".txt" for name in names)
