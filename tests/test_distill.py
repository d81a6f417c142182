"""dw distill: a student from the real tiny.en teacher, trained for a few steps on real clips."""

from __future__ import annotations

import json
import shutil

import pytest
from typer.testing import CliRunner

from dwcli.cli import app
from dwcli.distill.student import layer_mapping, student_alignment_heads

CLIPS = ["jfk.flac", "61-70968-0000.wav"]


def invoke(*args):
    return CliRunner().invoke(app, list(args), prog_name="dw", catch_exceptions=False)


@pytest.fixture(scope="module")
def manifest(speech, tmp_path_factory):
    folder = tmp_path_factory.mktemp("train")
    lines = []
    for name in CLIPS:
        shutil.copy(speech[name]["path"], folder / name)
        lines.append(json.dumps({"audio": name, "text": speech[name]["text"]}))
    (folder / "train.jsonl").write_text("\n".join(lines) + "\n")
    return folder / "train.jsonl"


def test_layers_are_maximally_spaced_and_heads_follow_them():
    assert layer_mapping(4, 2) == [0, 3] and layer_mapping(4, 3) == [0, 1, 3] and layer_mapping(32, 2) == [0, 31]
    assert student_alignment_heads([[1, 0], [2, 5], [3, 0], [3, 4]], [0, 3]) == [[1, 0], [1, 4]]


@pytest.fixture(scope="module")
def distilled(manifest, offline_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("student") / "tiny-2l"
    result = invoke("distill", "--teacher", "offline:tiny.en", "--train", str(manifest), "--eval", str(manifest),
                    "--out", str(out), "--augment", "clean,speed1.1", "--steps", "12", "--batch-size", "2",
                    "--warmup-steps", "2", "--learning-rate", "3e-4", "--eval-steps", "12", "--checkpoint-steps", "6",
                    "--device", "cpu")
    return result, out


def test_a_few_steps_lower_the_loss_and_the_student_transcribes(distilled, jfk, dw_env):
    import subprocess

    result, out = distilled
    assert result.exit_code == 0, result.stderr
    losses = json.loads((out / ".distill" / "checkpoint" / "dw_state.json").read_text())["losses"]
    assert sum(losses[-3:]) < sum(losses[:3])
    config = json.loads((out / "config.json").read_text())
    assert config["decoder_layers"] == 2 and config["encoder_layers"] == 4
    generation = json.loads((out / "generation_config.json").read_text())
    assert generation["alignment_heads"] and all(layer < 2 for layer, _ in generation["alignment_heads"])
    run = subprocess.run(["dw", "transcribe", str(jfk["path"]), "--model", str(out), "--stdout"], env=dw_env,
                         capture_output=True, timeout=300)
    assert run.returncode == 0 and run.stdout.strip(), run.stderr.decode()


def test_labels_are_kept_and_resumed(distilled):
    _, out = distilled
    lines = [json.loads(line) for line in (out / ".distill" / "labels" / "labels.jsonl").read_text().splitlines()]
    assert {line["augmentation"] for line in lines} == {"clean", "speed1.1"}
    assert all(line["kept"] and line["tokens"] for line in lines)
    assert len({line["recording"] for line in lines}) == 2 * len(CLIPS)


def test_a_rerun_resumes_instead_of_starting_over(distilled, manifest):
    _, out = distilled
    result = invoke("distill", "--teacher", "offline:tiny.en", "--train", str(manifest), "--out", str(out),
                    "--augment", "clean,speed1.1", "--steps", "12", "--batch-size", "2", "--device", "cpu")
    assert result.exit_code == 0, result.stderr
    assert "resumed at step 12 of 12" in result.stderr


def _teacher_without_heads(offline_model, folder):
    shutil.copytree(offline_model.path, folder)
    generation = json.loads((folder / "generation_config.json").read_text())
    generation["alignment_heads"] = []
    (folder / "generation_config.json").write_text(json.dumps(generation))
    return folder


@pytest.mark.parametrize("case", ["no heads", "empty data", "no text", "too many layers"])
def test_bad_input_is_one_line_and_exit_2(case, manifest, offline_model, tmp_path):
    teacher, data, layers = "offline:tiny.en", str(manifest), "2"
    if case == "no heads":
        teacher = str(_teacher_without_heads(offline_model, tmp_path / "teacher"))
        expected = f"Error: --teacher {teacher}: its generation config lists no alignment_heads, which the student needs for word timestamps\n"
    elif case == "empty data":
        (tmp_path / "empty.jsonl").write_text("")
        data = str(tmp_path / "empty.jsonl")
        expected = f"Error: --train {data}: the manifest lists no recordings\n"
    elif case == "no text":
        (tmp_path / "bad.jsonl").write_text('{"audio": "jfk.flac"}\n')
        data = str(tmp_path / "bad.jsonl")
        expected = f"Error: --train {data}:1: no \"text\" reference\n"
    else:
        layers = "5"
        expected = "Error: --decoder-layers 5: the teacher has only 4 decoder layers\n"
    result = invoke("distill", "--teacher", teacher, "--train", data, "--out", str(tmp_path / "out"),
                    "--decoder-layers", layers, "--device", "cpu")
    assert (result.exit_code, result.stderr) == (2, expected)
