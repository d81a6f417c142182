"""What people (and log collectors) see on stderr while dw runs.

A terminal gets a rich progress bar (files, audio time, x real time, ETA).  A pipe or a
cron log gets one plain line per file and no control codes.  ``--log-json`` gets one JSON
object per event.  ``--quiet`` leaves only errors.  Results never go to stderr.
"""

from __future__ import annotations

import os
import sys
import time

from .audio import probe
from .discover import display_name
from .errors import DwError, debug_requested
from .events import FileOutcome, Reporter, RunSummary
from .writers import json_text


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _amount(seconds: float) -> str:
    """Audio in the unit that reads best: ``11 s``, ``3.2 min``, ``1.25 h``."""
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"


def summary_line(summary: RunSummary) -> str:
    """``dw: 3 ok, 1 skipped, 1 failed; 12.6 min of audio in 0:12 (63.0x real time)``; a run
    that transcribed nothing says only its counts."""
    counts = f"dw: {summary.ok} ok, {summary.skipped} skipped, {summary.failed} failed"
    if summary.audio_s <= 0:
        return counts
    return (f"{counts}; {_amount(summary.audio_s)} of audio in {_clock(summary.wall_s)} "
            f"({summary.realtime_factor:.1f}x real time)")


def error_line(outcome: FileOutcome) -> str:
    return f"Error: {outcome.message}"


class PlainReporter(Reporter):
    """One line per file on stderr; errors always, the rest unless quiet."""

    def __init__(self, stream=None, quiet: bool = False):
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self.total = 0
        self.done = 0

    def _say(self, line: str) -> None:
        print(line, file=self.stream, flush=True)

    def start(self, files) -> None:
        self.total = len(files)

    def file_done(self, outcome: FileOutcome) -> None:
        self.done += 1
        if outcome.status == "failed":
            self._say(error_line(outcome))
            if debug_requested() and outcome.detail:
                self._say(outcome.detail.rstrip())
        elif not self.quiet:
            where = ", ".join(display_name(str(path)) for path in outcome.outputs) or "stdout"
            verb = "skipped" if outcome.status == "skipped" else "done"
            self._say(f"dw: [{self.done}/{self.total}] {verb} {outcome.media.label} -> {where}"
                      + (f" ({_clock(outcome.duration_s)} of audio)" if outcome.status == "ok" else ""))

    def note(self, message: str) -> None:
        if not self.quiet:
            self._say(f"dw: note: {message}")

    def error(self, message: str) -> None:
        """An error outside any one file (a usage error, the model): always said."""
        self._say(f"Error: {message}")

    def interrupted(self, signal_name: str) -> None:
        self._say(f"dw: interrupted ({signal_name}); finished files are kept")

    def finish(self, summary: RunSummary) -> None:
        if not self.quiet:
            self._say(summary_line(summary))


class JsonReporter(PlainReporter):
    """One JSON object per event on stderr, for log collectors (``--log-json``)."""

    def _event(self, **fields) -> None:
        self._say(json_text({"time": round(time.time(), 3), **fields}))

    def file_done(self, outcome: FileOutcome) -> None:
        self.done += 1
        self._event(
            event="file", status=outcome.status, source=outcome.media.source,
            outputs=[str(path) for path in outcome.outputs], duration_s=round(outcome.duration_s, 3),
            **({"error": outcome.message} if outcome.message else {}),
        )

    def note(self, message: str) -> None:
        self._event(event="note", message=message)

    def error(self, message: str) -> None:
        self._event(event="error", message=message)

    def interrupted(self, signal_name: str) -> None:
        self._event(event="interrupted", signal=signal_name)

    def finish(self, summary: RunSummary) -> None:
        self._event(
            event="summary", ok=summary.ok, skipped=summary.skipped, failed=summary.failed,
            audio_s=round(summary.audio_s, 3), wall_s=round(summary.wall_s, 3),
            realtime_factor=round(summary.realtime_factor, 2),
        )


class RichReporter(PlainReporter):
    """A live progress bar on a terminal: files, audio time, speed and ETA."""

    def __init__(self, stream=None, quiet: bool = False):
        super().__init__(stream, quiet)
        from rich.console import Console

        self.console = Console(file=self.stream)
        self.progress = None
        self.started = time.monotonic()
        self.audio_done = 0.0
        self.audio_total = 0.0
        self.durations: dict[str, float] = {}  # probed length of each input, in seconds

    def start(self, files) -> None:
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        super().start(files)
        for media in files:
            if media.stream:
                continue  # reading its header would consume what the run must read
            try:
                self.durations[media.source] = probe(media.source).duration_s or 0.0
                self.audio_total += self.durations[media.source]
            except DwError:
                pass  # the failure is reported when the file is decoded
        self.progress = Progress(
            TextColumn("[bold]{task.fields[files]}"),
            BarColumn(),
            TextColumn("{task.fields[audio]}"),
            TextColumn("{task.fields[speed]}"),
            TimeRemainingColumn(),
            console=self.console,
            transient=False,
        )
        self.task = self.progress.add_task("dw", total=max(self.audio_total, 1e-6), files="", audio="", speed="")
        self._refresh()
        self.progress.start()

    def _refresh(self) -> None:
        elapsed = max(time.monotonic() - self.started, 1e-6)
        self.progress.update(
            self.task,
            completed=min(self.audio_done, self.audio_total),
            files=f"{self.done}/{self.total} files",
            audio=f"{_clock(self.audio_done)}/{_clock(self.audio_total)} audio",
            speed=f"{self.audio_done / elapsed:.1f}x real time",
        )

    def advance(self, audio_s: float) -> None:
        self.audio_done += audio_s
        self._refresh()

    def file_done(self, outcome: FileOutcome) -> None:
        self.done += 1
        if outcome.status == "skipped":  # its audio will not be transcribed: not part of the bar
            self.audio_total -= self.durations.get(outcome.media.source, 0.0)
            self.progress.update(self.task, total=max(self.audio_total, 1e-6))
        if outcome.status == "failed":
            self.console.print(error_line(outcome), markup=False, highlight=False)
            if debug_requested() and outcome.detail:
                self.console.print(outcome.detail.rstrip(), markup=False, highlight=False)
        self._refresh()

    def note(self, message: str) -> None:
        if not self.quiet:
            self.console.print(f"dw: note: {message}", markup=False, highlight=False)

    def finish(self, summary: RunSummary) -> None:
        if self.progress is not None:
            self._refresh()
            self.progress.stop()
        if not self.quiet:
            self.console.print(summary_line(summary), markup=False, highlight=False)


def warnings_as_events(stream=None) -> None:
    """Under --log-json, Python's warnings (torch's, any library's) become ``warning`` events:
    their usual two plain lines would be the only stderr lines a log collector cannot read."""
    import warnings

    reporter = JsonReporter(stream or sys.stderr)

    def show(message, category, filename, lineno, file=None, line=None):
        reporter._event(event="warning", message=f"{category.__name__}: {message}")

    warnings.showwarning = show


def make_reporter(quiet: bool, log_json: bool, stream=None) -> Reporter:
    """The reporter that fits where stderr goes."""
    stream = stream or sys.stderr
    if log_json:
        return JsonReporter(stream)
    if not quiet and stream.isatty() and os.environ.get("TERM") != "dumb":
        return RichReporter(stream)
    return PlainReporter(stream, quiet=quiet)
