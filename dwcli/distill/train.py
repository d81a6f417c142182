"""``dw distill train``: the student's decoder learns from its teacher's labels and logits.

The loss is Distil-Whisper's: cross-entropy against the teacher's pseudo-labels plus the KL
divergence from the teacher's token distribution to the student's, both at temperature
``temperature`` (seed defaults: weights 0.8 and 1.0, temperature 2).  As in
``run_distillation.py``, a share of the examples keep their timestamp tokens (the rest are
trained as <|notimestamps|> text) and a share are conditioned on the text before them
(<|startofprev|>).  The encoder is frozen and shared, so its output comes from the states
``label`` stored and only the two decoders run.

It runs through accelerate: the same command trains on a CPU, a GPU (bf16) or, under
``accelerate launch`` or ``torchrun``, many processes, each on its own share of every
epoch's batches, the first alone reporting, evaluating and saving.  Every ``checkpoint_steps`` the whole training state is saved,
and a run started again with the same ``out`` resumes from it (after ``kill -9`` too).
Every ``eval_steps`` the student is saved as a checkpoint, loaded by dw's own engine and
measured on the evaluation data (``dw eval``); the best by WER is kept in ``out``.
"""

from __future__ import annotations

import json
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from ..decoding.options import SpecialTokens
from ..discover import display_name
from ..engine import Engine
from ..errors import UsageError
from ..evaluate import evaluate
from ..models import ResolvedModel
from ..network import GenerationConfig
from ..options import TrainOptions, TranscribeOptions
from .label import STATES, read_labels
from .student import copy_side_files, quiet_transformers

WORK = ".distill"  # inside the output folder: checkpoints and evaluation candidates
_MAX_CONTEXT = 64  # tokens of previous text an example may be conditioned on
_MAX_POSITIONS = 448


@dataclass
class TrainResult:
    steps: int
    first_loss: float
    last_loss: float
    best_wer: float | None
    best_step: int | None
    main_process: bool = True  # False in the other processes of an accelerate launch: they say nothing


class _Examples:
    """The kept windows as decoder sequences, drawn the same way for the same seed."""

    def __init__(self, lines: list[dict], labels_dir: Path, special, options: TrainOptions):
        self.lines = [line for line in lines if line["kept"] and line["tokens"]]
        self.labels_dir = labels_dir
        self.special = special
        self.options = options
        # The text before each window: the previous window of its recording, else the previous
        # recording of the same augmentation (the labels keep the data's order).
        self.previous: list[list[int]] = []
        last_by_augmentation: dict[str, list[int]] = {}
        for line in self.lines:
            self.previous.append(last_by_augmentation.get(line["augmentation"], []))
            last_by_augmentation[line["augmentation"]] = self._text(line["tokens"])

    def _text(self, tokens: list[int]) -> list[int]:
        return [token for token in tokens if token < self.special.end_of_text]

    def __len__(self) -> int:
        return len(self.lines)

    def example(self, index: int, draw: random.Random):
        """(decoder input ids, labels with -100 where no loss, encoder states)."""
        from safetensors.torch import load_file

        special, line = self.special, self.lines[index]
        keep_timestamps = draw.random() < self.options.timestamp_probability
        context = self.previous[index][-_MAX_CONTEXT:] if draw.random() < self.options.condition_probability else []
        prefix = [special.start_of_previous, *context] if context else []
        prompt = [special.start_of_transcript]
        if special.multilingual:
            prompt += [special.languages.get(line.get("language", "en"), special.languages.get("en")), special.transcribe]
        if not keep_timestamps:
            prompt.append(special.no_timestamps)
        target = (line["tokens"] if keep_timestamps else self._text(line["tokens"])) + [special.end_of_text]
        head = prefix + prompt
        inputs = (head + target[:-1])[:_MAX_POSITIONS]
        labels = ([-100] * (len(head) - 1) + target)[:_MAX_POSITIONS]
        states = load_file(str(self.labels_dir / STATES / f"{line['id']}.safetensors"))["states"]
        return inputs, labels, states


def _batch_starts(examples: int, batch_size: int, world: int) -> list[int]:
    """Where each batch of an epoch starts in its shuffled order: whole batches only (one
    short one when there are fewer examples than a batch), as many as the ``world``
    processes take evenly (the first repeated when there are fewer than processes)."""
    starts = list(range(0, examples - batch_size + 1, batch_size)) or [0]
    if len(starts) < world:
        return (starts * world)[:world]
    return starts[: len(starts) - len(starts) % world]


def batches_per_epoch(examples: int, batch_size: int, world: int = 1) -> int:
    """How many batches each process trains on in one epoch."""
    return len(_batch_starts(examples, batch_size, world)) // world


def _batches(examples: _Examples, options: TrainOptions, epoch: int, rank: int = 0, world: int = 1):
    """One epoch's batches, in an order fixed by seed and epoch; under ``accelerate launch``
    with ``world`` processes, every ``world``-th of them from the ``rank``-th on, so each
    process trains on its own share and all take the same number of steps."""
    import torch

    order = list(range(len(examples)))
    draw = random.Random(options.seed * 100_003 + epoch)
    draw.shuffle(order)
    for number, start in enumerate(_batch_starts(len(order), options.batch_size, world)):
        chosen = order[start : start + options.batch_size]
        if number % world != rank:
            for _ in range(2 * len(chosen)):  # the two draws each of its examples makes
                draw.random()
            continue
        rows = [examples.example(index, draw) for index in chosen]
        length = max(len(inputs) for inputs, _, _ in rows)
        inputs = torch.full((len(rows), length), examples.special.end_of_text, dtype=torch.long)
        labels = torch.full((len(rows), length), -100, dtype=torch.long)
        for row, (ids, targets, _) in enumerate(rows):
            inputs[row, : len(ids)] = torch.tensor(ids)
            labels[row, : len(targets)] = torch.tensor(targets)
        yield inputs, labels, torch.stack([states for _, _, states in rows]).float()


def _loss(student, teacher, inputs, labels, states, options: TrainOptions):
    import torch
    import torch.nn.functional as F

    # Through the model's own forward (the encoder's output given), so that under accelerate
    # launch the wrapper that averages gradients across processes sees the step.
    logits = student(encoder_outputs=(states,), decoder_input_ids=inputs).logits.float()
    with torch.no_grad():
        teacher_hidden = teacher.model.decoder(input_ids=inputs, encoder_hidden_states=states).last_hidden_state
        teacher_logits = teacher.proj_out(teacher_hidden).float()
    mask = labels != -100
    ce = F.cross_entropy(logits[mask], labels[mask])
    t = options.temperature
    kl = F.kl_div(F.log_softmax(logits[mask] / t, dim=-1), F.log_softmax(teacher_logits[mask] / t, dim=-1),
                  log_target=True, reduction="batchmean") * t * t
    return options.ce_weight * ce + options.kl_weight * kl


def save_student(model, source_dir: Path, target: Path) -> Path:
    """A plain transformers checkpoint dw loads (weights, configs, tokenizer) in ``target``;
    each file written beside it first and renamed over the old one, so a reader never sees
    half a checkpoint file."""
    staging = target.parent / f".{target.name}.staging"
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(staging)
    copy_side_files(source_dir, staging)
    if (source_dir / "dw_student.json").is_file():
        shutil.copy(source_dir / "dw_student.json", staging / "dw_student.json")
    target.mkdir(parents=True, exist_ok=True)
    for item in staging.iterdir():
        item.replace(target / item.name)
    staging.rmdir()
    return target


def _save_checkpoint(accelerator, checkpoint: Path, state: dict) -> None:
    """The whole training state into ``checkpoint``, whole or not at all: written beside it
    (every process its own random state), then swapped in, so a kill at any moment leaves
    one finished checkpoint whose weights and step agree."""
    staging, previous = checkpoint.with_name(checkpoint.name + ".new"), checkpoint.with_name(checkpoint.name + ".old")
    if accelerator.is_main_process:
        shutil.rmtree(staging, ignore_errors=True)  # what a kill left half written
    accelerator.wait_for_everyone()
    accelerator.save_state(str(staging))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (staging / "dw_state.json").write_text(json.dumps(state))  # last: it marks the folder finished
        shutil.rmtree(previous, ignore_errors=True)
        if checkpoint.exists():
            checkpoint.rename(previous)
        staging.rename(checkpoint)
        shutil.rmtree(previous, ignore_errors=True)
    accelerator.wait_for_everyone()


def _finished_checkpoint(checkpoint: Path) -> Path | None:
    """The checkpoint to resume from: ``checkpoint``, or the one it replaced when a kill fell
    between the two renames; None for a fresh start."""
    for folder in (checkpoint, checkpoint.with_name(checkpoint.name + ".old")):
        if (folder / "dw_state.json").is_file():
            return folder
    return None


def _same_encoder(teacher, student) -> bool:
    import torch

    theirs, ours = teacher.model.encoder.state_dict(), student.model.encoder.state_dict()
    return theirs.keys() == ours.keys() and all(torch.equal(theirs[name], ours[name]) for name in theirs)


def train(teacher_dir: Path, student_dir: Path, labels_dir: Path, out: Path, options: TrainOptions = TrainOptions(),
          evaluation=None, reporter=None) -> TrainResult:
    """Train the student in ``student_dir`` into ``out``.  ``evaluation`` (references) is
    measured every ``eval_steps``; ``reporter`` receives progress (``TrainReporter``)."""
    import torch
    from accelerate import Accelerator
    from transformers import WhisperForConditionalGeneration, get_linear_schedule_with_warmup

    quiet_transformers()
    lines = read_labels(labels_dir)
    if not any(line["kept"] for line in lines):
        raise UsageError(f"{labels_dir}: no kept labels to train on (run dw distill label first)")
    accelerator = Accelerator(cpu=not torch.cuda.is_available(),
                              mixed_precision="bf16" if torch.cuda.is_available() else "no")
    main = accelerator.is_main_process
    # Under accelerate launch only the main process reports, evaluates and saves.
    reporter = (reporter or TrainReporter()) if main else TrainReporter(quiet=True)
    teacher = WhisperForConditionalGeneration.from_pretrained(teacher_dir, dtype=torch.float32).eval()
    student = WhisperForConditionalGeneration.from_pretrained(student_dir, dtype=torch.float32)
    if not _same_encoder(teacher, student):
        raise UsageError(f"{student_dir}: its encoder is not the teacher's (make it with dw distill init)")
    if student.config.vocab_size != teacher.config.vocab_size:
        raise UsageError(f"{student_dir}: its vocabulary is not the teacher's")
    teacher.requires_grad_(False).to(accelerator.device)
    student.model.encoder.requires_grad_(False)
    special = SpecialTokens.from_generation_config(GenerationConfig.from_file(teacher_dir / "generation_config.json"))
    examples = _Examples(lines, labels_dir, special, options)
    trainable = [parameter for parameter in student.parameters() if parameter.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=options.learning_rate, weight_decay=options.weight_decay)
    schedule = get_linear_schedule_with_warmup(optimizer, options.warmup_steps, options.steps)
    student, optimizer, schedule = accelerator.prepare(student, optimizer, schedule)

    work = out / WORK
    checkpoint = work / "checkpoint"
    out.mkdir(parents=True, exist_ok=True)
    state = {"step": 0, "best_wer": None, "best_step": None, "first_loss": None, "last_loss": None, "losses": []}
    found = _finished_checkpoint(checkpoint)
    if found is not None:
        accelerator.load_state(str(found))
        state = json.loads((found / "dw_state.json").read_text())
        reporter.note(f"resumed at step {state['step']} of {options.steps}")
    world, rank = accelerator.num_processes, accelerator.process_index
    steps_per_epoch = batches_per_epoch(len(examples), options.batch_size, world)
    reporter.start(options.steps, state["step"])
    student.train()
    step = state["step"]
    while step < options.steps:
        epoch, skip = divmod(step, steps_per_epoch)
        for index, (inputs, labels, states) in enumerate(_batches(examples, options, epoch, rank, world)):
            if index < skip:
                continue
            inputs, labels, states = (tensor.to(accelerator.device) for tensor in (inputs, labels, states))
            with accelerator.autocast():
                loss = _loss(student, teacher, inputs, labels, states, options)
            accelerator.backward(loss)
            accelerator.clip_grad_norm_(trainable, 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad()
            step += 1
            value = float(accelerator.reduce(loss.detach(), "mean"))  # the mean over the processes
            state["first_loss"] = value if state["first_loss"] is None else state["first_loss"]
            state["last_loss"] = value
            state["losses"].append(round(value, 4))
            state["step"] = step
            reporter.step(step, value)
            if evaluation and (step % options.eval_steps == 0 or step == options.steps):
                if main:
                    wer = _evaluate(accelerator.unwrap_model(student), student_dir, work / "candidate", evaluation)
                    reporter.evaluated(step, wer)
                    if state["best_wer"] is None or wer < state["best_wer"]:
                        state["best_wer"], state["best_step"] = wer, step
                        save_student(accelerator.unwrap_model(student), student_dir, out)
                accelerator.wait_for_everyone()
                student.train()
            if step % options.checkpoint_steps == 0 or step == options.steps:
                _save_checkpoint(accelerator, checkpoint, state)
            if step >= options.steps:
                break
    if not evaluation and main:
        save_student(accelerator.unwrap_model(student), student_dir, out)
    accelerator.wait_for_everyone()
    reporter.finish()
    return TrainResult(step, state["first_loss"], state["last_loss"], state["best_wer"], state["best_step"], main)


def _evaluate(model, student_dir: Path, candidate: Path, evaluation) -> float:
    """WER of the student as it is, through dw's own engine."""
    model.eval()
    candidate.mkdir(parents=True, exist_ok=True)
    save_student(model, student_dir, candidate)
    engine = Engine.load(ResolvedModel(candidate, "student"), "cuda" if next(model.parameters()).is_cuda else "cpu")
    return evaluate(evaluation, engine, TranscribeOptions(formats=("txt",), workers=0)).total.wer


class TrainReporter:
    """Training progress: a rich bar on a terminal, a plain line every few steps otherwise."""

    def __init__(self, stream=None, quiet: bool = False, every: int = 25):
        import sys

        self.stream = stream or sys.stderr
        self.quiet, self.every = quiet, every
        self.bar = None
        self.wer = None
        self.started = time.monotonic()

    def start(self, total: int, done: int) -> None:
        if self.quiet or not self.stream.isatty():
            return
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        self.bar = Progress(TextColumn("train"), BarColumn(), TextColumn("{task.completed}/{task.total} steps"),
                            TextColumn("loss {task.fields[loss]}"), TextColumn("eval WER {task.fields[wer]}"),
                            TimeRemainingColumn(), console=Console(file=self.stream))
        self.task = self.bar.add_task("train", total=total, completed=done, loss="-", wer="-")
        self.bar.start()

    def step(self, step: int, loss: float) -> None:
        if self.bar is not None:
            self.bar.update(self.task, completed=step, loss=f"{loss:.3f}")
        elif not self.quiet and step % self.every == 0:
            print(f"dw: distill step {step}: loss {loss:.3f}", file=self.stream, flush=True)

    def evaluated(self, step: int, wer: float) -> None:
        if self.bar is not None:
            self.bar.update(self.task, wer=f"{wer:.2f}%")
        elif not self.quiet:
            print(f"dw: distill step {step}: eval WER {wer:.2f}%", file=self.stream, flush=True)

    def labelled(self, reference, augmentation: str, wer: float, kept: bool) -> None:
        """One recording labelled by the teacher (``label``'s ``progress``)."""
        if not self.quiet:
            verdict = (f"WER {wer:.1f}%, " + ("kept" if kept else "dropped")) if reference.text.strip() else \
                "no reference, kept"
            print(f"dw: labelled {display_name(str(reference.audio))} [{augmentation}]: {verdict}",
                  file=self.stream, flush=True)

    def note(self, message: str) -> None:
        if not self.quiet:
            print(f"dw: note: {message}", file=self.stream, flush=True)

    def finish(self) -> None:
        if self.bar is not None:
            self.bar.stop()


