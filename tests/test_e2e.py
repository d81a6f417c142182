"""End to end on real speech with the real offline tiny.en model (no mocks, no network).

WER bounds: tiny.en transcribes these clean clips perfectly after Whisper's normaliser
(measured 0.0 on each), so any regression in decoding shows; the bound leaves room for one
normaliser-level disagreement (e.g. a hyphenation) per clip: 0.10.  The test-other long-form
file (1:46, 10 utterances, a hard LibriSpeech split) measured 0.076-0.091 (txt-only vs. with
timestamps); tiny.en's published test-other WER is ~0.17, so 0.15 still catches a lost
window or a broken stitch (one dropped 10 s utterance alone costs ~0.1).
"""

from __future__ import annotations

import json
import shutil

import pytest

from conftest import word_error_rate
from recorder import Recorder
from dwcli.decoding import DecodingOptions
from dwcli.discover import discover
from dwcli.options import TranscribeOptions
from dwcli.pipeline import transcribe_files

SHORT_CLIPS = ["jfk.flac", "1995-1837-0001.wav", "260-123286-0001.wav", "61-70968-0000.wav", "2412-153948-0000.flac"]
SHORT_WER_BOUND = 0.10
LONGFORM_WER_BOUND = 0.15


def _run(engine, paths, tmp_path, formats=("json",), **options):
    collected = Recorder()
    files = discover([str(path) for path in paths], tmp_path).files
    summary = transcribe_files(files, engine, TranscribeOptions(formats=formats, **options), collected)
    return summary, collected.outcomes, files


def test_short_clips_batched_together_are_transcribed_exactly(engine, speech, tmp_path):
    paths = [speech[name]["path"] for name in SHORT_CLIPS]
    summary, outcomes, files = _run(engine, paths, tmp_path, batch_size=8, workers=1)
    assert summary.ok == len(SHORT_CLIPS) and summary.failed == 0
    for name, media in zip(SHORT_CLIPS, files):
        result = json.loads(media.output_path("json").read_text())
        error = word_error_rate(speech[name]["text"], result["text"])
        assert error <= SHORT_WER_BOUND, (name, error, result["text"])
        assert result["duration"] == pytest.approx(speech[name]["duration"], abs=0.05)
    assert "my fellow americans" in json.loads(files[0].output_path("json").read_text())["text"].lower()


@pytest.mark.parametrize("timestamps", [True, False])
def test_longform_wer_and_timeline(engine, longform, tmp_path, timestamps):
    summary, _, files = _run(engine, [longform["path"]], tmp_path, batch_size=4, workers=0,
                             decoding=DecodingOptions(timestamps=timestamps))
    result = json.loads(files[0].output_path("json").read_text())
    error = word_error_rate(longform["text"], result["text"])
    assert error <= LONGFORM_WER_BOUND, error
    segments = result["segments"]
    assert segments, "no segments"
    for previous, current in zip(segments, segments[1:]):
        assert previous["end"] <= current["start"] + 1e-6
    for segment in segments:
        assert 0 <= segment["start"] <= segment["end"] <= result["duration"]
    # The last utterance is transcribed: no window tail is lost.
    last_words = longform["segments"][-1]["text"].lower().split()[-2:]
    assert " ".join(last_words) in " ".join(result["text"].lower().replace(",", "").replace(".", "").split())


def test_out_of_memory_halves_the_batch_and_loses_nothing(engine, speech, tmp_path):
    """A device that runs out of memory above 2 windows per batch (injected into the real
    engine) still transcribes every window."""
    import torch

    class SmallDevice:
        def __init__(self, real):
            self.real = real
            self.batch_sizes = []

        def __getattr__(self, name):
            return getattr(self.real, name)

        def transcribe(self, features, windows, options, **context):
            self.batch_sizes.append(len(windows))
            if len(windows) > 2:
                raise torch.OutOfMemoryError("CUDA out of memory (injected)")
            return self.real.transcribe(features, windows, options, **context)

    device = SmallDevice(engine)
    paths = [speech[name]["path"] for name in SHORT_CLIPS]
    summary, outcomes, files = _run(device, paths, tmp_path, batch_size=8, workers=0)
    assert summary.ok == len(SHORT_CLIPS)
    assert device.batch_sizes[0] == len(SHORT_CLIPS)  # the first try, which ran out of memory
    assert max(device.batch_sizes[1:]) <= 2 and sum(device.batch_sizes[1:]) == len(SHORT_CLIPS)
    for name, media in zip(SHORT_CLIPS, files):
        assert word_error_rate(speech[name]["text"], json.loads(media.output_path("json").read_text())["text"]) <= SHORT_WER_BOUND


def test_out_of_memory_with_one_window_fails_that_file_only(engine, speech, tmp_path):
    """Where not even one window fits, its file fails with one line; the rest go on."""
    import torch

    class TinyDevice:
        def __init__(self, real):
            self.real = real

        def __getattr__(self, name):
            return getattr(self.real, name)

        def transcribe(self, features, windows, options, **context):
            if any(11 < window.duration_s < 12 for window in windows):  # 2412-153948-0000 never fits
                raise torch.OutOfMemoryError("CUDA out of memory (injected)")
            return self.real.transcribe(features, windows, options, **context)

    paths = [speech[name]["path"] for name in SHORT_CLIPS]
    summary, outcomes, files = _run(TinyDevice(engine), paths, tmp_path, batch_size=1, workers=0)
    failed = [outcome for outcome in outcomes if outcome.status == "failed"]
    assert (summary.ok, summary.failed) == (len(SHORT_CLIPS) - 1, 1)
    assert failed[0].message == f"{speech['2412-153948-0000.flac']['path']}: out of memory on cpu with a single window"


def test_sequential_out_of_memory_splits_the_batch_or_fails_one_file(engine, speech, tmp_path):
    """--long-form sequential on a device that runs out of memory above 2 windows, and never
    fits one file's window: the batch is split (nothing lost), and only that file fails."""
    import torch

    class SmallDevice:
        def __init__(self, real):
            self.real, self.batch_sizes = real, []

        def __getattr__(self, name):
            return getattr(self.real, name)

        def transcribe(self, features, windows, options, **context):
            self.batch_sizes.append(len(windows))
            if len(windows) > 2 or any(11 < window.duration_s < 12 for window in windows):
                raise torch.OutOfMemoryError("CUDA out of memory (injected)")
            return self.real.transcribe(features, windows, options, **context)

    device = SmallDevice(engine)
    paths = [speech[name]["path"] for name in SHORT_CLIPS]
    summary, outcomes, files = _run(device, paths, tmp_path, batch_size=8, workers=0, long_form="sequential")
    failed = [outcome for outcome in outcomes if outcome.status == "failed"]
    assert (summary.ok, summary.failed) == (len(SHORT_CLIPS) - 1, 1)
    assert failed[0].message == f"{speech['2412-153948-0000.flac']['path']}: out of memory on cpu with a single window"
    assert device.batch_sizes[0] == len(SHORT_CLIPS) and min(device.batch_sizes) == 1
    for name, media in zip(SHORT_CLIPS, files):
        if name != "2412-153948-0000.flac":
            text = json.loads(media.output_path("json").read_text())["text"]
            assert word_error_rate(speech[name]["text"], text) <= SHORT_WER_BOUND, (name, text)


def test_a_transcript_does_not_depend_on_its_batch(engine, speech, tmp_path):
    """The default precision gives a file the same transcript alone and among other files
    (int8's one activation scale per batch did not: "usually" became "hugely")."""
    jfk = speech["jfk.flac"]["path"]
    alone_dir, mixed_dir = tmp_path / "alone", tmp_path / "mixed"
    for folder in (alone_dir, mixed_dir / "a", mixed_dir / "b"):
        folder.mkdir(parents=True)
        shutil.copy(jfk, folder / "jfk.flac")
    _run(engine, [alone_dir / "jfk.flac"], alone_dir, batch_size=1, workers=0)
    others = [speech[name]["path"] for name in SHORT_CLIPS[1:]]
    _run(engine, [mixed_dir / "a/jfk.flac", *others, mixed_dir / "b/jfk.flac"], mixed_dir, batch_size=8, workers=0)
    alone = json.loads((alone_dir / "jfk.json").read_text())
    for copy in ("a", "b"):
        mixed = json.loads(next((mixed_dir / copy).glob("*.json")).read_text())
        assert mixed["text"] == alone["text"]
        assert [(s["start"], s["end"], s["text"]) for s in mixed["segments"]] == \
            [(s["start"], s["end"], s["text"]) for s in alone["segments"]]
