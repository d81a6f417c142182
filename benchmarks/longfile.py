"""Memory on one long file: dw's peak RSS must stay flat however long the audio."""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

from data import build_long_file, load_items
from measure import DW, child_env, run_measured
from systems import dw_arguments

RSS_LIMIT_MB = 1536


def long_file_check(args) -> tuple[str, bool]:
    from dwcli.evaluate import score

    items = load_items(args.data, "longform", None, args.cache)
    print(f"bench: building a {args.long_hours:g} h file from the long-form clips ...", file=sys.stderr, flush=True)
    path, duration, reference = build_long_file(items, args.long_hours, args.cache)
    variant = [v.strip() for v in args.dw_variants.split(",") if v.strip()][0]
    arguments, fmt = dw_arguments(variant)
    out = Path(tempfile.mkdtemp(prefix="dw-bench-long-"))
    command = [DW, "transcribe", str(path), "--model", args.model, "--device",
               args.device, "--output-dir", str(out), "--format", "txt", "--quiet", *arguments]
    try:
        status, wall, peak_rss, _, sampler = run_measured(command, child_env(args.threads, None, args.omp_wait_policy),
                                                          out / "dw.log")
        if status != 0:
            raise SystemExit(f"bench.py: long-file run failed ({status}): {(out / 'dw.log').read_text()[-2000:]}")
        hypothesis = " ".join((out / f"{path.stem}.txt").read_text(encoding="utf-8").split())
    finally:
        shutil.rmtree(out, ignore_errors=True)
    wer = score(reference, hypothesis).wer
    fifths = []
    if sampler.samples:  # main-process RSS in each fifth of the run: flat when decoding streams
        end = sampler.samples[-1][0] or 1.0
        for k in range(5):
            window = [rss for t, rss, _ in sampler.samples if k * end / 5 <= t <= (k + 1) * end / 5]
            fifths.append(max(window) / 2**20 if window else float("nan"))
    ok = peak_rss < RSS_LIMIT_MB
    lines = [
        f"`dw transcribe {' '.join(arguments) or '(defaults)'}` on one {duration / 3600:.2f} h FLAC (the long-form "
        "clips looped):", "",
        "| audio h | wall s | x real time | peak RSS MB (main) | peak tree PSS MB | RSS MB per fifth of the run | WER % | peak RSS < 1.5 GB |",
        "|---:|---:|---:|---:|---:|---|---:|---|",
        f"| {duration / 3600:.2f} | {wall:.0f} | {duration / wall:.1f} | {peak_rss:.0f} | {sampler.peak_tree_pss / 2**20:.0f} | "
        f"{' / '.join(f'{v:.0f}' for v in fifths)} | {wer:.2f} | {'yes' if ok else 'NO'} |",
    ]
    return "\n".join(lines), ok
