"""Domain errors and the process exit statuses the CLI maps them to.

Only ``cli.main`` turns these into exit codes; every other module raises.
"""

from __future__ import annotations

import enum
import os


def debug_requested() -> bool:
    """DW_DEBUG=1: tracebacks are shown with errors."""
    return os.environ.get("DW_DEBUG", "") not in ("", "0")


class ExitStatus(enum.IntEnum):
    """Exit codes of ``dw``; documented in ``--help`` and the man page."""

    OK = 0
    FILE_FAILED = 1  # at least one input failed; the others were still written
    USAGE = 2  # bad option or argument
    MODEL = 3  # the model could not be loaded
    INTERRUPTED = 130  # Ctrl-C / SIGINT (128 + 2)
    TERMINATED = 143  # SIGTERM (128 + 15): what cron, systemd and kill send


class DwError(Exception):
    """Base class of every error dw reports as a one-line message."""

    exit_status = ExitStatus.FILE_FAILED


class UsageError(DwError):
    """The command line asks for something that cannot be done."""

    exit_status = ExitStatus.USAGE


class ModelLoadError(DwError):
    """The model could not be resolved, converted or loaded."""

    exit_status = ExitStatus.MODEL


class MediaError(DwError):
    """One input file could not be read or decoded; names the file."""

    exit_status = ExitStatus.FILE_FAILED


class ConversionError(DwError):
    """A CTranslate2 checkpoint could not be converted."""

    exit_status = ExitStatus.MODEL


def read_user_text(path, kind: str = "UTF-8 text") -> str:
    """The text of a file the user named (a reference, a manifest, an RTTM file); a file that
    cannot be read, or is not UTF-8, is a UsageError naming it."""
    try:
        return path.read_text(encoding="utf-8")
    except OSError as error:
        raise UsageError(f"{path}: {error.strerror or error}") from None
    except UnicodeDecodeError:
        raise UsageError(f"{path}: not {kind}") from None


class InvalidOption(ValueError):
    """An option's value is out of range: ``field`` names the options dataclass's field,
    ``reason`` what is expected.  The CLI says it as ``--flag value: reason`` (exit 2)."""

    def __init__(self, owner: str, name: str, value, reason: str):
        super().__init__(f"{owner}.{name} {value!r}: {reason}")
        self.field, self.value, self.reason = name, value, reason


class Terminated(BaseException):
    """SIGTERM arrived: unwinds like KeyboardInterrupt (temporaries removed, workers
    stopped), then the CLI exits 143."""
