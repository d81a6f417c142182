"""What a run tells the people watching it: each file's outcome, the totals, and the
``Reporter`` that receives them.

These types are shared by the run loop (which emits them), ``progress`` (which shows them),
``parallel`` (which forwards them from replica processes) and ``plan`` (which settles some
files before a run), so they live here rather than in any one of those.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .discover import MediaFile


@dataclass
class FileOutcome:
    """How one input ended."""

    media: MediaFile
    status: str  # "ok", "failed" or "skipped"
    message: str = ""
    duration_s: float = 0.0
    outputs: list[Path] = field(default_factory=list)
    detail: str = ""  # traceback for DW_DEBUG


@dataclass
class RunSummary:
    """Totals for the final summary line and the exit code."""

    ok: int = 0
    failed: int = 0
    skipped: int = 0
    audio_s: float = 0.0
    wall_s: float = 0.0

    @property
    def realtime_factor(self) -> float:
        return self.audio_s / self.wall_s if self.wall_s > 0 else 0.0

    def add(self, other: RunSummary) -> None:
        """Count another run's files and audio in (a replica's, under --devices)."""
        self.ok += other.ok
        self.failed += other.failed
        self.skipped += other.skipped
        self.audio_s += other.audio_s

    def count(self, outcome: FileOutcome) -> None:
        """Count one file's outcome in."""
        self.ok += outcome.status == "ok"
        self.failed += outcome.status == "failed"
        self.skipped += outcome.status == "skipped"
        if outcome.status == "ok":
            self.audio_s += outcome.duration_s


class Reporter:
    """Receives run events; the CLI picks a rich, plain, JSON or quiet implementation.  The
    base class ignores every event (a replica's forwarding reporter overrides what it sends)."""

    def start(self, files: list[MediaFile]) -> None: ...
    def advance(self, audio_s: float) -> None: ...
    def file_done(self, outcome: FileOutcome) -> None: ...
    def note(self, message: str) -> None: ...  # a remark worth a line (not under --quiet)
    def finish(self, summary: RunSummary) -> None: ...


def report_settled(settled, reporter: Reporter, summary: RunSummary) -> None:
    """Report and count the outcomes decided before a run (skipped inputs, missing paths)."""
    for outcome in settled:
        summary.count(outcome)
        reporter.file_done(outcome)
