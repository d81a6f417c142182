"""The speech detector: Silero VAD on real speech and on the non-speech set, streamed."""

from __future__ import annotations

import numpy as np
import pytest

from dwcli import vad
from dwcli.audio import SAMPLE_RATE, load_audio
from nonspeech import nonspeech_set, speech_over_music, speech_with_noisy_pauses


@pytest.mark.parametrize("recording", nonspeech_set(minutes_scale=0.2), ids=lambda recording: recording.name)
def test_no_speech_is_found_in_silence_noise_or_music(recording):
    assert vad.speech_regions(recording.samples) == []


def test_every_utterance_of_real_speech_reaches_the_model(longform):
    """The audio handed on covers each of the ten utterances of the long-form file (their
    spans include LibriSpeech's room tone at both ends, which may be left out)."""
    pieces = list(vad.SpeechFilter(vad.VadOptions()).pieces([load_audio(longform["path"])]))
    for utterance in longform["segments"]:
        start, end = utterance["start"] * SAMPLE_RATE, utterance["end"] * SAMPLE_RATE
        covered = sum(max(0, min(piece.end, end) - max(piece.start, start)) for piece in pieces)
        assert covered >= 0.95 * (end - start), utterance["text"]


@pytest.mark.parametrize("make", [speech_with_noisy_pauses, speech_over_music], ids=["noisy_pauses", "music_bed"])
def test_speech_among_noise_and_music_is_found_and_the_rest_left_out(make):
    recording = make()
    regions = vad.speech_regions(recording.samples)
    speech_s = sum(r.end_s - r.start_s for r in regions)
    assert 0 < speech_s < recording.seconds - 15  # the pauses (noise, music alone) are left out


@pytest.mark.parametrize("block", [7777, 10 * SAMPLE_RATE, 3 * 10 * SAMPLE_RATE + 5])
def test_streaming_finds_what_the_whole_file_gives(longform, block):
    """Fed block by block, the filter finds the same regions as on the whole file at once,
    hands on each region's audio unchanged, in order, and counts every sample."""
    audio = load_audio(longform["path"])
    speech = vad.SpeechFilter(vad.VadOptions())
    pieces = list(speech.pieces(audio[start : start + block] for start in range(0, len(audio), block)))
    assert [region for piece in pieces for region in piece.speech] == vad.speech_regions(audio)
    assert all(np.array_equal(piece.samples, audio[piece.start : piece.end]) for piece in pieces)
    assert all(before.end <= after.start for before, after in zip(pieces, pieces[1:]))
    assert speech.samples_read == len(audio)


def test_pieces_are_padded_and_short_gaps_shared():
    options = vad.VadOptions()
    audio = load_audio(__import__("conftest").SPEECH / "jfk.flac")
    [first, *rest] = list(vad.SpeechFilter(options).pieces([audio]))
    (region,) = first.speech
    assert first.start == max(0, region.start - options.pad_samples)
    for before, after in zip([first, *rest], rest):
        gap = after.speech[0].start - before.speech[0].end
        if gap < 2 * options.pad_samples:
            assert before.end == after.start  # pads meet: the pause is kept whole
        else:
            assert before.end == before.speech[0].end + options.pad_samples


def test_without_detection_every_block_is_handed_on():
    blocks = [np.ones(1000, np.float32), np.zeros(500, np.float32)]
    speech = vad.SpeechFilter(vad.VadOptions(enabled=False))
    pieces = list(speech.pieces(blocks))
    assert [(piece.start, len(piece.samples), piece.speech) for piece in pieces] == [(0, 1000, None), (1000, 500, None)]
    assert speech.samples_read == 1500


def test_importing_the_detector_keeps_torchs_thread_count():
    import torch

    vad._session.cache_clear()
    torch.set_num_threads(2)
    vad._session()
    assert torch.get_num_threads() == 2


@pytest.mark.parametrize("field,value", [("threshold", 0.0), ("threshold", 1.5), ("speech_pad_ms", -1)])
def test_options_out_of_range_are_refused(field, value):
    with pytest.raises(ValueError, match=field):
        vad.VadOptions(**{field: value})
