"""Windows: at most 30 s, contiguous, covering everything, cut in pauses."""

from __future__ import annotations

import numpy as np

from dwcli.audio import SAMPLE_RATE, load_audio
from dwcli.chunking import MIN_CUT_SECONDS, quietest_cut, split_windows
from dwcli.features import WINDOW_SAMPLES


def _blocks(samples, size):
    for start in range(0, len(samples), size):
        yield samples[start : start + size]


def test_windows_cover_the_stream_without_overlap(longform):
    audio = load_audio(longform["path"])
    windows = list(split_windows(_blocks(audio, 7 * SAMPLE_RATE + 13)))
    assert np.array_equal(np.concatenate([w.samples for w in windows]), audio)
    position = 0
    for index, window in enumerate(windows):
        assert window.index == index
        assert round(window.offset_s * SAMPLE_RATE) == position
        assert len(window.samples) <= WINDOW_SAMPLES
        if index < len(windows) - 1:
            assert len(window.samples) >= MIN_CUT_SECONDS * SAMPLE_RATE
        position += len(window.samples)


def test_cuts_fall_between_utterances(longform):
    """Every cut of the long-form file lands in (or within 0.3 s of) a gap between the
    known utterances, not inside a word."""
    audio = load_audio(longform["path"])
    windows = list(split_windows([audio]))
    utterances = longform["segments"]
    for window in windows[1:]:
        cut = window.offset_s
        inside = [u for u in utterances if u["start"] + 0.3 < cut < u["end"] - 0.3]
        if inside:
            # Inside an utterance the cut must at least be in a pause: quiet relative to speech.
            sample = round(cut * SAMPLE_RATE)
            local = audio[sample - 1600 : sample + 1600]
            assert np.sqrt(np.mean(local**2)) < 0.25 * np.sqrt(np.mean(audio**2)), cut


def test_quietest_cut_finds_the_silence():
    rng = np.random.default_rng(0)
    loud = rng.normal(scale=0.3, size=40 * SAMPLE_RATE).astype(np.float32)
    loud[25 * SAMPLE_RATE : 25 * SAMPLE_RATE + SAMPLE_RATE // 2] = 0.0
    cut = quietest_cut(loud, 22 * SAMPLE_RATE, 30 * SAMPLE_RATE)
    assert 25 * SAMPLE_RATE <= cut <= 25 * SAMPLE_RATE + SAMPLE_RATE // 2


def test_short_stream_is_one_window():
    audio = np.ones(5 * SAMPLE_RATE, np.float32)
    [window] = list(split_windows(_blocks(audio, 1000)))
    assert window.offset_s == 0 and len(window.samples) == len(audio)


def test_empty_stream_has_no_windows():
    assert list(split_windows([])) == []

