"""FFmpeg decoding (PyAV): containers and codecs decode to the same 16 kHz mono speech."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import word_error_rate
from dwcli.audio import SAMPLE_RATE, decode_blocks, load_audio, probe
from dwcli.decoding import DecodingOptions
from dwcli.errors import MediaError
from dwcli.features import log_mel_batch
from media import encode_audio, video_only

CONTAINERS = [
    # (file name, audio codec, sample rate, channels, video codec)
    ("speech.mp4", "aac", 44100, 2, "libx264"),
    ("speech.mkv", "libopus", 48000, 2, "mpeg4"),
    ("speech.webm", "libopus", 48000, 1, "libvpx"),
    ("speech.ogg", "libopus", 48000, 1, None),
    ("speech.opus", "libopus", 48000, 2, None),
    ("speech.mp3", "libmp3lame", 44100, 2, None),
    ("speech.m4a", "aac", 22050, 1, None),
    ("speech.flac", "flac", 44100, 2, None),
    ("speech.wav", "pcm_s16le", 44100, 2, None),
]


@pytest.fixture(scope="module")
def jfk_audio(jfk):
    return load_audio(jfk["path"])


def test_decodes_stereo_44k_flac_to_16k_mono_float32(jfk, jfk_audio):
    assert jfk_audio.dtype == np.float32 and jfk_audio.ndim == 1
    assert len(jfk_audio) / SAMPLE_RATE == pytest.approx(jfk["duration"], abs=0.01)
    assert probe(jfk["path"]).duration_s == pytest.approx(11.0, abs=0.01)


def test_streams_in_bounded_blocks(longform):
    sizes = [len(block) for block in decode_blocks(longform["path"])]
    assert len(sizes) > 5
    assert max(sizes) < 12 * SAMPLE_RATE  # ~10 s blocks: memory does not grow with length


@pytest.mark.parametrize("name,codec,rate,channels,video", CONTAINERS)
def test_container_decodes_to_the_same_text(tmp_path, engine, jfk, jfk_audio, name, codec, rate, channels, video):
    path = encode_audio(jfk_audio, tmp_path / name, codec, rate=rate, channels=channels, video=video)
    decoded = load_audio(path)
    # Encoder delay and padding add a few milliseconds at most.
    assert len(decoded) / SAMPLE_RATE == pytest.approx(len(jfk_audio) / SAMPLE_RATE, abs=0.1)
    [result] = engine.greedy.decode(engine.encode(log_mel_batch([decoded], engine.n_mels)), DecodingOptions(timestamps=False))
    text = engine.decode_text(result.tokens)
    assert word_error_rate(jfk["text"], text) == 0.0, (name, text)


def test_video_without_audio_is_a_clear_error(tmp_path):
    path = video_only(tmp_path / "silent.mp4")
    with pytest.raises(MediaError, match=r"silent\.mp4: no audio stream$"):
        load_audio(path)


def test_garbage_file_is_a_clear_error(tmp_path):
    path = tmp_path / "broken.mp3"
    path.write_bytes(b"this is not audio" * 100)
    with pytest.raises(MediaError, match=r"broken\.mp3: cannot read media \(Invalid data found when processing input\)"):
        load_audio(path)


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(MediaError, match=r"nope\.wav: no such file"):
        load_audio(tmp_path / "nope.wav")


def test_a_truncated_file_is_an_error_unless_partial_is_allowed(tmp_path, jfk):
    import pytest

    from dwcli.errors import MediaError

    data = jfk["path"].read_bytes()
    cut = tmp_path / "cut.flac"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(MediaError) as raised:
        load_audio(cut)
    assert str(raised.value) == (f"{cut}: decoded 5.4 s of the 11.0 s its container declares (truncated, damaged or "
                                 "still being written); --allow-partial transcribes what there is")
    audio = load_audio(cut, allow_partial=True)
    assert 3 * SAMPLE_RATE < len(audio) < 8 * SAMPLE_RATE


def test_damage_in_the_middle_is_skipped_and_counted(tmp_path, jfk):
    """1 KB of garbage inside an MP3: FFmpeg recovers all but a few frames, as its command
    line tool does; the damaged packets are counted."""
    import random

    from dwcli.audio import DecodeReport, decode_blocks
    from media import encode_audio

    mp3 = encode_audio(load_audio(jfk["path"]), tmp_path / "jfk.mp3", "libmp3lame", rate=44100)
    data = bytearray(mp3.read_bytes())
    random.seed(0)
    data[len(data) // 2 : len(data) // 2 + 1024] = bytes(random.randrange(256) for _ in range(1024))
    damaged = tmp_path / "damaged.mp3"
    damaged.write_bytes(bytes(data))
    report = DecodeReport()
    samples = sum(len(block) for block in decode_blocks(damaged, report))
    assert samples > 10.5 * SAMPLE_RATE and report.skipped_packets >= 1 and not report.short


def test_a_file_that_decodes_to_nothing_is_an_error_unless_its_header_is_audio(tmp_path):
    """FFmpeg picks its demuxer by the extension too: text or zeros named .flac open and
    decode to no samples. That is an error (it was transcribed as an empty success); a valid
    WAV header with zero frames is empty audio.  (Random bytes are no test: depending on
    what they hold, FFmpeg refuses to open them, "cannot read media", or opens them.)"""
    import wave

    from dwcli.audio import decode_blocks
    from dwcli.errors import MediaError

    (tmp_path / "text.flac").write_text("this is not audio\n")
    (tmp_path / "zeros.flac").write_bytes(bytes(5000))
    for name in ("text.flac", "zeros.flac"):
        path = tmp_path / name
        with pytest.raises(MediaError) as raised:
            list(decode_blocks(str(path)))
        assert str(raised.value) == f"{path}: no audio could be decoded (not a media file, or damaged)"
    with wave.open(str(tmp_path / "empty.wav"), "wb") as empty:
        empty.setnchannels(1), empty.setsampwidth(2), empty.setframerate(16000)
    assert sum(len(block) for block in decode_blocks(str(tmp_path / "empty.wav"))) == 0
