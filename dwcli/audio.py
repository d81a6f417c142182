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
from .riff import declared_wav_seconds


# Decoded audio is handed on in blocks of about this many samples, so memory stays flat
# however long the input is (10 s at 16 kHz).
_BLOCK_SAMPLES = 10 * SAMPLE_RATE
# A file decodes short of what its container says when it is truncated, damaged or still
# being written; codecs' priming and padding account for a few hundred ms at most.
_SHORT_TOLERANCE_S = 0.5
_SHORT_TOLERANCE_SHARE = 0.02


@dataclass(frozen=True)
class Placement:
    """Where a file's decoded audio lies on its container's timeline, the one a player shows
    and subtitles are timed on: a video's audio may start after its pictures (an MP4 whose
    audio track begins 4.9 s in) and end before them (credits without sound)."""

    start_s: float = 0.0  # the first decoded sample's time after the container's start
    container_s: float | None = None  # the container's duration, when it holds more than this audio

    def duration_s(self, audio_s: float) -> float:
        """The file's length on that timeline, given the seconds of audio decoded."""
        return max(self.start_s + audio_s, self.container_s or 0.0)


@dataclass(frozen=True)
class MediaInfo:
    """What probing a file tells before decoding it."""

    duration_s: float | None  # None when the container does not say (pipes, some streams)
    has_audio: bool


@dataclass
class DecodeReport:
    """What decoding a file found, beside its samples (filled as it goes)."""

    declared_s: float | None = None  # the duration the audio stream itself declares
    decoded_s: float = 0.0
    skipped_packets: int = 0  # damaged packets left out (their audio is missing)
    non_finite_samples: int = 0  # NaN or infinite samples replaced (float WAVs can hold them)
    audio_track: int = 0  # which audio stream was read, 0-based
    audio_tracks: int = 1  # how many the file has
    start_s: float = 0.0  # Placement.start_s
    container_s: float | None = None  # Placement.container_s

    @property
    def placement(self) -> Placement:
        # A partial file's container duration is only what it meant to hold, not a timeline.
        return Placement(self.start_s, None if self.short else self.container_s)

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


def _declared_duration(container, stream, source) -> float | None:
    """The duration the audio stream itself declares: its own header field (MP4, FLAC...), its
    statistics tag (Matroska writes no stream durations, but FFmpeg and mkvmerge tag each
    stream with DURATION), what a WAV's header says its data holds (FFmpeg caps that at the
    file's size), or the container's duration where this stream is all the container holds.
    Never a video's: a film's audio often ends before its pictures."""
    declared = None
    tags = {key.upper(): value for key, value in stream.metadata.items()}
    tagged = next((value for key, value in tags.items() if key == "DURATION" or key.startswith("DURATION-")), None)
    if tagged is not None:
        declared = _clock_seconds(tagged)
    elif stream.duration is not None and stream.time_base is not None and not _is_matroska(container):
        # In Matroska FFmpeg fills stream durations in from the container's: not the audio's.
        declared = float(stream.duration * stream.time_base)
    elif container.duration is not None and _only_stream(container, stream):
        declared = container.duration / 1_000_000  # AV_TIME_BASE is microseconds
    if container.format.name == "wav":
        header = declared_wav_seconds(source)
        if header is not None:
            declared = max(declared or 0.0, header)
    return declared


def _is_matroska(container) -> bool:
    return "matroska" in container.format.name or "webm" in container.format.name


def _only_stream(container, stream) -> bool:
    """Whether ``stream`` is all the container plays (cover art and attachments aside)."""
    return all(other is stream or other.type not in ("audio", "video") or _is_cover_art(other)
               for other in container.streams)


def _is_cover_art(stream) -> bool:
    import av

    return stream.type == "video" and bool(stream.disposition & av.stream.Disposition.attached_pic)


def _clock_seconds(text: str) -> float | None:
    """``00:00:11.064000000`` (Matroska's DURATION tag) -> 11.064."""
    try:
        hours, minutes, seconds = text.strip().split(":")
        return int(hours) * 3600 + int(minutes) * 60 + float(seconds)
    except ValueError:
        return None


def _container_duration(container) -> float | None:
    """The container's duration where it holds pictures as well (the timeline a player
    shows runs to the end of the longest stream); None for audio alone."""
    if container.duration is None or not any(stream.type == "video" and not _is_cover_art(stream)
                                             for stream in container.streams):
        return None
    return container.duration / 1_000_000


def _start_on_timeline(container, stream, frame) -> float:
    """Where the first decoded frame lies after the container's start (what ffprobe reports
    as the streams' start_time, and what players subtract): 0 for audio alone."""
    if frame.pts is not None and frame.time_base is not None:
        start = float(frame.pts * frame.time_base)
    elif stream.start_time is not None and stream.time_base is not None:
        start = float(stream.start_time * stream.time_base)
    else:
        return 0.0
    origin = container.start_time / 1_000_000 if container.start_time is not None else start
    return max(0.0, start - origin)


def pick_stream(container, track: int | None, name: str):
    """The audio stream to read: ``track`` (0-based among the audio streams), or the one a
    player starts with, the first marked default (else the first).  MediaError when the file
    has no audio, or not that track."""
    import av

    streams = list(container.streams.audio)
    if not streams:
        raise MediaError(f"{name}: no audio stream")
    if track is None:
        return next((stream for stream in streams if stream.disposition & av.stream.Disposition.default), streams[0])
    if track >= len(streams):
        have = "1 audio track (--audio-track 0)" if len(streams) == 1 else \
            f"{len(streams)} audio tracks (--audio-track 0 to {len(streams) - 1})"
        raise MediaError(f"{name}: no audio track {track}; it has {have}")
    return streams[track]


def probe(path: str | Path) -> MediaInfo:
    """Read the container header: duration of the first audio stream, if any."""
    if str(path) == STDIN:
        return MediaInfo(duration_s=None, has_audio=True)
    with _open(path) as container:
        streams = container.streams.audio
        if not streams:
            return MediaInfo(duration_s=None, has_audio=False)
        return MediaInfo(duration_s=_declared_duration(container, pick_stream(container, None, ""), path),
                         has_audio=True)


def decode_blocks(source: str | Path, report: DecodeReport | None = None,
                  allow_partial: bool = False, audio_track: int | None = None) -> Iterator[np.ndarray]:
    """Yield one audio stream of ``source`` (``audio_track``, 0-based among its audio
    streams, else the one a player starts with) as 16 kHz mono float32 blocks.

    ``source`` is a path or ``"-"`` for standard input.  A damaged packet is skipped (FFmpeg
    recovers the rest, as its command-line tool does) and counted in ``report``, as are
    samples that are not finite numbers (replaced: they would poison every window they
    reach).  Raises ``MediaError`` naming the file when it cannot be opened, holds no audio
    stream (or not that track), or decodes markedly shorter than its audio stream declares
    (truncated, damaged, still being copied) unless ``allow_partial``.
    """
    import av

    report = report if report is not None else DecodeReport()
    name = _name(source)
    container = _open(source)
    try:
        stream = pick_stream(container, audio_track, name)
        report.audio_tracks = len(container.streams.audio)
        report.audio_track = list(container.streams.audio).index(stream)
        stream.thread_type = "AUTO"
        if str(source) != STDIN:
            report.declared_s = _declared_duration(container, stream, source)
            report.container_s = _container_duration(container)
        resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
        pending: list[np.ndarray] = []
        pending_samples = 0
        decoded = 0
        first = True
        try:
            for packet in container.demux(stream):
                try:
                    frames = packet.decode()
                except (av.error.InvalidDataError, av.error.UndefinedError, av.error.BugError):
                    report.skipped_packets += 1  # damaged: left out, the rest goes on
                    continue
                for frame in frames:
                    if first:
                        report.start_s, first = _start_on_timeline(container, stream, frame), False
                    for resampled in resampler.resample(frame):
                        pending.append(_finite(resampled.to_ndarray().reshape(-1), report))
                        pending_samples += resampled.samples
                if pending_samples >= _BLOCK_SAMPLES:
                    decoded += pending_samples
                    report.decoded_s = decoded / SAMPLE_RATE
                    yield np.concatenate(pending)
                    pending, pending_samples = [], 0
            for resampled in resampler.resample(None):  # flush the resampler's delay line
                pending.append(_finite(resampled.to_ndarray().reshape(-1), report))
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


def _finite(samples: np.ndarray, report: DecodeReport) -> np.ndarray:
    """``samples`` with NaN made silence and infinities full scale (counted in ``report``):
    one such sample in a float WAV made every window around it NaN, and the model's sampler
    refused the batch."""
    # ~3.5 us a frame: 5 ms over the 1470 frames of 106 s of FLAC, which take ~110 ms to
    # decode (measured under load 7 on 2 cores; the two were within noise of each other).
    if np.isfinite(samples).all():
        return samples
    report.non_finite_samples += int(samples.size - np.count_nonzero(np.isfinite(samples)))
    return np.nan_to_num(samples, nan=0.0, posinf=1.0, neginf=-1.0)


def load_audio(source: str | Path, allow_partial: bool = False, audio_track: int | None = None) -> np.ndarray:
    """Decode a whole file into one array (tests and short clips; the pipeline streams)."""
    blocks = list(decode_blocks(source, allow_partial=allow_partial, audio_track=audio_track))
    return np.concatenate(blocks) if blocks else np.zeros(0, dtype=np.float32)


def ffmpeg_version() -> str:
    """The FFmpeg library version PyAV was built with, e.g. ``7.1.1``."""
    import av

    libavformat = av.library_versions.get("libavformat", ())
    return getattr(av, "ffmpeg_version_info", None) or ".".join(map(str, libavformat))
