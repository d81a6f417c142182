"""``dw distill label``: the teacher transcribes the training audio; good labels are kept.

Every recording, and each of its augmented versions, is cut into windows the way ``dw
transcribe`` cuts it (speech detection included) and decoded by the teacher through dw's
own batched engine, with timestamps.  Where a recording has a reference, the labels are
kept only if the teacher's whole transcript is within ``wer_threshold`` of it (Distil-
Whisper's filter against hallucinated labels; 10% for English).  A recording with an empty
reference is unlabelled audio: its labels are kept as the teacher made them.

What is written, into ``out``: ``labels.jsonl`` (one line per window: its tokens, the
recording, the augmentation, the recording's WER, whether it is kept) and, because the
encoder is frozen and shared with the student, each window's encoder output in
``states/<id>.safetensors`` (float16), so training never runs the encoder.  A recording's
lines are written after its states, all at once, and each says how many windows its
recording has: a run killed midway resumes with the recordings it had not finished, and a
recording whose lines the kill cut short (a line half written, or lines missing) is dropped
from the file and labelled again.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from ..atomic import write_atomic
from ..audio import SAMPLE_RATE, load_audio
from ..batcher import Batcher
from ..chunking import ChunkedReader, ChunkedSource
from ..decoding import DecodingOptions
from ..devices import default_batch_size
from ..discover import display_name
from ..errors import MediaError, UsageError
from ..evaluate import score
from ..options import LabelOptions, VadOptions
from ..sources import Reading, SourceSettings
from .augment import augment, parse

LABELS = "labels.jsonl"
STATES = "states"


@dataclass(frozen=True)
class LabelReport:
    recordings: int  # labelled so far, this run's and earlier runs'
    windows: int
    kept_windows: int
    dropped_recordings: int  # above the WER threshold
    audio_s: float  # labelled by this run


def _key(source: str, spec: str) -> str:
    return hashlib.sha256(f"{source}|{spec}".encode()).hexdigest()[:16]


def _parse(text: str) -> list[dict]:
    lines = []
    for line in text.splitlines():
        try:
            lines.append(json.loads(line))
        except json.JSONDecodeError:
            break  # a line cut by a kill: it and what follows are redone
    return lines


def _whole(lines: list[dict]) -> list[dict]:
    """The lines of recordings that have all their windows' lines (files written before
    lines carried ``windows`` count their recordings as whole)."""
    count: dict[str, int] = {}
    for line in lines:
        count[line["recording"]] = count.get(line["recording"], 0) + 1
    return [line for line in lines if line.get("windows", count[line["recording"]]) == count[line["recording"]]]


def read_labels(folder: Path) -> list[dict]:
    """The labels of the recordings labelled to their end."""
    path = folder / LABELS
    return _whole(_parse(path.read_text(encoding="utf-8"))) if path.is_file() else []


def _repair(folder: Path) -> None:
    """Rewrite the labels file with only whole recordings' lines when a kill left more in it,
    so that what is appended next starts on a line of its own and is read back."""
    path = folder / LABELS
    if not path.is_file():
        return
    text = path.read_text(encoding="utf-8")
    whole = _whole(_parse(text))
    if text.count("\n") != len(whole) or (text and not text.endswith("\n")):
        write_atomic(path, "".join(json.dumps(line) + "\n" for line in whole))


def _windows(teacher, audio, vad: VadOptions, batch_size: int, name: str) -> list:
    """The teacher's decoded windows of one recording in memory, in order, each job keeping
    its encoder states: the same chunked window source and batcher as ``dw transcribe``
    (speech detection, a window's rest decoded again, out-of-memory halving)."""
    source = ChunkedSource(0, SourceSettings((), teacher.special.timestamp_begin, False, False))
    for item in ChunkedReader(Reading("chunked", teacher.n_mels, vad)).items(0, [audio]):
        source.take(item)
    source.end()
    batcher = Batcher(teacher, DecodingOptions(timestamps=True), batch_size, lambda _: name, lambda _: None,
                      keep_encoded=True)
    batcher.add(source.ready())
    decoded = []
    while len(batcher):
        results, failures = batcher.run()
        if failures:
            raise UsageError(f"training data: {failures[0].message}")
        for job, result in results:
            source.decoded(job, result)
            decoded.append((job, result))
        batcher.add(source.ready(), front=True)
    return decoded


def label(references, teacher, out: Path, options: LabelOptions = LabelOptions(), batch_size: int = 0,
          vad: VadOptions = VadOptions(), progress=None) -> LabelReport:
    """Label ``references`` (``evaluate.Reference``s) with ``teacher`` (an ``Engine``);
    ``batch_size`` 0: the teacher's device's default."""
    import torch
    from safetensors.torch import save_file

    for spec in options.augmentations:
        try:
            parse(spec)
        except ValueError as error:
            raise UsageError(f"--augment {error}") from None
    if not references:
        raise UsageError("no training recordings")
    batch_size = batch_size or default_batch_size(teacher.device)
    out.mkdir(parents=True, exist_ok=True)
    (out / STATES).mkdir(exist_ok=True)
    _repair(out)
    done = {line["recording"] for line in read_labels(out)}
    audio_total = 0.0
    with open(out / LABELS, "a", encoding="utf-8") as labels:
        for reference in references:
            try:
                samples = load_audio(reference.audio)
            except MediaError as error:
                raise UsageError(f"training data: {error}") from None
            for spec in options.augmentations:
                recording = _key(str(reference.audio), spec)
                if recording in done:
                    continue
                audio = augment(samples, spec, str(reference.audio))
                with torch.inference_mode():
                    decoded = _windows(teacher, audio, vad, batch_size, display_name(str(reference.audio)))
                tokens = []
                for index, (job, result) in enumerate(decoded):
                    tokens.append(result.tokens)
                    save_file({"states": job.encoded.to(torch.float16).contiguous()},
                              str(out / STATES / f"{recording}-{index}.safetensors"))
                text = " ".join(teacher.decode_text(row).strip() for row in tokens)
                wer = score(reference.text, text, reference.language).wer if reference.text.strip() else 0.0
                kept = wer <= options.wer_threshold
                lines = [json.dumps({"id": f"{recording}-{index}", "recording": recording,
                                     "source": str(reference.audio), "augmentation": spec, "window": index,
                                     "windows": len(tokens), "tokens": row, "recording_wer": round(wer, 2),
                                     "kept": kept, "language": reference.language})
                         for index, row in enumerate(tokens)]
                labels.write("".join(line + "\n" for line in lines))
                labels.flush()
                os.fsync(labels.fileno())
                audio_total += len(audio) / SAMPLE_RATE
                if progress is not None:
                    progress(reference, spec, wer, kept)
    lines = read_labels(out)
    by_recording = {line["recording"]: line["kept"] for line in lines}
    return LabelReport(len(by_recording), len(lines), sum(line["kept"] for line in lines),
                       sum(not kept for kept in by_recording.values()), audio_total)
