"""``dw distill`` and its stages: init, label, train."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..errors import ExitStatus, UsageError
from ..options import DECODER_LAYERS
from . import groups
from .app import distill_app, prepare_process, run
from .groups import INPUTS, MODEL, TEACHER

TeacherOption = TEACHER.annotation
OutOption = Annotated[Optional[Path], typer.Option("--out", rich_help_panel=INPUTS, help="Folder to write to.")]
TrainDataOption = Annotated[Optional[Path], typer.Option(
    "--train", rich_help_panel=INPUTS, help="Training recordings: a JSONL manifest or a folder, as dw eval reads.")]
EvalDataOption = Annotated[Optional[Path], typer.Option(
    "--eval", rich_help_panel=INPUTS, help="Held-out recordings to measure the student on every --eval-steps.")]
LayersOption = Annotated[int, typer.Option(rich_help_panel=MODEL, help="The student's decoder layers.")]


def _required(name: str, value):
    if value is None:
        raise UsageError(f"{name}: required")
    return value


def _teacher(teacher: str | None, device_name: str):
    from ..distill.student import check_teacher
    from ..models import resolve_model

    resolved = resolve_model(_required("--teacher", teacher), device_name)
    check_teacher(resolved.path)
    return resolved


def _references(option: str, data: Path | None):
    from ..evaluate import load_references

    try:
        return load_references(_required(option, data))
    except UsageError as error:
        raise UsageError(f"{option} {error}") from None


@distill_app.callback()
@groups.uses(groups.LABELLING_GROUP, groups.TRAINING_GROUP, groups.BATCH_GROUP, groups.SPEECH_GROUP,
             groups.QUIET_ONLY)
def distill(
    ctx: typer.Context,
    teacher: TeacherOption = None,
    train_data: TrainDataOption = None,
    out: OutOption = None,
    eval_data: EvalDataOption = None,
    decoder_layers: LayersOption = DECODER_LAYERS,
    device: groups.DEVICE.annotation = groups.DEVICE.default,
    labelling=None, training=None, run_options=None, vad=None, messages=None,
) -> None:
    """Make a Distil-Whisper student of a teacher, or run one stage (init, label, train).

    Example: dw distill --teacher offline:tiny.en --train train.jsonl --eval dev.jsonl --out tiny-2l
    """
    if ctx.invoked_subcommand is not None:
        return
    said = messages.get()

    def body(_stdout):
        from ..devices import pick_device
        from ..distill import TrainReporter, run_recipe
        from ..distill.student import layer_mapping
        from ..network import WhisperConfig

        label_options, train_options, speech = labelling.get(), training.get(), vad.get()
        batch = run_options.get().batch_size
        prepare_process()
        device_name = pick_device(device)
        resolved = _teacher(teacher, device_name)
        layer_mapping(WhisperConfig.from_file(resolved.path / "config.json").decoder_layers, decoder_layers)
        references = _references("--train", train_data)
        evaluation = _references("--eval", eval_data) if eval_data is not None else None
        _, result = run_recipe(resolved, references, _required("--out", out), evaluation, decoder_layers,
                               label_options, train_options, device_name, TrainReporter(quiet=said.quiet), speech,
                               batch)
        if not said.quiet:
            best = f"; best eval WER {result.best_wer:.2f}% at step {result.best_step}" if result.best_wer is not None else ""
            print(f"dw: distilled {out}: {result.steps} steps, loss {result.first_loss:.3f} -> {result.last_loss:.3f}"
                  f"{best}", file=sys.stderr)
        return ExitStatus.OK

    run(body, said)


@distill_app.command("init")
@groups.uses(groups.QUIET_ONLY)
def distill_init(teacher: TeacherOption = None, out: OutOption = None, decoder_layers: LayersOption = DECODER_LAYERS,
                 messages=None) -> None:
    """The student: the teacher's encoder and N of its decoder layers, maximally spaced.

    Example: dw distill init --teacher offline:tiny.en --out student-2l --decoder-layers 2
    """
    def body(_stdout):
        from ..distill.student import init_student

        init_student(_teacher(teacher, "cpu").path, _required("--out", out), decoder_layers)
        return ExitStatus.OK

    run(body, messages.get())


@distill_app.command("label")
@groups.uses(groups.LABELLING_GROUP, groups.BATCH_GROUP, groups.SPEECH_GROUP, groups.QUIET_ONLY)
def distill_label(teacher: TeacherOption = None, train_data: TrainDataOption = None, out: OutOption = None,
                  device: groups.DEVICE.annotation = groups.DEVICE.default,
                  labelling=None, run_options=None, vad=None, messages=None) -> None:
    """The teacher's pseudo-labels for the training data, WER-filtered (resumable).

    Example: dw distill label --teacher offline:tiny.en --train train.jsonl --out labels
    """
    said = messages.get()

    def body(_stdout):
        from ..devices import pick_device
        from ..distill import TrainReporter
        from ..distill.label import label
        from ..engine import Engine

        label_options, speech, batch = labelling.get(), vad.get(), run_options.get().batch_size
        prepare_process()
        device_name = pick_device(device)
        resolved = _teacher(teacher, device_name)
        report = label(_references("--train", train_data), Engine.load(resolved, device_name), _required("--out", out),
                       label_options, batch, speech, progress=TrainReporter(quiet=said.quiet).labelled)
        if not said.quiet:
            print(f"dw: labels in {out}: {report.kept_windows} of {report.windows} windows kept; "
                  f"{report.dropped_recordings} of {report.recordings} recordings above "
                  f"{label_options.wer_threshold:g}% WER dropped", file=sys.stderr)
        return ExitStatus.OK

    run(body, said)


@distill_app.command("train")
@groups.uses(groups.TRAINING_GROUP, groups.QUIET_ONLY)
def distill_train(
    teacher: TeacherOption = None,
    student: Annotated[Optional[Path], typer.Option(rich_help_panel=MODEL, help="The student dw distill init made.")] = None,
    labels: Annotated[Optional[Path], typer.Option(rich_help_panel=INPUTS, help="The labels dw distill label made.")] = None,
    out: OutOption = None,
    eval_data: EvalDataOption = None,
    training=None, messages=None,
) -> None:
    """Train the student on the labels (through accelerate: CPU, GPU, or accelerate launch).

    Example: dw distill train --teacher offline:tiny.en --student student-2l --labels labels --out tiny-2l
    """
    said = messages.get()

    def body(_stdout):
        from ..distill import TrainReporter, train

        options = training.get()
        resolved = _teacher(teacher, "cpu")
        evaluation = _references("--eval", eval_data) if eval_data is not None else None
        result = train(resolved.path, _required("--student", student), _required("--labels", labels),
                       _required("--out", out), options, evaluation, TrainReporter(quiet=said.quiet))
        if not said.quiet and result.main_process:
            print(f"dw: trained {out}: {result.steps} steps, loss {result.first_loss:.3f} -> {result.last_loss:.3f}",
                  file=sys.stderr)
        return ExitStatus.OK

    run(body, said)
