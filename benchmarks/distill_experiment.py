#!/usr/bin/env python3
"""The distillation experiment of docs/distill.md, in one command.

    python benchmarks/distill_experiment.py --out /tmp/distill            # label, train, measure
    python benchmarks/distill_experiment.py --out /tmp/distill --measure   # only the measurements

Teacher: the offline Whisper tiny.en (4 decoder layers).  Students: its encoder and 2 or 3
of its decoder layers.  Data: the English speech of /work/shared/data/speech, split by
speaker: LibriSpeech test-other speakers 1998 and 2414, the FLEURS clips and JFK are the
held-out dev split (never labelled, never trained on); everything else is training data,
each recording in five versions (clean, speed 0.9 and 1.1, pink noise at 15 dB SNR,
reverberation of 0.4 s), plus two English clips without a reference, labelled by the
teacher alone.  Reported: dev WER of teacher and students, their speed, and speculative
decoding with each student as the teacher's assistant at batch 1 (acceptance rate,
speed-up, transcripts identical to the teacher's).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from measure import DW

REPO = Path(__file__).resolve().parent.parent
DATA = Path("/work/shared/data/speech")
DEV_SPEAKERS = {"librispeech-1998", "librispeech-2414", "jfk"}
UNLABELLED = ("audio/extra/hotwords.mp3", "audio/extra/ami_ES2011a.Headset-0-40s-46s.wav")
TEACHER = "offline:tiny.en"


def manifests(out: Path) -> tuple[Path, Path]:
    train, dev = [], []
    for line in (DATA / "manifest.jsonl").read_text().splitlines():
        row = json.loads(line)
        if row.get("lang") != "en":
            continue
        if row["set"] == "short" and row.get("speaker") == "librispeech-3080":
            continue  # the same clips make up the test-other long-form file, trained on whole
        entry = {"audio": str(DATA / row["audio"]), "text": row["text"]}
        held_out = row.get("speaker") in DEV_SPEAKERS or row.get("corpus", "").startswith("FLEURS")
        (dev if held_out else train).append(entry)
    train += [{"audio": str(DATA / audio), "text": ""} for audio in UNLABELLED]
    paths = out / "train.jsonl", out / "dev.jsonl"
    for path, rows in zip(paths, (train, dev)):
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return paths


def dw(*arguments: str) -> None:
    command = [DW, *arguments]
    print("$", " ".join(command), file=sys.stderr, flush=True)
    subprocess.run(command, check=True)


def train_students(out: Path, steps: int, layers: list[int]) -> None:
    train, dev = manifests(out)
    dw("distill", "label", "--teacher", TEACHER, "--train", str(train), "--out", str(out / "labels"))
    for count in layers:
        dw("distill", "init", "--teacher", TEACHER, "--out", str(out / f"student-{count}"), "--decoder-layers", str(count))
        dw("distill", "train", "--teacher", TEACHER, "--student", str(out / f"student-{count}"), "--labels",
           str(out / "labels"), "--out", str(out / f"tiny-{count}l"), "--eval", str(dev), "--steps", str(steps),
           "--eval-steps", str(max(1, steps // 4)), "--checkpoint-steps", "50")


def measure(out: Path, layers: list[int]) -> str:
    import torch

    from dwcli.engine import Engine
    from dwcli.evaluate import evaluate, load_references
    from dwcli.models import ResolvedModel, resolve_model
    from dwcli.options import TranscribeOptions

    torch.set_num_threads(os.cpu_count() or 1)
    references = load_references(out / "dev.jsonl")
    teacher = resolve_model(TEACHER, "cpu")
    batched = TranscribeOptions(formats=("txt",), batch_size=16, workers=0)
    one = TranscribeOptions(formats=("txt",), batch_size=1, workers=0)
    rows = []

    def run(engine, options):
        started = time.monotonic()
        evaluation = evaluate(references, engine, options)
        return evaluation, time.monotonic() - started

    teacher_engine = Engine.load(teacher, "cpu")
    teacher_eval, teacher_s = run(teacher_engine, batched)
    teacher_one, teacher_one_s = run(teacher_engine, one)
    # Speculative decoding promises the teacher's own greedy tokens at the precision it runs
    # in; the assisted teacher keeps its output projection in float32 where the teacher alone
    # may use a bfloat16 copy (precision.py), so tokens are compared with both in float32.
    teacher_f32, teacher_f32_s = run(Engine.load(teacher, "cpu", dtype="float32"), one)
    audio = teacher_eval.total.audio_s
    rows.append(("teacher tiny.en (4 decoder layers)", teacher_eval.total, teacher_s, "", "", ""))
    for count in layers:
        path = out / f"tiny-{count}l"
        student = ResolvedModel(path, str(path))
        evaluation, seconds = run(Engine.load(student, "cpu"), batched)
        assisted = Engine.load(teacher, "cpu", assistant=student)
        spec_eval, spec_s = run(assisted, one)
        stats = assisted.greedy.stats
        spec_f32, _ = run(Engine.load(teacher, "cpu", dtype="float32", assistant=student), one)
        same = sum(a[2] == b[2] for a, b in zip(spec_f32.files, teacher_f32.files))
        rows.append((f"student, {count} decoder layers", evaluation.total, seconds,
                     f"{stats.acceptance_rate:.1%}", f"{teacher_one_s / spec_s:.2f}x / {teacher_f32_s / spec_s:.2f}x",
                     f"{same} of {len(teacher_f32.files)}"))
    lines = [f"Dev split: {len(references)} recordings, {audio / 60:.1f} min; CPU threads {torch.get_num_threads()}, "
             f"load average {os.getloadavg()[0]:.1f}.", "",
             "| model | dev WER % | ins | del | x real time (batch 16) | speed vs teacher | as the teacher's assistant: "
             "drafts accepted | speed-up at batch 1 (vs the teacher at its default / in float32) | "
             "transcripts = teacher's (float32) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for name, score, seconds, accepted, speedup, same in rows:
        lines.append(f"| {name} | {score.wer:.2f} | {score.insertions} | {score.deletions} | {audio / seconds:.1f} | "
                     f"{teacher_s / seconds:.2f}x | {accepted} | {speedup} | {same} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="working folder (labels, students)")
    parser.add_argument("--steps", type=int, default=400, help="training steps per student (default 400)")
    parser.add_argument("--layers", default="2,3", help="students' decoder layers (default 2,3)")
    parser.add_argument("--measure", action="store_true", help="only measure students already trained in --out")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    layers = [int(part) for part in args.layers.split(",")]
    sys.path.insert(0, str(REPO))
    if not args.measure:
        train_students(args.out, args.steps, layers)
    print(measure(args.out, layers))
    return 0


if __name__ == "__main__":
    sys.exit(main())
