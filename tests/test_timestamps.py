"""Timestamps on real speech: segment boundaries land where the speech really is.

Test files are built from real LibriSpeech utterances (the 10 of test-other 3080-5032,
cut out of tests/data by their known spans and trimmed of their room tone) joined with
known silences, so each utterance's true start and end in the file is known.  For every true boundary the nearest
predicted boundary of the same kind (start/end) is the error; Whisper may split one
utterance into several segments, which this measure allows.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from conversations import JOIN_ORDERS, join_utterances, trim_to_speech, write_flac
from dwcli.audio import SAMPLE_RATE, load_audio
from dwcli.decoding import DecodingOptions
from dwcli.discover import discover
from dwcli.events import Reporter
from dwcli.options import TranscribeOptions
from dwcli.pipeline import transcribe_files

MEDIAN_BOUND_S = 0.5
P90_BOUND_S = 1.0
# Speaker turns start where segments do: each utterance's start, against the nearest segment
# start, well under 0.3 s (measured 0.09 s chunked, 0.07 s sequential; benchmarks/starts.py).
START_MEDIAN_BOUND_S = 0.2
@pytest.fixture(scope="module")
def joined_files(longform, tmp_path_factory):
    """Two files (~2 min each) of the same utterances in two orders; with their truths."""
    audio = load_audio(longform["path"])
    utterances = [
        trim_to_speech(audio[round(u["start"] * SAMPLE_RATE) : round(u["end"] * SAMPLE_RATE)])
        for u in longform["segments"]
    ]
    folder = tmp_path_factory.mktemp("joined")
    files = []
    for name, order in JOIN_ORDERS:
        samples, truth = join_utterances(utterances, order)
        path = folder / f"{name}.flac"
        write_flac(path, samples)
        files.append((path, truth))
    return files


def boundary_errors(segments, truth):
    starts = np.array([segment["start"] for segment in segments])
    ends = np.array([segment["end"] for segment in segments])
    errors = []
    for true_start, true_end in truth:
        errors.append(float(np.min(np.abs(starts - true_start))))
        errors.append(float(np.min(np.abs(ends - true_end))))
    return np.array(errors)


@pytest.mark.parametrize("long_form", ["chunked", "sequential"])
def test_segment_boundaries_are_accurate(engine, joined_files, tmp_path, long_form):
    files = discover([str(path) for path, _ in joined_files], tmp_path).files
    options = TranscribeOptions(formats=("json",), batch_size=8, workers=0, long_form=long_form)
    summary = transcribe_files(files, engine, options, Reporter())
    assert summary.ok == 2
    all_errors = []
    for media, (_, truth) in zip(files, joined_files):
        result = json.loads(media.output_path("json").read_text())
        segments = result["segments"]
        for previous, current in zip(segments, segments[1:]):
            assert previous["end"] <= current["start"]
        assert all(0 <= s["start"] <= s["end"] <= result["duration"] for s in segments)
        all_errors.extend(boundary_errors(segments, truth))
    errors = np.array(all_errors)
    median, p90 = float(np.median(errors)), float(np.percentile(errors, 90))
    print(f"{long_form}: boundary error median {median:.3f} s, p90 {p90:.3f} s, max {errors.max():.3f} s")
    assert median <= MEDIAN_BOUND_S and p90 <= P90_BOUND_S, (median, p90)
    starts = errors[0::2]  # boundary_errors gives each utterance's start, then its end
    assert float(np.median(starts)) <= START_MEDIAN_BOUND_S, starts


def test_word_timestamps_monotonic_inside_segments(engine, joined_files, tmp_path):
    path, truth = joined_files[1]
    [media] = discover([str(path)], tmp_path).files
    options = TranscribeOptions(formats=("json",), batch_size=8, workers=0,
                                decoding=DecodingOptions(word_timestamps=True))
    transcribe_files([media], engine, options, Reporter())
    result = json.loads(media.output_path("json").read_text())
    previous_end = 0.0
    count = 0
    for segment in result["segments"]:
        assert segment["words"], segment
        assert "".join(word["word"] for word in segment["words"]).strip() == segment["text"]
        for word in segment["words"]:
            assert segment["start"] <= word["start"] <= word["end"] <= segment["end"]
            assert word["start"] >= previous_end - 1e-6
            assert 0.0 <= word["probability"] <= 1.0
            previous_end = word["end"]
            count += 1
    assert count > 150


def _reference_dtw(cost: np.ndarray) -> list[tuple[int, int]]:
    """openai-whisper's DTW, cell by cell: the path the batched one must reproduce."""
    rows, cols = cost.shape
    total = np.full((rows + 1, cols + 1), np.inf)
    total[0, 0] = 0
    trace = -np.ones((rows + 1, cols + 1))
    for j in range(1, cols + 1):
        for i in range(1, rows + 1):
            c0, c1, c2 = total[i - 1, j - 1], total[i - 1, j], total[i, j - 1]
            if c0 < c1 and c0 < c2:
                c, t = c0, 0
            elif c1 < c0 and c1 < c2:
                c, t = c1, 1
            else:
                c, t = c2, 2
            total[i, j] = cost[i - 1, j - 1] + c
            trace[i, j] = t
    trace[0, :], trace[:, 0] = 2, 1
    i, j, path = rows, cols, []
    while i > 0 or j > 0:
        path.append((i - 1, j - 1))
        step = trace[i, j]
        i, j = (i - 1, j - 1) if step == 0 else (i - 1, j) if step == 1 else (i, j - 1)
    return path[::-1]


def test_batched_dtw_gives_each_window_the_reference_path():
    import torch

    from dwcli.decoding.alignment import dtw

    generator = np.random.default_rng(0)
    shapes = [(5, 40), (12, 30), (1, 7), (9, 9), (20, 60)]
    costs = [generator.normal(size=shape) for shape in shapes]
    costs.append(np.round(generator.normal(size=(6, 18)), 0))  # many ties
    batched = dtw([torch.from_numpy(cost) for cost in costs])
    for cost, (tokens, frames) in zip(costs, batched):
        assert list(zip(tokens.tolist(), frames.tolist())) == _reference_dtw(cost)
        alone = dtw([torch.from_numpy(cost)])[0]
        assert np.array_equal(alone[0], tokens) and np.array_equal(alone[1], frames)
