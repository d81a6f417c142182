"""The non-speech set, made offline: silence, room noise, loud noise and music, and real
speech among them.  Used by the tests and by ``benchmarks/bench.py --set nonspeech``.

Noise is generated here with fixed seeds; the music is ``tests/data/nonspeech/music_*.opus``
(composed and rendered by ``tests/data/nonspeech/make_music.py``, CC0); speech is the
LibriSpeech test-other long-form file of ``tests/data/speech`` (CC BY 4.0) cut at its known
utterance boundaries.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SAMPLE_RATE = 16000
DATA = Path(__file__).parent / "data"
MUSIC = sorted((DATA / "nonspeech").glob("music_*.opus"))
LONGFORM = DATA / "speech" / "librispeech_test-other_3080-5032-0000_to_0009.flac"


def _at_dbfs(samples: np.ndarray, rms_dbfs: float) -> np.ndarray:
    rms = float(np.sqrt(np.mean(np.square(samples, dtype=np.float64)))) or 1.0
    return (samples * (10 ** (rms_dbfs / 20) / rms)).astype(np.float32)


def white_noise(seconds: float, rms_dbfs: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return _at_dbfs(rng.standard_normal(round(seconds * SAMPLE_RATE)), rms_dbfs)


def pink_noise(seconds: float, rms_dbfs: float, seed: int = 0) -> np.ndarray:
    """1/f noise (white noise shaped in the frequency domain): what a quiet room sounds like."""
    rng = np.random.default_rng(seed)
    count = round(seconds * SAMPLE_RATE)
    spectrum = np.fft.rfft(rng.standard_normal(count))
    frequencies = np.fft.rfftfreq(count, 1 / SAMPLE_RATE)
    spectrum[1:] /= np.sqrt(frequencies[1:])
    spectrum[0] = 0
    return _at_dbfs(np.fft.irfft(spectrum, count), rms_dbfs)


def music(index: int = 0) -> np.ndarray:
    from dwcli.audio import load_audio

    return load_audio(MUSIC[index % len(MUSIC)])


def utterances() -> tuple[list[np.ndarray], list[str]]:
    """The ten utterances of the long-form test file, cut at their known spans, with text."""
    from dwcli.audio import load_audio

    audio = load_audio(LONGFORM)
    spans = json.loads(LONGFORM.with_suffix(".segments.json").read_text())["segments"]
    clips = [audio[round(span["start"] * SAMPLE_RATE) : round(span["end"] * SAMPLE_RATE)] for span in spans]
    return clips, [span["text"] for span in spans]


@dataclass(frozen=True)
class Recording:
    """A file of the set: its samples and what was said in it ("" for none)."""

    name: str
    samples: np.ndarray
    text: str

    @property
    def seconds(self) -> float:
        return len(self.samples) / SAMPLE_RATE


def speech_with_noisy_pauses(pause_s: tuple[float, ...] = (6.0, 11.0, 8.0, 14.0, 5.0), noise_dbfs: float = -45.0,
                             count: int = 6) -> Recording:
    """Utterances separated by long pauses of room noise (pink, ``noise_dbfs``), noise under
    the speech too, as in a recorded room."""
    clips, texts = utterances()
    pieces = []
    for index in range(count):
        pieces.append(clips[index])
        if index < count - 1:
            pieces.append(np.zeros(round(pause_s[index % len(pause_s)] * SAMPLE_RATE), np.float32))
    speech = np.concatenate(pieces)
    return Recording("speech_noisy_pauses", speech + pink_noise(len(speech) / SAMPLE_RATE, noise_dbfs, seed=3),
                     " ".join(texts[:count]))


def speech_over_music(music_below_db: float = 15.0, count: int = 4) -> Recording:
    """Utterances over a music bed ``music_below_db`` quieter than the speech, with the music
    alone for a few seconds before, between and after (as under a film's dialogue)."""
    clips, texts = utterances()
    lead = np.zeros(4 * SAMPLE_RATE, np.float32)
    speech = np.concatenate([lead] + [np.concatenate([clip, np.zeros(3 * SAMPLE_RATE, np.float32)])
                                      for clip in clips[:count]] + [lead])
    bed = np.resize(music(1), len(speech))
    speech_rms = float(np.sqrt(np.mean(np.concatenate(clips[:count]) ** 2)))
    bed = _at_dbfs(bed, 20 * np.log10(speech_rms) - music_below_db)
    return Recording("speech_over_music", np.clip(speech + bed, -1, 1), " ".join(texts[:count]))


def nonspeech_set(minutes_scale: float = 1.0) -> list[Recording]:
    """Silence, quiet room noise, loud white noise and each piece of music: nothing said.

    ``minutes_scale`` stretches the noise files (the benchmark uses the issue's lengths,
    the tests shorter ones)."""
    recordings = [
        Recording("silence", np.zeros(round(60 * minutes_scale * SAMPLE_RATE), np.float32), ""),
        Recording("room_noise", pink_noise(300 * minutes_scale, -50.0, seed=1), ""),
        Recording("white_noise", white_noise(180 * minutes_scale, -20.0, seed=2), ""),
    ]
    recordings += [Recording(path.stem, music(index), "") for index, path in enumerate(MUSIC)]
    return recordings


def write_flac(path: Path, samples: np.ndarray) -> Path:
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("flac", rate=SAMPLE_RATE)
        stream.layout = "mono"
        pcm = (np.clip(samples, -1, 1) * 32767).astype(np.int16)
        for start in range(0, len(pcm), 10 * SAMPLE_RATE):
            frame = av.AudioFrame.from_ndarray(pcm[None, start : start + 10 * SAMPLE_RATE], format="s16", layout="mono")
            frame.sample_rate = SAMPLE_RATE
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


def joined_speech() -> Recording:
    """Real read speech (the long-form file's ten utterances, then four other LibriSpeech
    clips) joined 0.25 s apart: 2.4 minutes in which Whisper's 30 s windows end inside words."""
    import json

    from dwcli.audio import load_audio

    clips, texts = utterances()
    manifest = [json.loads(line) for line in (DATA / "speech" / "manifest.jsonl").read_text().splitlines()]
    for entry in manifest:
        if entry["audio"].endswith((".wav",)) or entry["audio"] == "2412-153948-0000.flac":
            clips.append(load_audio(DATA / "speech" / entry["audio"]))
            texts.append(entry["text"])
    gap = np.zeros(SAMPLE_RATE // 4, np.float32)
    pieces = [piece for clip in clips for piece in (clip, gap)][:-1]
    return Recording("joined_speech", np.concatenate(pieces), " ".join(texts))
