"""What a WAV file's own header declares, read without FFmpeg.

FFmpeg caps a WAV's duration at what the file holds: a copy cut short (``head -c``, a
transfer that stopped) or a header that says 60 s over 11 s of data decodes "complete", so
comparing the decoded length with FFmpeg's duration never notices.  The RIFF header keeps
the size the writer meant: the ``data`` chunk's length (RF64/BW64: the ``ds64`` chunk's), and
the bytes per second in ``fmt ``.
"""

from __future__ import annotations

import struct
from pathlib import Path

# Writers that stream (ffmpeg to a pipe, sox -t wav -) cannot know the size: they leave the
# largest value, and readers take "to the end of the file".
_UNKNOWN_SIZE = 0xFFFFFFFF
# A header is a handful of chunks before "data" (fmt, LIST, fact, bext, junk...); a file
# that takes more than this many is not worth following.
_MAX_CHUNKS = 64


def declared_wav_seconds(path: str | Path) -> float | None:
    """Seconds of audio the RIFF/WAVE (or RF64/BW64) header of ``path`` declares, or None
    when it is not such a file, its size is unknown (a streamed WAV), or the header cannot be
    read."""
    try:
        with open(path, "rb") as stream:
            return _declared(stream)
    except (OSError, struct.error):
        return None


def _declared(stream) -> float | None:
    head = stream.read(12)
    if len(head) < 12 or head[8:12] != b"WAVE" or head[:4] not in (b"RIFF", b"RF64", b"BW64"):
        return None
    large_data_size = None  # RF64: the real size lives in ds64
    byte_rate = None
    for _ in range(_MAX_CHUNKS):
        header = stream.read(8)
        if len(header) < 8:
            return None
        chunk, size = header[:4], struct.unpack("<I", header[4:])[0]
        if chunk in (b"ds64", b"fmt "):
            body = stream.read(size + size % 2)  # chunks are padded to an even length
            if chunk == b"ds64":
                large_data_size = struct.unpack("<Q", body[8:16])[0]
            else:
                byte_rate = struct.unpack("<I", body[8:12])[0]  # after format, channels, rate
            continue
        if chunk == b"data":
            if size == _UNKNOWN_SIZE:
                size = large_data_size
            if size is None or not byte_rate:
                return None
            return size / byte_rate
        stream.seek(size + size % 2, 1)
    return None
