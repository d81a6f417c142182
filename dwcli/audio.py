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

from .discover import STDIN, STDIN_LABEL, display_name
from .errors import MediaError
from .options import SAMPLE_RATE  # Hz: the rate every stage works in


# Decoded audio is handed on in blocks of about this many samples, so memory stays flat
# however long the input is (10 s at 16 kHz).
_BLOCK_SAMPLES = 10 * SAMPLE_RATE
# A file decodes short of what its container says when it is truncated, damaged or still
# being written; codecs' priming and padding account for a few hundred ms at most.
_SHORT_TOLERANCE_S = 0.5
_SHORT_TOLERANCE_SHARE = 0.02


@dataclass(frozen=True)
class MediaInfo:
    """What probing a file tells before decoding it."""

    duration_s: float | None  # None when the container does not say (pipes, some streams)
    has_audio: bool


@dataclass
class DecodeReport:
    """What decoding a file found, beside its samples (filled as it goes)."""

    declared_s: float | None = None  # the container's duration of the audio stream
    decoded_s: float = 0.0
    skipped_packets: int = 0  # damaged packets left out (their audio is missing)

    @property
    def short(self) -> bool:
        """Whether the audio decoded is markedly shorter than the container says."""
        if self.declared_s is None:
            return False
        return self.declared_s - self.decoded_s > max(_SHORT_TOLERANCE_S, _SHORT_TOLERANCE_SHARE * self.declared_s)


def _name(source) -> str:
    return STDIN_LABEL if str(source) == STDIN else display_name(str(source))


def _open(source: str | Path | BinaryIO):
    import av

    name = _name(source)
    if str(source) == STDIN:
        if sys.stdin is None or sys.stdin.closed:
            raise MediaError(f"{name}: standard input is closed")
        target = sys.stdin.buffer
    else:
        target = str(source)
    try:
        return av.open(target, mode="r", metadata_errors="ignore")
    except FileNotFoundError:
        raise MediaError(f"{name}: no such file") from None
    except (av.error.FFmpegError, OSError, ValueError) as error:
        raise MediaError(f"{name}: cannot read media ({_reason(error)})") from None


def _reason(error: Exception) -> str:
    text = getattr(error, "strerror", None) or str(error)
    # PyAV's messages end with the file name (and errno); keep only FFmpeg's words.
    return text.split(": '")[0].rstrip(".") or type(error).__name__


def _declared_duration(container, stream) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / 1_000_000  # AV_TIME_BASE is microseconds
    return None


def probe(path: str | Path) -> MediaInfo:
    """Read the container header: duration of the first audio stream, if any."""
    if str(path) == STDIN:
        return MediaInfo(duration_s=None, has_audio=True)
    with _open(path) as container:
        streams = container.streams.audio
        if not streams:
            return MediaInfo(duration_s=None, has_audio=False)
        return MediaInfo(duration_s=_declared_duration(container, streams[0]), has_audio=True)


def decode_blocks(source: str | Path, report: DecodeReport | None = None,
                  allow_partial: bool = False) -> Iterator[np.ndarray]:
    """Yield the first audio stream of ``source`` as 16 kHz mono float32 blocks.

    ``source`` is a path or ``"-"`` for standard input.  A damaged packet is skipped (FFmpeg
    recovers the rest, as its command-line tool does) and counted in ``report``.  Raises
    ``MediaError`` naming the file when it cannot be opened, holds no audio stream, or
    decodes markedly shorter than its container says (truncated, damaged, still being
    copied) unless ``allow_partial``.
    """
    import av

    report = report if report is not None else DecodeReport()
    name = _name(source)
    container = _open(source)
    try:
        if not container.streams.audio:
            raise MediaError(f"{name}: no audio stream")
        stream = container.streams.audio[0]
        stream.thread_type = "AUTO"
        if str(source) != STDIN:
            report.declared_s = _declared_duration(container, stream)
        resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
        pending: list[np.ndarray] = []
        pending_samples = 0
        decoded = 0
        try:
            for packet in container.demux(stream):
                try:
                    frames = packet.decode()
                except (av.error.InvalidDataError, av.error.UndefinedError, av.error.BugError):
                    report.skipped_packets += 1  # damaged: left out, the rest goes on
                    continue
                for frame in frames:
                    for resampled in resampler.resample(frame):
                        pending.append(resampled.to_ndarray().reshape(-1))
                        pending_samples += resampled.samples
                if pending_samples >= _BLOCK_SAMPLES:
                    decoded += pending_samples
                    report.decoded_s = decoded / SAMPLE_RATE
                    yield np.concatenate(pending)
                    pending, pending_samples = [], 0
            for resampled in resampler.resample(None):  # flush the resampler's delay line
                pending.append(resampled.to_ndarray().reshape(-1))
                pending_samples += resampled.samples
        except av.error.FFmpegError as error:
            raise MediaError(f"{name}: cannot decode audio ({_reason(error)})") from None
        decoded += pending_samples
        report.decoded_s = decoded / SAMPLE_RATE
        damaged = f", {report.skipped_packets} damaged packet(s) skipped" if report.skipped_packets else ""
        if decoded == 0 and (not stream.codec_context.sample_rate or report.skipped_packets):
            # FFmpeg picks a demuxer by the extension too: a text file named .flac opens, with
            # no sample rate, and decodes to nothing.  A valid header with no frames (an
            # empty WAV) is empty audio, not an error.
            raise MediaError(f"{name}: no audio could be decoded (not a media file, or damaged{damaged})")
        if report.short and not allow_partial:
            raise MediaError(f"{name}: decoded {report.decoded_s:.1f} s of the {report.declared_s:.1f} s its "
                             f"container declares (truncated, damaged or still being written{damaged}); "
                             "--allow-partial transcribes what there is")
        if pending:
            yield np.concatenate(pending)
    finally:
        container.close()


def load_audio(source: str | Path, allow_partial: bool = False) -> np.ndarray:
    """Decode a whole file into one array (tests and short clips; the pipeline streams)."""
    blocks = list(decode_blocks(source, allow_partial=allow_partial))
    return np.concatenate(blocks) if blocks else np.zeros(0, dtype=np.float32)


def ffmpeg_version() -> str:
    """The FFmpeg library version PyAV was built with, e.g. ``7.1.1``."""
    import av

    libavformat = av.library_versions.get("libavformat", ())
    return getattr(av, "ffmpeg_version_info", None) or ".".join(map(str, libavformat))
