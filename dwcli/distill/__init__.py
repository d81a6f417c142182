"""``dw distill``: Distil-Whisper's recipe, from a teacher to a student checkpoint.

| module | stage |
| --- | --- |
| ``student`` | init: the teacher's encoder + N of its decoder layers, maximally spaced |
| ``augment`` | speed perturbation, noise and reverberation: more audio from little |
| ``label`` | the teacher's pseudo-labels through dw's engine, WER-filtered; encoder states cached |
| ``train`` | cross-entropy + KL to the teacher, through accelerate; checkpoints, resume, evaluation |

``run_recipe`` runs the three stages into one output folder: the student checkpoint itself,
and the work (the initial student, the labels, the training checkpoint) under ``.distill/``,
so a run that is stopped goes on from where it was when started again.
"""

from __future__ import annotations

from pathlib import Path

from ..engine import Engine
from ..options import DECODER_LAYERS, LabelOptions, TrainOptions, VadOptions
from .label import label
from .student import init_student
from .train import WORK, TrainReporter, train


def run_recipe(teacher, train_references, out: Path, evaluation=None, decoder_layers: int = DECODER_LAYERS,
               labelling: LabelOptions = LabelOptions(), options: TrainOptions = TrainOptions(),
               device: str = "cpu", reporter: TrainReporter | None = None, vad: VadOptions = VadOptions(),
               batch_size: int = 0):
    """init, label and train: ``teacher`` a ``ResolvedModel``; returns (label report, train result)."""
    reporter = reporter or TrainReporter()
    work = out / WORK
    student_dir = work / "student-init"
    if not (student_dir / "config.json").is_file():
        init_student(teacher.path, student_dir, decoder_layers)
    engine = Engine.load(teacher, device)
    report = label(train_references, engine, work / "labels", labelling, batch_size, vad, progress=reporter.labelled)
    reporter.note(f"labels: {report.kept_windows} of {report.windows} windows kept, "
                  f"{report.dropped_recordings} recording(s) above {labelling.wer_threshold:g}% WER dropped")
    result = train(teacher.path, student_dir, work / "labels", out, options, evaluation, reporter)
    return report, result


__all__ = ["LabelOptions", "TrainOptions", "TrainReporter", "run_recipe", "train"]
