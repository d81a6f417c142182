"""The engines side by side on this machine: a plain run, ``--devices cpu,cpu`` and
``--ray local`` on the same files, whole process (what a user waits for) and peak memory
of the whole process tree (a local Ray cluster's processes included: RSS summed, so pages
shared between processes count once per process); then the time a Ray run takes to get
going again after one of its nodes is killed outright.

    python benchmarks/cluster.py                       # the table of benchmarks/RESULTS.md
    python benchmarks/cluster.py --copies 4 --record   # more audio; append to RESULTS.md

Real speech: tests/data/speech, each file ``--copies`` times (under other names).  The Ray
runs start their cluster inside the measured time, as a user's ``--ray local`` does.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
from measure import DW

ROOT = Path(__file__).resolve().parent.parent
SPEECH = ROOT / "tests" / "data" / "speech"
DW_RUN = [DW, "transcribe", "--model", "offline:tiny.en", "--format", "srt,json",
      "--log-json"]
# (name, arguments, environment).  On this 2-core machine a --devices or --ray local replica
# runs one torch thread; "plain, 1 thread" is the plain run with the replicas' thread count,
# so that the engines' own cost shows apart from threading's.
SYSTEMS = [("plain", [], {}), ("plain, 1 thread", [], {"OMP_NUM_THREADS": "1"}),
           ("--devices cpu,cpu", ["--devices", "cpu,cpu"], {}), ("--ray local", ["--ray", "local"], {})]


def _inputs(folder: Path, copies: int) -> Path:
    folder.mkdir(parents=True)
    for copy in range(copies):
        for path in sorted(SPEECH.iterdir()):
            if path.suffix in (".wav", ".flac"):
                shutil.copy(path, folder / f"{copy}-{path.name}")
    return folder


class _PeakMemory(threading.Thread):
    """The largest RSS of a process and its descendants, summed, sampled every 0.1 s."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid, self.peak, self.done = pid, 0, threading.Event()

    def run(self):
        try:
            root = psutil.Process(self.pid)
        except psutil.Error:
            return
        while not self.done.wait(0.1):
            total = 0
            try:
                for process in [root, *root.children(recursive=True)]:
                    try:
                        total += process.memory_info().rss
                    except psutil.Error:
                        pass
            except psutil.Error:
                return
            self.peak = max(self.peak, total)


def run(command: list[str], env: dict) -> tuple[float, float, str]:
    """Wall seconds, peak MB of the process tree, and the last stderr line (dw's summary)."""
    started = time.monotonic()
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    memory = _PeakMemory(process.pid)
    memory.start()
    stderr = process.communicate()[1].decode()
    wall = time.monotonic() - started
    memory.done.set()
    memory.join()
    if process.returncode != 0:
        raise SystemExit(f"{command}: exit {process.returncode}\n{stderr[-2000:]}")
    return wall, memory.peak / 2**20, stderr.strip().splitlines()[-1]


def recovery(inputs: Path, out: Path, env: dict) -> tuple[float, float]:
    """A Ray run over three nodes (a head that runs no work, two of 2 CPUs), one of them
    killed outright once the first file is written: (seconds from the kill to the next file
    written, the run's whole wall time)."""
    from ray.cluster_utils import Cluster

    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    cluster = Cluster(initialize_head=True, head_node_args=dict(num_cpus=0, object_store_memory=100 * 2**20,
                                                                include_dashboard=False))
    workers = [cluster.add_node(num_cpus=2, object_store_memory=100 * 2**20) for _ in range(2)]
    try:
        started = time.monotonic()
        process = subprocess.Popen([*DW_RUN, str(inputs), "-o", str(out), "--ray", cluster.address, "--batch-size", "1"],
                                   env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        while not list(out.glob("*.json")):
            time.sleep(0.1)
        written = len(list(out.glob("*.json")))
        cluster.remove_node(workers[-1], allow_graceful=False)
        killed = time.monotonic()
        while len(list(out.glob("*.json"))) <= written and process.poll() is None:
            time.sleep(0.1)
        back = time.monotonic() - killed
        stderr = process.communicate()[1].decode()
        if process.returncode != 0:
            raise SystemExit(f"recovery run: exit {process.returncode}\n{stderr[-2000:]}")
        return back, time.monotonic() - started
    finally:
        cluster.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--copies", type=int, default=2, help="each speech file this many times")
    parser.add_argument("--record", action="store_true", help="append the table to benchmarks/RESULTS.md")
    args = parser.parse_args()
    env = {key: value for key, value in os.environ.items() if not key.startswith("DW_")}
    env.update(HF_HUB_OFFLINE="1", RAY_USAGE_STATS_ENABLED="0")
    if "DW_CACHE_DIR" in os.environ:
        env["DW_CACHE_DIR"] = os.environ["DW_CACHE_DIR"]
    with tempfile.TemporaryDirectory(prefix="dw-cluster-bench-") as scratch:
        inputs = _inputs(Path(scratch) / "in", args.copies)
        subprocess.run([*DW_RUN, str(next(inputs.iterdir())), "-o", str(Path(scratch) / "warm"), "-q"], env=env,
                       check=True)  # the model converted and the files in the page cache, for every system
        load = os.getloadavg()
        rows = []
        for number, (name, extra, variables) in enumerate(SYSTEMS):
            wall, peak, summary = run([*DW_RUN, str(inputs), "-o", str(Path(scratch) / str(number)), *extra],
                                      {**env, **variables})
            rows.append((name, wall, peak))
            print(f"{name}: {wall:.1f} s, {peak:.0f} MB; {summary}", file=sys.stderr)
        back, whole = recovery(inputs, Path(scratch) / "recovery", env)
        load = (*load, *os.getloadavg())
    plain = rows[0][1]
    files = len([path for path in SPEECH.iterdir() if path.suffix in (".wav", ".flac")])
    lines = [f"{args.copies} copies of tests/data/speech ({files} files, 2.5 min, each), tiny.en, "
             f"srt+json; load average {min(load):.1f} to {max(load):.1f}; {os.cpu_count()} CPUs", "",
             "| engine | whole process, s | / plain | peak RSS of the process tree, MB |",
             "| --- | ---: | ---: | ---: |"]
    lines += [f"| {name} | {wall:.1f} | {wall / plain:.2f}x | {peak:.0f} |" for name, wall, peak in rows]
    lines += ["", f"A node killed mid-run (three nodes on this machine, --batch-size 1): the next file was written "
                  f"{back:.1f} s after the kill; the whole run took {whole:.1f} s."]
    print("\n".join(lines))
    if args.record:
        commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True).stdout.strip()
        dirty = "+dirty" if subprocess.run(["git", "-C", str(ROOT), "diff", "--quiet"]).returncode else ""
        stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        with open(ROOT / "benchmarks" / "RESULTS.md", "a") as results:
            results.write(f"\n## {stamp}, commit {commit}{dirty}: engines (plain, --devices, --ray local)\n\n"
                          f"`python benchmarks/cluster.py --copies {args.copies}`\n\n" + "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
