"""The run loop: both long-form modes through the same decoding workers, window sources,
batcher and assembler; a decoding process that dies fails its own file only, in either
mode, however many files were in flight; memory stays bounded in the sequential mode."""

from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest

import dwcli.workers as workers
from recorder import Recorder
from dwcli.discover import discover
from dwcli.events import Reporter
from dwcli.features import WINDOW_SAMPLES
from dwcli.options import TranscribeOptions
from dwcli.pipeline import transcribe_files
from dwcli.sequential import SequentialSource
from dwcli.sources import PieceItem, SourceSettings
from dwcli.vad import Region, SpeechPiece

CLIPS = ("jfk.flac", "260-123286-0001.wav", "61-70968-0000.wav")


def _folder(speech, folder: Path, crash: bool) -> list:
    folder.mkdir(parents=True, exist_ok=True)
    for name in CLIPS:
        shutil.copy(speech[name]["path"], folder / name)
    if crash:
        shutil.copy(speech["jfk.flac"]["path"], folder / "crash.flac")
    return sorted(folder.iterdir())


def _die_on_crash_files(monkeypatch, pids_file: Path | None = None):
    """Decoding ``crash.*`` kills the decoding process outright (as the OOM killer or a
    segfault inside FFmpeg would); every decode notes its process id.  The workers are
    forked from this process, so they run the patched function."""
    real = workers.decode_blocks

    def decode(source, *args, **kwargs):
        if pids_file is not None:
            with open(pids_file, "a") as stream:
                stream.write(f"{os.getpid()}\n")
        if Path(str(source)).stem == "crash":
            os.kill(os.getpid(), signal.SIGKILL)
        return real(source, *args, **kwargs)

    monkeypatch.setattr(workers, "decode_blocks", decode)


@pytest.mark.parametrize("long_form, batch_size", [("chunked", 4), ("sequential", 1), ("sequential", 4)])
def test_a_decoding_crash_fails_only_its_file(engine, speech, tmp_path, monkeypatch, long_form, batch_size):
    """In the sequential mode with batch 4 the worker reads all four files side by side when
    one dies: each is read again alone, so the one that kills its process is named, and the
    others are transcribed."""
    paths = _folder(speech, tmp_path / "in", crash=True)
    _die_on_crash_files(monkeypatch)
    files = discover([str(path) for path in paths], tmp_path / "out").files
    reporter = Recorder()
    options = TranscribeOptions(batch_size=batch_size, workers=1, long_form=long_form)
    summary = transcribe_files(files, engine, options, reporter)
    failed = [outcome for outcome in reporter.outcomes if outcome.status == "failed"]
    assert [outcome.message for outcome in failed] == [
        f"{tmp_path / 'in' / 'crash.flac'}: the decoding process died (killed by signal: Killed)"]
    assert (summary.ok, summary.failed) == (len(CLIPS), 1)
    for name in CLIPS:
        assert (tmp_path / "out" / f"{Path(name).stem}.txt").read_text().strip()


@pytest.mark.parametrize("long_form", ["chunked", "sequential"])
def test_workers_decode_in_both_modes(engine, speech, tmp_path, monkeypatch, long_form):
    """--workers acts in the sequential mode too: media is decoded in another process."""
    paths = _folder(speech, tmp_path / "in", crash=False)
    pids = tmp_path / "pids"
    _die_on_crash_files(monkeypatch, pids)
    files = discover([str(path) for path in paths], tmp_path / "out").files
    summary = transcribe_files(files, engine, TranscribeOptions(batch_size=4, workers=1, long_form=long_form),
                               Reporter())
    assert summary.ok == len(CLIPS)
    decoded_in = {int(line) for line in pids.read_text().split()}
    assert len(decoded_in) == 1 and os.getpid() not in decoded_in


def _piece(start_s: float, seconds: float) -> PieceItem:
    start = int(start_s * 16_000)
    samples = np.zeros(int(seconds * 16_000), np.float32)
    return PieceItem(0, SpeechPiece(start, samples, (Region(start, start + len(samples)),)))


def test_a_sequential_source_reads_a_bounded_way_ahead():
    """One window in the model at a time; the run loop reads on until the source holds the
    next window's speech beyond it, then decodes (``waiting``), so a file of hours is never
    held whole."""
    source = SequentialSource(0, SourceSettings((), 50363, False, True))
    at = 0.0
    while not source.ready():
        source.take(_piece(at, 10.0))
        at += 10.0
    assert at == 30.0 and source.outstanding == 1 and not source.waiting
    while not source.waiting:
        source.take(_piece(at, 10.0))
        at += 10.0
    assert at == 60.0 and source.buffered_samples == 2 * WINDOW_SAMPLES
    assert source.ready() == []  # nothing more until the result comes back
    source.end()
    assert source.waiting and not source.finished


def test_a_file_that_ends_with_no_speech_finishes_at_once():
    source = SequentialSource(0, SourceSettings((), 50363, False, True))
    source.end()
    assert source.ready() == [] and source.finished
