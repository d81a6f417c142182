#!/usr/bin/env python3
"""Where a dw run's time goes, by phase: start-up, the decoding worker's stages, the encoder,
each decoder step (layers, output projection, rules, sampling), alignment, hand-over.

    python benchmarks/phases.py                          # the long-form set, dw as it comes
    python benchmarks/phases.py --set clip --format json  # timestamps on (alignment where needed)
    python benchmarks/phases.py --dw-option=--dtype --dw-option=float32 --json /tmp/profile.json

It runs the real ``dw transcribe`` command in this process (one run, warm disk cache), with
timers wrapped around dw's own functions: every phase is the time spent inside those
functions, less the time spent in the timed functions they call (so the rows add up to the
main process's run).  The decoding worker's stages (PyAV decoding, Silero speech detection,
cutting, log-mel) run in another process, beside the model; they are measured afterwards
in this process, one file after another on one thread, as the worker runs them.  Timers and
module hooks add about 0.1 ms per decoder step.
"""

from __future__ import annotations

import time

_PROCESS_STARTED = time.perf_counter()

import argparse  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from collections import defaultdict  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))

MAIN, WORKER, START = "main process", "decoding worker", "start-up"


class PhaseClock:
    """Exclusive time per phase, wall and CPU (the process's, all its threads): a timed
    call's time, less the timed calls inside it.  On a shared CPU the wall time of a phase
    includes the time slices other processes took; its CPU time does not."""

    def __init__(self):
        self.seconds: dict[str, float] = defaultdict(float)
        self.cpu: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self.rows: dict[str, int] = defaultdict(int)  # decoder rows summed over calls
        self.stack: list[list] = []  # [label, wall s of timed children, CPU s of them, wall start, CPU start]

    @property
    def current(self) -> str | None:
        return self.stack[-1][0] if self.stack else None

    def enter(self, label: str) -> None:
        self.stack.append([label, 0.0, 0.0, time.perf_counter(), time.process_time()])

    def leave(self) -> None:
        label, children, children_cpu, started, started_cpu = self.stack.pop()
        elapsed, cpu = time.perf_counter() - started, time.process_time() - started_cpu
        self.seconds[label] += elapsed - children
        self.cpu[label] += cpu - children_cpu
        self.calls[label] += 1
        if self.stack:
            self.stack[-1][1] += elapsed
            self.stack[-1][2] += cpu

    def wrap(self, owner, name: str, label) -> None:
        """Time ``owner.name``; ``label``: a phase name, or a function of (parent phase,
        args) giving one (None: not timed apart, counted in the caller's phase)."""
        original = getattr(owner, name)
        clock = self

        def timed(*args, **kwargs):
            phase = label(clock.current, args, kwargs) if callable(label) else label
            if phase is None:
                return original(*args, **kwargs)
            clock.enter(phase)
            try:
                return original(*args, **kwargs)
            finally:
                clock.leave()

        setattr(owner, name, timed)

    def wrap_generator(self, owner, name: str, label: str) -> None:
        """Time a generator function's own work: each ``next`` on it, less timed calls."""
        original = getattr(owner, name)
        clock = self

        def timed(*args, **kwargs):
            inner = original(*args, **kwargs)
            while True:
                clock.enter(label)
                try:
                    item = next(inner)
                except StopIteration:
                    return
                finally:
                    clock.leave()
                yield item

        setattr(owner, name, timed)


# Which step of decoding a call belongs to, by the phase it is called from.
_STEP = "decoder step: layers"
_FORWARD_BY_CALLER = {"decoder prologue": "decoder prologue: prompt pass", "alignment": "alignment: decoder pass",
                      "decoder step: sampling and bookkeeping": _STEP, "beam search: bookkeeping": "beam step: layers"}
_LOGITS_BY_CALLER = {"decoder prologue": "decoder prologue: logits", "alignment": "alignment: logits",
                     "decoder step: sampling and bookkeeping": "decoder step: projection (logits)",
                     "beam search: bookkeeping": "beam step: projection (logits)"}


def _forward_phase(clock: PhaseClock):
    def label(parent, args, kwargs):
        phase = _FORWARD_BY_CALLER.get(parent, f"decoder pass ({parent})")
        if phase == _STEP:
            clock.rows["decoder step rows"] += args[1].shape[0]  # (self, tokens, ...)
        return phase
    return label


def _layer_hooks(clock: PhaseClock, decoder) -> None:
    """Module hooks that split a decoder step's layers into their parts (only inside a
    step: the prompt and alignment passes are left whole)."""
    def kind(name: str) -> str:
        if name.startswith("embed"):
            return "embeddings"
        if "layer_norm" in name:
            return "layer norms"
        if name.endswith(("fc1", "fc2")):
            return "feed-forward"
        return "self-attention projections" if ".self_attn." in name else "cross-attention projections (q, out)"

    def before(label):
        def hook(module, inputs):
            if clock.current == _STEP:
                clock.enter(label)
                module._dw_profiled = True
        return hook

    def after(module, inputs, output):
        if getattr(module, "_dw_profiled", False):
            module._dw_profiled = False
            clock.leave()

    for name, module in decoder.named_modules():
        if not list(module.children()) and name:
            module.register_forward_pre_hook(before(f"  layers: {kind(name)}"))
            module.register_forward_hook(after)


def instrument(clock: PhaseClock, started: list) -> None:
    """Wrap dw's functions (before the CLI imports them by name)."""
    from dwcli import assembler, batcher, engine, pipeline, refine, workers
    from dwcli.decoding import alignment, beam, greedy, rules, runtime

    clock.wrap(engine.Engine, "__init__", "model load (weights, tokenizer, runtime)")
    original_init = engine.Engine.__init__

    def init_and_hook(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        _layer_hooks(clock, self.model.model.decoder)
        started.append(time.perf_counter())
    engine.Engine.__init__ = init_and_hook
    clock.wrap(engine.Engine, "transcribe", "engine: silence, fallback checks, results")
    clock.wrap(runtime.DecoderRuntime, "encode", "encoder")
    clock.wrap(runtime.DecoderRuntime, "begin", "decoder prologue")
    clock.wrap(runtime.DecoderRuntime, "cross_attention_kv", "decoder prologue: cross-attention keys/values")
    clock.wrap(runtime.DecoderRuntime, "forward", _forward_phase(clock))
    clock.wrap(runtime.DecoderRuntime, "logits",
               lambda parent, args, kwargs: _LOGITS_BY_CALLER.get(parent, f"logits ({parent})"))
    clock.wrap(rules.WhisperRules, "apply", "decoder step: rules")
    clock.wrap(greedy.GreedySearch, "decode",
               lambda parent, args, kwargs: "decoder step: sampling and bookkeeping"
               if (args[4] if len(args) > 4 else kwargs.get("temperature", 0.0)) == 0 else
               "fallback decoding (sampling, whole)")
    clock.wrap(beam.BeamSearch, "decode", "beam search: bookkeeping")
    clock.wrap(alignment.WordAligner, "align", "alignment")
    clock.wrap(alignment, "dtw", "alignment: DTW")
    clock.wrap(batcher, "log_mel_batch", "run loop: log-mel of resumed and sequential windows")
    clock.wrap(refine, "settle", "assembly (refine)")
    clock.wrap(assembler.FileAssembler, "finish", "assembly and writing outputs")
    clock.wrap(pipeline._Run, "decode", "run loop: batches")
    clock.wrap(workers._GuardedStream, "__next__", "waiting for the decoding worker (hand-over)")
    clock.wrap(workers.MediaStream, "__iter__", None)  # (decode in this process: --workers 0)


def worker_phases(files: list[str], n_mels: int) -> dict[str, tuple[float, float]]:
    """The decoding worker's stages on ``files``, one after another, on one thread:
    phase -> (wall s, CPU s)."""
    import torch

    from dwcli import chunking, vad, workers
    from dwcli.discover import MediaFile
    from dwcli.sources import Reading

    torch.set_num_threads(1)
    clock = PhaseClock()
    clock.wrap_generator(workers, "decode_blocks", "PyAV decoding and resampling")
    clock.wrap(vad._FrameScorer, "feed", "speech detection (Silero, onnxruntime)")
    clock.wrap(chunking, "log_mel", "log-mel features")
    vad._session()  # loaded once per worker: start-up, not per file
    for path in files:
        clock.enter("cutting windows and hand-off")
        media = MediaFile(path, Path(path).with_suffix(""))
        for _ in workers.file_items(0, media, Reading("chunked", n_mels)):
            pass
        clock.leave()
    return {name: (clock.seconds[name], clock.cpu[name]) for name in clock.seconds}


def _timed_import(names: list[str]) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    for name in names:
        __import__(name)
    return time.perf_counter() - wall, time.process_time() - cpu


def run_profile(args) -> dict:
    """Phases: (where, phase) -> (wall s, CPU s)."""
    phases = {(START, "Python start (interpreter, site)"): (_PROCESS_STARTED - _interpreter_started(),
                                                            time.process_time())}
    phases[(START, "import torch")] = _timed_import(["torch"])
    phases[(START, "other imports (PyAV, onnxruntime, tokenizers, typer, dw)")] = _timed_import(
        ["av", "onnxruntime", "tokenizers", "dwcli.cli", "dwcli.engine", "dwcli.pipeline"])
    from data import default_data_dir, load_items
    from dwcli import cli

    items = load_items(args.data or default_data_dir(), args.set, args.limit, Path(tempfile.gettempdir()))
    clock, engine_ready = PhaseClock(), []
    instrument(clock, engine_ready)
    with tempfile.TemporaryDirectory(prefix="dw-profile-") as folder:
        inputs = Path(folder) / "in"
        inputs.mkdir()
        for item in items:
            (inputs / f"{item.id}{Path(item.audio).suffix}").symlink_to(item.audio)
        command = ["transcribe", str(inputs), "--output-dir", str(Path(folder) / "out"), "--format", args.format,
                   "--model", args.model, "--quiet", *args.dw_option]
        run_started, run_cpu = time.perf_counter(), time.process_time()
        status = cli.app(command, prog_name="dw", standalone_mode=False)
        run_s, run_cpu = time.perf_counter() - run_started, time.process_time() - run_cpu
    if status not in (0, None):
        raise SystemExit(f"phases.py: dw {' '.join(command)} exited {status}")
    load = "model load (weights, tokenizer, runtime)"
    phases[(START, load)] = (clock.seconds.pop(load, 0.0), clock.cpu.pop(load, 0.0))
    for name in clock.seconds:
        phases[(MAIN, name)] = (clock.seconds[name], clock.cpu[name])
    phases[(MAIN, "CLI, planning, other (untimed)")] = (
        max(0.0, run_s - phases[(START, load)][0] - sum(clock.seconds.values())),
        max(0.0, run_cpu - phases[(START, load)][1] - sum(clock.cpu.values())))
    from dwcli.models import resolve_model

    n_mels = 128 if "large-v3" in args.model else 80
    resolve_model(args.model, "cpu")
    for name, times in worker_phases([item.audio for item in items], n_mels).items():
        phases[(WORKER, name)] = times
    steps = clock.calls.get(_STEP, 0)
    return {"phases": phases, "calls": dict(clock.calls), "run_s": run_s, "run_cpu_s": run_cpu,
            "audio_s": sum(item.duration for item in items), "files": len(items), "steps": steps,
            "mean_rows": clock.rows["decoder step rows"] / steps if steps else 0.0}


def _interpreter_started() -> float:
    """When this process started, on the perf_counter clock (Linux: /proc)."""
    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        age = uptime - ticks / os.sysconf("SC_CLK_TCK")
        return time.perf_counter() - age
    except (OSError, ValueError, IndexError):
        return _PROCESS_STARTED


def table(result: dict) -> str:
    """Markdown: phases by where they run, wall and CPU seconds, share of the main process's
    CPU time (the steadier of the two on a shared machine), calls."""
    phases = result["phases"]
    main_wall = sum(wall for (where, _), (wall, _) in phases.items() if where in (MAIN, START))
    main_cpu = sum(cpu for (where, _), (_, cpu) in phases.items() if where in (MAIN, START))
    lines = ["| where | phase | wall s | CPU s | % of the main process's CPU | calls | CPU ms per call |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for where in (START, MAIN, WORKER):
        rows = sorted(((name, times) for (w, name), times in phases.items() if w == where), key=lambda row: -row[1][1])
        for name, (wall, cpu) in rows:
            calls = result["calls"].get(name, 0)
            share = f"{100 * cpu / main_cpu:.1f}" if where != WORKER else "(beside)"
            per_call = f"{1000 * cpu / calls:.2f}" if calls else ""
            lines.append(f"| {where} | {name} | {wall:.3f} | {cpu:.3f} | {share} | {calls or ''} | {per_call} |")
    lines.append(f"| main process | total (start-up + run) | {main_wall:.3f} | {main_cpu:.3f} | 100.0 | | |")
    return "\n".join(lines)


def summary(result: dict) -> str:
    steps, rows = result["steps"], result["mean_rows"]
    step_cpu = sum(cpu for (where, name), (_, cpu) in result["phases"].items()
                   if where == MAIN and (name.startswith("decoder step") or name.startswith("  layers")))
    text = (f"{result['files']} file(s), {result['audio_s'] / 60:.1f} min of audio; run {result['run_s']:.2f} s wall, "
            f"{result['run_cpu_s']:.2f} s CPU in this process; {steps} decoder steps at {rows:.1f} rows on average")
    if steps:
        text += f", {1000 * step_cpu / steps:.2f} CPU ms per step ({1000 * step_cpu / steps / max(rows, 1):.3f} per row)"
    return text + "."


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--set", default="longform", help="a benchmarks/data.py set (default: longform)")
    parser.add_argument("--data", type=Path, default=None, help="folder with manifest.jsonl (bench.py's default)")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--model", default=os.environ.get("DW_BENCH_MODEL", "offline:tiny.en"))
    parser.add_argument("--format", default="txt", help="dw's --format (txt: no timestamps; json: timestamps)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--dw-option", action="append", default=[],
                        help="an extra dw transcribe argument (repeat: --dw-option=--dtype --dw-option=float32)")
    parser.add_argument("--json", dest="json_out", type=Path, default=None, help="also write the phases as JSON here")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as dw sets it, before torch loads OpenMP
    load_start = os.getloadavg()[0]
    result = run_profile(args)
    from report import machine_line

    args.device, args.omp_wait_policy = "cpu", os.environ.get("OMP_WAIT_POLICY")
    print(f"- machine: {machine_line(args)}; load average {load_start:.1f} at start, "
          f"{os.getloadavg()[0]:.1f} at the end")
    print(f"- dw options: {' '.join(args.dw_option) or '(defaults)'}, --format {args.format}; set {args.set}")
    print(f"- {summary(result)}\n")
    print(table(result))
    if args.json_out:
        import json

        args.json_out.write_text(json.dumps({**result, "phases": [
            {"where": where, "phase": name, "wall_s": wall, "cpu_s": cpu}
            for (where, name), (wall, cpu) in result["phases"].items()]}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
