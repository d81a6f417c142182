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
                    "--out", str(out), "--augment", "clean,speed1.1", "--steps", "12", "--train-batch-size", "2",
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
                    "--augment", "clean,speed1.1", "--steps", "12", "--train-batch-size", "2", "--device", "cpu")
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


def test_labels_cut_by_a_kill_are_dropped_and_the_file_repaired(tmp_path):
    from dwcli.distill.label import LABELS, _repair, read_labels

    def lines(recording, windows):
        return [json.dumps({"id": f"{recording}-{index}", "recording": recording, "window": index,
                            "windows": windows, "tokens": [1, 2], "kept": True}) + "\n" for index in range(windows)]

    whole = lines("a", 2) + lines("b", 1)
    # The kill came while "c" was written: one of its three lines whole, the next cut short.
    cut = lines("c", 3)
    (tmp_path / LABELS).write_text("".join(whole) + cut[0] + cut[1][:20])
    assert [line["recording"] for line in read_labels(tmp_path)] == ["a", "a", "b"]
    _repair(tmp_path)
    assert (tmp_path / LABELS).read_text() == "".join(whole)
    # Lines missing without a cut line (the write stopped at a line's end) are dropped too.
    (tmp_path / LABELS).write_text("".join(whole) + cut[0])
    _repair(tmp_path)
    assert (tmp_path / LABELS).read_text() == "".join(whole)


def test_a_label_run_after_a_kill_labels_the_cut_recording_again(distilled, manifest, tmp_path):
    _, out = distilled
    labels = tmp_path / "labels"
    shutil.copytree(out / ".distill" / "labels", labels)
    text = (labels / "labels.jsonl").read_text()
    last = json.loads(text.splitlines()[-1])["recording"]
    (labels / "labels.jsonl").write_text(text[: len(text) - 10])  # the last line cut by a kill
    result = invoke("distill", "label", "--teacher", "offline:tiny.en", "--train", str(manifest), "--out",
                    str(labels), "--augment", "clean,speed1.1", "--device", "cpu")
    assert result.exit_code == 0, result.stderr
    assert result.stderr.count("dw: labelled ") == 1  # only the recording the kill cut
    after = [json.loads(line) for line in (labels / "labels.jsonl").read_text().splitlines()]
    assert sorted(line["id"] for line in after) == sorted(json.loads(line)["id"] for line in text.splitlines())
    assert sum(line["recording"] == last for line in after) == after[-1]["windows"]


class _CountingExamples:
    """Stand-in examples for the batch order alone: each draws twice, as real ones do."""

    class special:
        end_of_text = 0

    def __init__(self, count):
        self.count = count

    def __len__(self):
        return self.count

    def example(self, index, draw):
        import torch

        return [index + 1, round(draw.random() * 1000) + 1], [index + 1, round(draw.random() * 1000) + 1], torch.zeros(1)


@pytest.mark.parametrize("examples", [3, 8, 11, 17])
def test_each_process_under_accelerate_launch_trains_on_its_own_share(examples):
    from dwcli.distill.train import _batches, batches_per_epoch
    from dwcli.options import TrainOptions

    options = TrainOptions(batch_size=2)
    alone = [inputs.tolist() for inputs, _, _ in _batches(_CountingExamples(examples), options, epoch=1)]
    assert len(alone) == batches_per_epoch(examples, 2, 1)
    shares = [[inputs.tolist() for inputs, _, _ in _batches(_CountingExamples(examples), options, 1, rank, 2)]
              for rank in (0, 1)]
    # The same batches (and draws) as one process would train on, dealt out in turn; each
    # process takes as many steps as the other.
    assert len(shares[0]) == len(shares[1]) == batches_per_epoch(examples, 2, 2)
    if len(alone) < 2:  # fewer batches than processes: each still takes a step
        assert len(shares[0]) == 1 and shares[0] == alone
        return
    dealt = [batch for pair in zip(*shares) for batch in pair]
    assert dealt == alone[: len(dealt)] and len(alone) - len(dealt) <= 1


def test_two_processes_under_torchrun_train_one_student(distilled, dw_env, tmp_path):
    """The multi-process path for real: two CPU processes (gloo), each on its own share."""
    import subprocess
    import sys

    _, out = distilled
    target = tmp_path / "two"
    run = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "dwcli",
         "distill", "train", "--teacher", "offline:tiny.en", "--student", str(out / ".distill" / "student-init"),
         "--labels", str(out / ".distill" / "labels"), "--out", str(target), "--steps", "4", "--train-batch-size", "2",
         "--warmup-steps", "1", "--checkpoint-steps", "2"],
        env={**dw_env, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stderr.count("dw: trained ") == 1  # the main process alone reports
    checkpoint = target / ".distill" / "checkpoint"
    assert (checkpoint / "random_states_0.pkl").is_file() and (checkpoint / "random_states_1.pkl").is_file()
    assert json.loads((checkpoint / "dw_state.json").read_text())["step"] == 4
    assert json.loads((target / "config.json").read_text())["decoder_layers"] == 2


def test_training_killed_mid_run_resumes_from_its_last_checkpoint(distilled, dw_env, tmp_path):
    import signal
    import subprocess
    import time

    _, out = distilled
    target = tmp_path / "killed"
    command = ["dw", "distill", "train", "--teacher", "offline:tiny.en", "--student",
               str(out / ".distill" / "student-init"), "--labels", str(out / ".distill" / "labels"),
               "--out", str(target), "--train-batch-size", "2", "--checkpoint-steps", "2"]
    state = target / ".distill" / "checkpoint" / "dw_state.json"
    process = subprocess.Popen([*command, "--steps", "400"], env=dw_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not (state.is_file() and json.loads(state.read_text())["step"] >= 4) and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed_at = json.loads(state.read_text())["step"]
    assert 4 <= killed_at < 400
    again = subprocess.run([*command, "--steps", str(killed_at + 2)], env=dw_env,
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert f"resumed at step {killed_at} of {killed_at + 2}" in again.stderr
    assert json.loads(state.read_text())["step"] == killed_at + 2
