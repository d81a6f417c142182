"""Music, noise and silence stay silent; speech among them is still all transcribed.

One batch through the CLI with the real offline model: the non-speech set (made offline,
``tests/nonspeech.py``) beside real speech separated by long noisy pauses and real speech
over a music bed.
"""

from __future__ import annotations

import json
import subprocess

import pytest
from conftest import word_error_rate

from nonspeech import nonspeech_set, speech_over_music, speech_with_noisy_pauses, write_flac

# tiny.en on these recordings: 9.3% and 4.4% WER (speech alone, 6.5%); the bounds leave room
# for a point or two of drift, not for invented sentences.
WER_BOUNDS = {"speech_noisy_pauses": 0.15, "speech_over_music": 0.10}


@pytest.fixture(scope="module")
def transcribed(tmp_path_factory, dw_env):
    folder = tmp_path_factory.mktemp("nonspeech")
    recordings = nonspeech_set(minutes_scale=0.2) + [speech_with_noisy_pauses(), speech_over_music()]
    paths = [write_flac(folder / f"{recording.name}.flac", recording.samples) for recording in recordings]
    result = subprocess.run(["dw", "transcribe", *map(str, paths), "--format", "json,srt", "-o", str(folder / "out"),
                             "--model", "offline:tiny.en"], env=dw_env, capture_output=True, timeout=600)
    assert result.returncode == 0, result.stderr.decode()
    outputs = {}
    for recording in recordings:
        data = json.loads((folder / "out" / f"{recording.name}.json").read_text())
        outputs[recording.name] = (recording, data, (folder / "out" / f"{recording.name}.srt").read_text())
    return outputs


@pytest.mark.parametrize("name", [recording.name for recording in nonspeech_set(minutes_scale=0.2)])
def test_non_speech_gets_no_words(transcribed, name):
    _, data, srt = transcribed[name]
    assert data["segments"] == [] and data["text"] == "" and srt == ""


@pytest.mark.parametrize("name", sorted(WER_BOUNDS))
def test_speech_among_noise_and_music_is_transcribed(transcribed, name):
    recording, data, _ = transcribed[name]
    assert word_error_rate(recording.text, data["text"]) <= WER_BOUNDS[name]


def test_nothing_is_written_in_the_long_noisy_pauses(transcribed):
    """Each segment overlaps an utterance: none sits alone in the 5-14 s pauses of noise."""
    recording, data, _ = transcribed["speech_noisy_pauses"]
    from nonspeech import SAMPLE_RATE, utterances

    clips, _ = utterances()
    spans, cursor = [], 0.0
    for index, pause in enumerate((6.0, 11.0, 8.0, 14.0, 5.0, 0.0)):
        spans.append((cursor, cursor + len(clips[index]) / SAMPLE_RATE))
        cursor = spans[-1][1] + pause
    for segment in data["segments"]:
        assert any(segment["start"] < end and segment["end"] > start for start, end in spans), segment
