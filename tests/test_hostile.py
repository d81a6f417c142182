"""What a hostile or unlucky batch does: nothing lost, nothing cut short in silence, nothing
written outside --output-dir, no process left behind; one line per bad input."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
from pathlib import Path

import psutil
import pytest

from dwcli.discover import discover
from dwcli.events import Reporter
from dwcli.options import TranscribeOptions
from dwcli.pipeline import transcribe_files

MODEL = ["--model", "offline:tiny.en"]
WAIT_S = 300


def _touch(path: Path, data: bytes = b"") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


# -- output names ----------------------------------------------------------------------------
def test_same_names_in_two_folders_never_share_an_output(tmp_path):
    first, second = _touch(tmp_path / "a/talk.flac"), _touch(tmp_path / "b/talk.flac")
    found = discover([str(tmp_path / "a"), str(tmp_path / "b")], tmp_path / "out").files
    assert [media.output_path("txt") for media in found] == [tmp_path / "out/a/talk.flac.txt",
                                                             tmp_path / "out/b/talk.flac.txt"]
    assert [media.source for media in found] == [str(first), str(second)]


def test_names_that_clash_again_after_the_extension_are_told_apart(tmp_path):
    for name in ("talk.mp3", "talk.wav", "talk.mp3.wav"):
        _touch(tmp_path / name)
    for output_dir in (None, tmp_path / "out"):
        paths = [media.output_path("txt") for media in discover([str(tmp_path)], output_dir).files]
        assert len(set(paths)) == 3, paths


@pytest.mark.parametrize("name", ["..wav", "..flac", ".wav"])
def test_a_name_that_would_leave_the_folder_keeps_its_full_name(tmp_path, name):
    _touch(tmp_path / "in" / name)
    for output_dir in (None, tmp_path / "out"):
        [media] = discover([str(tmp_path / "in" / name)], output_dir).files
        folder = output_dir or tmp_path / "in"
        assert media.output_path("txt") == folder / f"{name}.txt"


def test_what_a_path_is_when_it_is_not_an_input(tmp_path):
    (tmp_path / "empty.wav").mkdir()
    (tmp_path / "loop.wav").symlink_to(tmp_path / "loop.wav")
    (tmp_path / "broken.wav").symlink_to(tmp_path / "nowhere.wav")
    long = "x" * 300 + ".wav"
    arguments = [str(tmp_path / name) for name in ("empty.wav", "loop.wav", "broken.wav", "missing.wav", long)]
    found = discover(arguments)
    assert found.files == []
    assert [item.reason for item in found.unusable] == [
        "folder with no media files in it", "symbolic link loop", "broken symbolic link", "no such file or directory",
        "file name too long"]


def test_a_fifo_is_a_stream(tmp_path):
    os.mkfifo(tmp_path / "live.wav")
    [media] = discover([str(tmp_path / "live.wav")]).files
    assert media.stream


def test_a_long_name_writes_though_the_temporary_name_is_longer(tmp_path):
    from dwcli.atomic import write_atomic

    path = tmp_path / ("n" * 240 + ".srt")  # legal: under 255 bytes
    write_atomic(path, "1\n")
    assert path.read_text() == "1\n" and [item.name for item in tmp_path.iterdir()] == [path.name]


# -- the run -------------------------------------------------------------------------------
class _Outcomes(Reporter):
    def __init__(self):
        self.outcomes, self.notes = [], []

    def file_done(self, outcome):
        self.outcomes.append(outcome)

    def note(self, message):
        self.notes.append(message)


def _clips(speech, folder: Path, names=("jfk.flac", "260-123286-0001.wav", "61-70968-0000.wav")) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    return [Path(shutil.copy(speech[name]["path"], folder / name)) for name in names]


def test_a_full_disk_stops_the_batch_and_says_so_once(engine, speech, tmp_path, monkeypatch):
    import dwcli.sinks as sinks

    paths = _clips(speech, tmp_path / "in")

    def full(path, text):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(sinks, "write_atomic", full)
    reporter = _Outcomes()
    files = discover([str(path) for path in paths], tmp_path / "out").files
    summary = transcribe_files(files, engine, TranscribeOptions(batch_size=1, workers=0), reporter)
    assert (summary.ok, summary.failed) == (0, len(paths))
    assert [outcome.message for outcome in reporter.outcomes] == [
        f"{paths[0]}: cannot write output (No space left on device)"]
    assert reporter.notes == ["stopped: outputs cannot be written (No space left on device); 2 file(s) left undone"]


def test_a_file_that_changes_while_it_is_read_is_not_recorded(engine, speech, tmp_path):
    """The nightly case: a video still being copied in.  Its transcript would be partial, so
    it fails and leaves no record that --skip-existing would trust."""
    from dwcli.resume import Recipe, Resume, record_path

    [path] = _clips(speech, tmp_path / "in", ("jfk.flac",))

    class Copying:  # the copy goes on while dw decodes
        def __init__(self, real):
            self.real = real

        def __getattr__(self, name):
            return getattr(self.real, name)

        def transcribe(self, *args, **kwargs):
            with open(path, "ab") as stream:
                stream.write(b"\0" * 1024)
            return self.real.transcribe(*args, **kwargs)

    [media] = discover([str(path)], tmp_path / "out").files
    options = TranscribeOptions(batch_size=1, workers=0)
    options = TranscribeOptions(batch_size=1, workers=0, resume=Resume(Recipe.of("m", options), skip_existing=True))
    reporter = _Outcomes()
    summary = transcribe_files([media], Copying(engine), options, reporter)
    assert summary.failed == 1
    assert reporter.outcomes[0].message == (f"{path}: changed while dw read it (still being written?); "
                                            "transcribe it again once it is complete")
    assert not record_path(media).exists() and not media.output_path("txt").exists()


@pytest.mark.slow
def test_a_decoding_process_killed_once_loses_nothing(speech, dw_env, tmp_path):
    """The OOM killer takes the decoding worker mid-file: the files it may have been reading
    are read again, each in a process of its own, and every output is complete (a file that
    kills its process every time fails alone: tests/test_pipeline.py)."""
    import numpy as np

    from dwcli.audio import load_audio
    from nonspeech import write_flac

    long_form = next(entry for entry in speech.values() if entry.get("segments_file"))
    folder = tmp_path / "in"
    folder.mkdir()
    # Five minutes: many more windows than the stream buffers, so the worker is mid-file.
    write_flac(folder / "0-long.flac", np.tile(load_audio(long_form["path"]), 3))
    clips = _clips(speech, folder, ("260-123286-0001.wav", "61-70968-0000.wav"))
    process = subprocess.Popen(["dw", "transcribe", str(folder), "-o", str(tmp_path / "out"), "--workers", "1",
                                "--batch-size", "1", *MODEL], env=dw_env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    deadline = __import__("time").monotonic() + WAIT_S
    while not psutil.Process(process.pid).children(recursive=True):
        assert process.poll() is None and __import__("time").monotonic() < deadline
    __import__("time").sleep(3.0)  # the worker is well into the long file
    for child in psutil.Process(process.pid).children(recursive=True):
        child.kill()
    _, stderr = process.communicate(timeout=WAIT_S)
    assert process.returncode == 0, stderr.decode()
    assert not [line for line in stderr.decode().splitlines() if line.startswith("Error:")]
    for path in [folder / "0-long.flac", *clips]:
        assert (tmp_path / "out" / f"{path.stem}.txt").read_text().strip()


# -- through the command line, one batch ----------------------------------------------------
def _exact_usage_error(dw_env, args, error):
    result = subprocess.run(["dw", "transcribe", *args], env=dw_env, capture_output=True, timeout=WAIT_S,
                            stdin=subprocess.DEVNULL)
    assert (result.returncode, result.stderr.decode()) == (2, f"Error: {error}\n")


def test_a_closed_standard_input_is_one_line(dw_env):
    result = subprocess.run(["sh", "-c", "dw transcribe - --model offline:tiny.en <&-"], env=dw_env,
                            capture_output=True, timeout=WAIT_S)
    assert result.returncode == 1
    assert result.stderr.decode().splitlines()[0] == "Error: <stdin>: standard input is closed"


def test_a_batch_of_bad_inputs_beside_good_ones(speech, dw_env, tmp_path):
    source = tmp_path / "in"
    good = _clips(speech, source, ("jfk.flac", "260-123286-0001.wav"))
    jfk = speech["jfk.flac"]["path"].read_bytes()
    odd = tmp_path / "odd"
    odd.mkdir()
    named = {
        "non-utf8": odd / os.fsdecode(b"caf\xe9.flac"),
        "long name": odd / ("l" * 240 + ".flac"),
        "dot dot": odd / "..wav",
        "newline": odd / "new\nline.flac",
    }
    for path in named.values():
        shutil.copy(speech["61-70968-0000.wav"]["path"], path)
    same_a, same_b = tmp_path / "a/talk.flac", tmp_path / "b/talk.flac"
    for path in (same_a, same_b):
        path.parent.mkdir()
        shutil.copy(speech["260-123286-0001.wav"]["path"], path)
    bad = {
        "truncated": _touch(odd / "truncated.flac", jfk[:20_000]),
        "garbage": _touch(odd / "garbage.flac", jfk[:8192] + os.urandom(100_000)),
        "not media": _touch(odd / "notes.mp3", b"not audio at all" * 64),
    }
    (odd / "empty.wav").mkdir()
    (odd / "loop.wav").symlink_to(odd / "loop.wav")
    listing = tmp_path / "list"
    entries = [*map(str, good), *map(str, named.values()), str(same_a), str(same_b), *map(str, bad.values()),
               str(odd / "empty.wav"), str(odd / "loop.wav"), str(odd / ("x" * 300 + ".wav")), str(odd / "missing.wav")]
    listing.write_bytes(b"\0".join(os.fsencode(entry) for entry in entries) + b"\0")
    out = tmp_path / "out"
    before = {path for path in tmp_path.rglob("*")}
    result = subprocess.run(["dw", "transcribe", "--from-list", str(listing), "-0", "-o", str(out), "--format",
                             "txt,json", *MODEL], env=dw_env, capture_output=True, timeout=WAIT_S)
    stderr = result.stderr.decode(errors="replace")
    assert result.returncode == 1, stderr
    errors = sorted(line for line in stderr.splitlines() if line.startswith("Error:"))
    assert errors == sorted([
        f"Error: {bad['truncated']}: decoded 0.1 s of the 11.0 s its container declares (truncated, damaged or "
        "still being written); --allow-partial transcribes what there is",
        f"Error: {bad['garbage']}: decoded 0.0 s of the 11.0 s its container declares (truncated, damaged or "
        "still being written); --allow-partial transcribes what there is",
        f"Error: {bad['not media']}: cannot read media (Invalid data found when processing input)",
        f"Error: {odd / 'empty.wav'}: folder with no media files in it",
        f"Error: {odd / 'loop.wav'}: symbolic link loop",
        f"Error: {odd / ('x' * 300 + '.wav')}: file name too long",
        f"Error: {odd / 'missing.wav'}: no such file or directory",
    ]), stderr
    assert all("\n" not in line for line in stderr.splitlines())  # the newline name is quoted
    assert f"'{odd}/new\\nline.flac'" in stderr
    written = sorted(path.relative_to(out) for path in out.rglob("*") if path.is_file() and path.suffix == ".txt")
    assert len(written) == 2 + len(named) + 2  # every good input, each its own outputs
    for path in out.rglob("*.txt"):
        assert path.read_text(errors="replace").strip(), path
    for path in out.rglob("*.json"):
        if path.name.startswith("."):
            continue  # the --skip-existing record
        data = json.loads(path.read_bytes())
        assert os.path.exists(os.fsencode(data["source"]))  # names round-trip, even not UTF-8
    assert not list(out.rglob("*.part"))
    outside = {path for path in tmp_path.rglob("*") if not path.is_relative_to(out)} - before
    assert outside == set()


def test_a_process_substitution_and_a_fifo_are_read_as_streams(jfk, dw_env, tmp_path):
    substitution = subprocess.run(["bash", "-c", f"dw transcribe <(cat '{jfk['path']}') --stdout --model offline:tiny.en"],
                                  env=dw_env, capture_output=True, timeout=WAIT_S)
    assert substitution.returncode == 0, substitution.stderr.decode()
    assert "fellow americans" in substitution.stdout.decode().lower()
    fifo = tmp_path / "live.flac"
    os.mkfifo(fifo)
    writer = subprocess.Popen(["sh", "-c", f"cat '{jfk['path']}' > '{fifo}'"])
    result = subprocess.run(["dw", "transcribe", str(fifo), "-o", str(tmp_path / "out"), *MODEL], env=dw_env,
                            capture_output=True, timeout=WAIT_S)
    writer.wait(timeout=WAIT_S)
    assert result.returncode == 0, result.stderr.decode()
    assert "fellow americans" in (tmp_path / "out" / "live.txt").read_text().lower()
    assert not (tmp_path / "out" / ".live.dw.json").exists()  # a stream cannot be checked again: no record


def test_allow_partial_transcribes_a_truncated_file_and_marks_it(speech, dw_env, tmp_path):
    source = speech["librispeech_test-other_3080-5032-0000_to_0009.flac"]["path"]
    cut = tmp_path / "cut.flac"
    cut.write_bytes(source.read_bytes()[: source.stat().st_size * 2 // 5])
    result = subprocess.run(["dw", "transcribe", str(cut), "--allow-partial", "--format", "json", "-o",
                             str(tmp_path / "out"), *MODEL], env=dw_env, capture_output=True, timeout=WAIT_S)
    stderr = result.stderr.decode()
    assert result.returncode == 0, stderr
    data = json.loads((tmp_path / "out/cut.json").read_text())
    decoding = data["decoding"]
    assert decoding["partial"] is True and 30 < decoding["decoded_s"] < 0.5 * decoding["declared_s"], decoding
    assert len(data["text"].split()) > 50
    assert (f"dw: note: {cut}: transcribed {decoding['decoded_s']:.1f} s of the {decoding['declared_s']:.1f} s its "
            "container declares (marked partial in JSON)") in stderr
