"""Speech activity and what it does to segment and word edges, on synthetic signals."""

from __future__ import annotations

import numpy as np
import pytest

from dwcli import vad
from dwcli.audio import SAMPLE_RATE
from dwcli.segments import Segment, Word


def _signal(spans_s: list[tuple[float, float]], length_s: float, level_dbfs: float) -> np.ndarray:
    """A 220 Hz tone inside each span, faint noise elsewhere."""
    rng = np.random.default_rng(0)
    samples = rng.normal(scale=10 ** ((level_dbfs - 50) / 20), size=round(length_s * SAMPLE_RATE))
    time = np.arange(len(samples)) / SAMPLE_RATE
    for start, end in spans_s:
        inside = (time >= start) & (time < end)
        samples[inside] += 10 ** (level_dbfs / 20) * np.sqrt(2) * np.sin(2 * np.pi * 220 * time[inside])
    return samples.astype(np.float32)


SPEECH = [(0.0, 1.0), (1.6, 2.4)]  # a 0.6 s pause between two phrases, silence after 2.4 s


@pytest.mark.parametrize("level_dbfs", [-20, -70])
def test_speech_frames_follow_the_signal_at_any_level(level_dbfs):
    active = vad.speech_frames(_signal(SPEECH, 3.0, level_dbfs))
    expected = np.zeros(150, dtype=bool)
    expected[0:50] = expected[80:120] = True
    assert (active == expected).mean() > 0.98


def _words(*spans) -> list[Word]:
    return [Word(start, end, f" w{index}", 0.9) for index, (start, end) in enumerate(spans)]


def test_a_word_handed_the_pause_before_it_starts_at_its_speech():
    active = vad.speech_frames(_signal(SPEECH, 3.0, -20))
    words = _words((0.5, 1.0), (1.0, 2.0), (2.0, 2.4))  # DTW gave the pause to the second word
    segment = Segment(0.5, 2.4, "w0 w1 w2", words)
    vad.trim_words([segment], active)
    edges = [edge for word in words for edge in (word.start, word.end)]
    assert edges == pytest.approx([0.5, 1.0, 1.5, 2.0, 2.0, 2.4], abs=0.021)


def test_a_word_holding_the_silence_after_it_ends_at_its_speech():
    active = vad.speech_frames(_signal(SPEECH, 3.0, -20))
    words = _words((1.6, 2.0), (2.0, 3.0))
    segment = Segment(1.6, 3.0, "w0 w1", words)
    vad.trim_words([segment], active)
    assert (words[1].start, words[1].end) == pytest.approx((2.0, 2.5), abs=0.021)
    assert (segment.start, segment.end) == pytest.approx((1.6, 2.5), abs=0.021)  # the segment spans its words


def test_short_gaps_and_speech_filled_words_are_left_alone():
    active = vad.speech_frames(_signal([(0.0, 1.0), (1.2, 2.4)], 2.4, -20))
    words = _words((0.4, 1.0), (1.0, 1.8), (1.8, 2.4))  # only 0.2 s of quiet before the second word
    segment = Segment(0.4, 2.4, "w0 w1 w2", words)
    vad.trim_words([segment], active)
    assert [(w.start, w.end) for w in words] == [(0.4, 1.0), (1.0, 1.8), (1.8, 2.4)]


def test_a_segment_is_split_at_a_long_pause_between_its_words():
    active = vad.speech_frames(_signal([(0.0, 1.0), (2.0, 3.0)], 3.0, -20))
    words = _words((0.2, 1.0), (1.0, 2.6), (2.6, 3.0))
    segment = Segment(0.2, 3.0, "w0 w1 w2", words)
    assert vad.needs_split([segment], active)
    vad.trim_words([segment], active)
    first, second = vad.split_at_pauses([segment], active)
    assert (first.text, second.text) == ("w0", "w1 w2")
    assert first.end <= 1.2 and second.start >= 1.8
