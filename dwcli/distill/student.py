"""``dw distill init``: a student from its teacher, as Distil-Whisper makes one.

The student keeps the teacher's whole encoder (it is frozen during training, so teacher and
student share its output) and a decoder of N layers copied from the teacher's at maximally
spaced depths: the first and the last, and the rest evenly between (``create_student_model``
of huggingface/distil-whisper).  Token and position embeddings and the final layer norm are
the teacher's.  The alignment heads that word timestamps read are kept where their layer is.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from ..errors import UsageError
from ..options import DECODER_LAYERS

# Files a checkpoint folder carries besides the weights and configs.
_SIDE_FILES = ("tokenizer.json", "tokenizer_config.json", "preprocessor_config.json", "vocab.json", "merges.txt",
               "normalizer.json", "added_tokens.json", "special_tokens_map.json")


def layer_mapping(teacher_layers: int, student_layers: int) -> list[int]:
    """Teacher layers the student's are copied from: maximally spaced, first and last kept."""
    if student_layers < 1:
        raise UsageError(f"--decoder-layers {student_layers}: expected 1 or more")
    if student_layers > teacher_layers:
        raise UsageError(f"--decoder-layers {student_layers}: the teacher has only {teacher_layers} decoder layers")
    return [int(index) for index in np.linspace(0, teacher_layers - 1, student_layers, dtype=int)]


def student_alignment_heads(heads: list, mapping: list[int]) -> list[list[int]]:
    """The teacher's alignment heads (layer, head) that the student keeps, renumbered."""
    where = {teacher: student for student, teacher in enumerate(mapping)}
    return [[where[layer], head] for layer, head in heads if layer in where]


def quiet_transformers() -> None:
    """dw reports its own progress: no transformers or accelerate warnings and progress bars
    for loading and saving checkpoints (errors still show)."""
    import logging

    from transformers.utils import logging as transformers_logging

    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
    logging.getLogger("accelerate").setLevel(logging.ERROR)


def check_teacher(folder: Path) -> dict:
    """The teacher's generation config; UsageError when it cannot teach (no alignment heads:
    a student could not time words)."""
    path = folder / "generation_config.json"
    try:
        generation = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise UsageError(f"--teacher {folder}: no readable generation_config.json") from None
    if not generation.get("alignment_heads"):
        raise UsageError(f"--teacher {folder}: its generation config lists no alignment_heads, which the student "
                         "needs for word timestamps")
    return generation


def init_student(teacher_dir: Path, out: Path, decoder_layers: int = DECODER_LAYERS) -> Path:
    """Write the student checkpoint into ``out``; returns it."""
    import torch
    from transformers import WhisperForConditionalGeneration

    quiet_transformers()
    generation = check_teacher(teacher_dir)
    teacher = WhisperForConditionalGeneration.from_pretrained(teacher_dir, dtype=torch.float32)
    mapping = layer_mapping(teacher.config.decoder_layers, decoder_layers)
    config = teacher.config.to_dict()
    config["decoder_layers"] = decoder_layers
    student = WhisperForConditionalGeneration(type(teacher.config).from_dict(config))
    state = teacher.state_dict()
    student_state = {}
    for name in student.state_dict():
        if name.startswith("model.decoder.layers."):
            index, rest = name[len("model.decoder.layers."):].split(".", 1)
            student_state[name] = state[f"model.decoder.layers.{mapping[int(index)]}.{rest}"]
        else:
            student_state[name] = state[name]
    student.load_state_dict(student_state)
    student.generation_config = teacher.generation_config
    student.generation_config.alignment_heads = student_alignment_heads(generation["alignment_heads"], mapping)
    out.mkdir(parents=True, exist_ok=True)
    student.save_pretrained(out)
    copy_side_files(teacher_dir, out)
    (out / "dw_student.json").write_text(json.dumps({"teacher": str(teacher_dir), "decoder_layers_from": mapping}) + "\n")
    return out


def copy_side_files(source: Path, target: Path) -> None:
    for name in _SIDE_FILES:
        if (source / name).is_file():
            shutil.copy(source / name, target / name)
