"""Tables of results, dw's ratios to the others, the machine, and RESULTS.md."""

from __future__ import annotations

import datetime
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path

from data import REPO
from measure import Result

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def results_table(results: list[Result], nonspeech: bool) -> str:
    header = ["system", "whole s", "x real time (whole)", "run s", "x real time (run)", "peak RSS MB",
              "peak tree PSS MB", "CPU s", "loadavg", "WER %", "ins", "del", "rep. 5-grams"]
    if nonspeech:
        header.append("words per hour of non-speech")
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    for r in results:
        if not r.ok:
            lines.append(f"| {r.spec.name} | failed: {r.error.split(' | ')[-1][:100]} |" + " |" * (len(header) - 2))
            continue
        s = r.score
        row = [r.spec.name, f"{r.whole_s:.1f}", f"{r.x_whole:.1f}", f"{r.run_s:.1f}", f"{r.x_run:.1f}",
               f"{r.peak_rss_mb:.0f}", f"{r.peak_tree_pss_mb:.0f}", f"{r.cpu_s:.1f}", f"{r.load:.1f}",
               f"{s.wer:.2f}" if s.words else "", str(s.insertions) if s.words else "",
               str(s.deletions) if s.words else "", str(s.repeated_5grams) if s.words else ""]
        if nonspeech:
            row.append(f"{r.nonspeech_words / (r.nonspeech_s / 3600):.0f}" if r.nonspeech_s else "")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def corpus_table(results: list[Result]) -> str:
    """WER per corpus (and split), one column per system: a set's total can hide a corpus
    where one system is worse.  Empty when the set has one corpus."""
    scored = [r for r in results if r.ok and r.by_corpus]
    corpora = sorted({corpus for r in scored for corpus in r.by_corpus})
    if len(corpora) < 2:
        return ""
    lines = ["| corpus | words | " + " | ".join(f"{r.spec.name} WER %" for r in scored) + " |",
             "|---|---:|" + "---:|" * len(scored)]
    for corpus in corpora:
        words = max(r.by_corpus[corpus].words for r in scored if corpus in r.by_corpus)
        cells = [f"{r.by_corpus[corpus].wer:.2f}" if corpus in r.by_corpus else "" for r in scored]
        lines.append(f"| {corpus or '(none)'} | {words} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def ratios_table(results: list[Result]) -> str:
    """dw's rows against every other row: speed (whole process and run only) and WER."""
    dws = [r for r in results if r.ok and r.spec.kind == "dw" and not r.spec.name.startswith("dw@base")]
    others = [r for r in results if r.ok and r not in dws]
    if not dws or not others:
        return ""
    lines = ["| dw | vs | speed ratio, whole process | speed ratio, run only | CPU ratio (theirs / dw's CPU s) | "
             "WER difference (points) |", "|---|---|---:|---:|---:|---:|"]
    for dw in dws:
        for other in others:
            wer = f"{dw.score.wer - other.score.wer:+.2f}" if dw.score.words else ""
            cpu = f"{other.cpu_s / dw.cpu_s:.2f}x" if dw.cpu_s > 0 else ""
            lines.append(f"| {dw.spec.name} | {other.spec.name} | {dw.x_whole / other.x_whole:.2f}x | "
                         f"{dw.x_run / other.x_run:.2f}x | {cpu} | {wer} |")
    return "\n".join(lines)


def git_commit() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                               capture_output=True, text=True, check=True).stdout.strip()
        return head + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def isa_class(flags) -> str:
    """The kind of CPU that decides dw's CPU plan: AVX2 only, or AVX-512 with or without
    native bfloat16 (dwcli.precision runs bfloat16 autocast only with it)."""
    bfloat16 = "avx512_bf16" in flags or "amx_bf16" in flags
    if "avx512f" in flags:
        return "AVX-512 with native bfloat16" if bfloat16 else "AVX-512 without bfloat16"
    return "AVX2 only" if "avx2" in flags else "no AVX2"


def machine_line(args) -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        info = Path("/proc/cpuinfo").read_text().splitlines()
        names = [line.split(":", 1)[1].strip() for line in info if line.startswith("model name")]
        flags = next((line.split(":", 1)[1].split() for line in info if line.startswith("flags")), [])
        cpu = names[0] if names else cpu
        wanted = [flag for flag in ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16") if flag in flags]
        cpu += f" ({' '.join(wanted)}; {isa_class(flags)})" if wanted else ""
    except OSError:
        pass
    versions = []
    for module in ("torch", "transformers", "ctranslate2", "faster_whisper", "onnxruntime"):
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
    return (f"{cpu}, {os.cpu_count()} cores visible, {args.threads} compute threads per system, OMP_WAIT_POLICY "
            f"{args.omp_wait_policy or 'unset'}, load average {os.getloadavg()[0]:.1f} at start; Python "
            f"{platform.python_version()}; " + ", ".join(versions) + gpu)


def header_lines(args) -> list[str]:
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return [f"## {stamp}, commit {git_commit()}", "", f"- machine: {machine_line(args)}",
            f"- command: `{shlex.join(['python', 'benchmarks/bench.py'] + sys.argv[1:])}`", ""]


def record(sections: list[str]) -> Path:
    header = "" if RESULTS.is_file() else "# Benchmark results\n\nAppended by `python benchmarks/bench.py --record`.\n\n"
    with open(RESULTS, "a", encoding="utf-8") as stream:
        stream.write(header + "\n".join(sections).rstrip() + "\n\n")
    return RESULTS
