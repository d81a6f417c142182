"""A run reporter that keeps what it is told, for tests that drive the run loop in process."""

from __future__ import annotations

from dwcli.events import Reporter


class Recorder(Reporter):
    """Every file's outcome and every note, in order."""

    def __init__(self):
        self.outcomes, self.notes = [], []

    def file_done(self, outcome):
        self.outcomes.append(outcome)

    def note(self, message):
        self.notes.append(message)
