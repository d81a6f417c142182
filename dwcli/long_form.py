"""The long-form modes: each a reader (in the decoding workers) and a window source (in the
run loop), see ``sources``."""

from __future__ import annotations

from .chunking import ChunkedReader, ChunkedSource
from .sequential import SequentialReader, SequentialSource
from .sources import Reading, SourceSettings, WindowSource

MODES = {
    "chunked": (ChunkedReader, ChunkedSource),
    "sequential": (SequentialReader, SequentialSource),
}


def reader_for(reading: Reading):
    """A fresh reader for one file of a run."""
    return MODES[reading.long_form][0](reading)


def source_for(long_form: str, file_index: int, settings: SourceSettings) -> WindowSource:
    """A fresh window source for one file of a run."""
    return MODES[long_form][1](file_index, settings)
