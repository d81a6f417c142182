"""Segments onto the file's timeline and onto the detected speech (``refine``)."""

from __future__ import annotations

import numpy as np
import pytest

from dwcli import refine
from dwcli.audio import SAMPLE_RATE
from dwcli.sources import Span, Window
from dwcli.segments import Segment, Word
from dwcli.vad import Region

SPEECH = [(0.0, 1.0), (1.6, 2.4)]  # a 0.6 s pause between two phrases, silence after 2.4 s


def _words(*spans) -> list[Word]:
    return [Word(start, end, f" w{index}", 0.9) for index, (start, end) in enumerate(spans)]


def test_a_word_handed_the_pause_before_it_starts_at_its_speech():
    words = _words((0.5, 1.0), (1.0, 2.0), (2.0, 2.4))  # DTW gave the pause to the second word
    segment = Segment(0.5, 2.4, "w0 w1 w2", words)
    refine.trim_words([segment], SPEECH)
    edges = [edge for word in words for edge in (word.start, word.end)]
    assert edges == pytest.approx([0.5, 1.0, 1.5, 2.0, 2.0, 2.4])


def test_a_word_holding_the_silence_after_it_ends_at_its_speech():
    words = _words((1.6, 2.0), (2.0, 3.0))
    segment = Segment(1.6, 3.0, "w0 w1", words)
    refine.trim_words([segment], SPEECH)
    assert (words[1].start, words[1].end) == pytest.approx((2.0, 2.5))
    assert (segment.start, segment.end) == pytest.approx((1.6, 2.5))  # the segment spans its words


def test_short_gaps_and_speech_filled_words_are_left_alone():
    words = _words((0.4, 1.0), (1.0, 1.8), (1.8, 2.4))  # only 0.2 s of pause before the second word
    segment = Segment(0.4, 2.4, "w0 w1 w2", words)
    refine.trim_words([segment], [(0.0, 1.0), (1.2, 2.4)])
    assert [(w.start, w.end) for w in words] == [(0.4, 1.0), (1.0, 1.8), (1.8, 2.4)]


def test_a_segment_is_split_at_a_long_pause_between_its_words():
    speech = [(0.0, 1.0), (2.0, 3.0)]
    words = _words((0.2, 1.0), (1.0, 2.6), (2.6, 3.0))
    segment = Segment(0.2, 3.0, "w0 w1 w2", words)
    refine.trim_words([segment], speech)
    first, second = refine.split_at_pauses([segment], speech)
    assert (first.text, second.text) == ("w0", "w1 w2")
    assert first.end <= 1.2 and second.start >= 1.8


def test_edges_move_onto_the_speech_and_shared_borders_into_the_pause():
    segments = [Segment(0.0, 1.3, "a"), Segment(1.3, 3.0, "b")]
    refine.tighten(segments, SPEECH)
    assert (segments[0].start, segments[0].end) == pytest.approx((0.0, 1.1))
    assert (segments[1].start, segments[1].end) == pytest.approx((1.5, 2.5))


def test_a_segment_that_starts_inside_speech_starts_at_its_onset():
    """Whisper's first timestamp after a pause lands inside the first word: the segment
    starts where that speech begins (reaching back over a pause shorter than 0.4 s), never
    into speech an earlier segment holds."""
    speech = [(0.0, 2.0), (3.0, 3.5), (3.7, 6.0), (6.0, 8.0)]
    segments = [Segment(0.0, 2.1, "a"), Segment(4.1, 6.5, "b", _words((4.1, 5.0), (5.0, 6.5))),
                Segment(6.5, 8.0, "c")]
    refine.start_at_onsets(segments, speech)
    assert segments[1].start == pytest.approx(2.9)  # back to 3.0 (across the 0.2 s pause), less the margin
    assert segments[1].words[0].start == pytest.approx(2.9)  # with its first word
    assert segments[2].start == pytest.approx(6.5)  # its speech began inside b: left alone
    late = [Segment(0.0, 1.0, "a"), Segment(5.9, 7.0, "far")]  # more than 1.5 s in: not moved
    refine.start_at_onsets(late, [(0.0, 1.0), (3.0, 7.0)])
    assert late[1].start == pytest.approx(5.9)


def test_a_window_maps_its_times_back_across_left_out_non_speech():
    """A window of two stretches (0-2 s and 10-12 s of the file): times after the join land
    after the left-out 8 s, and a segment across the join is split there by its words."""
    samples = np.zeros(4 * SAMPLE_RATE, np.float32)
    window = Window(0, 0.0, samples, (Span(0, 0, 2 * SAMPLE_RATE), Span(2 * SAMPLE_RATE, 10 * SAMPLE_RATE, 2 * SAMPLE_RATE)),
                    (Region(int(0.4 * SAMPLE_RATE), int(1.6 * SAMPLE_RATE)), Region(int(10.4 * SAMPLE_RATE), int(11.6 * SAMPLE_RATE))))
    assert window.file_time(1.0) == 1.0 and window.file_time(3.0) == 11.0
    assert window.file_time(2.0) == 10.0 and window.file_time(2.0, end=True) == 2.0
    segment = Segment(0.3, 3.7, "w0 w1", _words((0.4, 1.6), (2.4, 3.6)))
    assert refine.needs_words(window, [segment])
    first, second = refine.settle(window, [segment], keep_words=True)
    assert (first.text, second.text) == ("w0", "w1")
    assert first.end <= 1.8 and second.start >= 10.2 and second.end == pytest.approx(11.6)
    assert [w.start for w in second.words] == pytest.approx([10.4])


def test_the_rest_of_a_window_keeps_its_place_in_the_file():
    window = Window(0, 5.0, np.zeros(4 * SAMPLE_RATE, np.float32),
                    (Span(0, 5 * SAMPLE_RATE, 2 * SAMPLE_RATE), Span(2 * SAMPLE_RATE, 20 * SAMPLE_RATE, 2 * SAMPLE_RATE)), ())
    rest = window.rest_from(3 * SAMPLE_RATE)
    assert rest.offset_s == 21.0 and rest.duration_s == 1.0 and rest.file_time(0.5) == 21.5
    contiguous = Window(0, 5.0, np.zeros(4 * SAMPLE_RATE, np.float32)).rest_from(SAMPLE_RATE)
    assert contiguous.offset_s == 6.0 and contiguous.spans == () and contiguous.file_time(1.0) == 7.0


def test_without_a_detector_segments_only_move_to_the_file():
    window = Window(0, 30.0, np.zeros(SAMPLE_RATE, np.float32))
    (segment,) = refine.settle(window, [Segment(0.1, 0.9, "x", _words((0.1, 0.9)))], keep_words=False)
    assert (segment.start, segment.end, segment.words) == (pytest.approx(30.1), pytest.approx(30.9), None)
