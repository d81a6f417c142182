"""The ``dw`` command line.

Heavy libraries (torch, transformers) are imported inside the commands, so ``dw --help``
and shell completion answer at once.  Only this module decides exit codes: every other
module raises ``DwError``s, which become one ``Error: ...`` line and the matching status.
"""

from __future__ import annotations

import os
import sys
import traceback
from pathlib import Path
from typing import Annotated, Optional

import typer

from . import __version__
from .errors import DwError, ExitStatus, UsageError

EXIT_CODES_HELP = (
    "Exit status: 0 all files done; 1 some file failed (the others were still written); "
    "2 usage error; 3 the model could not be loaded; 130 interrupted."
)

app = typer.Typer(
    name="dw",
    help=(
        "dw: batch speech-to-text with Distil-Whisper.\n\n"
        "Transcribes audio and video files, folders of them, lists of them or standard input "
        "into txt, srt, vtt, json and tsv.\n\n" + EXIT_CODES_HELP
    ),
    add_completion=True,
    no_args_is_help=True,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
models_app = typer.Typer(help="Convert and inspect models.", no_args_is_help=True, rich_markup_mode=None)
app.add_typer(models_app, name="models")


def _fail(error: DwError) -> typer.Exit:
    """Print ``error`` as one line (with its traceback under DW_DEBUG=1); the exit to raise."""
    if os.environ.get("DW_DEBUG", "") not in ("", "0"):
        traceback.print_exc(file=sys.stderr)
    print(f"Error: {error}", file=sys.stderr)
    return typer.Exit(int(error.exit_status))


def _version(value: bool) -> None:
    if not value:
        return
    import torch
    import transformers

    from .audio import ffmpeg_version

    typer.echo(f"dw {__version__}")
    typer.echo(f"torch {torch.__version__}")
    typer.echo(f"transformers {transformers.__version__}")
    typer.echo(f"FFmpeg {ffmpeg_version()} (PyAV)")
    raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", "-V", callback=_version, is_eager=True,
                     help="Print the versions of dw, torch, transformers and FFmpeg, and exit."),
    ] = False,
) -> None:
    """dw: batch speech-to-text with Distil-Whisper."""


def _positive(name: str, value: float) -> None:
    if value <= 0:
        raise UsageError(f"{name} must be positive, got {value:g}")


@app.command(
    epilog=(
        "Examples:\n\n"
        "  dw transcribe talk.mp4 --format srt\n\n"
        "  dw transcribe ./videos --format srt,vtt --output-dir subs/\n\n"
        "  ffmpeg -i talk.mkv -f wav - | dw transcribe - --format srt > talk.srt\n\n"
        "  find /data -name '*.mp4' -print0 | dw transcribe --from-list - -0\n\n"
        + EXIT_CODES_HELP
    ),
)
def transcribe(
    paths: Annotated[
        Optional[list[str]],
        typer.Argument(help="Media files, folders (searched recursively) or globs; - reads standard input.",
                       show_default=False),
    ] = None,
    formats: Annotated[
        str, typer.Option("--format", "-f", envvar="DW_FORMAT", help="Output formats, comma-separated: txt, srt, vtt, json, tsv, or all.")
    ] = "txt",
    output_dir: Annotated[
        Optional[Path], typer.Option("--output-dir", "-o", envvar="DW_OUTPUT_DIR",
                                     help="Write outputs here, mirroring the input folders (default: beside each input).")
    ] = None,
    stdout: Annotated[
        bool, typer.Option("--stdout", help="Write the result (one format) to standard output instead of files.")
    ] = False,
    from_list: Annotated[
        Optional[str], typer.Option("--from-list", envvar="DW_FROM_LIST", help="Read input paths from this file, one per line (- for standard input).")
    ] = None,
    null_separated: Annotated[
        bool, typer.Option("--null", "-0", help="Paths in --from-list are separated by NUL bytes (find -print0).")
    ] = False,
    model: Annotated[
        Optional[str], typer.Option("--model", "-m", envvar="DW_MODEL",
                                    help="Hub id, local transformers or CTranslate2 checkpoint, or offline:tiny.en "
                                         "(default: distil-large-v3 on GPU, distil-small.en on CPU, "
                                         "offline:tiny.en when those cannot be had).")
    ] = None,
    device: Annotated[str, typer.Option(envvar="DW_DEVICE", help="auto, cpu, cuda or cuda:N.")] = "auto",
    dtype: Annotated[
        str, typer.Option(envvar="DW_DTYPE", help="auto (float32 on CPU, bfloat16/float16 on GPU), float32, float16 or bfloat16.")
    ] = "auto",
    attention: Annotated[
        str, typer.Option(envvar="DW_ATTENTION", help="Encoder attention kernel: auto, sdpa, eager or flash_attention_2.")
    ] = "auto",
    quantize: Annotated[
        str, typer.Option(envvar="DW_QUANTIZE", help="none, or int8: dynamic int8 Linear layers on CPU (faster, slightly less accurate).")
    ] = "none",
    batch_size: Annotated[
        int, typer.Option("--batch-size", "-b", envvar="DW_BATCH_SIZE", help="30-second windows per model call (0: auto).")
    ] = 0,
    workers: Annotated[
        int, typer.Option(envvar="DW_WORKERS", help="Processes decoding media beside the model (-1: auto, 0: none).")
    ] = -1,
    language: Annotated[
        Optional[str], typer.Option("--language", "-l", envvar="DW_LANGUAGE", help="Language code, e.g. en (default: detect).")
    ] = None,
    task: Annotated[str, typer.Option(envvar="DW_TASK", help="transcribe, or translate (into English).")] = "transcribe",
    max_line_width: Annotated[int, typer.Option(envvar="DW_MAX_LINE_WIDTH", help="Subtitles: characters per line.")] = 42,
    max_line_count: Annotated[int, typer.Option(envvar="DW_MAX_LINE_COUNT", help="Subtitles: lines per cue.")] = 2,
    max_cue_duration: Annotated[float, typer.Option(envvar="DW_MAX_CUE_DURATION", help="Subtitles: seconds per cue at most.")] = 7.0,
    max_cps: Annotated[float, typer.Option(envvar="DW_MAX_CPS", help="Subtitles: reading speed, characters per second at most.")] = 20.0,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", envvar="DW_QUIET", help="Print only errors on stderr.")] = False,
    log_json: Annotated[bool, typer.Option("--log-json", envvar="DW_LOG_JSON", help="Log one JSON object per file on stderr.")] = False,
) -> None:
    """Transcribe media files into text and subtitles.

    Each file's outputs are written as soon as it is done (atomically: a temporary file,
    then a rename) as <name>.<format> beside the input or under --output-dir.
    """
    try:
        status = _transcribe(**locals())
    except DwError as error:
        raise _fail(error) from None
    raise typer.Exit(int(status))


def _transcribe(paths, formats, output_dir, stdout, from_list, null_separated, model, device, dtype,
                attention, quantize, batch_size, workers, language, task, max_line_width, max_line_count,
                max_cue_duration, max_cps, quiet, log_json) -> ExitStatus:
    from .discover import discover, read_path_list
    from .writers import WriterOptions, parse_formats
    from .subtitles import SubtitleOptions

    fmt_list = parse_formats(formats)
    for name, value in (("--max-line-width", max_line_width), ("--max-line-count", max_line_count),
                        ("--max-cue-duration", max_cue_duration), ("--max-cps", max_cps)):
        _positive(name, value)
    if task not in ("transcribe", "translate"):
        raise UsageError(f"--task {task}: expected transcribe or translate")
    if quantize not in ("none", "int8"):
        raise UsageError(f"--quantize {quantize}: expected none or int8")
    arguments = list(paths or [])
    if from_list is not None:
        if from_list == "-":
            arguments += read_path_list(sys.stdin.buffer, null_separated)
        else:
            try:
                with open(from_list, "rb") as stream:
                    arguments += read_path_list(stream, null_separated)
            except OSError as error:
                raise UsageError(f"--from-list {from_list}: {error.strerror}") from None
    if not arguments:
        raise UsageError("no input: name files, folders or - (standard input), or use --from-list")
    if "-" in arguments and from_list == "-":
        raise UsageError("standard input cannot hold both the media and the --from-list")
    to_stdout = stdout or ("-" in arguments and output_dir is None)
    found = discover(arguments, output_dir)
    if to_stdout:
        if len(fmt_list) != 1:
            raise UsageError(f"writing to standard output takes one format, got {','.join(fmt_list)}")
        if len(found.files) + len(found.missing) != 1:
            raise UsageError("writing to standard output takes exactly one input")

    from .progress import make_reporter

    reporter = make_reporter(quiet, log_json)
    for missing in found.missing:
        print(f"Error: {missing}: no such file or directory", file=sys.stderr)
    if not found.files:
        return ExitStatus.FILE_FAILED

    from .batching import default_workers
    from .decoding import DecodingOptions
    from .engine import Engine, pick_attention, pick_device, pick_dtype
    from .models import resolve_model
    from .pipeline import TranscribeOptions, transcribe_files

    device_name = pick_device(device)
    resolved = resolve_model(model, device_name)
    if resolved.note and not quiet:
        print(f"dw: {resolved.note}", file=sys.stderr)
    engine = Engine(
        resolved,
        device=device_name,
        dtype=pick_dtype(dtype, device_name),
        attention=pick_attention(attention, device_name),
        quantize=None if quantize == "none" else quantize,
    )
    if language and engine.english_only and language != "en":
        raise UsageError(f"--language {language}: {engine.model_id} is an English-only model")
    options = TranscribeOptions(
        formats=tuple(fmt_list),
        batch_size=batch_size if batch_size > 0 else (32 if device_name.startswith("cuda") else 16),
        workers=workers if workers >= 0 else default_workers(device_name),
        decoding=DecodingOptions(language=language, task=task),
        writer=WriterOptions(SubtitleOptions(max_line_width, max_line_count, max_cue_duration, max_cps)),
        to_stdout=to_stdout,
    )
    summary = transcribe_files(found.files, engine, options, reporter)
    failed = summary.failed + len(found.missing)
    return ExitStatus.FILE_FAILED if failed else ExitStatus.OK


@models_app.command("convert")
def models_convert(
    source: Annotated[Path, typer.Argument(help="A CTranslate2 Whisper checkpoint folder (model.bin, config.json, tokenizer.json).")],
    destination: Annotated[Path, typer.Argument(help="Folder to write the transformers checkpoint to.")],
    dtype: Annotated[str, typer.Option(help="Precision to store: float16 or float32.")] = "float16",
) -> None:
    """Convert a CTranslate2 (faster-whisper) Whisper checkpoint for transformers.

    Example: dw models convert ~/models/faster-whisper-small.en small.en-hf
    """
    from .convert import convert_ct2_checkpoint

    if dtype not in ("float16", "float32"):
        raise _fail(UsageError(f"--dtype {dtype}: expected float16 or float32"))
    try:
        convert_ct2_checkpoint(source, destination, dtype=dtype)
    except DwError as error:
        raise _fail(error) from None
    typer.echo(str(destination))


@models_app.command("offline-path")
def models_offline_path() -> None:
    """Print the folder of the converted offline model (tiny.en), converting it if needed.

    Example: dw models offline-path
    """
    from .models import OFFLINE_MODEL, resolve_model

    try:
        typer.echo(str(resolve_model(OFFLINE_MODEL, "cpu").path))
    except DwError as error:
        raise _fail(error) from None


def main() -> None:
    """Console-script entry point."""
    app(prog_name="dw")
