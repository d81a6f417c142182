"""Test media made on the fly with PyAV: real speech re-encoded into other containers."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np


def encode_audio(
    samples: np.ndarray,
    path: Path,
    codec: str,
    rate: int = 16000,
    channels: int = 1,
    video: str | None = None,
    source_rate: int = 16000,
) -> Path:
    """Write mono float32 ``samples`` (at ``source_rate``) into ``path`` with ``codec``,
    resampled to ``rate`` and duplicated to ``channels``; with ``video``, add a video
    track of that codec (grey frames) as real video files have."""
    layout = "stereo" if channels == 2 else "mono"
    with av.open(str(path), mode="w") as container:
        if video:
            vstream = container.add_stream(video, rate=10)
            vstream.width, vstream.height, vstream.pix_fmt = 64, 48, "yuv420p"
        astream = container.add_stream(codec, rate=rate)
        astream.layout = layout
        resampler = av.AudioResampler(format=astream.format.name if astream.format else "fltp", layout=layout, rate=rate)
        block = 1024
        interleaved = np.repeat(samples[None, :], channels, axis=0) if channels == 2 else samples[None, :]
        pts = 0
        video_frames = int(len(samples) / source_rate * 10) if video else 0
        written_video = 0
        for start in range(0, len(samples), block):
            chunk = np.ascontiguousarray(interleaved[:, start : start + block].astype(np.float32))
            frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout=layout)
            frame.sample_rate = source_rate
            frame.pts = pts
            frame.time_base = Fraction(1, source_rate)
            pts += chunk.shape[1]
            for out in resampler.resample(frame):
                for packet in astream.encode(out):
                    container.mux(packet)
            while video and written_video < min(video_frames, pts * 10 // source_rate):
                image = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 128, np.uint8), format="rgb24")
                image.pts = written_video
                for packet in vstream.encode(image.reformat(format="yuv420p")):
                    container.mux(packet)
                written_video += 1
        for out in resampler.resample(None):
            for packet in astream.encode(out):
                container.mux(packet)
        for packet in astream.encode(None):
            container.mux(packet)
        if video:
            for packet in vstream.encode(None):
                container.mux(packet)
    return path


def video_only(path: Path, seconds: int = 1) -> Path:
    """A video file with no audio stream."""
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for index in range(seconds * 10):
            frame = av.VideoFrame.from_ndarray(np.zeros((48, 64, 3), np.uint8), format="rgb24").reformat(format="yuv420p")
            frame.pts = index
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


def float_wav(path: Path, samples: np.ndarray, rate: int = 16000) -> Path:
    """A 32-bit float WAV (WAVE_FORMAT_IEEE_FLOAT) of ``samples`` as they are: NaN and
    infinities included, which integer WAVs cannot hold."""
    import struct

    data = np.asarray(samples, dtype="<f4").tobytes()
    fmt = struct.pack("<HHIIHH", 3, 1, rate, rate * 4, 4, 32)
    path.write_bytes(b"RIFF" + struct.pack("<I", 4 + 8 + len(fmt) + 8 + len(data)) + b"WAVE"
                     + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data)
    return path


def _grey_frames(stream, seconds: float, container) -> None:
    for index in range(round(seconds * 10)):
        frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 128, np.uint8), format="rgb24").reformat(format="yuv420p")
        frame.pts = index
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode(None):
        container.mux(packet)


def _audio_track(container, stream, samples: np.ndarray, start_s: float) -> None:
    resampler = av.AudioResampler(format=stream.format.name, layout="mono", rate=stream.rate)
    pts = round(start_s * 16000)
    for start in range(0, len(samples), 1024):
        chunk = np.ascontiguousarray(samples[None, start : start + 1024].astype(np.float32))
        frame = av.AudioFrame.from_ndarray(chunk, format="flt", layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = 16000, pts, Fraction(1, 16000)
        pts += chunk.shape[1]
        for out in resampler.resample(frame):
            for packet in stream.encode(out):
                container.mux(packet)
    for out in resampler.resample(None):
        for packet in stream.encode(out):
            container.mux(packet)
    for packet in stream.encode(None):
        container.mux(packet)


def video_with_audio(path: Path, tracks: list[np.ndarray], video_s: float, audio_start_s: float = 0.0,
                     codec: str = "aac") -> Path:
    """A video of ``video_s`` seconds of grey frames with one audio track per 16 kHz mono
    array of ``tracks``, each starting ``audio_start_s`` after the pictures (an MP4 writes an
    edit list: the audio stream's start_time), as cameras and editors make them: audio that
    starts late, ends early (credits without sound), or comes in several languages."""
    with av.open(str(path), mode="w") as container:
        video = container.add_stream("mpeg4", rate=10)
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        streams = []
        for _ in tracks:
            stream = container.add_stream(codec, rate=16000)
            stream.layout = "mono"
            streams.append(stream)
        _grey_frames(video, video_s, container)
        for stream, samples in zip(streams, tracks):
            _audio_track(container, stream, samples, audio_start_s)
    return path


def audio_file(path: Path, samples: np.ndarray, codec: str, container_format: str, rate: int = 16000) -> Path:
    """16 kHz mono ``samples`` in ``codec`` inside ``container_format``, whatever ``path``'s
    extension says (a .m4b audiobook is an MP4, a .mpga an MP3, an .ogv an Ogg)."""
    with av.open(str(path), mode="w", format=container_format) as container:
        stream = container.add_stream(codec, rate=rate)
        stream.layout = "mono"
        _audio_track(container, stream, samples, 0.0)
    return path
