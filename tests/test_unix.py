"""dw as a Unix citizen, through the real executable: pipes, lists, signals, cron.

Every transcription here runs the real tiny.en model on real speech in a subprocess, so what
is checked is what a shell sees: exit statuses, what lands on stdout (only the result), and
what lands on stderr (plain lines or JSON, never terminal control codes).
"""

from __future__ import annotations

import json
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pysrt
import pytest

from conftest import wav_bytes, word_error_rate
from dwcli import __version__

README = Path(__file__).resolve().parent.parent / "README.md"
MODEL = ["--model", "offline:tiny.en"]
CLIP = "260-123286-0001.wav"  # 5 s: "THE HORIZON SEEMS EXTREMELY DISTANT"
ANSI = "\x1b["
WAIT_S = 120  # at most this long for a subprocess to reach a point (a loaded CI machine)


def dw(*args: str, env: dict, input: bytes | None = None, cwd=None, timeout=WAIT_S) -> subprocess.CompletedProcess:
    return subprocess.run(["dw", *args], env=env, input=input, cwd=cwd, capture_output=True, timeout=timeout)


def shell(command: str, env: dict, cwd) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-o", "pipefail", "-c", command], env=env, cwd=cwd, capture_output=True,
                          timeout=WAIT_S)


def _json_lines(stderr: bytes) -> list[dict]:
    """The file and summary events; every stderr line must be one JSON object (--log-json)."""
    events = [json.loads(line) for line in stderr.decode().splitlines()]
    assert all(isinstance(event, dict) and "event" in event for event in events)
    return [event for event in events if event["event"] != "note"]


def test_flac_piped_in_gives_only_srt_on_stdout(jfk, dw_env, tmp_path):
    env = {**dw_env, "TERM": "xterm-256color"}  # a colour terminal type, but stderr is a pipe
    result = shell(f"cat {shlex.quote(str(jfk['path']))} | dw transcribe - --format srt "
                   f"--model offline:tiny.en > out.srt", env, tmp_path)
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout == b""
    cues = pysrt.open(str(tmp_path / "out.srt"))
    assert len(cues) >= 1 and "fellow americans" in cues.text.lower()
    assert (tmp_path / "out.srt").read_text().startswith("1\n00:00:00,")  # nothing but the SRT
    stderr = result.stderr.decode()
    assert ANSI not in stderr and "\r" not in stderr
    assert stderr.splitlines()[-2].startswith("dw: [1/1] done <stdin> -> stdout (0:11 of audio)")
    assert stderr.splitlines()[-1].startswith("dw: 1 ok, 0 skipped, 0 failed;")
    assert list(tmp_path.iterdir()) == [tmp_path / "out.srt"]  # no record, no stdin.srt


def test_results_on_stdout_survive_a_reader_that_leaves_or_a_full_disk(jfk, dw_env, tmp_path):
    """dw ends by flushing its streams itself (then skips the interpreter's teardown): a
    reader that stops early is not an error; a full disk behind ``>`` is, in one line."""
    source = shlex.quote(str(jfk["path"]))
    early = shell(f"dw transcribe {source} --stdout --model offline:tiny.en | head -c 3", dw_env, tmp_path)
    assert early.returncode == 0, early.stderr.decode()
    assert early.stdout == b"And"
    assert "Traceback" not in early.stderr.decode() and "Exception ignored" not in early.stderr.decode()
    if not Path("/dev/full").exists():
        return
    full = shell(f"dw transcribe {source} --stdout --model offline:tiny.en > /dev/full", dw_env, tmp_path)
    assert full.returncode == 1
    assert f"Error: {jfk['path']}: cannot write output (No space left on device)" in full.stderr.decode()
    assert "Traceback" not in full.stderr.decode()


def test_wav_piped_in_as_ffmpeg_writes_it_with_json_log(speech, dw_env, tmp_path):
    """``ffmpeg -f wav -`` leaves the WAV sizes unknown; read from a real (unseekable) pipe."""
    from dwcli.audio import load_audio

    (tmp_path / "clip.wav").write_bytes(wav_bytes(load_audio(speech[CLIP]["path"]), streamed=True))
    result = shell("cat clip.wav | dw transcribe - --format txt --log-json --model offline:tiny.en", dw_env, tmp_path)
    assert result.returncode == 0, result.stderr.decode()
    assert word_error_rate(speech[CLIP]["text"], result.stdout.decode()) == 0.0
    events = _json_lines(result.stderr)
    assert [event["event"] for event in events] == ["file", "summary"]
    assert events[0]["status"] == "ok" and events[0]["duration_s"] == pytest.approx(5.0, abs=0.05)
    assert (events[1]["ok"], events[1]["skipped"], events[1]["failed"]) == (1, 0, 0)


def test_find_print0_into_from_list(speech, dw_env, tmp_path):
    folder = tmp_path / "odd names"
    folder.mkdir()
    shutil.copy(speech[CLIP]["path"], folder / "a clip.wav")
    shutil.copy(speech["61-70968-0000.wav"]["path"], folder / "new\nline.wav")
    (folder / "notes.txt").write_text("not media")
    result = shell("find 'odd names' -name '*.wav' -print0 | dw transcribe --from-list - -0 "
                   "--format txt --model offline:tiny.en --log-json", dw_env, tmp_path)
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout == b""
    assert word_error_rate(speech[CLIP]["text"], (folder / "a clip.txt").read_text()) == 0.0
    assert word_error_rate(speech["61-70968-0000.wav"]["text"], (folder / "new\nline.txt").read_text()) <= 0.1
    assert _json_lines(result.stderr)[-1]["ok"] == 2


def _wait_for(predicate, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + WAIT_S
    while not predicate():
        assert process.poll() is None, process.communicate()[1].decode()
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def _batch(speech, folder: Path, copies: int) -> list[Path]:
    folder.mkdir()
    for index in range(copies):
        shutil.copy(speech[CLIP]["path"], folder / f"clip{index}.wav")
    return sorted(folder.glob("*.wav"))


def test_rerun_after_kill_9_redoes_only_unfinished_files(speech, dw_env, tmp_path):
    videos = tmp_path / "videos"
    sources = _batch(speech, videos, 3)
    args = ["transcribe", str(videos), "--format", "srt,txt", "--batch-size", "1", "--workers", "0",
            "--log-json", *MODEL]
    process = subprocess.Popen(["dw", *args], env=dw_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _wait_for(lambda: any(videos.glob(".*.dw.json")), process)
    process.send_signal(signal.SIGKILL)
    process.communicate()
    assert process.returncode == -signal.SIGKILL

    finished = {str(path) for path in sources if (videos / f".{path.stem}.dw.json").exists()}
    assert 1 <= len(finished) < len(sources), finished
    rerun = dw(*args, "--skip-existing", env=dw_env)
    assert rerun.returncode == 0, rerun.stderr.decode()
    events = _json_lines(rerun.stderr)
    by_status = {status: {e["source"] for e in events if e.get("status") == status} for status in ("ok", "skipped")}
    assert by_status == {"skipped": finished, "ok": {str(path) for path in sources} - finished}
    assert (events[-1]["ok"], events[-1]["skipped"], events[-1]["failed"]) == (len(sources) - len(finished),
                                                                              len(finished), 0)
    for path in sources:
        assert "horizon" in path.with_suffix(".txt").read_text().lower()
        assert "horizon" in pysrt.open(str(path.with_suffix(".srt"))).text.lower()
    assert not list(videos.glob("*.part"))

    # A third run, for one of the formats, has nothing to do.
    again = dw("transcribe", str(videos), "--format", "txt", "--skip-existing", *MODEL, env=dw_env)
    assert again.returncode == 0, again.stderr.decode()
    assert again.stderr.decode().splitlines()[-1] == f"dw: 0 ok, {len(sources)} skipped, 0 failed"


@pytest.mark.parametrize("sent, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"])
def test_a_signal_ends_the_run_cleanly(speech, dw_env, tmp_path, sent, status):
    """Ctrl-C, or the SIGTERM cron, systemd and kill send: the finished file is kept, the
    decoding worker stops with dw, one line says so, and the exit status says which."""
    import psutil

    videos = tmp_path / "videos"
    _batch(speech, videos, 1)
    # Two long files after the short one: once the short one is written, the run still has
    # minutes of work, so the signal always lands mid-run, however loaded the machine.
    long_form = next(entry for entry in speech.values() if entry.get("segments_file"))
    for name in ("long1.flac", "long2.flac"):
        shutil.copy(long_form["path"], videos / name)
    # SIGINT's default action restored in dw's process, as a terminal's Ctrl-C finds it: a
    # shell starts background jobs (``pytest &``, some CI runners) with SIGINT ignored, and
    # dw, like any program, inherits that.
    process = subprocess.Popen(["dw", "transcribe", str(videos), "--batch-size", "1", "--workers", "1", *MODEL],
                               env=dw_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    _wait_for(lambda: any(videos.glob("*.txt")), process)
    children = psutil.Process(process.pid).children(recursive=True)
    assert children  # the decoding worker
    process.send_signal(sent)
    stdout, stderr = process.communicate(timeout=WAIT_S)
    assert process.returncode == status, stderr.decode()
    assert stdout == b""
    assert stderr.decode().splitlines()[-1] == f"dw: interrupted ({sent.name}); finished files are kept"
    assert "Traceback" not in stderr.decode()
    _, alive = psutil.wait_procs(children, timeout=10)
    assert not alive
    assert not list(videos.glob(".*.part"))


def test_workers_die_with_a_killed_dw(speech, dw_env, tmp_path):
    """kill -9 leaves no decoding worker behind (each asks the kernel to end it with its parent)."""
    import psutil

    videos = tmp_path / "videos"
    _batch(speech, videos, 1)
    long_form = next(entry for entry in speech.values() if entry.get("segments_file"))
    shutil.copy(long_form["path"], videos / "long.flac")
    process = subprocess.Popen(["dw", "transcribe", str(videos), "--batch-size", "1", "--workers", "1", *MODEL],
                               env=dw_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_for(lambda: psutil.Process(process.pid).children(recursive=True), process)
    children = psutil.Process(process.pid).children(recursive=True)
    process.kill()
    process.wait(timeout=WAIT_S)
    _, alive = psutil.wait_procs(children, timeout=10)
    assert not alive


@pytest.mark.parametrize("args, status, error", [
    (["--format", "xyz"], 2, "Error: --format xyz: unknown format xyz; choose from txt, srt, vtt, json, tsv, rttm or all\n"),
    (["--model", "/nonexistent"], 3, "Error: model /nonexistent: no such checkpoint directory\n"),
])
def test_exit_statuses_of_the_executable(jfk, dw_env, args, status, error):
    result = dw("transcribe", str(jfk["path"]), *args, env=dw_env)
    assert (result.returncode, result.stderr.decode(), result.stdout) == (status, error, b"")


def test_version_names_dw_torch_onnxruntime_and_ffmpeg(dw_env):
    result = dw("--version", env=dw_env)
    assert result.returncode == 0
    lines = result.stdout.decode().splitlines()
    assert lines[0] == f"dw {__version__}"
    assert [line.split()[0] for line in lines] == ["dw", "torch", "onnxruntime", "FFmpeg"]
    assert all(len(line.split()) >= 2 for line in lines)


# Runs dw's entry point, then says on stderr which heavy libraries got imported.
# dw's main() ends with os._exit after the atexit handlers: the probe reports from one.
_PROBE = """
import atexit, json, sys
sys.argv = ["dw"] + sys.argv[1:]
from dwcli.cli import main

def report():
    heavy = sorted({name.split(".")[0] for name in sys.modules} & {"torch", "transformers", "numpy", "av",
                                                                   "onnxruntime", "onnx"})
    print(json.dumps(heavy), file=sys.stderr, flush=True)

atexit.register(report)
main()
"""


# Says, on stderr, the OMP_WAIT_POLICY torch's OpenMP found when torch was first imported.
_WAIT_POLICY_PROBE = """
import os, sys
class Probe:
    def find_spec(self, name, path=None, target=None):
        if name == "torch":
            print("OMP_WAIT_POLICY at torch import:", os.environ.get("OMP_WAIT_POLICY"), file=sys.stderr, flush=True)
            sys.meta_path.remove(self)
        return None
sys.meta_path.insert(0, Probe())
sys.argv = ["dw"] + sys.argv[1:]
from dwcli.cli import main
main()
"""


def test_openmp_threads_sleep_when_idle_from_the_first_import_of_torch(dw_env, jfk, tmp_path):
    """dw asks OpenMP for passive waits (idle threads sleep) before torch loads it: asked
    later, it was ignored, and on a shared CPU spinning threads tripled dw's CPU time."""
    env = {key: value for key, value in dw_env.items() if key != "OMP_WAIT_POLICY"}
    result = subprocess.run([sys.executable, "-c", _WAIT_POLICY_PROBE, "transcribe", str(jfk["path"]), "-o",
                             str(tmp_path), *MODEL], env=env, capture_output=True, timeout=WAIT_S)
    assert result.returncode == 0, result.stderr.decode()
    assert "OMP_WAIT_POLICY at torch import: PASSIVE" in result.stderr.decode()
    assert (tmp_path / "jfk.txt").read_text().strip()


@pytest.mark.parametrize("args, env", [
    (["--help"], {}),
    (["transcribe", "--help"], {}),
    ([], {"_DW_COMPLETE": "complete_bash", "COMP_WORDS": "dw transcribe --for", "COMP_CWORD": "2"}),
], ids=["help", "transcribe-help", "completion"])
def test_help_and_completion_import_no_heavy_library(dw_env, args, env):
    result = subprocess.run([sys.executable, "-c", _PROBE, *args], env={**dw_env, **env}, capture_output=True,
                            timeout=WAIT_S)
    assert json.loads(result.stderr.decode().splitlines()[-1]) == [], result.stderr.decode()
    assert result.stdout  # help, or the completion answer
    if env:
        assert result.stdout.decode().split() == ["--format"]


def test_crontab_line_from_readme(speech, dw_env, tmp_path):
    """The README's crontab line, run as cron runs it: /bin/sh, a bare environment, no terminal."""
    line = next(line.strip() for line in README.read_text().splitlines() if line.strip().startswith("0 3 * * * "))
    command = line.split(maxsplit=5)[5]
    log = tmp_path / "dw.log"
    assert "cd /data" in command and "/var/log/dw.log" in command
    command = (command.replace("cd /data", f"cd {shlex.quote(str(tmp_path))}").replace("/var/log/dw.log", str(log))
               .replace("/tmp/dw-videos.lock", str(tmp_path / "dw.lock")))
    videos = tmp_path / "videos"
    _batch(speech, videos, 1)
    cron_env = {"PATH": dw_env["PATH"], "HOME": str(tmp_path), "SHELL": "/bin/sh", "LOGNAME": "cron",
                "DW_CACHE_DIR": dw_env["DW_CACHE_DIR"], "HF_HUB_OFFLINE": "1"}
    for night in range(2):
        result = subprocess.run(["/bin/sh", "-c", command], env=cron_env, stdin=subprocess.DEVNULL,
                                capture_output=True, timeout=WAIT_S)
        assert (result.returncode, result.stdout, result.stderr) == (0, b"", b""), result
    events = _json_lines(log.read_bytes())
    assert [(e["event"], e.get("status")) for e in events] == [
        ("file", "ok"), ("summary", None), ("file", "skipped"), ("summary", None)]
    assert "horizon" in pysrt.open(str(videos / "clip0.srt")).text.lower()


def test_a_decoding_worker_keeps_a_lost_handover_off_the_terminal(capsys, monkeypatch):
    """An interrupted dw can stop reading while a worker hands it a tensor; the worker's
    hand-over thread then fails with ConnectionResetError (CI saw it printed after dw's last
    line).  Workers say nothing of it, one line of anything else, everything with DW_DEBUG=1."""
    from dwcli.workers import _worker_excepthook

    def raised(error):
        try:
            raise error
        except BaseException as caught:
            return type(caught), caught, caught.__traceback__

    monkeypatch.delenv("DW_DEBUG", raising=False)
    _worker_excepthook(*raised(ConnectionResetError(104, "Connection reset by peer")))
    _worker_excepthook(*raised(EOFError()))
    assert capsys.readouterr().err == ""
    _worker_excepthook(*raised(ValueError("odd")))
    assert capsys.readouterr().err == "dw: decoding worker: ValueError: odd\n"
    monkeypatch.setenv("DW_DEBUG", "1")
    _worker_excepthook(*raised(ConnectionResetError(104, "Connection reset by peer")))
    assert "Traceback" in capsys.readouterr().err


@pytest.mark.parametrize("command, message", [
    ("dw transcribe --log-json --no-such-option x.wav", "No such option: --no-such-option"),
    ("DW_LOG_JSON=1 dw transcribe x.wav --format", "Option '--format' requires an argument."),
])
def test_parse_errors_are_json_lines_too(dw_env, tmp_path, command, message):
    """Click's own usage errors, raised before dw's code runs, still come as one error event."""
    result = shell(command, dw_env, tmp_path)
    assert result.returncode == 2 and result.stdout == b""
    (event,) = [json.loads(line) for line in result.stderr.decode().splitlines()]
    assert (event["event"], event["message"], event["exit_status"]) == ("error", message, 2)
