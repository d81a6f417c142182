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

from recorder import Recorder
from dwcli.discover import discover
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
def _clips(speech, folder: Path, names=("jfk.flac", "260-123286-0001.wav", "61-70968-0000.wav")) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    return [Path(shutil.copy(speech[name]["path"], folder / name)) for name in names]


def test_a_full_disk_stops_the_batch_and_says_so_once(engine, speech, tmp_path, monkeypatch):
    import dwcli.sinks as sinks

    paths = _clips(speech, tmp_path / "in")

    def full(path, text):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(sinks, "write_atomic", full)
    reporter = Recorder()
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
    reporter = Recorder()
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


# -- media as it comes (issue 28): real videos, odd WAVs, folders as users keep them ----------
def _json_lines(stderr: bytes) -> list[dict]:
    """Every stderr line of a --log-json run, parsed: a plain line (a warning, a traceback)
    fails the test here."""
    return [json.loads(line) for line in stderr.decode().splitlines()]


def _errors(events: list[dict]) -> list[str]:
    return sorted(event["error"] for event in events if event["event"] == "file" and event["status"] == "failed")


def _statuses(events: list[dict]) -> dict[str, str]:
    return {event["source"]: event["status"] for event in events if event["event"] == "file"}


@pytest.fixture(scope="module")
def clips(speech):
    from dwcli.audio import load_audio

    return {"jfk": load_audio(speech["jfk.flac"]["path"]), "other": load_audio(speech["61-70968-0000.wav"]["path"])}


def _media_folder(root: Path, clips) -> dict[str, Path]:
    """A folder as a user with real videos keeps it, and two WAVs named like outputs."""
    import struct

    import numpy as np

    from conftest import wav_bytes
    from media import audio_file, float_wav, video_with_audio

    folder, named = root / "in", root / "named"
    folder.mkdir()
    named.mkdir()
    jfk, other = clips["jfk"], clips["other"]
    head = jfk[: 4 * 16000]  # "And so my fellow Americans"
    poisoned = head.copy()
    poisoned[16000], poisoned[2 * 16000] = np.nan, np.inf
    paths = {
        "late": video_with_audio(folder / "late.mp4", [jfk], 16.0, audio_start_s=4.94),
        "short": video_with_audio(folder / "short.mkv", [head], 8.0),
        "tracks": video_with_audio(folder / "tracks.mkv", [head, other[: 4 * 16000]], 4.0),
        "nan": float_wav(folder / "nan.wav", poisoned),
        "streamed": folder / "streamed.wav",
        "cut": folder / "cut.wav",
        "lie": folder / "lie.wav",
        "gone": folder / "gone.wav",
        "loop": folder / "loop.mp3",
        "notes": named / "notes.txt",
        "clip": named / "clip.json",
    }
    paths["streamed"].write_bytes(wav_bytes(head, streamed=True))
    whole = wav_bytes(head)
    paths["cut"].write_bytes(whole[: len(whole) // 2])  # a copy cut short (head -c)
    lie = bytearray(whole)
    lie[40:44] = struct.pack("<I", 60 * 16000 * 2)  # the data chunk says 60 s
    paths["lie"].write_bytes(bytes(lie))
    for extension, codec, container in [("m4b", "aac", "mp4"), ("ogv", "libopus", "ogg"), ("3gpp", "aac", "3gp"),
                                        ("mpga", "libmp3lame", "mp3")]:
        paths[extension] = audio_file(folder / f"book.{extension}", head, codec, container,
                                      rate=48000 if codec == "libopus" else 16000)
    for name, text in [("readme.txt", "not media\n"), ("talk.srt", "1\n00:00:00,000 --> 00:00:01,000\nhi\n"),
                       ("cover.jpg", "\xff\xd8\xff"), ("data.json", "{}")]:
        (folder / name).write_text(text)
    paths["gone"].symlink_to(folder / "nowhere.wav")
    paths["loop"].symlink_to(paths["loop"])
    paths["notes"].write_bytes(wav_bytes(other[: 3 * 16000]))
    paths["clip"].write_bytes(wav_bytes(other[: 3 * 16000]))
    return paths


def _cue_starts(path: Path) -> list[float]:
    """Start of each cue of an SRT or VTT file, in seconds."""
    import re

    starts = re.findall(r"^(\d\d):(\d\d):(\d\d)[,.](\d\d\d) -->", path.read_text(), flags=re.M)
    return [int(h) * 3600 + int(m) * 60 + int(s) + int(ms) / 1000 for h, m, s, ms in starts]


def test_media_as_it_comes_in_one_batch(clips, dw_env, tmp_path):
    """Issue 28's cases in one run (and a --skip-existing rerun): no input written over,
    subtitles on the video's clock, truncation judged by the audio's own header, every
    audio and video container of a folder found and nothing else, broken links said, a
    poisoned sample cleaned, several audio tracks said, and every stderr line JSON though
    --workers asks for more processes than there are cores."""
    from dwcli.devices import cores_for_this_process

    paths = _media_folder(tmp_path, clips)
    originals = {key: paths[key].read_bytes() for key in ("notes", "clip")}
    command = ["dw", "transcribe", "in", "named/notes.txt", "named/clip.json", "--format", "all", "--log-json",
               "--workers", "64", *MODEL]
    result = subprocess.run(command, env=dw_env, capture_output=True, timeout=WAIT_S, cwd=tmp_path)
    events = _json_lines(result.stderr)
    assert result.returncode == 1, result.stderr.decode()
    declared = "its container declares (truncated, damaged or still being written); --allow-partial transcribes what there is"
    assert _errors(events) == sorted([
        "in/gone.wav: broken symbolic link",  # (6) inside a folder too
        "in/loop.mp3: symbolic link loop",
        f"in/cut.wav: decoded 2.0 s of the 4.0 s {declared}",  # (4) the WAV header's own size
        f"in/lie.wav: decoded 4.0 s of the 60.0 s {declared}",
    ])
    ok = {source for source, status in _statuses(events).items() if status == "ok"}
    # (9) every container a folder holds, nothing that is not media; (8) the MKV whose audio
    # ends before its pictures is whole.
    assert ok == {"in/late.mp4", "in/short.mkv", "in/tracks.mkv", "in/nan.wav", "in/streamed.wav", "in/book.m4b",
                  "in/book.ogv", "in/book.3gpp", "in/book.mpga", "named/notes.txt", "named/clip.json"}
    notes = [event["message"] for event in events if event["event"] == "note"]
    expected = [
        "in/nan.wav: 2 sample(s) that were not numbers (NaN) or infinite replaced by silence or full scale",  # (2)
        "in/tracks.mkv: transcribed audio track 0 of its 2 (counted from 0; --audio-track N picks another)",  # (7)
    ]
    cores = cores_for_this_process()
    if cores < 13:  # (12) more files to decode than cores: the cap is said (else one process per file)
        expected.insert(0, f"--workers 64: {cores} decoding process(es), one per CPU core this process may use")
    assert notes == expected
    # (1) the inputs named like outputs are untouched; their outputs keep the full name.
    assert {key: paths[key].read_bytes() for key in ("notes", "clip")} == originals
    for key in ("notes", "clip"):
        assert "confused complaint" in Path(f"{paths[key]}.txt").read_text()
        assert json.loads(Path(f"{paths[key]}.json").read_text())["source"] == f"named/{paths[key].name}"
    # (3) the video's clock: the audio starts 4.94 s after the pictures, the file lasts 16 s.
    late = json.loads((tmp_path / "in/late.json").read_text())
    assert late["duration"] == 16.0 and 5.0 < late["segments"][0]["start"] < 5.6, late
    assert late["decoding"] == {"audio_start_s": pytest.approx(4.94, abs=0.07)}
    for subtitles in ("late.srt", "late.vtt"):
        assert _cue_starts(tmp_path / "in" / subtitles)[0] == late["segments"][0]["start"]
    tsv = (tmp_path / "in/late.tsv").read_text().splitlines()
    assert int(tsv[1].split("\t")[0]) == round(late["segments"][0]["start"] * 1000)
    short = json.loads((tmp_path / "in/short.json").read_text())
    assert short["duration"] == 8.0 and "fellow americans" in short["text"].lower()
    # (2) the poisoned samples did not poison the file; (7) the default track, recorded.
    nan = json.loads((tmp_path / "in/nan.json").read_text())
    assert nan["decoding"] == {"non_finite_samples_replaced": 2} and "fellow americans" in nan["text"].lower()
    tracks = json.loads((tmp_path / "in/tracks.json").read_text())
    assert tracks["decoding"] == {"audio_track": 0, "audio_tracks": 2} and "fellow" in tracks["text"].lower()
    for extension in ("m4b", "ogv", "3gpp", "mpga"):
        assert "fellow americans" in (tmp_path / f"in/book.{extension}.txt").read_text().lower()
    assert sorted(path.name for path in (tmp_path / "in").iterdir()
                  if path.name.startswith(("readme", "talk", "cover", "data"))) == [
        "cover.jpg", "data.json", "readme.txt", "talk.srt"]  # not taken for media: no outputs

    # (5) New content of the same length with the old time put back is done again.
    before = os.stat(paths["streamed"])
    from conftest import wav_bytes

    paths["streamed"].write_bytes(wav_bytes(clips["other"][: 4 * 16000], streamed=True))
    os.utime(paths["streamed"], ns=(before.st_atime_ns, before.st_mtime_ns))
    assert os.stat(paths["streamed"]).st_size == before.st_size
    again = subprocess.run([*command, "--skip-existing"], env=dw_env, capture_output=True, timeout=WAIT_S,
                           cwd=tmp_path)
    events = _json_lines(again.stderr)
    statuses = _statuses(events)
    assert again.returncode == 1 and statuses["in/streamed.wav"] == "ok", again.stderr.decode()
    assert {source for source, status in statuses.items() if status == "skipped"} == ok - {"in/streamed.wav"}
    assert "confused complaint" in (tmp_path / "in/streamed.txt").read_text()


def test_an_audio_track_is_chosen_or_refused(clips, dw_env, tmp_path):
    """--audio-track 1 reads the second track (no note: the user chose it); a file without one
    fails, saying what it has."""
    from media import video_with_audio

    video = video_with_audio(tmp_path / "talk.mkv", [clips["jfk"][: 4 * 16000], clips["other"][: 4 * 16000]], 4.0)
    single = video_with_audio(tmp_path / "solo.mp4", [clips["jfk"][: 4 * 16000]], 4.0)
    result = subprocess.run(["dw", "transcribe", str(video), str(single), "--audio-track", "1", "-f", "json", *MODEL],
                            env=dw_env, capture_output=True, timeout=WAIT_S)
    stderr = result.stderr.decode()
    assert result.returncode == 1, stderr
    assert [line for line in stderr.splitlines() if line.startswith("Error:")] == [
        f"Error: {single}: no audio track 1; it has 1 audio track (--audio-track 0)"]
    assert "transcribed audio track" not in stderr  # the user picked it: JSON records it, no note
    data = json.loads((tmp_path / "talk.json").read_text())
    assert data["decoding"] == {"audio_track": 1, "audio_tracks": 2} and "confused" in data["text"]


def test_sequential_subtitles_are_on_the_videos_clock_too(engine, clips, tmp_path):
    from media import video_with_audio

    video = video_with_audio(tmp_path / "late.mp4", [clips["jfk"]], 16.0, audio_start_s=4.94)
    files = discover([str(video)], tmp_path / "out", ("srt", "json")).files
    options = TranscribeOptions(formats=("srt", "json"), batch_size=2, workers=0, long_form="sequential")
    summary = transcribe_files(files, engine, options, Recorder())
    assert summary.ok == 1
    data = json.loads((tmp_path / "out/late.json").read_text())
    assert data["duration"] == 16.0 and 5.0 < data["segments"][0]["start"] < 5.6, data
    assert _cue_starts(tmp_path / "out/late.srt")[0] == data["segments"][0]["start"]


def test_a_window_the_model_raises_on_fails_only_its_file(engine, speech, tmp_path):
    """The model's sampler refuses NaN (``probability tensor contains either inf, nan``):
    a batch holding such a window is tried again file by file, and only its file fails."""
    import torch

    from dwcli.decoding import DecodingOptions
    from dwcli.sources import Reading, WindowItem
    from dwcli.workers import file_items

    paths = _clips(speech, tmp_path / "in", ("jfk.flac", "61-70968-0000.wav"))
    files = discover([str(path) for path in paths], tmp_path / "out").files
    poisoned = next(index for index, media in enumerate(files) if media.source.endswith(".wav"))
    items = []
    for index, media in enumerate(files):
        for item in file_items(index, media, Reading("chunked", engine.n_mels)):
            if isinstance(item, WindowItem) and index == poisoned:
                item.features[:] = torch.nan
            items.append(item)
    # 16 tokens: the greedy pass over the poisoned window (decoded twice: in the batch, then
    # alone) is short, and the fallback's sampler meets the NaN as in a full run.
    options = TranscribeOptions(batch_size=4, workers=0, decoding=DecodingOptions(timestamps=False, max_new_tokens=16))
    reporter = Recorder()
    summary = transcribe_files(files, engine, options, reporter, stream=iter(items))
    assert (summary.ok, summary.failed) == (1, 1)
    [failed] = [outcome for outcome in reporter.outcomes if outcome.status == "failed"]
    assert failed.message == (f"{files[poisoned].label}: the model failed on it (RuntimeError: probability tensor "
                              "contains either `inf`, `nan` or element < 0)")
    assert "fellow americans" in files[1 - poisoned].output_path("txt").read_text().lower()


def test_an_output_dir_that_is_a_file_is_a_usage_error(dw_env, tmp_path):
    taken = tmp_path / "subs.txt"
    taken.write_text("my notes\n")
    _exact_usage_error(dw_env, ["x.wav", "-o", str(taken)], f"--output-dir {taken}: a file, not a folder")
    _exact_usage_error(dw_env, ["x.wav", "-o", str(taken / "srt")], f"--output-dir {taken / 'srt'}: {taken} is a "
                                                                     "file, not a folder")
    assert taken.read_text() == "my notes\n"


@pytest.mark.parametrize("place", ["a file", "read-only", "HOME a file"])
def test_an_unusable_model_cache_is_one_line(jfk, dw_env, tmp_path, place):
    env = {key: value for key, value in dw_env.items() if key not in ("DW_CACHE_DIR", "XDG_CACHE_HOME")}
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    if place == "a file":
        env["DW_CACHE_DIR"] = cache = str(blocker)
        reason = "Not a directory"
    elif place == "read-only":
        if os.geteuid() == 0:  # root writes through permissions: sysfs refuses even root
            env["DW_CACHE_DIR"] = cache = "/sys/dw-cache"
            reason = "Operation not permitted"
        else:
            (tmp_path / "locked").mkdir(mode=0o555)
            env["DW_CACHE_DIR"] = cache = str(tmp_path / "locked")
            reason = "Permission denied"
    else:
        env["HOME"] = str(blocker)
        cache = f"{blocker}/.cache/dw"
        reason = "Not a directory"
    result = subprocess.run(["dw", "transcribe", str(jfk["path"]), "-o", str(tmp_path / "out"), *MODEL], env=env,
                            capture_output=True, timeout=WAIT_S)
    assert (result.returncode, result.stderr.decode()) == (3, (
        f"Error: cannot write the converted model into dw's cache {cache} ({reason}); set DW_CACHE_DIR to a folder "
        "dw can write to\n"))


def test_workers_are_capped_at_the_usable_cores():
    assert TranscribeOptions(workers=64).for_device("cpu", cores=2).workers == 2
    assert TranscribeOptions(workers=2).for_device("cuda:0", cores=16).workers == 2
    assert TranscribeOptions(workers=0).for_device("cpu", cores=2).workers == 0
