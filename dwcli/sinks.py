"""Where finished transcripts go: files with their resume records, standard output, or a
collector (``dw eval``).  The run loop hands every finished file to one sink.

A sink raises ``OSError`` when it cannot write; the run loop fails that file, and stops the
run when no other file could be written either (``WritingImpossible``).
"""

from __future__ import annotations

import errno
from pathlib import Path

from .atomic import write_atomic
from .discover import MediaFile
from .options import WriterOptions
from .segments import Transcript
from .writers import render

# Write errors after which no other file can be written either: stop instead of decoding on.
CANNOT_WRITE = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS})


class WritingImpossible(Exception):
    """The output folder takes no more files (full disk, quota, read-only)."""


class Sink:
    """Takes each finished transcript; returns the paths it wrote (none for a stream)."""

    def deliver(self, media: MediaFile, transcript: Transcript, stamp) -> list[Path]:
        """``stamp``: the source's ``resume.SourceStamp`` from before it was read (None: a stream)."""
        raise NotImplementedError


class FileSink(Sink):
    """Each format beside the input or under ``--output-dir``, atomically, then the record
    that ``--skip-existing`` reads (last, so a killed run leaves no record it cannot trust)."""

    def __init__(self, formats: tuple[str, ...], writer: WriterOptions, resume=None):
        self.formats = formats
        self.writer = writer
        self.resume = resume  # resume.Resume, or None

    def deliver(self, media, transcript, stamp):
        previous = self.resume.forget(media) if self.resume else None  # no record while outputs change
        outputs = []
        for fmt in self.formats:
            path = media.output_path(fmt)
            write_atomic(path, render(transcript, fmt, self.writer))
            outputs.append(path)
        if self.resume:
            self.resume.remember(media, self.formats, previous, stamp)
        return outputs


class StreamSink(Sink):
    """The one format of the one input to a stream (standard output)."""

    def __init__(self, stream, fmt: str, writer: WriterOptions):
        self.stream = stream
        self.format = fmt
        self.writer = writer

    def deliver(self, media, transcript, stamp):
        self.stream.write(render(transcript, self.format, self.writer))
        self.stream.flush()
        return []


class CollectingSink(Sink):
    """Keeps every transcript in memory, by source (``dw eval`` scores them)."""

    def __init__(self):
        self.transcripts: dict[str, Transcript] = {}

    def deliver(self, media, transcript, stamp):
        self.transcripts[media.source] = transcript
        return []


def sink_for(options, stdout) -> Sink:
    """The sink a ``TranscribeOptions`` asks for: standard output or files."""
    if options.to_stdout:
        return StreamSink(stdout, options.formats[0], options.writer)
    return FileSink(options.formats, options.writer, options.resume)
