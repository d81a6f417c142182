#!/usr/bin/env python3
"""dw against faster-whisper and transformers: what a user waits for, memory and accuracy.

One invocation runs every system, one after another, on the same recordings with the same
weights, each in its own process, and prints a markdown table per set and dw's ratios to
the others; ``--record`` appends it to ``benchmarks/RESULTS.md``.  See ``benchmarks/README.md``.

    python benchmarks/bench.py                                   # clip + longform: dw vs faster-whisper
    python benchmarks/bench.py --set nonspeech --systems dw,fw,fw-vad,hf
    python benchmarks/bench.py --set longform,joined --systems dw,fw,hf-seq --dw-variants seq,seq-nocond
    python benchmarks/bench.py --dw-baseline /tmp/dw-old        # beside another checkout of dw
    python benchmarks/bench.py --help-timing --long --long-hours 2 --no-transcribe
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))

from data import SETS, default_data_dir, load_items  # noqa: E402
from measure import DW, run_system  # noqa: E402
from report import corpus_table, header_lines, ratios_table, record, results_table  # noqa: E402
from systems import KINDS, build_specs  # noqa: E402

OFFLINE_MODEL = "offline:tiny.en"
HELP_LIMIT_S = 0.5


def help_timing(repeats: int = 5) -> tuple[str, bool]:
    """``dw --help`` and ``dw transcribe --help`` as subprocesses: median of ``repeats``."""
    lines = ["| command | median s | min s | max s | < 0.5 s |", "|---|---:|---:|---:|---|"]
    passed = True
    for arguments in (["--help"], ["transcribe", "--help"]):
        times = []
        for _ in range(repeats):
            tick = time.perf_counter()
            done = subprocess.run([DW, *arguments], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            times.append(time.perf_counter() - tick)
            if done.returncode != 0:
                raise SystemExit(f"bench.py: dw {' '.join(arguments)} failed: {done.stderr.decode(errors='replace')}")
        median = statistics.median(times)
        passed &= median < HELP_LIMIT_S
        lines.append(f"| `dw {' '.join(arguments)}` | {median:.3f} | {min(times):.3f} | {max(times):.3f} | "
                     f"{'yes' if median < HELP_LIMIT_S else 'NO'} |")
    return "\n".join(lines), passed


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 2)[2])
    data = parser.add_argument_group("data")
    data.add_argument("--data", type=Path, default=default_data_dir(),
                      help="folder with manifest.jsonl (default: $DW_BENCH_DATA, /work/shared/data/speech, else tests/data/speech)")
    data.add_argument("--set", default="clip,longform", help=f"comma-separated, from {', '.join(SETS)} (default: clip,longform)")
    data.add_argument("--limit", type=int, default=None, help="only the first N items of each set")
    data.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()),
                      help="where generated recordings are kept between runs (default: the temp folder)")
    systems = parser.add_argument_group("systems")
    systems.add_argument("--systems", default="dw,fw,fw-batched",
                         help=f"comma-separated, in run order, from {', '.join(KINDS)} (default: dw,fw,fw-batched)")
    systems.add_argument("--model", default=os.environ.get("DW_BENCH_MODEL", OFFLINE_MODEL),
                         help="dw --model, also loaded by the transformers systems (default: offline:tiny.en)")
    systems.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default: cpu)")
    systems.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                         help="compute threads of every system (default: all cores)")
    systems.add_argument("--omp-wait-policy", choices=("ACTIVE", "PASSIVE"), type=str.upper, default=None,
                         help="set OMP_WAIT_POLICY for every system (default: leave it as it is)")
    dw = parser.add_argument_group("dw")
    dw.add_argument("--dw-variants", default="default", help="comma-separated variants (default: default: dw as it comes)")
    dw.add_argument("--dw-baseline", default=None,
                    help="another checkout of dw (a folder with dwcli/): its rows run beside this one's")
    dw.add_argument("--dw-baseline-variants", default=None,
                    help="the baseline's variants, where it lacks options of this checkout (default: --dw-variants)")
    hf = parser.add_argument_group("transformers")
    hf.add_argument("--hf-batch-size", type=int, default=8)
    hf.add_argument("--hf-dtype", default="float32", choices=("float32", "float16", "bfloat16"))
    fw = parser.add_argument_group("faster-whisper")
    fw.add_argument("--fw-model", default=None, help="CTranslate2 checkpoint (default: the one offline:tiny.en is converted from)")
    fw.add_argument("--fw-compute-type", default=None, help="default: int8 on CPU, float16 on CUDA")
    fw.add_argument("--fw-batch-size", type=int, default=8)
    extra = parser.add_argument_group("extra sections")
    extra.add_argument("--no-transcribe", action="store_true", help="skip the systems tables")
    extra.add_argument("--repeats", type=int, default=1,
                       help="run every system N times per set, taking turns, and keep each one's run of median "
                            "whole-process time (use an odd N; for the clip set, where a tenth of a second of noise "
                            "is 5%%, and on a shared machine)")
    extra.add_argument("--no-warm-up", action="store_true",
                       help="time each system's first run too (by default each runs once, untimed, on the first "
                            "set's shortest file: the first system would otherwise pay for reading torch and the "
                            "model from a cold disk cache, the others not)")
    extra.add_argument("--help-timing", action="store_true", help="time `dw --help` and `dw transcribe --help`")
    extra.add_argument("--long", action="store_true", help="memory check: dw on one long file (the long-form set looped)")
    extra.add_argument("--long-hours", type=float, default=2.0, help="its length (default 2 h)")
    output = parser.add_argument_group("output")
    output.add_argument("--record", action="store_true", help="append the results to benchmarks/RESULTS.md")
    output.add_argument("--save-texts", default=None, help="write each system's transcripts (JSON) into this folder")
    output.add_argument("--json", dest="json_out", default=None, help="write the results as JSON to this file")
    args = parser.parse_args(argv)
    if args.fw_compute_type is None:
        args.fw_compute_type = "float16" if args.device.startswith("cuda") else "int8"
    return args


def _model_paths(args) -> None:
    """The converted checkpoint (for transformers) and the CTranslate2 one (for faster-whisper)."""
    from dwcli.models import OFFLINE_MODEL as OFFLINE, offline_model_source, resolve_model

    args.model_path = str(resolve_model(args.model, "cuda" if args.device.startswith("cuda") else "cpu").path)
    if args.fw_model is None and args.model == OFFLINE:
        args.fw_model = str(offline_model_source())
    elif args.fw_model is None and (Path(args.model).expanduser() / "model.bin").is_file():
        args.fw_model = str(Path(args.model).expanduser())


def _median_runs(specs, items, args, workdir: Path):
    """Each system's run on ``items``; with --repeats N, N rounds in which every system runs
    once, in turn (so a change in the machine's load falls on all of them alike), and of
    each system's N runs the one of median whole-process time."""
    runs = {spec.name: [] for spec in specs}
    for _ in range(args.repeats):
        for spec in specs:
            runs[spec.name].append(run_system(spec, items, args, workdir))
    medians = []
    for spec in specs:
        finished = sorted((run for run in runs[spec.name] if run.ok), key=lambda run: run.whole_s)
        medians.append(finished[len(finished) // 2] if finished else runs[spec.name][0])
    return medians


def _warm_up(specs, items, args) -> None:
    """Run every system once, untimed and unscored, on the shortest of ``items``."""
    shortest = min(items, key=lambda item: item.duration)
    untimed = argparse.Namespace(**{**vars(args), "save_texts": None})
    with tempfile.TemporaryDirectory(prefix="dw-bench-warm-") as workdir:
        for spec in specs:
            print(f"bench: warming up {spec.name} (untimed)", file=sys.stderr, flush=True)
            run_system(spec, [shortest], untimed, Path(workdir))


def _section(name: str, items, results, args) -> list[str]:
    audio_s = sum(item.duration for item in items)
    corpora = sorted({item.corpus for item in items if item.corpus})
    nonspeech = any(not item.text for item in items)
    lines = [f"### {name}: {len(items)} file(s), {audio_s / 60:.1f} min ({', '.join(corpora)})", "",
             f"Model `{args.model}` on {args.device}, {args.threads} threads per system. `whole s`: the process from "
             "start to exit, what a user waits for; `run s`: transcription alone. WER over the files with a "
             "reference (Whisper's English normaliser, jiwer), insertions, deletions and repeated 5-grams summed "
             "over them." + ("" if args.no_warm_up else " Every system ran once, untimed, before the first set "
                                                      "(a warm disk cache for all).")
             + (f" Each row: the run of median whole-process time of {args.repeats}, the systems taking turns."
                if args.repeats > 1 else ""),
             "", results_table(results, nonspeech), ""]
    by_corpus = corpus_table(results)
    if by_corpus:
        lines += ["WER per corpus:", "", by_corpus, ""]
    ratios = ratios_table(results)
    if ratios:
        lines += ["dw relative to the others (speed ratio > 1: dw faster; WER difference < 0: dw more accurate):", "",
                  ratios, ""]
    lines += ["Systems:", ""] + [f"- `{r.spec.name}`: {r.spec.description}" for r in results] + [""]
    return lines


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sections = header_lines(args)
    print("\n".join(sections), flush=True)
    passed, everything = True, []
    if args.help_timing:
        table, ok = help_timing()
        passed &= ok
        sections += ["### CLI start-up", "", table, ""]
        print("\n".join(sections[-4:]), flush=True)
    if not args.no_transcribe:
        args.cache.mkdir(parents=True, exist_ok=True)
        _model_paths(args)  # converts the offline model once, before anything is timed
        specs = build_specs(args)
        sets = {}
        for name in [part.strip() for part in args.set.split(",") if part.strip()]:
            sets[name] = load_items(args.data, name, args.limit, args.cache)
            if not sets[name]:
                raise SystemExit(f"bench.py: no items for --set {name} in {args.data}")
        if not args.no_warm_up:
            _warm_up(specs, next(iter(sets.values())), args)
        for name, items in sets.items():
            with tempfile.TemporaryDirectory(prefix="dw-bench-") as workdir:
                results = _median_runs(specs, items, args, Path(workdir))
            part = _section(name, items, results, args)
            sections += part
            print("\n".join(part), flush=True)
            passed &= all(result.ok for result in results)
            everything += [{"set": name, "system": r.spec.name, "ok": r.ok, "audio_s": r.audio_s, "whole_s": r.whole_s,
                            "run_s": r.run_s, "peak_rss_mb": r.peak_rss_mb, "error": r.error,
                            "score": r.score.as_dict() if r.score else None, "nonspeech_words": r.nonspeech_words}
                           for r in results]
    if args.long:
        from longfile import long_file_check

        table, ok = long_file_check(args)
        passed &= ok
        sections += ["### Memory on one long file", "", table, ""]
        print("\n".join(sections[-4:]), flush=True)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(everything, indent=1))
    if args.record:
        print(f"bench: appended to {record(sections)}", file=sys.stderr)
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
