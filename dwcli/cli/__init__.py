"""The ``dw`` command line: the Typer app (``app``), its option groups declared once
(``groups``), and one module per command.  ``main`` is the console script."""

from __future__ import annotations

from . import transcribe, evaluation, models, distill  # noqa: F401, I001  (each registers its commands, in --help's order)
from .app import EXIT_CODES_HELP, EXIT_STATUS_MEANINGS, app, main

__all__ = ["EXIT_CODES_HELP", "EXIT_STATUS_MEANINGS", "app", "main"]
