"""RTTM, NIST's Rich Transcription Time Marked format, as diarization tools read and write it.

One line per speaker turn, ten space-separated fields:

    SPEAKER <file id> 1 <start s> <duration s> <NA> <NA> <speaker> <NA> <NA>

The file id is the recording's name without folders or extension, with any whitespace
replaced (fields are separated by spaces), ``stdin`` for standard input.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TextIO

from ..errors import UsageError, read_user_text
from .assign import Turn

_FIELDS = 10


def file_id(source: str) -> str:
    """The RTTM file id of an input as the user named it."""
    if source == "-":
        return "stdin"
    name = Path(source).name
    stem = name.rsplit(".", 1)[0] if "." in name.lstrip(".") else name
    return re.sub(r"\s+", "_", stem) or "audio"


def write_turns(turns: list[Turn], source: str, stream: TextIO) -> None:
    """One ``SPEAKER`` line per turn, times in seconds to the millisecond."""
    name = file_id(source)
    for turn in turns:
        duration = max(turn.end - turn.start, 0.0)
        stream.write(f"SPEAKER {name} 1 {turn.start:.3f} {duration:.3f} <NA> <NA> {turn.speaker} <NA> <NA>\n")


def read_turns(path: Path) -> list[Turn]:
    """The turns of an RTTM file (every ``SPEAKER`` line, whatever its file id); UsageError
    naming the line when one is malformed."""
    lines = read_user_text(path).splitlines()
    turns = []
    for number, line in enumerate(lines, start=1):
        fields = line.split()
        if not fields or fields[0] != "SPEAKER":
            continue
        try:
            if len(fields) < _FIELDS - 1:
                raise ValueError
            start, duration = float(fields[3]), float(fields[4])
            if duration < 0 or start < 0:
                raise ValueError
        except ValueError:
            raise UsageError(f"{path}:{number}: not an RTTM SPEAKER line") from None
        turns.append(Turn(start, start + duration, fields[7]))
    return turns
