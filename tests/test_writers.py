"""Writers: golden files for every format, each output parsed back, and atomic writes.

The golden files in tests/data/golden are the writers' output for the transcripts below.
After an intended change, regenerate them and review the diff:

    pytest tests/test_writers.py --update-golden      # or DW_UPDATE_GOLDEN=1 pytest ...
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import pysrt
import pytest

from dwcli.errors import UsageError
from dwcli.segments import Segment, Transcript, Word
from dwcli.options import SubtitleOptions, WriterOptions
from dwcli.speakers.assign import Turn, apply_turns
from dwcli.subtitles import shape_cues
from dwcli.writers import SPEAKER_FORMATS, WRITERS, parse_formats, render

GOLDEN = Path(__file__).parent / "data" / "golden"
SUBTITLE_FORMATS = ("srt", "vtt")


def spoken(text: str, start: float, seconds_per_word: float) -> list[Word]:
    """Words as Whisper gives them (leading space), evenly paced from ``start``."""
    words = []
    for index, word in enumerate(text.split()):
        word_start = start + index * seconds_per_word
        words.append(Word(round(word_start, 3), round(word_start + 0.8 * seconds_per_word, 3), " " + word, 0.9))
    return words


def with_words(words: list[Word]) -> Segment:
    return Segment(words[0].start, words[-1].end, "".join(word.word for word in words).strip(), words)


def transcript(segments: list[Segment], duration_s: float) -> Transcript:
    return Transcript(
        source="talk.mp4",
        duration_s=duration_s,
        language="en",
        model_id="distil-whisper/distil-small.en",
        segments=segments,
        options={"task": "transcribe"},
    )


@dataclass(frozen=True)
class Case:
    transcript: Transcript
    options: WriterOptions = WriterOptions()
    formats: tuple[str, ...] = tuple(name for name in WRITERS if name not in SPEAKER_FORMATS)


GOOD_MORNING = [
    *spoken("Good morning.", 0.5, 0.45),
    # A pause, then more than 7 s of steady speech.
    *spoken("Today we start early, and we will keep going until every single question "
            "that you sent us has been answered properly.", 3.0, 0.4),
]
SPLIT_PUNCTUATION = [  # Whisper can give punctuation as a word of its own, and zero-length words
    Word(14.0, 14.3, " It", 0.8), Word(14.3, 14.9, " ends", 0.95), Word(14.9, 14.9, ".", 0.5),
]
LONG_WORD = "Donaudampfschifffahrtselektrizitätenhauptbetriebswerkbauunterbeamtengesellschaft"
# Two speakers: A asks, B answers in one segment that A's last words share, then A again.
DIALOGUE = apply_turns(transcript([
    with_words(spoken("Did you read the report before the meeting?", 0.4, 0.35)),
    with_words(spoken("I did, and the numbers look better than we feared. Good, then we can start.", 3.6, 0.38)),
    with_words(spoken("Agreed.", 9.8, 0.5)),
], duration_s=12.0), [Turn(0.4, 3.2, "SPEAKER_00"), Turn(3.6, 7.3, "SPEAKER_01"), Turn(7.4, 10.3, "SPEAKER_00")])
URL = "https://example.com/a/very/long/path/that/never/seems/to/end/at/all"

CASES = {
    "plain": Case(transcript([
        Segment(0.0, 2.5, "Hello, and welcome to the show."),
        Segment(2.5, 11.0, "Today we are talking about subtitles: how long a line may be, how fast people "
                           "read, and why a cue should never stay up for more than seven seconds."),
        Segment(12.0, 12.3, "Thanks!"),  # too short to read: runs on into the silence
    ], duration_s=15.0)),
    "words": Case(transcript([with_words(GOOD_MORNING), with_words(SPLIT_PUNCTUATION)], duration_s=20.0)),
    "karaoke": Case(
        transcript([with_words(GOOD_MORNING), with_words(SPLIT_PUNCTUATION)], duration_s=20.0),
        WriterOptions(SubtitleOptions(highlight_words=True)),
        SUBTITLE_FORMATS,
    ),
    "long_word": Case(transcript([
        Segment(0.0, 4.0, f"The word {LONG_WORD} is long."),
        with_words([Word(5.0, 5.4, " See", 0.9), Word(5.4, 7.6, " " + URL, 0.6), Word(7.6, 8.0, " today.", 0.9)]),
    ], duration_s=8.0)),
    "unicode": Case(transcript([
        Segment(0.0, 3.0, "Ça va? Naïve façade, smörgåsbord — déjà vu! 🎉"),
        Segment(3.0, 5.0, 'Tom & Jerry <3 "quotes" --> arrows'),
        Segment(5.0, 9.0, "東京タワーは日本で一番有名な観光地の一つです。毎年たくさんの人が訪れます。"),
        Segment(9.0, 10.5, "Привет, мир. مرحبا بالعالم"),
        with_words([Word(10.5, 10.9, " 你", 0.9), Word(10.9, 11.2, "好", 0.9), Word(11.2, 11.5, "。", 0.9)]),
    ], duration_s=12.0)),
    "hours": Case(transcript([
        Segment(3599.2, 3601.7, "Crossing the hour."),
        with_words(spoken("An hour, two minutes and five seconds in.", 3725.25, 0.5)),
        Segment(36000.0, 36002.5, "Ten hours."),
    ], duration_s=36010.0)),
    "empty": Case(transcript([], duration_s=12.0)),
    # --speakers: one segment cut where the speaker changes, a label on every cue and line.
    "speakers": Case(DIALOGUE, formats=tuple(WRITERS)),
    "speakers_karaoke": Case(DIALOGUE, WriterOptions(SubtitleOptions(highlight_words=True)), SUBTITLE_FORMATS),
    "speakers_silent": Case(apply_turns(transcript([], duration_s=5.0), []), formats=tuple(WRITERS)),
}
GOLDEN_FILES = [(name, fmt) for name, case in CASES.items() for fmt in case.formats]


def rendered(name: str, fmt: str) -> str:
    case = CASES[name]
    return render(case.transcript, fmt, case.options)


def expected_cues(name: str, speaker_columns: int = 0):
    case = CASES[name]
    return shape_cues(case.transcript.segments, case.options.subtitles, end_s=case.transcript.duration_s,
                      speaker_columns=speaker_columns)


def srt_text(cue) -> str:
    """A cue's text as SRT shows it: with speakers, ``[SPEAKER_00] `` before it."""
    return (f"[{cue.speaker}] " if cue.speaker else "") + cue.text()


# -- golden files ----------------------------------------------------------------------------


@pytest.fixture
def update_golden(request) -> bool:
    return bool(request.config.getoption("--update-golden", default=False)) or os.environ.get("DW_UPDATE_GOLDEN") == "1"


@pytest.mark.parametrize("name, fmt", GOLDEN_FILES, ids=[f"{name}.{fmt}" for name, fmt in GOLDEN_FILES])
def test_output_matches_golden_file(name, fmt, update_golden):
    path = GOLDEN / f"{name}.{fmt}"
    text = rendered(name, fmt)
    if update_golden:
        GOLDEN.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text.encode("utf-8"))
    assert path.exists(), f"no golden file {path.name}: run pytest tests/test_writers.py --update-golden"
    assert text == path.read_bytes().decode("utf-8")


def test_every_golden_file_belongs_to_a_case():
    expected = {f"{name}.{fmt}" for name, fmt in GOLDEN_FILES}
    assert {path.name for path in GOLDEN.iterdir()} == expected


# -- parsing the outputs back ----------------------------------------------------------------

SUBTITLE_CASES = [name for name, case in CASES.items() if "srt" in case.formats]
DATA_CASES = [name for name, case in CASES.items() if "json" in case.formats]


def _no_space(text: str) -> str:
    return re.sub(r"\s+", "", text)


@pytest.mark.parametrize("name", SUBTITLE_CASES)
def test_srt_parses_back_with_pysrt(name):
    items = pysrt.from_string(rendered(name, "srt"), error_handling=pysrt.ERROR_RAISE)
    cues = expected_cues(name, speaker_columns=len("[SPEAKER_00] "))
    assert [item.index for item in items] == list(range(1, len(cues) + 1))
    assert [(item.start.ordinal, item.end.ordinal) for item in items] == [(cue.start_ms, cue.end_ms) for cue in cues]
    assert [item.text for item in items] == [srt_text(cue) for cue in cues]


_VTT_TIME = r"(\d{2,}):([0-5]\d):([0-5]\d)\.(\d{3})"
_VTT_TIMING = re.compile(rf"{_VTT_TIME} --> {_VTT_TIME}")
_VTT_ENTITIES = {"&amp;": "&", "&lt;": "<", "&gt;": ">"}


def _vtt_ms(hours: int, minutes: int, seconds: int, milliseconds: int) -> int:
    return ((hours * 60 + minutes) * 60 + seconds) * 1000 + milliseconds


def parse_vtt(text: str) -> list[tuple[int, int, str]]:
    """A strict reader for what dw writes: ``WEBVTT``, a blank line, then cues of a timing
    line and text lines, each followed by a blank line; text holds only <u> tags and the
    three entities, after an optional voice tag (``<v SPEAKER_00>``) opening the cue.
    Returns (start_ms, end_ms, voice or None, unescaped text)."""
    assert text.startswith("WEBVTT\n\n"), "header"
    body = text[len("WEBVTT\n\n"):]
    if not body:
        return []
    assert body.endswith("\n\n") and "\n\n\n" not in body, "cues are separated by one blank line"
    cues = []
    for block in body[:-2].split("\n\n"):
        timing, *lines = block.split("\n")
        match = _VTT_TIMING.fullmatch(timing)
        assert match, f"timing line {timing!r}"
        fields = [int(field) for field in match.groups()]
        start, end = _vtt_ms(*fields[:4]), _vtt_ms(*fields[4:])
        assert lines and all(line.strip() for line in lines), "cue text"
        payload = "\n".join(lines)
        voice = re.match(r"<v ([^>]+)>", payload)
        if voice:
            payload = payload[voice.end():]
        assert "-->" not in payload
        assert not re.search(r"<(?!/?u>)", payload), "only <u> tags"
        assert not re.search(r"&(?!amp;|lt;|gt;)", payload), "only &amp; &lt; &gt;"
        assert not re.search(r">", re.sub(r"</?u>", "", payload)), "a bare >"
        cues.append((start, end, voice.group(1) if voice else None,
                     re.sub("&(amp|lt|gt);", lambda entity: _VTT_ENTITIES[entity.group()], payload)))
    return cues


@pytest.mark.parametrize("name", SUBTITLE_CASES)
def test_vtt_parses_back_with_a_strict_reader(name):
    cues = expected_cues(name)
    assert parse_vtt(rendered(name, "vtt")) == [(cue.start_ms, cue.end_ms, cue.speaker, cue.text()) for cue in cues]


@pytest.mark.parametrize("name", [name for name in SUBTITLE_CASES if not CASES[name].options.subtitles.highlight_words])
def test_subtitles_hold_every_character_of_the_transcript(name):
    items = pysrt.from_string(rendered(name, "srt"), error_handling=pysrt.ERROR_RAISE)
    shown = re.sub(r"\[SPEAKER_\d\d\] ", "", "".join(item.text for item in items))
    assert _no_space(shown) == _no_space(CASES[name].transcript.text)


@pytest.mark.parametrize("name", DATA_CASES)
def test_json_parses_back_to_the_transcript(name):
    source = CASES[name].transcript
    data = json.loads(rendered(name, "json"))
    assert {"text", "language", "duration", "model", "segments"} <= data.keys()
    assert (data["text"], data["language"], data["duration"], data["model"]) == (
        source.text, source.language, source.duration_s, source.model_id,
    )
    assert [segment["id"] for segment in data["segments"]] == list(range(len(source.segments)))
    for entry, segment in zip(data["segments"], source.segments, strict=True):
        assert entry["start"] == round(segment.start, 3) and entry["end"] == round(segment.end, 3)
        assert entry["text"] == segment.text
        assert entry.get("speaker") == segment.speaker and ("speaker" in entry) == (source.speakers is not None)
        if segment.words is None:
            assert "words" not in entry
            continue
        assert [(w["word"], w["start"], w["end"], w["probability"], w.get("speaker")) for w in entry["words"]] == [
            (w.word, round(w.start, 3), round(w.end, 3), round(w.probability, 4), w.speaker) for w in segment.words
        ]
    if source.speakers is None:
        assert "speakers" not in data
    else:
        assert data["speakers"] == [{"label": s.label, "talk_time": s.talk_s} for s in source.speakers]


@pytest.mark.parametrize("name", DATA_CASES)
def test_tsv_parses_back_with_integer_milliseconds(name):
    rows = list(csv.reader(io.StringIO(rendered(name, "tsv")), delimiter="\t", quoting=csv.QUOTE_NONE))
    source = CASES[name].transcript
    labelled = source.speakers is not None
    assert rows[0] == ["start", "end", "text"] + (["speaker"] if labelled else [])
    assert rows[1:] == [[str(round(s.start * 1000)), str(round(s.end * 1000)), s.text] + ([s.speaker] if labelled else [])
                        for s in source.segments]


@pytest.mark.parametrize("name", [name for name in DATA_CASES if CASES[name].transcript.speakers is None])
def test_txt_is_one_segment_per_line(name):
    assert rendered(name, "txt").splitlines() == [segment.text for segment in CASES[name].transcript.segments]


def test_txt_with_speakers_is_one_line_per_turn():
    assert rendered("speakers", "txt").splitlines() == [
        "SPEAKER_00: Did you read the report before the meeting?",
        "SPEAKER_01: I did, and the numbers look better than we feared.",
        "SPEAKER_00: Good, then we can start. Agreed.",
    ]


def test_rttm_is_one_speaker_line_per_turn():
    lines = [line.split() for line in rendered("speakers", "rttm").splitlines()]
    assert [(f[0], f[1], f[2], float(f[3]), float(f[4]), f[7]) for f in lines] == [
        ("SPEAKER", "talk", "1", 0.4, 2.8, "SPEAKER_00"), ("SPEAKER", "talk", "1", 3.6, 3.7, "SPEAKER_01"),
        ("SPEAKER", "talk", "1", 7.4, 2.9, "SPEAKER_00")]
    assert all(len(f) == 10 for f in lines)
    assert rendered("speakers_silent", "rttm") == ""


def test_speakers_are_cut_and_labelled_word_by_word():
    segments = CASES["speakers"].transcript.segments
    assert [(s.speaker, s.text) for s in segments] == [
        ("SPEAKER_00", "Did you read the report before the meeting?"),
        ("SPEAKER_01", "I did, and the numbers look better than we feared."),
        ("SPEAKER_00", "Good, then we can start."),
        ("SPEAKER_00", "Agreed.")]
    assert all(word.speaker == segment.speaker for segment in segments for word in segment.words)
    assert [(s.label, s.talk_s) for s in CASES["speakers"].transcript.speakers] == [("SPEAKER_00", 5.7),
                                                                                   ("SPEAKER_01", 3.7)]


def test_srt_labels_fit_the_line_width():
    options = WriterOptions(SubtitleOptions(max_line_width=30))
    for item in pysrt.from_string(render(CASES["speakers"].transcript, "srt", options)):
        assert all(len(line) <= 30 for line in item.text.splitlines()), item.text
        assert item.text.startswith("[SPEAKER_0")


def test_tsv_and_json_keep_awkward_text_intact():
    awkward = transcript([Segment(0.0, 1.0, 'tab\there, "quoted"\nnewline')], duration_s=1.0)
    rows = list(csv.reader(io.StringIO(render(awkward, "tsv", WriterOptions())), delimiter="\t", quoting=csv.QUOTE_NONE))
    assert rows[1] == ["0", "1000", 'tab here, "quoted" newline']
    assert json.loads(render(awkward, "json", WriterOptions()))["segments"][0]["text"] == awkward.segments[0].text


def test_parse_formats():
    assert parse_formats("srt, VTT,.srt") == ["srt", "vtt"]
    assert parse_formats("all") == ["txt", "srt", "vtt", "json", "tsv"]
    assert parse_formats("all", speakers=True) == ["txt", "srt", "vtt", "json", "tsv", "rttm"]
    assert parse_formats("srt,rttm", speakers=True) == ["srt", "rttm"]
    with pytest.raises(UsageError, match=r"^--format srt,rttm: rttm holds speaker turns: add --speakers$"):
        parse_formats("srt,rttm")
    with pytest.raises(UsageError, match="unknown format docx"):
        parse_formats("srt,docx")
