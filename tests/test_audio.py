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


# -- media as it comes (issue 28) --------------------------------------------------------
@pytest.mark.parametrize("name,codec,container", [("book.m4b", "aac", "mp4"), ("film.ogv", "libopus", "ogg"),
                                                  ("phone.3gpp", "aac", "3gp"), ("song.mpga", "libmp3lame", "mp3")])
def test_the_extensions_a_folder_search_added_decode(tmp_path, jfk_audio, name, codec, container):
    from media import audio_file

    path = audio_file(tmp_path / name, jfk_audio[: 3 * SAMPLE_RATE], codec, container,
                      rate=48000 if codec == "libopus" else 16000)
    assert len(load_audio(path)) / SAMPLE_RATE == pytest.approx(3.0, abs=0.1)


def test_non_finite_samples_are_cleaned_and_counted(tmp_path, jfk_audio):
    """One NaN and one infinity in a float WAV: silence and full scale, counted."""
    from dwcli.audio import DecodeReport
    from media import float_wav

    samples = jfk_audio[: 2 * SAMPLE_RATE].copy()
    samples[100], samples[200], samples[300] = np.nan, np.inf, -np.inf
    report = DecodeReport()
    decoded = np.concatenate(list(decode_blocks(float_wav(tmp_path / "poisoned.wav", samples), report)))
    assert np.isfinite(decoded).all() and report.non_finite_samples == 3
    assert (decoded[100], decoded[200], decoded[300]) == (0.0, 1.0, -1.0)
    assert np.array_equal(np.delete(decoded, [100, 200, 300]), np.delete(samples, [100, 200, 300]))


def test_a_wav_header_that_declares_more_than_the_file_holds_is_truncated(tmp_path, jfk_audio):
    """FFmpeg caps a WAV's duration at its size: the header's own data size tells a copy cut
    short (or a header that says 60 s over 4 s); a streamed WAV (sizes unknown) is whole."""
    import struct

    from conftest import wav_bytes

    whole = wav_bytes(jfk_audio[: 4 * SAMPLE_RATE])
    cut, lie, streamed = tmp_path / "cut.wav", tmp_path / "lie.wav", tmp_path / "streamed.wav"
    cut.write_bytes(whole[: len(whole) // 2])
    lie.write_bytes(whole[:40] + struct.pack("<I", 60 * SAMPLE_RATE * 2) + whole[44:])
    streamed.write_bytes(wav_bytes(jfk_audio[: 4 * SAMPLE_RATE], streamed=True))
    for path, decoded_s, declared_s in ((cut, 2.0, 4.0), (lie, 4.0, 60.0)):
        with pytest.raises(MediaError) as raised:
            load_audio(path)
        assert str(raised.value) == (f"{path}: decoded {decoded_s} s of the {declared_s} s its container declares "
                                     "(truncated, damaged or still being written); --allow-partial transcribes what "
                                     "there is")
    assert len(load_audio(streamed)) == 4 * SAMPLE_RATE
    assert len(load_audio(cut, allow_partial=True)) == pytest.approx(2 * SAMPLE_RATE, abs=50)  # less the header


def test_a_video_whose_audio_ends_early_is_whole(tmp_path, jfk_audio):
    """Matroska writes no stream durations; FFmpeg copies the container's (the pictures')
    in: the audio's own DURATION tag is what it declares.  As MP4 it passed already."""
    from dwcli.audio import DecodeReport
    from media import video_with_audio

    for name in ("credits.mkv", "credits.mp4"):
        report = DecodeReport()
        samples = sum(len(block) for block in decode_blocks(video_with_audio(tmp_path / name, [jfk_audio], 16.0),
                                                            report))
        assert samples / SAMPLE_RATE == pytest.approx(11.0, abs=0.1) and not report.short
        assert report.placement.duration_s(report.decoded_s) == pytest.approx(16.0, abs=0.01)


def test_audio_that_starts_after_the_pictures_is_placed_on_their_timeline(tmp_path, jfk_audio):
    from dwcli.audio import DecodeReport
    from media import video_with_audio

    report = DecodeReport()
    list(decode_blocks(video_with_audio(tmp_path / "late.mp4", [jfk_audio], 16.0, audio_start_s=4.94), report))
    # 4.94 s less AAC's 1024 priming samples (64 ms at 16 kHz), which the stream starts with.
    assert report.placement.start_s == pytest.approx(4.94 - 1024 / SAMPLE_RATE, abs=0.001)
    assert report.placement.duration_s(report.decoded_s) == 16.0
    audio_only = DecodeReport()
    list(decode_blocks(encode_audio(jfk_audio, tmp_path / "jfk.mp3", "libmp3lame", rate=44100), audio_only))
    assert audio_only.placement.start_s == 0.0 and audio_only.placement.container_s is None


def test_the_players_audio_track_or_the_one_asked_for(tmp_path, jfk_audio):
    from dwcli.audio import DecodeReport
    from media import video_with_audio

    silence = np.zeros(4 * SAMPLE_RATE, np.float32)
    path = video_with_audio(tmp_path / "two.mkv", [jfk_audio[: 4 * SAMPLE_RATE], silence], 4.0)
    report = DecodeReport()
    first = np.concatenate(list(decode_blocks(path, report)))
    assert (report.audio_track, report.audio_tracks) == (0, 2) and np.abs(first).max() > 0.1
    second = load_audio(path, audio_track=1)
    assert np.abs(second).max() < 0.01
    with pytest.raises(MediaError) as raised:
        load_audio(path, audio_track=2)
    assert str(raised.value) == f"{path}: no audio track 2; it has 2 audio tracks (--audio-track 0 to 1)"
