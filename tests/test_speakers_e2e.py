"""``--speakers`` end to end: a conversation of three real speakers (built from tests/data/speech
by tests/conversations.py, overlaps included), the real tiny.en model, the dw executable.

Both long-form modes, standard input, two devices and --skip-existing all give the same
turns; the turns are scored against the reference as ``dw eval`` scores them."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from conversations import write_three_speakers
from dwcli.speakers.rttm import read_turns
from dwcli.speakers.score import diarization_errors

SPEECH = Path(__file__).parent / "data" / "speech"
MODEL = ("--model", "offline:tiny.en")


@pytest.fixture(scope="module")
def conversation(tmp_path_factory) -> dict:
    return write_three_speakers(SPEECH, tmp_path_factory.mktemp("conversation"))


def dw(*args: str, env: dict, input: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["dw", *args], env=env, input=input, capture_output=True, timeout=600)


@pytest.fixture(scope="module")
def chunked(conversation, dw_env, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("chunked")
    result = dw("transcribe", str(conversation["audio"]), *MODEL, "--speakers", "-f", "json,srt,rttm,txt",
                "-o", str(out), env=dw_env)
    assert result.returncode == 0, result.stderr.decode()
    return out


def test_conversation_reference_has_overlaps_and_three_voices(conversation):
    turns = read_turns(conversation["rttm"])
    assert {turn.speaker for turn in turns} == {"librispeech-3080", "jfk", "librispeech-2412"}
    assert any(after.start < before.end for before, after in zip(turns, turns[1:]))
    assert conversation["row"]["duration"] > 50


def test_speakers_found_and_scored(conversation, chunked):
    reference = read_turns(conversation["rttm"])
    found = read_turns(chunked / "three.rttm")
    score, mapping = diarization_errors(reference, found)
    assert score.count_right == 1 and len(mapping) == 3
    assert score.der <= 10.0, score.as_dict()
    data = json.loads((chunked / "three.json").read_text())
    assert [speaker["label"] for speaker in data["speakers"]] == ["SPEAKER_00", "SPEAKER_01", "SPEAKER_02"]
    assert abs(sum(s["talk_time"] for s in data["speakers"]) - sum(t.end - t.start for t in found)) < 0.01
    first_seen = list(dict.fromkeys(segment["speaker"] for segment in data["segments"]))
    assert first_seen == ["SPEAKER_00", "SPEAKER_01", "SPEAKER_02"]  # labels in order of first appearance
    for segment in data["segments"]:
        assert {word["speaker"] for word in segment["words"]} == {segment["speaker"]}
    lines = (chunked / "three.txt").read_text().splitlines()
    assert all(line.startswith(("SPEAKER_00: ", "SPEAKER_01: ", "SPEAKER_02: ")) for line in lines)
    assert all(a[:10] != b[:10] for a, b in zip(lines, lines[1:]))  # one line per turn
    srt = (chunked / "three.srt").read_text()
    assert srt.startswith("1\n") and "\n[SPEAKER_00] " in srt and "\n[SPEAKER_02] " in srt


def test_words_get_the_right_speaker(conversation, chunked):
    from dwcli.evaluate import normalize
    from dwcli.segments import Segment, Transcript, Word
    from dwcli.speakers.score import load_utterances, word_speakers

    data = json.loads((chunked / "three.json").read_text())
    segments = [Segment(s["start"], s["end"], s["text"], [Word(w["start"], w["end"], w["word"], w["probability"],
                                                               w["speaker"]) for w in s["words"]])
                for s in data["segments"]]
    _, mapping = diarization_errors(read_turns(conversation["rttm"]), read_turns(chunked / "three.rttm"))
    utterances = load_utterances(conversation["folder"] / conversation["row"]["utterances"])
    total, transcribed, right = word_speakers(utterances, Transcript("x", 0, "en", "m", segments), mapping,
                                              normalize)
    assert right / transcribed >= 0.95 and right / total >= 0.9, (right, transcribed, total)


def test_standard_input_and_two_devices_give_the_same_turns(conversation, chunked, dw_env, tmp_path):
    piped = dw("transcribe", "-", *MODEL, "--speakers", "-f", "rttm", env=dw_env,
               input=conversation["audio"].read_bytes())
    assert piped.returncode == 0, piped.stderr.decode()
    expected = (chunked / "three.rttm").read_text()
    assert piped.stdout.decode() == expected.replace("SPEAKER three ", "SPEAKER stdin ")
    result = dw("transcribe", str(conversation["audio"]), *MODEL, "--speakers", "-f", "rttm", "--devices", "cpu,cpu",
                "-o", str(tmp_path), env=dw_env)
    assert result.returncode == 0, result.stderr.decode()
    assert (tmp_path / "three.rttm").read_text() == expected


def test_sequential_mode_labels_speakers_too(conversation, dw_env, tmp_path):
    result = dw("transcribe", str(conversation["audio"]), *MODEL, "--speakers", "--long-form", "sequential",
                "-f", "rttm,json", "-o", str(tmp_path), env=dw_env)
    assert result.returncode == 0, result.stderr.decode()
    score, _ = diarization_errors(read_turns(conversation["rttm"]), read_turns(tmp_path / "three.rttm"))
    assert score.count_right == 1 and score.der <= 10.0, score.as_dict()
    assert {s["speaker"] for s in json.loads((tmp_path / "three.json").read_text())["segments"]} == {
        "SPEAKER_00", "SPEAKER_01", "SPEAKER_02"}


def test_skip_existing_tells_labelled_outputs_from_plain_ones(jfk, dw_env, tmp_path):
    source = tmp_path / "jfk.flac"
    source.write_bytes(jfk["path"].read_bytes())
    args = ("transcribe", str(source), *MODEL, "-f", "txt", "--skip-existing", "--workers", "0")
    assert dw(*args, "--speakers", "--num-speakers", "1", env=dw_env).returncode == 0
    assert (tmp_path / "jfk.txt").read_text().startswith("SPEAKER_00: ")
    record = json.loads((tmp_path / ".jfk.dw.json").read_text())
    assert record["options"]["speakers"] == {"num_speakers": 1, "min_speakers": None, "max_speakers": None}
    again = dw(*args, "--speakers", "--num-speakers", "1", env=dw_env)
    assert b"0 ok, 1 skipped" in again.stderr  # the record says how the labels were made
    other = dw(*args, "--speakers", env=dw_env)
    assert b"1 ok, 0 skipped" in other.stderr
    plain = dw(*args, env=dw_env)
    assert b"1 ok, 0 skipped" in plain.stderr and not (tmp_path / "jfk.txt").read_text().startswith("SPEAKER")
    assert json.loads((tmp_path / ".jfk.dw.json").read_text())["options"]["speakers"] is None


def test_num_speakers_fixes_the_count_and_one_voice_is_one_label(conversation, jfk, dw_env, tmp_path):
    two = dw("transcribe", str(conversation["audio"]), *MODEL, "--speakers", "--num-speakers", "2", "-f", "json",
             "--stdout", env=dw_env)
    assert two.returncode == 0 and len(json.loads(two.stdout)["speakers"]) == 2
    alone = dw("transcribe", str(jfk["path"]), *MODEL, "--speakers", "-f", "json", "--stdout", env=dw_env)
    data = json.loads(alone.stdout)
    assert [s["label"] for s in data["speakers"]] == ["SPEAKER_00"]
    assert {s["speaker"] for s in data["segments"]} == {"SPEAKER_00"}


def test_eval_scores_speakers_from_rttm_references(conversation, dw_env):
    result = dw("eval", str(conversation["folder"] / "manifest.jsonl"), *MODEL, "--json", env=dw_env)
    assert result.returncode == 0, result.stderr.decode()
    speakers = json.loads(result.stdout)["speakers"]
    assert speakers["files"] == 1 and speakers["count_right"] == 1 and speakers["der"] <= 10.0
    assert speakers["wder"] <= 5.0 and speakers["word_accuracy"] >= 90.0 and speakers["words"] > 100
    assert speakers["per_file"][0]["speakers"] == speakers["per_file"][0]["found"] == 3


def test_eval_table_shows_speaker_scores():
    from dwcli.cli.evaluation import _score_table

    result = {"model": "m", "files": 1, "words": 10, "wer": 1.0, "substitutions": 0, "insertions": 0, "deletions": 0,
              "insertion_rate": 0.0, "repeated_5grams": 0, "cer": 0.0, "audio_s": 1.0, "wall_s": 1.0,
              "x_real_time": 1.0, "speakers": {"der": 1.95, "count_right": 1, "files": 1, "wder": 1.2,
                                                 "word_accuracy": 95.59}}
    lines = _score_table(result).splitlines()
    assert [" ".join(line.split()) for line in lines[-4:]] == [
        "DER % 1.95", "speaker count right 1 of 1", "WDER % 1.20", "words, right speaker % 95.59"]


def test_the_model_loads_once_per_run(speech, jfk, offline_model, tmp_path):
    """Two files in one run (decoded in this process): one load of CAM++."""
    from dwcli.discover import discover
    from dwcli.engine import Engine
    from dwcli.decoding import DecodingOptions
    from dwcli.events import Reporter
    from dwcli.options import SpeakerOptions, TranscribeOptions
    from dwcli.pipeline import transcribe_files
    from dwcli.precision import describe, plan_precision
    from dwcli.speakers.weights import load_campplus

    load_campplus.cache_clear()
    files = discover([str(speech["61-70968-0000.wav"]["path"]), str(jfk["path"])], tmp_path).files
    engine = Engine(offline_model, plan_precision(describe("cpu"), "auto", "auto", "auto", False))
    options = TranscribeOptions(formats=("rttm",), workers=0, decoding=DecodingOptions(word_timestamps=True),
                                speakers=SpeakerOptions())
    assert transcribe_files(files, engine, options, Reporter()).ok == 2
    assert load_campplus.cache_info().misses == 1
