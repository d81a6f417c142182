"""Running one system on one set in a child process, and what is measured of it.

``whole s`` is the child process from start to exit: what a user waits for (imports, model
load, transcription, writing).  ``run s`` is the transcription alone: dw's own ``--log-json``
summary, or the script's timer around its transcribe call.  Peak RSS comes from ``wait4``
(the child and the descendants it waited for); peak tree PSS is sampled every 0.2 s over the
child and its decoding workers.  Accuracy is scored by ``dwcli.evaluate``, as ``dw eval``
scores it.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from data import REPO, Item
from systems import SystemSpec

# The dw of the Python running the benchmarks (its virtual environment's), activated or not.
DW = str(Path(sys.executable).parent / "dw")


class TreeMemorySampler(threading.Thread):
    """Samples a process tree: peak PSS summed over it (shared pages divided fairly between
    forked workers), the main process's RSS over time, and the load average."""

    def __init__(self, pid: int, interval: float = 0.2):
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.stop_event = threading.Event()
        self.peak_tree_pss = 0
        self.samples: list[tuple[float, int, int]] = []  # (time, main rss, tree pss)
        self.loads: list[float] = []

    def run(self) -> None:
        try:
            import psutil

            root = psutil.Process(self.pid)
        except Exception:  # no psutil, or the child is gone: no samples
            return
        started = time.monotonic()
        while not self.stop_event.is_set():
            try:
                main_rss = root.memory_info().rss
                pss = 0
                for process in [root] + root.children(recursive=True):
                    try:
                        full = process.memory_full_info()
                        pss += getattr(full, "pss", full.rss)
                    except psutil.Error:
                        pass
                self.peak_tree_pss = max(self.peak_tree_pss, pss)
                self.samples.append((time.monotonic() - started, main_rss, pss))
                self.loads.append(os.getloadavg()[0])
            except psutil.Error:
                break
            self.stop_event.wait(self.interval)

    def stop(self) -> None:
        self.stop_event.set()
        self.join(timeout=5)


def run_measured(command: list[str], env: dict, log_path: Path, cwd: Path | None = None):
    """Run ``command``; (exit status, wall s, peak RSS MB, CPU s, sampler)."""
    with open(log_path, "wb") as log:
        started = time.perf_counter()
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=cwd)
        sampler = TreeMemorySampler(process.pid)
        sampler.start()
        try:
            _, status, usage = os.wait4(process.pid, 0)
        except KeyboardInterrupt:
            process.kill()
            raise
        wall = time.perf_counter() - started
        sampler.stop()
    cpu_s = usage.ru_utime + usage.ru_stime
    return os.waitstatus_to_exitcode(status), wall, usage.ru_maxrss / 1024, cpu_s, sampler  # ru_maxrss: KiB


def child_env(threads: int, code: str | None = None, omp_wait_policy: str | None = None) -> dict:
    env = {key: value for key, value in os.environ.items() if not key.startswith("DW_") or key == "DW_CACHE_DIR"}
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[name] = str(threads)
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    if omp_wait_policy:
        env["OMP_WAIT_POLICY"] = omp_wait_policy
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [code or str(REPO), env.get("PYTHONPATH")]))
    return env


@dataclass
class Result:
    spec: SystemSpec
    ok: bool
    audio_s: float
    whole_s: float = 0.0
    run_s: float = 0.0
    peak_rss_mb: float = 0.0
    peak_tree_pss_mb: float = 0.0
    cpu_s: float = 0.0
    load: float = 0.0
    error: str = ""
    texts: dict = field(default_factory=dict)
    score: object = None  # dwcli.evaluate.Score over the items with a reference
    by_corpus: dict = field(default_factory=dict)  # corpus -> its Score
    nonspeech_words: int = 0  # words written on items with no reference
    nonspeech_s: float = 0.0

    @property
    def x_whole(self) -> float:
        return self.audio_s / self.whole_s if self.whole_s > 0 else 0.0

    @property
    def x_run(self) -> float:
        return self.audio_s / self.run_s if self.run_s > 0 else 0.0


def _dw_command(spec: SystemSpec, items: list[Item], args, folder: Path) -> list[str]:
    """``dw transcribe`` over links named by item id, so outputs are ``<id>.<format>``."""
    inputs = folder / "in"
    inputs.mkdir()
    for item in items:
        (inputs / f"{item.id}{Path(item.audio).suffix}").symlink_to(item.audio)
    prefix = [DW] if Path(DW).is_file() and spec.settings["code"] is None else [sys.executable, "-m", "dwcli"]
    return prefix + ["transcribe", str(inputs), "--output-dir", str(folder / "out"), "--format",
                     spec.settings["format"], "--log-json", "--model", args.model, "--device", args.device,
                     *spec.settings["arguments"]]


def _read_dw(spec: SystemSpec, items: list[Item], folder: Path, log: str) -> tuple[dict, float]:
    texts = {}
    for item in items:
        path = folder / "out" / f"{item.id}.{spec.settings['format']}"
        raw = path.read_text(encoding="utf-8")
        texts[item.id] = json.loads(raw)["text"] if spec.settings["format"] == "json" else " ".join(raw.split())
    summary = [json.loads(line) for line in log.splitlines() if line.startswith("{") and '"summary"' in line]
    return texts, summary[-1]["wall_s"] if summary else 0.0


def run_system(spec: SystemSpec, items: list[Item], args, workdir: Path) -> Result:
    from dwcli.evaluate import Score, score

    audio_s = sum(item.duration for item in items)
    result = Result(spec, False, audio_s)
    folder = Path(tempfile.mkdtemp(prefix=f"{spec.name.replace(':', '_').replace('@', '_')}-", dir=workdir))
    log_path = folder / "log.txt"
    code = spec.settings.get("code") if spec.kind == "dw" else None
    if spec.kind == "dw":
        command = _dw_command(spec, items, args, folder)
    else:
        config = {"kind": spec.kind, "settings": spec.settings, "model_path": args.model_path, "device": args.device,
                  "fw_model": args.fw_model, "threads": args.threads, "items": [asdict(item) for item in items],
                  "warmup_items": [], "result_path": str(folder / "result.json")}
        (folder / "config.json").write_text(json.dumps(config))
        command = [sys.executable, str(Path(__file__).resolve().parent / "systems.py"), str(folder / "config.json")]
    print(f"bench: {spec.name} on {len(items)} file(s), {audio_s / 60:.1f} min ...", file=sys.stderr, flush=True)
    # The child runs in its own folder: ``python -m dwcli`` would import dwcli from the
    # current folder before PYTHONPATH's (a --dw-baseline checkout).
    status, wall, peak_rss, cpu_s, sampler = run_measured(command, child_env(args.threads, code, args.omp_wait_policy),
                                                          log_path, cwd=folder)
    result.whole_s, result.peak_rss_mb, result.cpu_s = wall, peak_rss, cpu_s
    result.peak_tree_pss_mb = sampler.peak_tree_pss / 2**20
    result.load = statistics.fmean(sampler.loads) if sampler.loads else os.getloadavg()[0]
    log = log_path.read_text(errors="replace")
    try:
        if status != 0:
            raise RuntimeError(f"exit status {status}")
        if spec.kind == "dw":
            result.texts, result.run_s = _read_dw(spec, items, folder, log)
        else:
            data = json.loads((folder / "result.json").read_text())
            result.texts, result.run_s = data["texts"], data["run_s"]
    except (OSError, ValueError, KeyError, RuntimeError) as error:
        tail = " | ".join(log.strip().splitlines()[-6:])
        result.error = f"{error}: {tail}"
        print(f"bench: {spec.name} FAILED ({result.error[:400]})", file=sys.stderr, flush=True)
        return result
    result.ok = True
    total = Score()
    for item in items:
        text = result.texts.get(item.id, "")
        if item.text:
            scored = score(item.text, text, audio_s=item.duration)
            total.add(scored)
            result.by_corpus.setdefault(item.corpus, Score()).add(scored)
        else:
            result.nonspeech_words += len(text.split())
            result.nonspeech_s += item.duration
    result.score = total
    if args.save_texts:
        Path(args.save_texts).mkdir(parents=True, exist_ok=True)
        name = f"{items[0].set}-{spec.name.replace(':', '_')}.json"
        (Path(args.save_texts) / name).write_text(json.dumps(result.texts, indent=1))
    print(f"bench: {spec.name}: whole {wall:.1f} s ({result.x_whole:.1f}x), run {result.run_s:.1f} s "
          f"({result.x_run:.1f}x), peak RSS {peak_rss:.0f} MB, WER {total.wer:.2f}%", file=sys.stderr, flush=True)
    return result
