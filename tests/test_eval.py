"""dw eval through its CLI on real clips with the real tiny.en: the JSON it prints, a folder
of references, an assistant, and bad input as one line with exit 2."""

from __future__ import annotations

import json
import shutil

import pytest
from typer.testing import CliRunner

from dwcli.cli import app

CLIPS = ["jfk.flac", "61-70968-0000.wav"]
MODEL = ["--model", "offline:tiny.en", "--workers", "0"]


def invoke(*args):
    return CliRunner().invoke(app, list(args), prog_name="dw", catch_exceptions=False)


@pytest.fixture(scope="module")
def labelled(speech, tmp_path_factory):
    """The clips twice: listed in a manifest, and in a folder with <name>.txt beside each."""
    folder = tmp_path_factory.mktemp("labelled")
    (folder / "audio").mkdir()
    lines = []
    for name in CLIPS:
        shutil.copy(speech[name]["path"], folder / "audio" / name)
        (folder / "audio" / name).with_suffix(".txt").write_text(speech[name]["text"] + "\n")
        lines.append(json.dumps({"audio": f"audio/{name}", "text": speech[name]["text"]}))
    (folder / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    return folder


def _scores(*args) -> dict:
    result = invoke("eval", *args, *MODEL, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_a_manifest_and_a_folder_score_alike(labelled):
    from_manifest = _scores(str(labelled / "manifest.jsonl"))
    assert {"model", "files", "words", "wer", "substitutions", "insertions", "deletions", "insertion_rate",
            "repeated_5grams", "cer", "audio_s", "wall_s", "x_real_time", "failed"} <= set(from_manifest)
    assert from_manifest["model"] == "offline:tiny.en" and from_manifest["files"] == 2
    assert from_manifest["failed"] == 0 and from_manifest["repeated_5grams"] == 0
    assert from_manifest["words"] > 30 and from_manifest["wer"] < 15  # tiny.en reads these clips well
    from_folder = _scores(str(labelled / "audio"))
    assert {key: from_folder[key] for key in ("files", "words", "wer", "insertions", "deletions")} == \
        {key: from_manifest[key] for key in ("files", "words", "wer", "insertions", "deletions")}


def test_an_assistant_is_measured_and_keeps_the_models_transcript(labelled):
    """tiny.en as its own assistant (it shares its encoder): every draft accepted, and the
    transcript, hence every count, the model's own."""
    alone = _scores(str(labelled / "manifest.jsonl"))
    assisted = _scores(str(labelled / "manifest.jsonl"), "--assistant", "offline:tiny.en")
    assert {key: assisted[key] for key in ("words", "wer", "insertions", "deletions", "substitutions")} == \
        {key: alone[key] for key in ("words", "wer", "insertions", "deletions", "substitutions")}


@pytest.mark.parametrize("manifest, error", [
    (None, "{data}: no recordings with a <name>.txt reference beside them"),
    ('{"audio": "a.flac"}\n', '{data}:1: no "text" reference'),
    ("[1, 2]\n", '{data}:1: no "audio" path'),
    ("", "{data}: the manifest lists no recordings"),
], ids=["empty folder", "no text", "no audio", "empty manifest"])
def test_bad_references_are_one_line_and_exit_2(tmp_path, manifest, error):
    if manifest is None:
        data = tmp_path / "empty"
        data.mkdir()
    else:
        data = tmp_path / "manifest.jsonl"
        data.write_text(manifest)
    result = invoke("eval", str(data), *MODEL)
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [f"Error: {error.format(data=data)}"]


def test_a_reference_that_is_not_utf8_is_one_line(speech, tmp_path):
    shutil.copy(speech["jfk.flac"]["path"], tmp_path / "jfk.flac")
    (tmp_path / "jfk.txt").write_bytes(b"caf\xe9\n")
    result = invoke("eval", str(tmp_path), *MODEL)
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [f"Error: {tmp_path / 'jfk.txt'}: not UTF-8 text"]
