"""Cue shaping: examples of each rule, then properties over random segment lists."""

from __future__ import annotations

import math
import re
import unicodedata
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dwcli.segments import Segment, Word
from dwcli.options import SubtitleOptions
from dwcli.subtitles import MIN_CUE_MS, Cue, has_word_times, shape_cues


def timed(*spec: tuple[str, float, float]) -> list[Word]:
    """Words as Whisper spells them (leading space), with times in seconds."""
    return [Word(start, end, word, 0.9) for word, start, end in spec]


def segment_with_words(words: list[Word]) -> Segment:
    return Segment(words[0].start, words[-1].end, "".join(w.word for w in words).strip(), words)


def texts(cues: list[Cue]) -> list[str]:
    return [cue.text() for cue in cues]


def spans(cues: list[Cue]) -> list[tuple[int, int]]:
    return [(cue.start_ms, cue.end_ms) for cue in cues]


def columns(text: str) -> int:
    """Width on screen: CJK characters and emoji take two columns."""
    return sum(2 if unicodedata.east_asian_width(char) in "WF" else 1 for char in text)


# -- examples -------------------------------------------------------------------------------


def test_a_segment_that_fits_is_one_cue_with_its_own_times():
    cues = shape_cues([Segment(1.0, 4.0, "Hello, and welcome to the show.")])
    assert texts(cues) == ["Hello, and welcome to the show."]
    assert spans(cues) == [(1000, 4000)]
    assert not cues[0].estimated


def test_two_lines_are_balanced_with_the_longer_one_below():
    text = "one two three four five six seven eight nine ten eleven twelve"
    [cue] = shape_cues([Segment(0, 5, text)])
    # Not "... six seven" over "eight ... twelve" (33/28): nearly as even, but top-heavy.
    assert cue.text() == "one two three four five six\nseven eight nine ten eleven twelve"


def test_lines_break_after_punctuation_when_that_keeps_them_even():
    [cue] = shape_cues([Segment(0, 5, "We went down to the river, and then we swam across it.")])
    assert cue.text() == "We went down to the river,\nand then we swam across it."


def test_cues_end_after_sentences_rather_than_mid_clause():
    text = (
        "The first sentence is right here and it is fairly long. The second one follows it, "
        "and it is quite long as well, long enough."
    )
    cues = shape_cues([Segment(0, 6, text)])
    assert len(cues) == 2
    assert cues[0].text().replace("\n", " ") == "The first sentence is right here and it is fairly long."


def test_no_orphan_cue_holding_one_word():
    # 90 characters: a full 84-character cue would leave one word behind.
    text = " ".join(["word"] * 18)
    cues = shape_cues([Segment(0, 6, text)])
    counts = [len(cue.text().split()) for cue in cues]
    assert counts == [9, 9]


def test_a_long_segment_without_words_is_split_at_estimated_times_and_says_so():
    segments = [Segment(10.0, 21.0, " ".join(["slow"] * 12))]  # 11 s, few characters
    cues = shape_cues(segments)
    assert not has_word_times(segments)
    assert texts(cues) == [" ".join(["slow"] * 6)] * 2
    assert all(cue.end_ms - cue.start_ms <= 7000 for cue in cues)
    assert cues[0].start_ms == 10000 and cues[0].end_ms == cues[1].start_ms and cues[1].end_ms == 21000
    assert cues[0].estimated and cues[1].estimated  # the split between them is a guess


def test_with_word_times_cues_start_and_end_on_words():
    words = timed(
        (" Good", 0.5, 0.8), (" morning.", 0.8, 1.4),  # a pause, then more than 7 s of speech
        (" Today", 3.0, 3.3), (" we", 3.3, 3.4), (" start", 3.4, 3.9), (" early,", 3.9, 4.5),
        (" and", 8.0, 8.2), (" finish", 8.2, 8.6), (" late.", 8.6, 9.5),
    )
    segments = [segment_with_words(words)]
    cues = shape_cues(segments)
    assert has_word_times(segments)
    assert texts(cues) == ["Good morning. Today we start early,", "and finish late."]  # a cue ends at the long pause
    assert spans(cues) == [(500, 4500), (8000, 9500)]
    assert not any(cue.estimated for cue in cues)


def test_whisper_punctuation_words_stay_on_their_word():
    words = timed((" It", 0.0, 0.2), (" ends", 0.2, 0.5), (".", 0.5, 0.5), (" Don", 1.0, 1.2), ("'t", 1.2, 1.3))
    [cue] = shape_cues([segment_with_words(words)])
    assert cue.lines == ((" It", " ends.", " Don't"),)  # three words, never "ends" / "."


def test_a_word_wider_than_a_line_gets_a_line_of_its_own():
    word = "Donaudampfschifffahrtselektrizitätenhauptbetriebswerkbauunterbeamtengesellschaft"
    cues = shape_cues([Segment(0, 6, f"It is called {word} in German.")])
    lines = [line for cue in cues for line in cue.text().split("\n")]
    assert word in lines
    assert all(len(line) <= 42 for line in lines if line != word)


def test_a_word_longer_than_the_duration_limit_is_a_cue_of_its_own_cut_short():
    words = timed((" So", 0.0, 0.4), (" hmmmmmm", 0.4, 12.0), (" yes.", 12.0, 12.5))
    cues = shape_cues([segment_with_words(words)])
    assert texts(cues) == ["So", "hmmmmmm", "yes."]
    assert spans(cues)[1] == (500, 7400)  # "So" gets its half second


def test_a_fast_cue_is_lengthened_into_the_gap_but_not_onto_the_next_cue():
    text = "This short cue has far too many characters for its time."  # 56 chars: 2.8 s at 20 cps
    cues = shape_cues([Segment(0.0, 1.0, text), Segment(2.0, 3.0, text), Segment(9.0, 9.5, "End.")])
    assert spans(cues) == [(0, 2000), (2000, 4800), (9000, 9500)]


def test_lengthening_never_passes_the_duration_limit():
    text = " ".join(["abcdefghi"] * 8)  # 79 characters: 3.95 s at 20 cps
    options = SubtitleOptions(max_cue_duration_s=2.0)
    cues = shape_cues([Segment(0.0, 1.0, text), Segment(30.0, 31.0, "End.")], options)
    assert all(end - start <= 2000 for start, end in spans(cues))
    assert spans(cues)[0][0] == 0


def test_a_cue_too_fast_to_read_takes_the_silence_after_it_then_before_it():
    segments = [Segment(5.0, 5.5, "A sentence that is read slowly.")]  # 31 chars: 1.55 s
    assert spans(shape_cues(segments, end_s=60.0)) == [(5000, 6550)]
    assert spans(shape_cues(segments, end_s=6.0)) == [(4450, 6000)]
    assert spans(shape_cues(segments)) == [(3950, 5500)]  # the media's end unknown: its last segment's


def test_a_flash_of_a_cue_lasts_half_a_second():
    """What music once made Whisper write, 26 characters shown for 1 ms, now lasts at least
    MIN_CUE_MS, taking the time from the silence around it, then from its neighbours."""
    cues = shape_cues([Segment(20.0, 26.9, "Before it."), Segment(26.9, 26.901, "If I could help it, you're"),
                       Segment(26.901, 30.0, "After it.")], end_s=40.0)
    assert all(end - start >= MIN_CUE_MS for start, end in spans(cues))
    assert all(a[1] <= b[0] for a, b in zip(spans(cues), spans(cues)[1:]))


def test_cues_share_media_too_short_for_the_minimum():
    cues = shape_cues([Segment(0.0, 0.0, "a"), Segment(0.0, 0.0, "b"), Segment(0.0, 0.3, "c")], end_s=0.3)
    assert spans(cues) == [(0, 100), (100, 200), (200, 300)]


def test_zero_length_segments_get_a_positive_time_and_never_overlap():
    segments = [Segment(3.0, 5.0, "Before."), Segment(5.0, 5.0, "Zero."), Segment(5.0, 5.0, "Again.")]
    cues = shape_cues(segments)
    assert texts(cues) == ["Before.", "Zero.", "Again."]
    assert all(end > start for start, end in spans(cues))
    assert all(a[1] <= b[0] for a, b in zip(spans(cues), spans(cues)[1:]))
    assert cues[0].start_ms == 3000 and cues[-1].end_ms == 5000


def test_times_that_run_backwards_are_made_monotonic():
    segments = [Segment(4.0, 6.0, "Later."), Segment(3.0, 5.0, "Earlier."), Segment(-1.0, 0.5, "Negative.")]
    cues = shape_cues(segments)
    assert texts(cues) == ["Later.", "Earlier.", "Negative."]
    assert all(a[1] <= b[0] for a, b in zip(spans(cues), spans(cues)[1:]))
    assert all(end > start >= 0 for start, end in spans(cues))


def test_chinese_and_japanese_break_between_characters_but_not_before_closing_marks():
    text = "東京タワーは日本で一番有名な観光地の一つです。毎年たくさんの人が訪れます。"
    [cue] = shape_cues([Segment(0, 5, text)])
    assert cue.text() == "東京タワーは日本で一番有名な観光地の\n一つです。毎年たくさんの人が訪れます。"
    # Five characters a line: a greedy break would start the second line with "。".
    narrow = SubtitleOptions(max_line_width=10, max_line_count=4)
    cues = shape_cues([Segment(0, 5, "あいうえお。かきくけこ。")], narrow)
    lines = [line for cue in cues for line in cue.text().split("\n")]
    assert "".join(lines) == "あいうえお。かきくけこ。"
    assert all(columns(line) <= 10 for line in lines)
    assert not any(line.startswith("。") for line in lines)


def test_wide_characters_take_two_columns():
    [cue] = shape_cues([Segment(0, 5, "漢字" * 15)])  # 30 characters, 60 columns
    assert [columns(line) for line in cue.text().split("\n")] == [30, 30]


def test_karaoke_underlines_each_word_while_it_is_spoken():
    words = timed((" One", 0.0, 0.5), (" two", 1.0, 1.5), (" three.", 1.5, 2.0))
    options = SubtitleOptions(highlight_words=True)
    cues = shape_cues([segment_with_words(words)], options)
    assert [(cue.start_ms, cue.end_ms, cue.text()) for cue in cues] == [
        (0, 500, "<u>One</u> two three."),
        (500, 1000, "One two three."),  # the pause: nothing underlined
        (1000, 1500, "One <u>two</u> three."),
        (1500, 2000, "One two <u>three.</u>"),
    ]


def test_karaoke_keeps_a_word_underlined_across_a_short_gap():
    words = timed((" Seventeen", 0.0, 0.2), (" elephants.", 0.3, 0.5))
    cues = shape_cues([segment_with_words(words), Segment(5.0, 6.0, "Next.")], SubtitleOptions(highlight_words=True))
    assert [(cue.start_ms, cue.end_ms, cue.text()) for cue in cues][:3] == [
        (0, 300, "<u>Seventeen</u> elephants."),  # 100 ms to the next word: no blink
        (300, 500, "Seventeen <u>elephants.</u>"),
        (500, 1000, "Seventeen elephants."),  # lengthened for reading: 20 characters at 20 cps
    ]


def test_karaoke_keeps_the_line_breaks_of_the_plain_cue():
    text = "We went down to the river, and then we swam across it."
    cues = shape_cues([Segment(0, 5, text)], SubtitleOptions(highlight_words=True))
    assert len(cues) == len(text.split())
    plain = "We went down to the river,\nand then we swam across it."
    assert all(re.sub("</?u>", "", cue.text()) == plain for cue in cues)
    assert [re.search("<u>(.*?)</u>", cue.text()).group(1) for cue in cues] == text.split()


def test_cue_text_escapes_words_but_not_the_underline():
    cue = Cue(0, 1, ((" Tom", " &"), (" <Jerry>",)), underline=1)
    assert cue.text(lambda word: word.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")) == (
        "Tom <u>&amp;</u>\n&lt;Jerry&gt;"
    )


def test_has_word_times_needs_words_in_every_segment_with_text():
    words = segment_with_words(timed((" Hi.", 0.0, 0.5)))
    assert has_word_times([words, Segment(1.0, 1.0, " ")])
    assert not has_word_times([words, Segment(1.0, 2.0, "No words.")])
    assert not has_word_times([Segment(1.0, 2.0, "Empty list.", words=[])])


def test_empty_input_and_empty_segments_give_no_cues():
    assert shape_cues([]) == []
    assert shape_cues([Segment(0, 1, "   ")]) == []
    assert has_word_times([])


@pytest.mark.parametrize(
    "field, value",
    [("max_line_width", 0), ("max_line_count", 0), ("max_cue_duration_s", 0.0), ("max_cps", -1.0)],
)
def test_limits_must_be_positive(field, value):
    with pytest.raises(ValueError, match=field):
        SubtitleOptions(**{field: value})


# -- properties ------------------------------------------------------------------------------

LATIN = "abcdefghijklmnopqrstuvwxyzéüßçñ'-"
CJK = "日本語東京漢字中文人"
PUNCTUATION = ["", "", "", "", ",", ".", "?", "!", ";", ":", "…", "。", "、", '."']

latin_words = st.text(alphabet=LATIN, min_size=1, max_size=10)
long_words = st.text(alphabet=LATIN, min_size=30, max_size=90)
cjk_runs = st.text(alphabet=CJK, min_size=1, max_size=8)
bases = st.one_of(latin_words, latin_words, latin_words, long_words, cjk_runs)


@st.composite
def whisper_words(draw) -> list[str]:
    """Word strings as Whisper writes them: a leading space, except punctuation split off
    its word and CJK characters after the first."""
    pieces = []
    for _ in range(draw(st.integers(1, 25))):
        base, mark = draw(bases), draw(st.sampled_from(PUNCTUATION))
        if base[0] in CJK and draw(st.booleans()):
            pieces.append(" " + base[0])
            pieces.extend(base[1:])  # one Word per character, no spaces
        else:
            pieces.append(" " + base)
        if mark:
            if draw(st.booleans()):
                pieces.append(mark)
            else:
                pieces[-1] += mark
    return pieces


@st.composite
def segment_lists(draw, monotonic: bool = True) -> list[Segment]:
    segments = []
    cursor = draw(st.sampled_from([0.0, 0.5, 3599.0]))  # an hour in: timestamps past 1 h
    for _ in range(draw(st.integers(0, 6))):
        if monotonic:
            start = cursor + draw(st.sampled_from([0.0, 0.0, 0.25, 3.0]))
            end = start + draw(st.sampled_from([0.0, 0.5, 2.0, 6.5, 12.0, 25.0]) | st.floats(0, 30))
            cursor = end
        else:
            start, end = draw(st.floats(-5, 100)), draw(st.floats(-5, 100))
        pieces = draw(whisper_words())
        words = None
        if draw(st.booleans()):
            low, high = (start, end) if monotonic else (min(start, end) - 2, max(start, end) + 2)
            times = draw(st.lists(st.floats(low, high), min_size=2 * len(pieces), max_size=2 * len(pieces)))
            if monotonic:
                times.sort()
            words = [Word(times[2 * i], times[2 * i + 1], piece, 0.5) for i, piece in enumerate(pieces)]
        segments.append(Segment(start, end, "".join(pieces).strip(), words))
    return segments


subtitle_options = st.builds(
    SubtitleOptions,
    max_line_width=st.integers(1, 60),
    max_line_count=st.integers(1, 4),
    max_cue_duration_s=st.floats(0.5, 15),
    max_cps=st.floats(1, 40),
)

PROPERTY_SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _no_space(text: str) -> str:
    return re.sub(r"\s+", "", text)


def check_cues(cues: list[Cue], segments: list[Segment], options: SubtitleOptions) -> None:
    """What must hold for every shaping: order, positive durations, the limits."""
    max_ms = round(options.max_cue_duration_s * 1000)
    previous_end = 0
    for cue in cues:
        assert cue.start_ms >= previous_end, "cues overlap or run backwards"
        assert 0 < cue.end_ms - cue.start_ms <= max_ms
        previous_end = cue.end_ms
        assert 1 <= len(cue.lines) <= options.max_line_count
        rendered = re.sub("</?u>", "", cue.text()).split("\n")
        assert rendered == ["".join(line).lstrip() for line in cue.lines]
        for line, shown in zip(cue.lines, rendered):
            assert shown.strip(), "empty line"
            assert columns(shown) <= options.max_line_width or len(line) == 1, "a wide line of several words"


@PROPERTY_SETTINGS
@given(segments=segment_lists(), options=subtitle_options, run_on_s=st.none() | st.floats(0, 20))
def test_shaping_keeps_every_word_in_order_within_the_limits(segments, options, run_on_s):
    end_s = None if run_on_s is None or not segments else segments[-1].end + run_on_s
    cues = shape_cues(segments, options, end_s=end_s)
    check_cues(cues, segments, options)
    # Every word, in order: the words with their separators rebuild the transcript ...
    shaped = "".join(word for cue in cues for line in cue.lines for word in line)
    assert shaped.split() == " ".join(segment.text for segment in segments).split()
    # ... and the shown text loses no character (line breaks may fall between CJK characters).
    assert _no_space("".join(texts(cues))) == _no_space("".join(segment.text for segment in segments))
    if not cues:
        return
    max_ms = round(options.max_cue_duration_s * 1000)
    last_ms = round(segments[-1].end * 1000)
    limit_ms = max(last_ms, round(end_s * 1000)) if end_s is not None else last_ms
    if len(cues) <= limit_ms:  # room for every cue to last a millisecond
        assert cues[0].start_ms >= 0 and cues[-1].end_ms <= limit_ms
    # At least half a second each, unless the media cannot give every cue that much.
    minimum_ms = min(MIN_CUE_MS, max_ms, limit_ms // len(cues))
    assert all(cue.end_ms - cue.start_ms >= minimum_ms for cue in cues)
    # Too fast to read only where there was no silence around the cue to lengthen it into.
    for index, cue in enumerate(cues):
        characters = len("".join(word for line in cue.lines for word in line).lstrip())
        readable_ms = min(math.ceil(characters * 1000 / options.max_cps), max_ms)
        if cue.end_ms - cue.start_ms < readable_ms:
            assert cue.end_ms >= (cues[index + 1].start_ms if index + 1 < len(cues) else limit_ms)
            assert cue.start_ms <= (cues[index - 1].end_ms if index else 0)


@PROPERTY_SETTINGS
@given(segments=segment_lists(), options=subtitle_options)
def test_karaoke_frames_partition_each_plain_cue(segments, options):
    plain = shape_cues(segments, options)
    frames = shape_cues(segments, replace(options, highlight_words=True))
    check_cues(frames, segments, options)
    position = 0
    for cue in plain:
        cursor, underlined = cue.start_ms, -1
        while cursor < cue.end_ms:
            frame = frames[position]
            assert frame.lines == cue.lines and frame.start_ms == cursor
            if frame.underline is not None:
                assert underlined < frame.underline < sum(len(line) for line in cue.lines)
                underlined = frame.underline
            cursor, position = frame.end_ms, position + 1
        assert cursor == cue.end_ms
    assert position == len(frames)


@PROPERTY_SETTINGS
@given(segments=segment_lists(monotonic=False), options=subtitle_options)
def test_shaping_survives_times_in_any_order(segments, options):
    cues = shape_cues(segments, options)
    check_cues(cues, segments, options)
    shaped = "".join(word for cue in cues for line in cue.lines for word in line)
    assert shaped.split() == " ".join(segment.text for segment in segments).split()
