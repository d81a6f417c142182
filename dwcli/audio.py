"""FFmpeg decoding through PyAV: any container -> 16 kHz mono float32, streamed.

Why PyAV and not an ``ffmpeg`` subprocess: PyAV's wheels carry FFmpeg's libraries, so dw
needs no system ffmpeg binary (a fresh machine, a container image, a cron host all work
after ``pip install``); decoding runs in-process, so errors come back as exceptions we can
name per file instead of parsing a child's stderr; and frames arrive as numpy arrays we can
stream without piping 4 bytes per sample through a pipe.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from .errors import MediaError

SAMPLE_RATE = 16_000  # Hz: what every Whisper model was trained on
STDIN = "-"  # the input name that means "read the media from standard input"
STDIN_LABEL = "<stdin>"  # how messages name it

# Decoded audio is handed on in blocks of about this many samples, so memory stays flat
# however long the input is (10 s at 16 kHz).
_BLOCK_SAMPLES = 10 * SAMPLE_RATE


@dataclass(frozen=True)
class MediaInfo:
    """What probing a file tells before decoding it."""

    duration_s: float | None  # None when the container does not say (pipes, some streams)
    has_audio: bool


def _open(source: str | Path | BinaryIO):
    import av

    target = sys.stdin.buffer if str(source) == STDIN else source
    name = STDIN_LABEL if str(source) == STDIN else str(source)
    try:
        return av.open(target if not isinstance(target, Path) else str(target), mode="r", metadata_errors="ignore")
    except FileNotFoundError:
        raise MediaError(f"{name}: no such file") from None
    except (av.error.FFmpegError, OSError, ValueError) as error:
        raise MediaError(f"{name}: cannot read media ({_reason(error)})") from None


def _reason(error: Exception) -> str:
    text = getattr(error, "strerror", None) or str(error)
    # PyAV's messages end with the file name (and errno); keep only FFmpeg's words.
    return text.split(": '")[0].rstrip(".") or type(error).__name__


def probe(path: str | Path) -> MediaInfo:
    """Read the container header: duration of the first audio stream, if any."""
    if str(path) == STDIN:
        return MediaInfo(duration_s=None, has_audio=True)
    with _open(path) as container:
        streams = container.streams.audio
        if not streams:
            return MediaInfo(duration_s=None, has_audio=False)
        stream = streams[0]
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = container.duration / 1_000_000  # AV_TIME_BASE is microseconds
        else:
            duration = None
        return MediaInfo(duration_s=duration, has_audio=True)


def decode_blocks(source: str | Path) -> Iterator[np.ndarray]:
    """Yield the first audio stream of ``source`` as 16 kHz mono float32 blocks.

    ``source`` is a path or ``"-"`` for standard input.  Raises ``MediaError`` naming the
    file when it cannot be opened, holds no audio stream, or breaks while decoding.
    """
    import av

    name = "<stdin>" if str(source) == STDIN else str(source)
    container = _open(source)
    try:
        if not container.streams.audio:
            raise MediaError(f"{name}: no audio stream")
        stream = container.streams.audio[0]
        stream.thread_type = "AUTO"
        resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
        pending: list[np.ndarray] = []
        pending_samples = 0
        try:
            for frame in container.decode(stream):
                for resampled in resampler.resample(frame):
                    pending.append(resampled.to_ndarray().reshape(-1))
                    pending_samples += resampled.samples
                if pending_samples >= _BLOCK_SAMPLES:
                    yield np.concatenate(pending)
                    pending, pending_samples = [], 0
            for resampled in resampler.resample(None):  # flush the resampler's delay line
                pending.append(resampled.to_ndarray().reshape(-1))
        except av.error.FFmpegError as error:
            raise MediaError(f"{name}: cannot decode audio ({_reason(error)})") from None
        if pending:
            yield np.concatenate(pending)
    finally:
        container.close()


def load_audio(source: str | Path) -> np.ndarray:
    """Decode a whole file into one array (tests and short clips; the pipeline streams)."""
    blocks = list(decode_blocks(source))
    return np.concatenate(blocks) if blocks else np.zeros(0, dtype=np.float32)


def ffmpeg_version() -> str:
    """The FFmpeg library version PyAV was built with, e.g. ``7.1.1``."""
    import av

    libavformat = av.library_versions.get("libavformat", ())
    return getattr(av, "ffmpeg_version_info", None) or ".".join(map(str, libavformat))
