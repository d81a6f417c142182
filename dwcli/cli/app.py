"""The Typer application, and how every command runs: errors to one line, exit statuses.

Heavy libraries (torch, onnxruntime) and the stages that import them load inside the
commands, so ``dw --help`` and shell completion answer at once.  Only this package decides
exit codes: every other module raises ``DwError``s, which become one ``Error: ...`` line (a
JSON object under ``--log-json``) and the matching status.
"""

from __future__ import annotations

import os
import signal
import sys
import traceback

import typer
from typer.core import TyperCommand

from .. import __version__
from ..errors import DwError, ExitStatus, Terminated, debug_requested

# What each exit status means: --help and the man page (dwcli.docs) both say it from here.
EXIT_STATUS_MEANINGS = {
    ExitStatus.OK: "every file was transcribed (or skipped as already done)",
    ExitStatus.FILE_FAILED: "some file failed (the others were still written)",
    ExitStatus.USAGE: "usage error",
    ExitStatus.MODEL: "the model could not be loaded",
    ExitStatus.INTERRUPTED: "interrupted (SIGINT, Ctrl-C)",
    ExitStatus.TERMINATED: "terminated (SIGTERM, as cron, systemd and kill send)",
}
EXIT_CODES_HELP = "Exit status: " + "; ".join(
    f"{int(status)} {meaning}" for status, meaning in EXIT_STATUS_MEANINGS.items()) + "."


class GroupedCommand(TyperCommand):
    """Plain-text help with the options grouped under headings (their ``rich_help_panel``)."""

    def format_options(self, ctx, formatter) -> None:
        groups: dict[str, list] = {}
        for parameter in self.get_params(ctx):
            record = parameter.get_help_record(ctx)
            if record is None:
                continue
            name = "Arguments" if parameter.param_type_name == "argument" else (
                getattr(parameter, "rich_help_panel", None) or "Options")
            groups.setdefault(name, []).append(record)
        for name, records in groups.items():
            with formatter.section(name):
                formatter.write_dl(records)


app = typer.Typer(
    name="dw",
    help=(
        "dw: batch speech-to-text with Distil-Whisper.\n\n"
        "Transcribes audio and video files, folders of them, lists of them or standard input "
        "into txt, srt, vtt, json and tsv; measures a model on labelled speech (eval).\n\n" + EXIT_CODES_HELP
    ),
    add_completion=True,
    no_args_is_help=True,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
models_app = typer.Typer(help="Convert and inspect models.", no_args_is_help=True, rich_markup_mode=None)
app.add_typer(models_app, name="models")
distill_app = typer.Typer(
    help="Distil-Whisper's recipe: a student with the teacher's encoder and fewer decoder layers, trained on "
         "the teacher's WER-filtered pseudo-labels with cross-entropy and KL. Without a subcommand, runs "
         "init, label and train into --out.",
    invoke_without_command=True, no_args_is_help=True, rich_markup_mode=None)
app.add_typer(distill_app, name="distill")


def fail(error: DwError, log_json: bool = False) -> typer.Exit:
    """Say ``error`` as one line (with its traceback under DW_DEBUG=1); the exit to raise."""
    if debug_requested():
        traceback.print_exc(file=sys.stderr)
    say_error(str(error), int(error.exit_status), log_json)
    return typer.Exit(int(error.exit_status))


def say_error(message: str, exit_status: int, log_json: bool) -> None:
    if log_json:
        import json
        import time

        print(json.dumps({"time": round(time.time(), 3), "event": "error", "message": message,
                          "exit_status": exit_status}, ensure_ascii=False), file=sys.stderr)
    else:
        print(f"Error: {message}", file=sys.stderr)


def _version(value: bool) -> None:
    if not value:
        return
    import onnxruntime
    import torch

    from ..audio import ffmpeg_version

    typer.echo(f"dw {__version__}")
    typer.echo(f"torch {torch.__version__}")
    typer.echo(f"onnxruntime {onnxruntime.__version__} (Silero VAD)")
    typer.echo(f"FFmpeg {ffmpeg_version()} (PyAV)")
    raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", "-V", callback=_version, is_eager=True,
                                 help="Print the versions of dw, torch, onnxruntime and FFmpeg, and exit."),
) -> None:
    """dw: batch speech-to-text with Distil-Whisper."""


def reporter(quiet: bool, log_json: bool):
    from ..progress import make_reporter

    return make_reporter(quiet, log_json)


def _terminate_on_sigterm() -> None:
    """SIGTERM (cron, systemd, kill) ends dw as Ctrl-C does: files done are kept, temporary
    files removed, decoding workers stopped, exit status 143."""
    def handler(signum, frame):
        raise Terminated()

    signal.signal(signal.SIGTERM, handler)


def run(body, messages) -> None:
    """Run a command body (a function of the real standard output returning an exit status)
    with dw's error handling, and exit with its status.  ``messages``: the command's
    ``groups.Messages``."""
    real_stdout = sys.stdout
    sys.stdout = sys.stderr  # stdout carries results only: stray prints from libraries go to stderr
    if messages.log_json:
        from ..progress import warnings_as_events

        warnings_as_events()
    _terminate_on_sigterm()
    try:
        status = body(real_stdout)
    except DwError as error:
        raise fail(error, messages.log_json) from None
    except (KeyboardInterrupt, Terminated) as interruption:
        terminated = isinstance(interruption, Terminated)
        reporter(messages.quiet, messages.log_json).interrupted("SIGTERM" if terminated else "SIGINT")
        raise typer.Exit(int(ExitStatus.TERMINATED if terminated else ExitStatus.INTERRUPTED)) from None
    finally:
        sys.stdout = real_stdout
    raise typer.Exit(int(status))


def prepare_process() -> None:
    """Before torch loads OpenMP: idle threads sleep instead of spinning.  On a CPU shared
    with other work (cron hosts, a decoding worker), spinning made each decoder step ~10x
    slower in our measurements; alone on a CPU it costs nothing measurable."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def main() -> None:
    """Console-script entry point."""
    # Before anything imports torch (the run loop's modules do, at import): OpenMP reads its
    # wait policy once, when torch loads it.  Set later, in a command's body, it never took
    # effect, and on a shared 2-core machine spinning threads cost dw 3x the CPU time of
    # faster-whisper on the long-form set (benchmarks/RESULTS.md, issue 27).
    prepare_process()
    try:
        if _json_lines_asked():
            status = _main_logging_json()
        else:
            app(prog_name="dw")
            status = 0
    except SystemExit as exit_:
        status = exit_.code
    _exit_now(status)


def _json_lines_asked() -> bool:
    """--log-json or DW_LOG_JSON set true (typer's spellings of true), known before parsing."""
    from typer.utils import parse_boolean_env_var

    return "--log-json" in sys.argv[1:] or parse_boolean_env_var(os.environ.get("DW_LOG_JSON", "").strip(), False)


def _main_logging_json() -> int:
    """``app`` for a run that asked for JSON lines: Click's own usage errors (an unknown
    option, a missing value) come as an error event too, not as Click's plain-text usage
    block, so that a log collector parsing every stderr line never meets one it cannot read."""
    from typer._click import ClickException  # typer vendors click (pinned to its minor version)

    try:
        return app(prog_name="dw", standalone_mode=False) or 0
    except ClickException as error:
        say_error(error.format_message(), error.exit_code, log_json=True)  # a usage error's is 2, as ours
        return error.exit_code
    except typer.Abort:  # end of input or Ctrl-C at a prompt (dw asks none; Click's own rule)
        say_error("aborted", int(ExitStatus.INTERRUPTED), log_json=True)
        return int(ExitStatus.INTERRUPTED)


def _exit_now(status) -> None:
    """End the process once its outputs are flushed and its atexit handlers (multiprocessing's
    among them) have run, skipping the interpreter's teardown: clearing torch's thousands of
    modules and freeing the model took 0.3-0.5 s of every run, the clip case's largest cost
    after importing torch, and a finished run needs none of it."""
    if isinstance(status, str):  # sys.exit("message")
        print(status, file=sys.stderr)
        status = 1
    code = 0 if status is None else int(status)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (BrokenPipeError, ValueError):  # a reader that went away (| head), a closed stream
            pass
        except OSError as error:  # a full disk behind the redirection: results were lost
            code = code or int(ExitStatus.FILE_FAILED)
            if stream is sys.stdout:
                print(f"Error: cannot write standard output: {error.strerror or error}", file=sys.stderr)
    import atexit

    atexit._run_exitfuncs()
    os._exit(code)
