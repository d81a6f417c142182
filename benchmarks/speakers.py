"""Speaker labels: accuracy on the conversation set, and what ``--speakers`` costs.

The set is tests/conversations.py's (2 to 5 real speakers, overlapping turns, same-gender
pairs, one conversation of 21 minutes), built once into ``--cache`` from the speech data.
For each split (``tune``: thresholds were chosen on it; ``dev``: held out) dw transcribes
every conversation twice in one run, plain and with ``--speakers``, alternating (``--repeats``
times each, the median kept), each a whole ``dw transcribe`` process; the labelled run's
outputs are scored as ``dw eval`` scores them: DER (0.25 s collar, overlap scored), the
speaker count, and reference words given the right speaker.

    python benchmarks/speakers.py [--split tune,dev] [--repeats 1] [--record]
    python benchmarks/speakers.py --diarization-only     # DER and count alone: no transcription

``--diarization-only`` runs dw's speaker stage alone on each conversation, through the very
code the decoding worker runs (``workers.file_items`` with speakers: decoding, speech
detection, embeddings) and the file assembler's ``label_speakers``: the turns, DER and count
are what ``dw transcribe --speakers`` gives, without words (no transcription).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

import conversations  # noqa: E402
from data import default_data_dir  # noqa: E402
from measure import DW, child_env, run_measured  # noqa: E402
from report import header_lines, record  # noqa: E402

MODEL = ("--model", "offline:tiny.en")


def conversation_set(data: Path, cache: Path) -> Path:
    """The conversations' manifest, built into ``cache`` unless already there."""
    digest = hashlib.sha256(repr(conversations.SPECS).encode()
                            + Path(conversations.__file__).read_bytes()).hexdigest()[:12]
    folder = cache / f"dw-bench-conversations-{digest}"
    manifest = folder / "manifest.jsonl"
    if not manifest.is_file():
        partial = folder.with_name(folder.name + ".partial")
        conversations.build_set(data, partial)
        partial.rename(folder)
    return manifest


def _summary_run_s(log: Path) -> float:
    for line in reversed(log.read_text().splitlines()):
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if event.get("event") == "summary":
            return float(event["wall_s"])
    return float("nan")


def timed_run(files: list[Path], extra: list[str], out: Path, threads: int, workers: int) -> dict:
    """One ``dw transcribe`` process over ``files``: whole wall s, run s, CPU s, peak RSS."""
    command = [DW, "transcribe", *map(str, files), *MODEL,
               "-f", "json,rttm" if extra else "json",
               "-o", str(out), "--log-json", "--workers", str(workers), *extra]
    log = out / "log.jsonl"
    out.mkdir(parents=True, exist_ok=True)
    status, wall, rss, cpu, sampler = run_measured(command, child_env(threads), log)
    if status != 0:
        raise SystemExit(f"speakers.py: {' '.join(command)} failed ({status}): {log.read_text()[-2000:]}")
    loads = sampler.loads or [os.getloadavg()[0]]
    return {"whole_s": wall, "run_s": _summary_run_s(log), "cpu_s": cpu, "rss_mb": rss,
            "load": statistics.mean(loads)}


def score_outputs(rows: list[dict], folder: Path, out: Path) -> list[dict]:
    """Each conversation's speaker scores from the labelled run's RTTM and JSON."""
    from dwcli.evaluate import normalize
    from dwcli.segments import Segment, Transcript, Word
    from dwcli.speakers.rttm import read_turns
    from dwcli.speakers.score import load_utterances, score_file

    scores = []
    for row in rows:
        stem = Path(row["audio"]).stem
        data = json.loads((out / f"{stem}.json").read_text())
        segments = [Segment(s["start"], s["end"], s["text"],
                            [Word(w["start"], w["end"], w["word"], w["probability"], w["speaker"])
                             for w in s.get("words", [])], speaker=s["speaker"]) for s in data["segments"]]
        transcript = Transcript(stem, data["duration"], "en", data["model"], segments,
                                turns=read_turns(out / f"{stem}.rttm"))
        result = score_file(read_turns(folder / row["rttm"]), transcript,
                            load_utterances(folder / row["utterances"]), lambda text: normalize(text))
        scores.append({"name": stem, "minutes": row["duration"] / 60, "speakers": row["speakers"],
                       "found": len(data["speakers"]), **result.as_dict(), "score": result})
    return scores


def split_section(split: str, rows: list[dict], folder: Path, args, workdir: Path) -> str:
    files = [folder / row["audio"] for row in rows]
    runs: dict[str, list[dict]] = {"plain": [], "speakers": []}
    labelled_out = None
    for repeat in range(args.repeats):
        for name, extra in (("plain", []), ("speakers", ["--speakers"])):
            out = workdir / f"{split}-{name}-{repeat}"
            runs[name].append(timed_run(files, extra, out, args.threads, args.workers))
            if name == "speakers":
                labelled_out = out
            print(f"{split} {name} #{repeat + 1}: {runs[name][-1]}", file=sys.stderr, flush=True)
    plain = sorted(runs["plain"], key=lambda run: run["whole_s"])[len(runs["plain"]) // 2]
    labelled = sorted(runs["speakers"], key=lambda run: run["whole_s"])[len(runs["speakers"]) // 2]
    scores = score_outputs(rows, folder, labelled_out)
    audio_min = sum(row["duration"] for row in rows) / 60
    lines = [f"### {split}: {len(rows)} conversations, {audio_min:.1f} min", "",
             "| conversation | min | speakers | found | DER % | missed s | false alarm s | confusion s "
             "| WDER % | words, right speaker % |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    from dwcli.speakers.score import DiarizationScore

    total = DiarizationScore()
    for score in scores:
        total.add(score["score"])
        lines.append(f"| {score['name']} | {score['minutes']:.1f} | {score['speakers']} | {score['found']} | "
                     f"{score['der']:.2f} | {score['missed_s']:.1f} | {score['false_alarm_s']:.1f} | "
                     f"{score['confusion_s']:.1f} | {score.get('wder', float('nan')):.2f} | "
                     f"{score.get('word_accuracy', float('nan')):.2f} |")
    summary = total.as_dict()
    lines += [f"| **all** | {audio_min:.1f} | | {summary['count_right']} of {summary['files']} right | "
              f"**{summary['der']:.2f}** | {summary['missed_s']:.1f} | {summary['false_alarm_s']:.1f} | "
              f"{summary['confusion_s']:.1f} | **{summary.get('wder', float('nan')):.2f}** | "
              f"**{summary.get('word_accuracy', float('nan')):.2f}** |", ""]
    lines += ["| dw transcribe, whole process | whole s | run s | CPU s | peak RSS MB | loadavg |",
              "|---|---:|---:|---:|---:|---:|"]
    for name, run in (("plain (-f json)", plain), ("--speakers (-f json,rttm)", labelled)):
        lines.append(f"| {name} | {run['whole_s']:.1f} | {run['run_s']:.1f} | {run['cpu_s']:.0f} | "
                     f"{run['rss_mb']:.0f} | {run['load']:.1f} |")
    added = labelled["whole_s"] - plain["whole_s"]
    lines += ["", f"`--speakers` added {added:.1f} s to {plain['whole_s']:.1f} s ({labelled['whole_s'] / plain['whole_s']:.2f}x "
                  f"the plain run; the plain run's transcription alone: {plain['run_s']:.1f} s), "
                  f"{args.repeats} run(s) each, median kept.", ""]
    return "\n".join(lines)


def diarization_section(split: str, rows: list[dict], folder: Path, args, workdir: Path) -> str:
    """DER and speaker count of each conversation from the speaker stage alone."""
    import torch

    from dwcli.discover import MediaFile
    from dwcli.options import SpeakerOptions
    from dwcli.segments import Transcript
    from dwcli.sources import FileEnd, Reading
    from dwcli.speakers.stage import label_speakers
    from dwcli.workers import file_items
    from dwcli.speakers.rttm import read_turns
    from dwcli.speakers.score import DiarizationScore, diarization_errors

    torch.set_num_threads(1)  # as in a decoding worker
    lines = [f"### {split}: {len(rows)} conversations, speaker stage alone", "",
             "| conversation | min | speakers | found | DER % | missed s | false alarm s | confusion s | s | x real time |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    total = DiarizationScore()
    for row in rows:
        path = folder / row["audio"]
        started = time.perf_counter()
        reading = Reading("chunked", 80, speakers=SpeakerOptions())
        end = [item for item in file_items(0, MediaFile(str(path), path.with_suffix("")), reading)
               if isinstance(item, FileEnd)][0]
        transcript = label_speakers(Transcript(str(path), end.duration_s, "en", "none"), end.speech, SpeakerOptions())
        seconds = time.perf_counter() - started
        score, _ = diarization_errors(read_turns(folder / row["rttm"]), transcript.turns)
        total.add(score)
        lines.append(f"| {path.stem} | {row['duration'] / 60:.1f} | {row['speakers']} | {len(transcript.speakers)} | "
                     f"{score.der:.2f} | {score.missed_s:.1f} | {score.false_alarm_s:.1f} | {score.confusion_s:.1f} | "
                     f"{seconds:.0f} | {row['duration'] / seconds:.1f} |")
        print(lines[-1], file=sys.stderr, flush=True)
    summary = total.as_dict()
    lines += [f"| **all** | {sum(row['duration'] for row in rows) / 60:.1f} | | {summary['count_right']} of "
              f"{summary['files']} right | **{summary['der']:.2f}** | {summary['missed_s']:.1f} | "
              f"{summary['false_alarm_s']:.1f} | {summary['confusion_s']:.1f} | | |", "",
              "`s`: decoding, speech detection, log-mel (as the worker does it), filter banks, embeddings on one "
              "thread, clustering and turns.", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--split", default="tune,dev")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument("--data", type=Path, default=default_data_dir())
    parser.add_argument("--record", action="store_true", help="append the tables to benchmarks/RESULTS.md")
    parser.add_argument("--workers", type=int, default=-1,
                        help="dw's --workers (0: all in one process, so its CPU seconds count everything)")
    parser.add_argument("--limit", type=int, default=0, help="only the first N conversations of each split")
    parser.add_argument("--diarization-only", action="store_true", help="speaker stage alone: DER and count")
    parser.set_defaults(omp_wait_policy=None, device="cpu")  # what report.header_lines reads
    args = parser.parse_args()
    manifest = conversation_set(args.data, args.cache)
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    sections = []
    started = time.time()
    with tempfile.TemporaryDirectory() as workdir:
        for split in args.split.split(","):
            chosen = [row for row in rows if row["split"] == split][: args.limit or None]
            section = diarization_section if args.diarization_only else split_section
            sections.append(section(split, chosen, manifest.parent, args, Path(workdir)))
            print(sections[-1], flush=True)
    if args.record:
        command = "python benchmarks/speakers.py " + " ".join(sys.argv[1:])
        header = [line if not line.startswith("- command:") else f"- command: `{command.strip()}`"
                  for line in header_lines(args)]
        intro = ("Speaker labels: model `offline:tiny.en` on cpu, the conversation set of tests/conversations.py "
                 f"(tune and dev splits), DER with a 0.25 s collar and overlap scored; took {time.time() - started:.0f} s.")
        print(record([*header, intro, "", *sections]))


if __name__ == "__main__":
    main()
