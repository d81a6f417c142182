"""The command line in-process (typer's CliRunner): help, exact usage errors, exit statuses,
and a folder with a broken file in it transcribed by the real tiny.en model."""

from __future__ import annotations

import json
import os
import re
import shutil

import pysrt
import pytest
from typer.testing import CliRunner

from dwcli.cli import EXIT_CODES_HELP, EXIT_STATUS_MEANINGS, app
from dwcli.discover import read_path_list

# Settings from the developer's shell must not change what the tests see.
CLEAN_ENV = {key: None for key in os.environ if key.startswith("DW_") and key != "DW_CACHE_DIR"}


def invoke(*args: str, env: dict | None = None, input: bytes | str | None = None):
    return CliRunner().invoke(app, list(args), env={**CLEAN_ENV, **(env or {})}, input=input,
                              prog_name="dw", catch_exceptions=False)


def _flat(text: str) -> str:
    """Help text with click's line wrapping undone (it also breaks after hyphens)."""
    return re.sub(r"-\s+", "-", " ".join(text.split()))


def test_root_help_lists_commands_and_exit_statuses():
    result = invoke("--help")
    assert result.exit_code == 0
    assert "transcribe" in result.stdout and "models" in result.stdout
    assert _flat(EXIT_CODES_HELP) in _flat(result.stdout)


def test_no_arguments_shows_help():
    result = invoke()
    assert "Usage: dw" in result.output and "transcribe" in result.output


def test_transcribe_help_has_examples_exit_statuses_and_variables():
    result = invoke("transcribe", "--help")
    assert result.exit_code == 0
    text = _flat(result.stdout)
    assert "Examples:" in result.stdout
    assert "  ffmpeg -i talk.mkv -f wav - | dw transcribe - --format srt > talk.srt\n" in result.stdout
    assert "  find /data -name '*.mp4' -print0 | dw transcribe --from-list - -0\n" in result.stdout
    assert "--skip-existing / --overwrite" in text
    for status, meaning in EXIT_STATUS_MEANINGS.items():
        assert f"{int(status)} {_flat(meaning)}" in text
    for variable in ("DW_FORMAT", "DW_MODEL", "DW_BATCH_SIZE", "DW_SKIP_EXISTING", "DW_STDOUT", "DW_LOG_JSON"):
        assert variable in text


@pytest.mark.parametrize(
    "args, env, error",
    [
        (["x.wav", "--format", "xyz"], {}, "--format xyz: unknown format xyz; choose from txt, srt, vtt, json, tsv, rttm or all"),
        (["x.wav"], {"DW_FORMAT": "srt,doc"}, "--format srt,doc: unknown format doc; choose from txt, srt, vtt, json, tsv, rttm or all"),
        ([], {}, "no input: name files, folders or - (standard input), or use --from-list"),
        (["x.wav", "--task", "sing"], {}, "--task sing: expected transcribe or translate"),
        (["x.wav", "--quantize", "int4"], {}, "--quantize int4: expected auto, none or int8"),
        (["x.wav", "--max-cps", "0"], {}, "--max-cps 0: expected a positive number"),
        (["x.wav", "--max-cps", "nan"], {}, "--max-cps nan: expected a positive number"),
        (["x.wav", "--max-cue-duration", "inf"], {}, "--max-cue-duration inf: expected a positive number"),
        (["x.wav", "--batch-size", "-3"], {}, "--batch-size -3: expected 0 (auto) to 256"),
        (["x.wav", "--batch-size", "100000"], {}, "--batch-size 100000: expected 0 (auto) to 256"),
        (["x.wav", "--workers", "-5"], {}, "--workers -5: expected -1 (auto), 0 (none) or more"),
        (["x.wav", "-o", ""], {}, "--output-dir: give a folder (an empty name would mean the current one)"),
        (["x.wav", "--audio-track", "-1"], {}, "--audio-track -1: expected 0 or more (0 is the first audio track)"),
        (["x.wav"], {"DW_AUDIO_TRACK": "-2"}, "--audio-track -2: expected 0 or more (0 is the first audio track)"),
        (["x.wav", "--temperature", "0.4,0.2"], {}, "--temperature 0.4,0.2: expected rising non-negative numbers, e.g. 0,0.2,0.4"),
        (["x.wav", "--vad-threshold", "1.5"], {}, "--vad-threshold 1.5: expected a probability between 0 and 1"),
        (["x.wav", "--long-form", "sideways"], {}, "--long-form sideways: expected chunked or sequential"),
        (["x.wav", "--beam-size", "0"], {}, "--beam-size 0: expected 1 or more"),
        (["x.wav", "--language", "klingon"], {},
         "--language klingon: unknown language; give a code such as en, de or fr, or a name such as german"),
        (["x.wav", "--beam-size", "5", "--assistant", "a"], {},
         "--assistant decodes greedily: it cannot be combined with --beam-size"),
        (["-", "--format", "srt,vtt"], {}, "writing to standard output takes one format, got srt,vtt"),
        (["a.wav", "b.wav", "--stdout"], {}, "writing to standard output takes exactly one input"),
        (["-", "--from-list", "-"], {}, "standard input cannot hold both the media and the --from-list"),
        (["--from-list", "/nonexistent/list.txt"], {}, "--from-list /nonexistent/list.txt: No such file or directory"),
        (["x.wav", "--speakers", "--num-speakers", "0"], {}, "--num-speakers 0: expected 1 or more"),
        (["x.wav"], {"DW_SPEAKERS": "1", "DW_NUM_SPEAKERS": "0"}, "--num-speakers 0: expected 1 or more"),
        (["x.wav", "--speakers", "--min-speakers", "3", "--max-speakers", "2"], {},
         "--min-speakers 3: above --max-speakers 2"),
        (["x.wav", "--speakers", "--num-speakers", "2", "--max-speakers", "3"], {},
         "--num-speakers 2: fixes the count, so --min-speakers and --max-speakers cannot be given with it"),
        (["x.wav", "--speakers", "--task", "translate"], {},
         "--speakers needs word timestamps, which a translation (--task translate) does not have"),
        (["x.wav", "--speakers", "--no-vad"], {}, "--speakers needs speech detection: drop --no-vad"),
        (["x.wav", "--num-speakers", "2"], {}, "--num-speakers needs --speakers"),
        (["x.wav", "--format", "srt,rttm"], {}, "--format srt,rttm: rttm holds speaker turns: add --speakers"),
    ],
)
def test_usage_errors_are_one_exact_line_and_exit_2(args, env, error):
    result = invoke("transcribe", *args, env=env, input=b"")
    assert (result.exit_code, result.stderr, result.stdout) == (2, f"Error: {error}\n", "")


@pytest.mark.parametrize("args, env", [(["--batch-size", "abc"], {}), ([], {"DW_BATCH_SIZE": "abc"})])
def test_bad_option_value_exits_2_naming_option_and_variable(args, env):
    result = invoke("transcribe", "x.wav", *args, env=env)
    assert result.exit_code == 2
    assert "Error: Invalid value for '--batch-size' / '-b' (env var: 'DW_BATCH_SIZE')" in result.stderr


def test_english_only_model_takes_english_only(jfk):
    result = invoke("transcribe", str(jfk["path"]), "--model", "offline:tiny.en", "--stdout", "--language", "French")
    assert (result.exit_code, result.stderr) == (2, "Error: --language fr: offline:tiny.en is an English-only model\n")
    result = invoke("transcribe", str(jfk["path"]), "--model", "offline:tiny.en", "--stdout", "--language", "English",
                    "--format", "txt", "--task", "translate")
    assert result.exit_code == 0 and "fellow Americans" in result.stdout
    assert "dw: note: offline:tiny.en is English-only and cannot translate; it transcribes\n" in result.stderr


@pytest.mark.parametrize("args, env", [(["--model", "/nonexistent"], {}), ([], {"DW_MODEL": "/nonexistent"})])
def test_model_that_cannot_be_loaded_exits_3(jfk, args, env):
    result = invoke("transcribe", str(jfk["path"]), *args, env=env)
    assert (result.exit_code, result.stderr) == (3, "Error: model /nonexistent: no such checkpoint directory\n")


def test_missing_inputs_fail_without_loading_a_model(tmp_path):
    listing = tmp_path / "list.txt"
    listing.write_text("/nonexistent/a.wav\r\n\n/nonexistent/b c.wav\n")
    result = invoke("transcribe", "--from-list", str(listing), "--model", "/never/loaded")
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        "Error: /nonexistent/a.wav: no such file or directory",
        "Error: /nonexistent/b c.wav: no such file or directory",
        result.stderr.splitlines()[-1],
    ]
    assert result.stderr.splitlines()[-1] == "dw: 0 ok, 0 skipped, 2 failed"  # no audio: no rate


@pytest.mark.parametrize("data, nul, paths", [
    (b"a.wav\nb c.wav\r\n\n", False, ["a.wav", "b c.wav"]),
    (b"a.wav\0new\nline.wav\0", True, ["a.wav", "new\nline.wav"]),
])
def test_path_lists(data, nul, paths):
    import io

    assert read_path_list(io.BytesIO(data), nul) == paths


def test_settings_from_the_environment_and_stdout_for_a_file(speech, offline_model, tmp_path):
    """DW_* variables stand in for options; DW_STDOUT (--stdout) sends one file's JSON to stdout."""
    from conftest import word_error_rate

    clip = speech["61-70968-0000.wav"]
    source = tmp_path / "clip.wav"
    shutil.copy(clip["path"], source)
    env = {"DW_FORMAT": "json", "DW_MODEL": "offline:tiny.en", "DW_BATCH_SIZE": "1", "DW_QUIET": "1",
           "DW_STDOUT": "1", "DW_WORKERS": "1"}
    result = invoke("transcribe", str(source), env=env)
    assert (result.exit_code, result.stderr) == (0, ""), result.stderr
    output = json.loads(result.stdout)  # the whole of stdout is the one JSON document
    assert output["model"] == "offline:tiny.en" and output["source"] == str(source)
    assert word_error_rate(clip["text"], output["text"]) <= 0.1
    assert [path.name for path in tmp_path.iterdir()] == ["clip.wav"]  # no file written, no record


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory, speech, offline_model):
    """talks/jfk.flac, talks/2024/clip.wav and a broken file, transcribed into out/."""
    root = tmp_path_factory.mktemp("folder")
    inputs = root / "in"
    (inputs / "talks" / "2024").mkdir(parents=True)
    shutil.copy(speech["jfk.flac"]["path"], inputs / "talks" / "jfk.flac")
    shutil.copy(speech["260-123286-0001.wav"]["path"], inputs / "talks" / "2024" / "clip.wav")
    (inputs / "broken.wav").write_bytes(b"RIFF\x24\x00\x00\x00WAVEthis is not audio at all")
    (inputs / ".hidden").mkdir()
    shutil.copy(speech["260-123286-0001.wav"]["path"], inputs / ".hidden" / "skipped.wav")
    out = root / "out"
    result = invoke("transcribe", str(inputs), "--output-dir", str(out), "--format", "srt,json",
                    "--model", "offline:tiny.en", "--workers", "1")
    return result, inputs, out


def test_bad_file_among_good_ones_exits_1_and_names_it(folder_run):
    result, inputs, out = folder_run
    assert result.exit_code == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and errors[0].startswith(f"Error: {inputs / 'broken.wav'}: ")
    assert result.stderr.splitlines()[-1].startswith("dw: 2 ok, 0 skipped, 1 failed;")
    assert result.stdout == ""
    assert not list(out.rglob("broken*"))


def test_output_dir_mirrors_nested_folders(folder_run, speech):
    result, _, out = folder_run
    written = sorted(str(path.relative_to(out)) for path in out.rglob("*") if path.is_file())
    assert written == [
        "talks/.jfk.dw.json", "talks/2024/.clip.dw.json", "talks/2024/clip.json", "talks/2024/clip.srt",
        "talks/jfk.json", "talks/jfk.srt",
    ]
    assert "fellow americans" in json.loads((out / "talks" / "jfk.json").read_text())["text"].lower()
    cues = pysrt.open(str(out / "talks" / "2024" / "clip.srt"))
    assert "horizon" in cues.text.lower()


@pytest.mark.parametrize("audio_s, wall_s, expected", [
    (11.0, 2.0, "dw: 1 ok, 0 skipped, 0 failed; 11 s of audio in 0:02 (5.5x real time)"),
    (756.0, 12.0, "dw: 1 ok, 0 skipped, 0 failed; 12.6 min of audio in 0:12 (63.0x real time)"),
    (4500.0, 3725.0, "dw: 1 ok, 0 skipped, 0 failed; 1.25 h of audio in 1:02:05 (1.2x real time)"),
    (0.0, 1.0, "dw: 1 ok, 0 skipped, 0 failed"),
], ids=["seconds", "minutes", "hours", "nothing transcribed"])
def test_the_summary_says_audio_in_the_unit_that_reads_best(audio_s, wall_s, expected):
    from dwcli.events import RunSummary
    from dwcli.progress import summary_line

    assert summary_line(RunSummary(ok=1, audio_s=audio_s, wall_s=wall_s)) == expected
