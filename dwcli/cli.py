"""The ``dw`` command line.

Heavy libraries (torch, onnxruntime) are imported inside the commands, so ``dw --help`` and
shell completion answer at once.  Each command turns its options into the typed option
dataclasses of the stages (checking each value once, here), hands them to ``plan.make_plan``
and runs the plan.  Only this module decides exit codes: every other module raises
``DwError``s, which become one ``Error: ...`` line (a JSON object under ``--log-json``) and
the matching status.
"""

from __future__ import annotations

import math
import os
import signal
import sys
import traceback
from pathlib import Path
from typing import Annotated, Optional

import typer
from typer.core import TyperCommand

from . import __version__
from .errors import DwError, ExitStatus, Terminated, UsageError, debug_requested

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

# Option groups of --help and the man page, in the order they are shown.
INPUTS, MODEL, DECODING, SPEECH, SUBTITLES, LOGGING = (
    "Inputs and outputs", "Model and device", "Decoding", "Speech detection", "Subtitles", "Messages")


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


def _fail(error: DwError, log_json: bool = False) -> typer.Exit:
    """Say ``error`` as one line (with its traceback under DW_DEBUG=1); the exit to raise."""
    if debug_requested():
        traceback.print_exc(file=sys.stderr)
    _say_error(str(error), int(error.exit_status), log_json)
    return typer.Exit(int(error.exit_status))


def _say_error(message: str, exit_status: int, log_json: bool) -> None:
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

    from .audio import ffmpeg_version

    typer.echo(f"dw {__version__}")
    typer.echo(f"torch {torch.__version__}")
    typer.echo(f"onnxruntime {onnxruntime.__version__} (Silero VAD)")
    typer.echo(f"FFmpeg {ffmpeg_version()} (PyAV)")
    raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", "-V", callback=_version, is_eager=True,
                     help="Print the versions of dw, torch, onnxruntime and FFmpeg, and exit."),
    ] = False,
) -> None:
    """dw: batch speech-to-text with Distil-Whisper."""


# -- checking values -------------------------------------------------------------------
def _language_code(value: str) -> str:
    """``--language``: a Whisper language code or name (``de``, ``German``) -> the code."""
    from .languages import LANGUAGES, TO_LANGUAGE_CODE

    key = value.strip().lower()
    if key in LANGUAGES:
        return key
    if key in TO_LANGUAGE_CODE:
        return TO_LANGUAGE_CODE[key]
    raise UsageError(f"--language {value}: unknown language; give a code such as en, de or fr, or a name such as german")


def _temperatures(value: str) -> tuple[float, ...]:
    """``"0,0.2,0.4"`` -> (0.0, 0.2, 0.4): rising, non-negative, the first one tried first."""
    try:
        temperatures = tuple(float(part) for part in value.split(",") if part.strip())
    except ValueError:
        temperatures = ()
    if (not temperatures or any(not math.isfinite(t) or t < 0 for t in temperatures)
            or list(temperatures) != sorted(temperatures)):
        raise UsageError(f"--temperature {value}: expected rising non-negative numbers, e.g. 0,0.2,0.4")
    return temperatures


def _positive(name: str, value: float) -> None:
    if not (math.isfinite(value) and value > 0):
        raise UsageError(f"{name} must be a positive number, got {value:g}" if not math.isfinite(value)
                         else f"{name} must be positive, got {value:g}")


def _at_least(name: str, value: int, low: int, meaning: str = "") -> None:
    if value < low:
        raise UsageError(f"{name} {value}: expected {low} or more{meaning}")


def _finite(name: str, value: float) -> None:
    if not math.isfinite(value):
        raise UsageError(f"{name} {value:g}: expected a finite number")


# -- options shared by the commands ------------------------------------------------------
ModelOption = Annotated[Optional[str], typer.Option(
    "--model", "-m", envvar="DW_MODEL", rich_help_panel=MODEL,
    help="Hub id, local transformers or CTranslate2 checkpoint, or offline:tiny.en (default: distil-large-v3 "
         "on GPU, distil-small.en on CPU, offline:tiny.en when those cannot be had).")]
AssistantOption = Annotated[Optional[str], typer.Option(
    "--assistant", envvar="DW_ASSISTANT", rich_help_panel=MODEL,
    help="A smaller Whisper with the model's vocabulary (e.g. its Distil-Whisper student) that drafts "
         "tokens for the model to check: speculative decoding, the model's own greedy transcript, faster at "
         "batch size 1 (forced).")]
DeviceOption = Annotated[str, typer.Option(envvar="DW_DEVICE", rich_help_panel=MODEL, help="auto, cpu, cuda or cuda:N.")]
DtypeOption = Annotated[str, typer.Option(
    envvar="DW_DTYPE", rich_help_panel=MODEL,
    help="auto (GPU: bfloat16 where native, else float16; CPU: float32 weights, and where the CPU multiplies "
         "bfloat16 natively, AVX512-BF16 or AMX, the encoder under bfloat16 autocast and bfloat16 copies of what "
         "the decoder reads at every step: as accurate as float32 on the dev sets, 1.2-1.4x faster), float32, "
         "float16 or bfloat16.")]
AttentionOption = Annotated[str, typer.Option(
    envvar="DW_ATTENTION", rich_help_panel=MODEL,
    help="Encoder attention kernel: auto (flash_attention_2 where flash-attn loads on an Ampere or newer GPU "
         "in 16 bits, else sdpa), sdpa, eager or flash_attention_2.")]
QuantizeOption = Annotated[str, typer.Option(
    envvar="DW_QUANTIZE", rich_help_panel=MODEL,
    help="auto (none), none, or int8: dynamic int8 Linear layers on CPU. Measured with tiny.en on 2 cores: "
         "0.5-0.8 WER points worse than the default on the dev sets (0.3-1.4 on others), 1.1-1.2x faster, and a "
         "transcript then depends on the other windows of its batch.")]
RuntimeOption = Annotated[str, typer.Option(
    envvar="DW_RUNTIME", rich_help_panel=MODEL,
    help="What runs the float32 encoder on a CPU: auto (ONNX Runtime, exported once and cached, falling back to "
         "PyTorch with a note where the export fails), onnxruntime or torch. Measured with tiny.en on 2 cores: up "
         "to 1.3-1.5x faster on AVX2-only CPUs, level on AVX-512; the same transcripts.")]
BatchOption = Annotated[int, typer.Option(
    "--batch-size", "-b", envvar="DW_BATCH_SIZE", rich_help_panel=MODEL,
    help="30-second windows per model call (0: auto, 16 on CPU, 32 on GPU; at most 256).")]
WorkersOption = Annotated[int, typer.Option(
    envvar="DW_WORKERS", rich_help_panel=MODEL, help="Processes decoding media beside the model (-1: auto, 0: none).")]
LanguageOption = Annotated[Optional[str], typer.Option(
    "--language", "-l", envvar="DW_LANGUAGE", rich_help_panel=DECODING,
    help="Language code or name, e.g. de or german (default: detect per window).")]
TaskOption = Annotated[str, typer.Option(envvar="DW_TASK", rich_help_panel=DECODING,
                                         help="transcribe, or translate (into English).")]
LongFormOption = Annotated[str, typer.Option(
    envvar="DW_LONG_FORM", rich_help_panel=DECODING,
    help="chunked: windows assembled from the detected speech, batched across files (fast); sequential: "
         "Whisper's seek-based algorithm, one window after another per file.")]
ConditionOption = Annotated[bool, typer.Option(
    "--condition-on-previous-text/--no-condition-on-previous-text", envvar="DW_CONDITION_ON_PREVIOUS_TEXT",
    rich_help_panel=DECODING,
    help="Sequential long form: each window reads the file's text so far as context, reset after a window "
         "sampled above temperature 0.5 (openai-whisper's way). Chosen by measurement: see the README.")]
PromptOption = Annotated[Optional[str], typer.Option(
    envvar="DW_INITIAL_PROMPT", rich_help_panel=DECODING,
    help="Text read as if said before the audio: names, jargon, spelling (every window in chunked mode; "
         "the first in sequential mode).")]
BeamOption = Annotated[int, typer.Option(
    "--beam-size", envvar="DW_BEAM_SIZE", rich_help_panel=DECODING,
    help="Beams searched at temperature 0. 1: greedy, as Distil-Whisper is meant to run; 5: openai-whisper's "
         "default, a little more accurate and slower.")]
TemperatureOption = Annotated[str, typer.Option(
    envvar="DW_TEMPERATURE", rich_help_panel=DECODING,
    help="Temperatures to try, comma-separated: greedy first, then sampling when a window fails the "
         "thresholds below.")]
CompressionOption = Annotated[float, typer.Option(
    envvar="DW_COMPRESSION_RATIO_THRESHOLD", rich_help_panel=DECODING,
    help="Retry a window whose text compresses better than this (a loop); 0 disables.")]
LogprobOption = Annotated[float, typer.Option(
    envvar="DW_LOGPROB_THRESHOLD", rich_help_panel=DECODING,
    help="Retry a window whose mean token log-probability is below this.")]
NoSpeechOption = Annotated[float, typer.Option(
    envvar="DW_NO_SPEECH_THRESHOLD", rich_help_panel=DECODING,
    help="A window is silence when P(no speech) exceeds this and its log-probability is below "
         "--logprob-threshold; 1 disables.")]
VadOption = Annotated[bool, typer.Option(
    "--vad/--no-vad", envvar="DW_VAD", rich_help_panel=SPEECH,
    help="Detect speech (Silero VAD) and transcribe only it: music, noise and silence never reach the model. "
         "--no-vad gives every sample to Whisper.")]
VadThresholdOption = Annotated[float, typer.Option(
    envvar="DW_VAD_THRESHOLD", rich_help_panel=SPEECH,
    help="Speech probability at which speech starts (lower finds more, and quieter, speech).")]
VadSpeechOption = Annotated[int, typer.Option(
    envvar="DW_VAD_MIN_SPEECH_MS", rich_help_panel=SPEECH, help="Drop detected speech shorter than this (ms).")]
VadSilenceOption = Annotated[int, typer.Option(
    envvar="DW_VAD_MIN_SILENCE_MS", rich_help_panel=SPEECH, help="A pause must last this long (ms) to end speech.")]
VadPadOption = Annotated[int, typer.Option(
    envvar="DW_VAD_SPEECH_PAD_MS", rich_help_panel=SPEECH, help="Audio kept around detected speech on each side (ms).")]
QuietOption = Annotated[bool, typer.Option("--quiet", "-q", envvar="DW_QUIET", rich_help_panel=LOGGING,
                                           help="Print only errors on stderr.")]
LogJsonOption = Annotated[bool, typer.Option(
    "--log-json", envvar="DW_LOG_JSON", rich_help_panel=LOGGING,
    help="Messages on stderr as one JSON object per line, every line (files, notes, errors, the summary).")]

_MAX_BATCH = 256  # windows a batch may hold: 256 x 30 s is already 2 hours of audio in memory


def _decoding_options(language, task, long_form, condition_on_previous_text, initial_prompt, beam_size, temperature,
                      compression_ratio_threshold, logprob_threshold, no_speech_threshold, timestamps=True,
                      word_timestamps=False):
    from .decoding import DecodingOptions

    if task not in ("transcribe", "translate"):
        raise UsageError(f"--task {task}: expected transcribe or translate")
    if long_form not in ("chunked", "sequential"):
        raise UsageError(f"--long-form {long_form}: expected chunked or sequential")
    _at_least("--beam-size", beam_size, 1)
    for name, value in (("--compression-ratio-threshold", compression_ratio_threshold),
                        ("--logprob-threshold", logprob_threshold), ("--no-speech-threshold", no_speech_threshold)):
        _finite(name, value)
    return DecodingOptions(
        timestamps=timestamps,
        language=_language_code(language) if language is not None else None,
        task=task,
        word_timestamps=word_timestamps,
        beam_size=beam_size,
        temperatures=_temperatures(temperature),
        compression_ratio_threshold=compression_ratio_threshold or None,
        logprob_threshold=logprob_threshold,
        no_speech_threshold=no_speech_threshold if no_speech_threshold < 1 else None,
        initial_prompt=initial_prompt.strip() if initial_prompt and initial_prompt.strip() else None,
        condition_on_previous_text=condition_on_previous_text and long_form == "sequential",
    )


def _vad_options(vad, threshold, min_speech_ms, min_silence_ms, pad_ms):
    from .vad import VadOptions

    if not (math.isfinite(threshold) and 0 < threshold < 1):
        raise UsageError(f"--vad-threshold {threshold:g}: expected a probability between 0 and 1")
    for name, value in (("--vad-min-speech-ms", min_speech_ms), ("--vad-min-silence-ms", min_silence_ms),
                        ("--vad-speech-pad-ms", pad_ms)):
        _at_least(name, value, 0)
    return VadOptions(vad, threshold, min_speech_ms, min_silence_ms, pad_ms)


def _run_options(batch_size: int, workers: int) -> None:
    _at_least("--batch-size", batch_size, 0, " (0: auto)")
    if batch_size > _MAX_BATCH:
        raise UsageError(f"--batch-size {batch_size}: at most {_MAX_BATCH}")
    _at_least("--workers", workers, -1, " (-1: auto, 0: none)")


def _reporter(quiet: bool, log_json: bool):
    from .progress import make_reporter

    return make_reporter(quiet, log_json)


def _terminate_on_sigterm() -> None:
    """SIGTERM (cron, systemd, kill) ends dw as Ctrl-C does: files done are kept, temporary
    files removed, decoding workers stopped, exit status 143."""
    def handler(signum, frame):
        raise Terminated()

    signal.signal(signal.SIGTERM, handler)


def _run(body, quiet: bool, log_json: bool) -> None:
    """Run a command body with dw's error handling and exit with its status."""
    real_stdout = sys.stdout
    sys.stdout = sys.stderr  # stdout carries results only: stray prints from libraries go to stderr
    _terminate_on_sigterm()
    try:
        status = body(real_stdout)
    except DwError as error:
        raise _fail(error, log_json) from None
    except (KeyboardInterrupt, Terminated) as interruption:
        terminated = isinstance(interruption, Terminated)
        _reporter(quiet, log_json).interrupted("SIGTERM" if terminated else "SIGINT")
        raise typer.Exit(int(ExitStatus.TERMINATED if terminated else ExitStatus.INTERRUPTED)) from None
    finally:
        sys.stdout = real_stdout
    raise typer.Exit(int(status))


def _prepare_process() -> None:
    # Before torch loads OpenMP: idle threads sleep instead of spinning.  On a CPU shared
    # with other work (cron hosts, a decoding worker), spinning made each decoder step ~10x
    # slower in our measurements; alone on a CPU it costs nothing measurable.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


@app.command(
    cls=GroupedCommand,
    epilog=(
        "Examples:\n\n"
        "  dw transcribe talk.mp4 --format srt\n\n"
        "  dw transcribe ./videos --format srt,vtt --output-dir subs/\n\n"
        "  ffmpeg -i talk.mkv -f wav - | dw transcribe - --format srt > talk.srt\n\n"
        "  find /data -name '*.mp4' -print0 | dw transcribe --from-list - -0\n\n"
        "  dw transcribe clip.wav --stdout --format json | jq .text\n\n"
        "  0 3 * * * cd /data && flock -n /tmp/dw.lock dw transcribe videos --format srt --skip-existing --log-json 2>> dw.log\n\n"
        "Every option can also be set from the environment variable shown beside it "
        "(flags take 1 or 0).\n\n"
        + EXIT_CODES_HELP
    ),
)
def transcribe(
    paths: Annotated[
        Optional[list[str]],
        typer.Argument(help="Media files, folders (searched recursively) or globs; - reads standard input.",
                       show_default=False),
    ] = None,
    formats: Annotated[str, typer.Option(
        "--format", "-f", envvar="DW_FORMAT", rich_help_panel=INPUTS,
        help="Output formats, comma-separated: txt, srt, vtt, json, tsv, or all.")] = "txt",
    output_dir: Annotated[Optional[str], typer.Option(
        "--output-dir", "-o", envvar="DW_OUTPUT_DIR", rich_help_panel=INPUTS, metavar="<path>",
        help="Write outputs here, mirroring the input folders (default: beside each input).")] = None,
    stdout: Annotated[bool, typer.Option(
        "--stdout", envvar="DW_STDOUT", rich_help_panel=INPUTS,
        help="Write the result (one format, one input) to standard output instead of files (the default when "
             "the input is - and there is no --output-dir).")] = False,
    skip_existing: Annotated[bool, typer.Option(
        "--skip-existing/--overwrite", envvar="DW_SKIP_EXISTING", rich_help_panel=INPUTS,
        help="Skip inputs whose outputs all exist and were made by the same model and options from the same "
             "file (every run records that in a hidden .<name>.dw.json beside them); --overwrite (the default) "
             "transcribes every input again.")] = False,
    from_list: Annotated[Optional[str], typer.Option(
        "--from-list", envvar="DW_FROM_LIST", rich_help_panel=INPUTS,
        help="Read input paths from this file, one per line (- for standard input).")] = None,
    null_separated: Annotated[bool, typer.Option(
        "--null", "-0", envvar="DW_NULL", rich_help_panel=INPUTS,
        help="Paths in --from-list are separated by NUL bytes (find -print0).")] = False,
    allow_partial: Annotated[bool, typer.Option(
        "--allow-partial", envvar="DW_ALLOW_PARTIAL", rich_help_panel=INPUTS,
        help="Transcribe what a truncated or damaged file holds (a note says so; JSON marks it partial) "
             "instead of failing it.")] = False,
    model: ModelOption = None,
    assistant: AssistantOption = None,
    device: DeviceOption = "auto",
    devices: Annotated[Optional[str], typer.Option(
        envvar="DW_DEVICES", rich_help_panel=MODEL,
        help="Several devices, e.g. cuda:0,cuda:1 or all: one model replica each, sharing the files (chunked "
             "long-form only).")] = None,
    dtype: DtypeOption = "auto",
    attention: AttentionOption = "auto",
    quantize: QuantizeOption = "auto",
    runtime: RuntimeOption = "auto",
    batch_size: BatchOption = 0,
    workers: WorkersOption = -1,
    language: LanguageOption = None,
    task: TaskOption = "transcribe",
    long_form: LongFormOption = "chunked",
    condition_on_previous_text: ConditionOption = True,
    initial_prompt: PromptOption = None,
    word_timestamps: Annotated[bool, typer.Option(
        "--word-timestamps", envvar="DW_WORD_TIMESTAMPS", rich_help_panel=DECODING,
        help="Time every word (cross-attention + DTW): words in JSON, word-accurate subtitle cues (without, a "
             "cue that splits a segment is timed by its characters).")] = False,
    beam_size: BeamOption = 1,
    temperature: TemperatureOption = "0,0.2,0.4,0.6,0.8,1",
    compression_ratio_threshold: CompressionOption = 2.4,
    logprob_threshold: LogprobOption = -1.0,
    no_speech_threshold: NoSpeechOption = 0.6,
    vad: VadOption = True,
    vad_threshold: VadThresholdOption = 0.5,
    vad_min_speech_ms: VadSpeechOption = 0,
    vad_min_silence_ms: VadSilenceOption = 160,
    vad_speech_pad_ms: VadPadOption = 400,
    highlight_words: Annotated[bool, typer.Option(
        "--highlight-words", envvar="DW_HIGHLIGHT_WORDS", rich_help_panel=SUBTITLES,
        help="Karaoke style, each word underlined as it is spoken (implies --word-timestamps).")] = False,
    max_line_width: Annotated[int, typer.Option(envvar="DW_MAX_LINE_WIDTH", rich_help_panel=SUBTITLES,
                                                help="Characters per line.")] = 42,
    max_line_count: Annotated[int, typer.Option(envvar="DW_MAX_LINE_COUNT", rich_help_panel=SUBTITLES,
                                                help="Lines per cue.")] = 2,
    max_cue_duration: Annotated[float, typer.Option(envvar="DW_MAX_CUE_DURATION", rich_help_panel=SUBTITLES,
                                                    help="Seconds per cue at most.")] = 7.0,
    max_cps: Annotated[float, typer.Option(envvar="DW_MAX_CPS", rich_help_panel=SUBTITLES,
                                           help="Reading speed, characters per second at most.")] = 20.0,
    quiet: QuietOption = False,
    log_json: LogJsonOption = False,
) -> None:
    """Transcribe media files into text and subtitles.

    Each file's outputs are written as soon as it is done (atomically: a temporary file,
    then a rename) as <name>.<format> beside the input or under --output-dir.

    With - as the input and no --output-dir, or with --stdout, the result goes to standard
    output, and nothing else ever does: progress, errors and the final summary line go to
    standard error (plain lines when it is not a terminal; JSON lines with --log-json).

    With --skip-existing, a rerun (a cron job, a batch that was killed) transcribes only the
    inputs whose outputs are missing, or were made by another model or other options.
    """
    def body(real_stdout):
        from .pipeline import TranscribeOptions
        from .plan import Inputs, ModelChoice, execute, make_plan
        from .subtitles import SubtitleOptions
        from .writers import WriterOptions, parse_formats

        format_list = tuple(parse_formats(formats))
        for name, value in (("--max-line-width", max_line_width), ("--max-line-count", max_line_count),
                            ("--max-cue-duration", max_cue_duration), ("--max-cps", max_cps)):
            _positive(name, value)
        if output_dir is not None and not output_dir.strip():
            raise UsageError("--output-dir: give a folder (an empty name would mean the current one)")
        _run_options(batch_size, workers)
        words = word_timestamps or highlight_words
        options = TranscribeOptions(
            formats=format_list,
            batch_size=batch_size,
            workers=workers,
            decoding=_decoding_options(
                language, task, long_form, condition_on_previous_text, initial_prompt, beam_size, temperature,
                compression_ratio_threshold, logprob_threshold, no_speech_threshold,
                # Plain text needs no segment times: decoding without timestamp tokens is ~15%
                # faster (measured; same WER), except in sequential mode, which seeks by them.
                timestamps=not (set(format_list) == {"txt"} and long_form == "chunked" and not words),
                word_timestamps=words),
            writer=WriterOptions(SubtitleOptions(max_line_width, max_line_count, max_cue_duration, max_cps,
                                                 highlight_words=highlight_words)),
            long_form=long_form,
            vad=_vad_options(vad, vad_threshold, vad_min_speech_ms, vad_min_silence_ms, vad_speech_pad_ms),
            allow_partial=allow_partial,
        )
        inputs = Inputs(tuple(paths or ()), from_list, null_separated, Path(output_dir) if output_dir else None, stdout,
                        skip_existing)
        choice = ModelChoice(model, assistant, device, devices, dtype, attention, quantize, runtime)
        _prepare_process()
        plan = make_plan(inputs, choice, options)
        reporter = _reporter(quiet, log_json)
        for note in plan.notes:
            reporter.note(note)
        summary = execute(plan, reporter, stdout=real_stdout)
        return _agreed(ExitStatus.FILE_FAILED if summary.failed else ExitStatus.OK, plan.rank)

    _run(body, quiet, log_json)


def _agreed(status: ExitStatus, rank) -> ExitStatus:
    """Under a launcher, every rank exits with the worst status of all ranks."""
    if rank is None:
        return status
    from .parallel import agree_on_status

    return ExitStatus(agree_on_status(int(status), rank))


@app.command("eval", cls=GroupedCommand)
def evaluate(
    data: Annotated[Path, typer.Argument(
        help="A JSONL manifest ({\"audio\": path relative to it, \"text\": reference} per line) or a folder "
             "with <name>.txt beside each recording.", show_default=False)],
    as_json: Annotated[bool, typer.Option("--json", rich_help_panel=INPUTS,
                                          help="Print one JSON object on stdout instead of the table on stderr.")] = False,
    limit: Annotated[int, typer.Option(rich_help_panel=INPUTS, help="Only the first N recordings (0: all).")] = 0,
    model: ModelOption = None,
    assistant: AssistantOption = None,
    device: DeviceOption = "auto",
    dtype: DtypeOption = "auto",
    attention: AttentionOption = "auto",
    quantize: QuantizeOption = "auto",
    runtime: RuntimeOption = "auto",
    batch_size: BatchOption = 0,
    workers: WorkersOption = -1,
    language: LanguageOption = None,
    task: TaskOption = "transcribe",
    long_form: LongFormOption = "chunked",
    condition_on_previous_text: ConditionOption = True,
    initial_prompt: PromptOption = None,
    beam_size: BeamOption = 1,
    temperature: TemperatureOption = "0,0.2,0.4,0.6,0.8,1",
    compression_ratio_threshold: CompressionOption = 2.4,
    logprob_threshold: LogprobOption = -1.0,
    no_speech_threshold: NoSpeechOption = 0.6,
    vad: VadOption = True,
    vad_threshold: VadThresholdOption = 0.5,
    vad_min_speech_ms: VadSpeechOption = 0,
    vad_min_silence_ms: VadSilenceOption = 160,
    vad_speech_pad_ms: VadPadOption = 400,
    quiet: QuietOption = False,
    log_json: LogJsonOption = False,
) -> None:
    """Measure a model on labelled speech: WER, insertions, deletions, repeats, speed.

    Transcribes every recording with the same engine and options as dw transcribe (plain
    text, nothing written beside the audio) and scores it against its reference after
    Whisper's text normaliser (English; other languages: its basic one, and CER).

    Example: dw eval speech/manifest.jsonl --model distil-whisper/distil-small.en --json
    """
    def body(real_stdout):
        import json

        from .evaluate import evaluate as run_evaluation, load_references
        from .pipeline import TranscribeOptions
        from .plan import check_model_options
        from .precision import describe, plan_precision
        from .models import resolve_model

        references = load_references(data)
        if limit < 0:
            raise UsageError(f"--limit {limit}: expected 0 or more")
        references = references[:limit] if limit else references
        _run_options(batch_size, workers)
        options = TranscribeOptions(
            formats=("txt",), batch_size=batch_size, workers=workers, long_form=long_form,
            decoding=_decoding_options(language, task, long_form, condition_on_previous_text, initial_prompt,
                                       beam_size, temperature, compression_ratio_threshold, logprob_threshold,
                                       no_speech_threshold, timestamps=long_form == "sequential"),
            vad=_vad_options(vad, vad_threshold, vad_min_speech_ms, vad_min_silence_ms, vad_speech_pad_ms),
        )
        _prepare_process()
        from dataclasses import replace

        from .engine import Engine, pick_device
        from .plan import batch_size_for, check_assistant, default_workers

        check_assistant(assistant, options.decoding)
        device_name = pick_device(device)
        options = replace(options, batch_size=batch_size_for(assistant, options.batch_size, device_name),
                          workers=options.workers if options.workers >= 0 else default_workers(device_name, None))
        resolved = resolve_model(model, device_name)
        reporter = _reporter(quiet or as_json, log_json)
        for note in ([resolved.note] if resolved.note else []) + check_model_options(resolved, options.decoding):
            reporter.note(note)
        drafter = resolve_model(assistant, device_name) if assistant else None
        engine = Engine(resolved, plan_precision(describe(device_name), dtype, quantize, attention, drafter is not None,
                                                 runtime), drafter)
        for note in engine.notes:
            reporter.note(note)
        evaluation = run_evaluation(references, engine, options, reporter)
        result = {"model": resolved.model_id, **evaluation.total.as_dict(), "failed": evaluation.failed}
        if as_json:
            real_stdout.write(json.dumps(result) + "\n")
        elif not quiet:
            print(_score_table(result), file=sys.stderr)
        return ExitStatus.FILE_FAILED if evaluation.failed else ExitStatus.OK

    _run(body, quiet, log_json)


def _score_table(result: dict) -> str:
    rows = [("model", result["model"]), ("files", result["files"]), ("reference words", result["words"]),
            ("WER %", f"{result['wer']:.2f}"), ("substitutions", result["substitutions"]),
            ("insertions", result["insertions"]), ("deletions", result["deletions"]),
            ("insertion rate %", f"{result['insertion_rate']:.2f}"), ("repeated 5-grams", result["repeated_5grams"]),
            ("CER %", f"{result['cer']:.2f}"), ("audio s", f"{result['audio_s']:.1f}"),
            ("wall s", f"{result['wall_s']:.1f}"), ("x real time", f"{result['x_real_time']:.1f}")]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


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


# -- dw distill ----------------------------------------------------------------------------
distill_app = typer.Typer(
    help="Distil-Whisper's recipe: a student with the teacher's encoder and fewer decoder layers, trained on "
         "the teacher's WER-filtered pseudo-labels with cross-entropy and KL. Without a subcommand, runs "
         "init, label and train into --out.",
    invoke_without_command=True, no_args_is_help=True, rich_markup_mode=None)
app.add_typer(distill_app, name="distill")

TeacherOption = Annotated[Optional[str], typer.Option(
    "--teacher", envvar="DW_TEACHER", rich_help_panel=MODEL,
    help="The teacher: any model --model takes (offline:tiny.en on this machine).")]
OutOption = Annotated[Optional[Path], typer.Option("--out", rich_help_panel=INPUTS, help="Folder to write to.")]
TrainDataOption = Annotated[Optional[Path], typer.Option(
    "--train", rich_help_panel=INPUTS, help="Training recordings: a JSONL manifest or a folder, as dw eval reads.")]
EvalDataOption = Annotated[Optional[Path], typer.Option(
    "--eval", rich_help_panel=INPUTS, help="Held-out recordings to measure the student on every --eval-steps.")]
LayersOption = Annotated[int, typer.Option(rich_help_panel=MODEL, help="The student's decoder layers.")]
AugmentOption = Annotated[str, typer.Option(
    "--augment", rich_help_panel=INPUTS,
    help="Versions of each recording to label, comma-separated: clean, speed<factor>, noise<SNR dB>, "
         "reverb<RT60 s>.")]
ThresholdOption = Annotated[float, typer.Option(
    rich_help_panel=INPUTS, help="Drop a recording's labels when the teacher's WER against its reference is above "
                                 "this (percent; Distil-Whisper's 10 for English).")]


def _train_options(steps, batch_size, learning_rate, warmup_steps, ce_weight, kl_weight, temperature,
                   timestamp_probability, condition_probability, eval_steps, checkpoint_steps, seed):
    from .distill import TrainOptions

    options = TrainOptions(steps=steps, batch_size=batch_size, learning_rate=learning_rate, warmup_steps=warmup_steps,
                           ce_weight=ce_weight, kl_weight=kl_weight, temperature=temperature,
                           timestamp_probability=timestamp_probability, condition_probability=condition_probability,
                           eval_steps=eval_steps, checkpoint_steps=checkpoint_steps, seed=seed)
    options.check()
    return options


def _required(name: str, value):
    if value is None:
        raise UsageError(f"{name}: required")
    return value


def _teacher(teacher: str | None, device_name: str):
    from .distill.student import check_teacher
    from .models import resolve_model

    resolved = resolve_model(_required("--teacher", teacher), device_name)
    check_teacher(resolved.path)
    return resolved


def _references(option: str, data: Path | None):
    from .evaluate import load_references

    try:
        return load_references(_required(option, data))
    except UsageError as error:
        raise UsageError(f"{option} {error}") from None


_TRAINING = "Training"


@distill_app.callback()
def distill(
    ctx: typer.Context,
    teacher: TeacherOption = None,
    train_data: TrainDataOption = None,
    out: OutOption = None,
    eval_data: EvalDataOption = None,
    decoder_layers: LayersOption = 2,
    augment: AugmentOption = "clean,speed0.9,speed1.1,noise15,reverb0.4",
    wer_threshold: ThresholdOption = 10.0,
    steps: Annotated[int, typer.Option(rich_help_panel=_TRAINING, help="Optimizer steps.")] = 300,
    batch_size: Annotated[int, typer.Option(rich_help_panel=_TRAINING, help="Windows per step.")] = 8,
    learning_rate: Annotated[float, typer.Option(rich_help_panel=_TRAINING, help="AdamW's peak learning rate.")] = 1e-4,
    warmup_steps: Annotated[int, typer.Option(rich_help_panel=_TRAINING, help="Linear warm-up steps.")] = 30,
    ce_weight: Annotated[float, typer.Option(rich_help_panel=_TRAINING, help="Weight of cross-entropy on the pseudo-labels.")] = 0.8,
    kl_weight: Annotated[float, typer.Option(rich_help_panel=_TRAINING, help="Weight of the KL divergence to the teacher.")] = 1.0,
    temperature: Annotated[float, typer.Option(rich_help_panel=_TRAINING, help="Temperature of the KL term.")] = 2.0,
    timestamp_probability: Annotated[float, typer.Option(rich_help_panel=_TRAINING,
                                                         help="Share of examples trained with timestamps.")] = 0.2,
    condition_probability: Annotated[float, typer.Option(rich_help_panel=_TRAINING,
                                                         help="Share of examples conditioned on previous text.")] = 0.2,
    eval_steps: Annotated[int, typer.Option(rich_help_panel=_TRAINING, help="Measure on --eval every this many steps.")] = 100,
    checkpoint_steps: Annotated[int, typer.Option(rich_help_panel=_TRAINING, help="Save the training state every this many steps.")] = 50,
    seed: Annotated[int, typer.Option(rich_help_panel=_TRAINING, help="Seed of the data order and draws.")] = 0,
    device: DeviceOption = "auto",
    quiet: QuietOption = False,
) -> None:
    """Make a Distil-Whisper student of a teacher, or run one stage (init, label, train).

    Example: dw distill --teacher offline:tiny.en --train train.jsonl --eval dev.jsonl --out tiny-2l
    """
    if ctx.invoked_subcommand is not None:
        return

    def body(_stdout):
        from .distill import TrainReporter, run_recipe
        from .engine import pick_device

        options = _train_options(steps, batch_size, learning_rate, warmup_steps, ce_weight, kl_weight, temperature,
                                 timestamp_probability, condition_probability, eval_steps, checkpoint_steps, seed)
        device_name = pick_device(device)
        resolved = _teacher(teacher, device_name)
        from .distill.student import layer_mapping
        from .network import WhisperConfig

        layer_mapping(WhisperConfig.from_file(resolved.path / "config.json").decoder_layers, decoder_layers)
        references = _references("--train", train_data)
        evaluation = _references("--eval", eval_data) if eval_data is not None else None
        report, result = run_recipe(resolved, references, _required("--out", out), evaluation, decoder_layers,
                                    tuple(part.strip() for part in augment.split(",") if part.strip()), wer_threshold,
                                    options, device_name, TrainReporter(quiet=quiet))
        if not quiet:
            best = f"; best eval WER {result.best_wer:.2f}% at step {result.best_step}" if result.best_wer is not None else ""
            print(f"dw: distilled {out}: {result.steps} steps, loss {result.first_loss:.3f} -> {result.last_loss:.3f}"
                  f"{best}", file=sys.stderr)
        return ExitStatus.OK

    _run(body, quiet, False)


@distill_app.command("init")
def distill_init(teacher: TeacherOption = None, out: OutOption = None, decoder_layers: LayersOption = 2) -> None:
    """The student: the teacher's encoder and N of its decoder layers, maximally spaced.

    Example: dw distill init --teacher offline:tiny.en --out student-2l --decoder-layers 2
    """
    def body(_stdout):
        from .distill.student import init_student

        init_student(_teacher(teacher, "cpu").path, _required("--out", out), decoder_layers)
        return ExitStatus.OK

    _run(body, False, False)


@distill_app.command("label")
def distill_label(teacher: TeacherOption = None, train_data: TrainDataOption = None, out: OutOption = None,
                  augment: AugmentOption = "clean,speed0.9,speed1.1,noise15,reverb0.4",
                  wer_threshold: ThresholdOption = 10.0, device: DeviceOption = "auto", quiet: QuietOption = False) -> None:
    """The teacher's pseudo-labels for the training data, WER-filtered (resumable).

    Example: dw distill label --teacher offline:tiny.en --train train.jsonl --out labels
    """
    def body(_stdout):
        from .distill.label import label
        from .engine import Engine, pick_device

        device_name = pick_device(device)
        resolved = _teacher(teacher, device_name)
        from .distill import TrainReporter

        report = label(_references("--train", train_data), Engine.load(resolved, device_name), _required("--out", out),
                       tuple(part.strip() for part in augment.split(",") if part.strip()), wer_threshold,
                       progress=TrainReporter(quiet=quiet).labelled)
        if not quiet:
            print(f"dw: labels in {out}: {report.kept_windows} of {report.windows} windows kept; "
                  f"{report.dropped_recordings} of {report.recordings} recordings above {wer_threshold:g}% WER dropped",
                  file=sys.stderr)
        return ExitStatus.OK

    _run(body, quiet, False)


@distill_app.command("train")
def distill_train(
    teacher: TeacherOption = None,
    student: Annotated[Optional[Path], typer.Option(rich_help_panel=MODEL, help="The student dw distill init made.")] = None,
    labels: Annotated[Optional[Path], typer.Option(rich_help_panel=INPUTS, help="The labels dw distill label made.")] = None,
    out: OutOption = None,
    eval_data: EvalDataOption = None,
    steps: Annotated[int, typer.Option(rich_help_panel=_TRAINING, help="Optimizer steps.")] = 300,
    batch_size: Annotated[int, typer.Option(rich_help_panel=_TRAINING, help="Windows per step.")] = 8,
    learning_rate: Annotated[float, typer.Option(rich_help_panel=_TRAINING, help="AdamW's peak learning rate.")] = 1e-4,
    warmup_steps: Annotated[int, typer.Option(rich_help_panel=_TRAINING, help="Linear warm-up steps.")] = 30,
    ce_weight: Annotated[float, typer.Option(rich_help_panel=_TRAINING, help="Weight of cross-entropy on the pseudo-labels.")] = 0.8,
    kl_weight: Annotated[float, typer.Option(rich_help_panel=_TRAINING, help="Weight of the KL divergence to the teacher.")] = 1.0,
    temperature: Annotated[float, typer.Option(rich_help_panel=_TRAINING, help="Temperature of the KL term.")] = 2.0,
    timestamp_probability: Annotated[float, typer.Option(rich_help_panel=_TRAINING,
                                                         help="Share of examples trained with timestamps.")] = 0.2,
    condition_probability: Annotated[float, typer.Option(rich_help_panel=_TRAINING,
                                                         help="Share of examples conditioned on previous text.")] = 0.2,
    eval_steps: Annotated[int, typer.Option(rich_help_panel=_TRAINING, help="Measure on --eval every this many steps.")] = 100,
    checkpoint_steps: Annotated[int, typer.Option(rich_help_panel=_TRAINING, help="Save the training state every this many steps.")] = 50,
    seed: Annotated[int, typer.Option(rich_help_panel=_TRAINING, help="Seed of the data order and draws.")] = 0,
    quiet: QuietOption = False,
) -> None:
    """Train the student on the labels (through accelerate: CPU, GPU, or accelerate launch).

    Example: dw distill train --teacher offline:tiny.en --student student-2l --labels labels --out tiny-2l
    """
    def body(_stdout):
        from .distill import TrainReporter, train

        options = _train_options(steps, batch_size, learning_rate, warmup_steps, ce_weight, kl_weight, temperature,
                                 timestamp_probability, condition_probability, eval_steps, checkpoint_steps, seed)
        resolved = _teacher(teacher, "cpu")
        evaluation = _references("--eval", eval_data) if eval_data is not None else None
        result = train(resolved.path, _required("--student", student), _required("--labels", labels),
                       _required("--out", out), options, evaluation, TrainReporter(quiet=quiet))
        if not quiet and result.main_process:
            print(f"dw: trained {out}: {result.steps} steps, loss {result.first_loss:.3f} -> {result.last_loss:.3f}",
                  file=sys.stderr)
        return ExitStatus.OK

    _run(body, quiet, False)


def main() -> None:
    """Console-script entry point."""
    # Before anything imports torch (the run loop's modules do, at import): OpenMP reads its
    # wait policy once, when torch loads it.  Set later (as _prepare_process alone did), it
    # never took effect, and on a shared 2-core machine spinning threads cost dw 3x the CPU
    # time of faster-whisper on the long-form set (benchmarks/RESULTS.md, issue 27).
    _prepare_process()
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
        _say_error(error.format_message(), error.exit_code, log_json=True)  # a usage error's is 2, as ours
        return error.exit_code
    except typer.Abort:  # end of input or Ctrl-C at a prompt (dw asks none; Click's own rule)
        _say_error("aborted", int(ExitStatus.INTERRUPTED), log_json=True)
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
