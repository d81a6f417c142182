"""The ``dw`` command line.

Heavy libraries (torch, transformers) are imported inside the commands, so ``dw --help``
and shell completion answer at once.  Only this module decides exit codes: every other
module raises ``DwError``s, which become one ``Error: ...`` line and the matching status.
"""

from __future__ import annotations

import os
import sys
import traceback
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Optional

import typer

from . import __version__
from .errors import DwError, ExitStatus, UsageError

# What each exit status means: --help and the man page (dwcli.docs) both say it from here.
EXIT_STATUS_MEANINGS = {
    ExitStatus.OK: "every file was transcribed (or skipped as already done)",
    ExitStatus.FILE_FAILED: "some file failed (the others were still written)",
    ExitStatus.USAGE: "usage error",
    ExitStatus.MODEL: "the model could not be loaded",
    ExitStatus.INTERRUPTED: "interrupted (SIGINT, Ctrl-C)",
}
EXIT_CODES_HELP = "Exit status: " + "; ".join(
    f"{int(status)} {meaning}" for status, meaning in EXIT_STATUS_MEANINGS.items()) + "."

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


def _language_code(value: str) -> str:
    """``--language``: a Whisper language code or name (``de``, ``German``) -> the code."""
    from transformers.models.whisper.tokenization_whisper import LANGUAGES, TO_LANGUAGE_CODE

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
    if not temperatures or any(t < 0 for t in temperatures) or list(temperatures) != sorted(temperatures):
        raise UsageError(f"--temperature {value}: expected rising non-negative numbers, e.g. 0,0.2,0.4")
    return temperatures


def _note(message: str, quiet: bool, log_json: bool) -> None:
    """A remark on stderr: ``dw: message``, or a JSON object under --log-json (whose every
    line must parse), or nothing under --quiet."""
    if log_json:
        import json
        import time

        print(json.dumps({"time": round(time.time(), 3), "event": "note", "message": message}), file=sys.stderr)
    elif not quiet:
        print(f"dw: {message}", file=sys.stderr)


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
    formats: Annotated[
        str, typer.Option("--format", "-f", envvar="DW_FORMAT", help="Output formats, comma-separated: txt, srt, vtt, json, tsv, or all.")
    ] = "txt",
    output_dir: Annotated[
        Optional[Path], typer.Option("--output-dir", "-o", envvar="DW_OUTPUT_DIR",
                                     help="Write outputs here, mirroring the input folders (default: beside each input).")
    ] = None,
    stdout: Annotated[
        bool, typer.Option("--stdout", envvar="DW_STDOUT",
                           help="Write the result (one format, one input) to standard output instead of files "
                                "(the default when the input is - and there is no --output-dir).")
    ] = False,
    skip_existing: Annotated[
        bool, typer.Option("--skip-existing/--overwrite", envvar="DW_SKIP_EXISTING",
                           help="Skip inputs whose outputs all exist and were made by the same model and options "
                                "from the same file (recorded in a hidden .<name>.dw.json beside them); "
                                "--overwrite (the default) transcribes every input again.")
    ] = False,
    from_list: Annotated[
        Optional[str], typer.Option("--from-list", envvar="DW_FROM_LIST", help="Read input paths from this file, one per line (- for standard input).")
    ] = None,
    null_separated: Annotated[
        bool, typer.Option("--null", "-0", envvar="DW_NULL",
                           help="Paths in --from-list are separated by NUL bytes (find -print0).")
    ] = False,
    model: Annotated[
        Optional[str], typer.Option("--model", "-m", envvar="DW_MODEL",
                                    help="Hub id, local transformers or CTranslate2 checkpoint, or offline:tiny.en "
                                         "(default: distil-large-v3 on GPU, distil-small.en on CPU, "
                                         "offline:tiny.en when those cannot be had).")
    ] = None,
    assistant: Annotated[
        Optional[str], typer.Option("--assistant", envvar="DW_ASSISTANT",
                                    help="A smaller Whisper with the model's vocabulary (e.g. its Distil-Whisper "
                                         "student) that drafts tokens for the model to check: speculative decoding, "
                                         "the model's own greedy transcript, faster at batch size 1 (forced).")
    ] = None,
    device: Annotated[str, typer.Option(envvar="DW_DEVICE", help="auto, cpu, cuda or cuda:N.")] = "auto",
    devices: Annotated[
        Optional[str], typer.Option(envvar="DW_DEVICES",
                                    help="Several devices, e.g. cuda:0,cuda:1 or all: one model replica each, "
                                         "sharing the files (chunked long-form only).")
    ] = None,
    dtype: Annotated[
        str, typer.Option(envvar="DW_DTYPE", help="auto (bfloat16/float16 on GPU; on CPU float32 weights with bfloat16 "
                                                  "attention and output layer where the CPU has bfloat16), float32, "
                                                  "float16 or bfloat16.")
    ] = "auto",
    attention: Annotated[
        str, typer.Option(envvar="DW_ATTENTION", help="Encoder attention kernel: auto, sdpa, eager or flash_attention_2.")
    ] = "auto",
    quantize: Annotated[
        str, typer.Option(envvar="DW_QUANTIZE", help="auto (int8 on CPU, none on GPU), none, or int8: dynamic int8 "
                                                     "Linear layers on CPU (measured: ~1.7x faster, same WER).")
    ] = "auto",
    batch_size: Annotated[
        int, typer.Option("--batch-size", "-b", envvar="DW_BATCH_SIZE", help="30-second windows per model call (0: auto).")
    ] = 0,
    workers: Annotated[
        int, typer.Option(envvar="DW_WORKERS", help="Processes decoding media beside the model (-1: auto, 0: none).")
    ] = -1,
    language: Annotated[
        Optional[str], typer.Option("--language", "-l", envvar="DW_LANGUAGE",
                                    help="Language code or name, e.g. de or german (default: detect per window).")
    ] = None,
    task: Annotated[str, typer.Option(envvar="DW_TASK", help="transcribe, or translate (into English).")] = "transcribe",
    long_form: Annotated[
        str, typer.Option(envvar="DW_LONG_FORM",
                          help="chunked: windows cut in pauses, batched across files (fast); sequential: "
                               "Whisper's seek-based algorithm, one window after another per file.")
    ] = "chunked",
    vad: Annotated[
        bool, typer.Option("--vad/--no-vad", envvar="DW_VAD",
                           help="Detect speech (Silero VAD) and transcribe only it: music, noise and silence "
                                "never reach the model. --no-vad gives every sample to Whisper.")
    ] = True,
    vad_threshold: Annotated[
        float, typer.Option(envvar="DW_VAD_THRESHOLD",
                            help="Speech probability at which speech starts (lower finds more, quieter speech).")
    ] = 0.5,
    vad_min_speech_ms: Annotated[
        int, typer.Option(envvar="DW_VAD_MIN_SPEECH_MS", help="Drop detected speech shorter than this (ms).")
    ] = 0,
    vad_min_silence_ms: Annotated[
        int, typer.Option(envvar="DW_VAD_MIN_SILENCE_MS", help="A pause must last this long (ms) to end speech.")
    ] = 160,
    vad_speech_pad_ms: Annotated[
        int, typer.Option(envvar="DW_VAD_SPEECH_PAD_MS", help="Audio kept around detected speech on each side (ms).")
    ] = 400,
    word_timestamps: Annotated[
        bool, typer.Option("--word-timestamps", envvar="DW_WORD_TIMESTAMPS",
                           help="Time every word (cross-attention + DTW): words in JSON, word-accurate subtitle cues.")
    ] = False,
    highlight_words: Annotated[
        bool, typer.Option("--highlight-words", envvar="DW_HIGHLIGHT_WORDS",
                           help="Subtitles: karaoke style, each word underlined as it is spoken (implies --word-timestamps).")
    ] = False,
    beam_size: Annotated[
        int, typer.Option("--beam-size", envvar="DW_BEAM_SIZE",
                          help="Beams searched at temperature 0. 1: greedy, as Distil-Whisper is meant to run; "
                               "5: openai-whisper's default, a little more accurate and slower.")
    ] = 1,
    temperature: Annotated[
        str, typer.Option(envvar="DW_TEMPERATURE",
                          help="Temperatures to try, comma-separated: greedy first, then sampling when a window "
                               "fails the thresholds below.")
    ] = "0,0.2,0.4,0.6,0.8,1",
    compression_ratio_threshold: Annotated[
        float, typer.Option(envvar="DW_COMPRESSION_RATIO_THRESHOLD",
                            help="Retry a window whose text compresses better than this (a loop); 0 disables.")
    ] = 2.4,
    logprob_threshold: Annotated[
        float, typer.Option(envvar="DW_LOGPROB_THRESHOLD",
                            help="Retry a window whose mean token log-probability is below this.")
    ] = -1.0,
    no_speech_threshold: Annotated[
        float, typer.Option(envvar="DW_NO_SPEECH_THRESHOLD",
                            help="A window is silence when P(no speech) exceeds this and its log-probability "
                                 "is below --logprob-threshold; 1 disables.")
    ] = 0.6,
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

    With - as the input and no --output-dir, or with --stdout, the result goes to standard
    output, and nothing else ever does: progress, errors and the final summary line go to
    standard error (plain lines when it is not a terminal; JSON lines with --log-json).

    With --skip-existing, a rerun (a cron job, a batch that was killed) transcribes only the
    inputs whose outputs are missing, or were made by another model or other options.
    """
    real_stdout = sys.stdout
    sys.stdout = sys.stderr  # stdout carries results only: stray prints from libraries go to stderr
    try:
        status = _transcribe(**locals())
    except DwError as error:
        raise _fail(error) from None
    except KeyboardInterrupt:
        print("dw: interrupted", file=sys.stderr)
        raise typer.Exit(int(ExitStatus.INTERRUPTED)) from None
    finally:
        sys.stdout = real_stdout
    raise typer.Exit(int(status))


def _transcribe(paths, formats, output_dir, stdout, skip_existing, from_list, null_separated, model, assistant,
                device, devices,
                dtype,
                attention, quantize, batch_size, workers, language, task, long_form, vad, vad_threshold,
                vad_min_speech_ms, vad_min_silence_ms, vad_speech_pad_ms, word_timestamps,
                highlight_words, beam_size, temperature, compression_ratio_threshold, logprob_threshold,
                no_speech_threshold, max_line_width, max_line_count,
                max_cue_duration, max_cps, quiet, log_json, real_stdout) -> ExitStatus:
    from .discover import discover, read_path_list
    from .writers import WriterOptions, parse_formats
    from .subtitles import SubtitleOptions

    fmt_list = parse_formats(formats)
    for name, value in (("--max-line-width", max_line_width), ("--max-line-count", max_line_count),
                        ("--max-cue-duration", max_cue_duration), ("--max-cps", max_cps)):
        _positive(name, value)
    if task not in ("transcribe", "translate"):
        raise UsageError(f"--task {task}: expected transcribe or translate")
    if long_form not in ("chunked", "sequential"):
        raise UsageError(f"--long-form {long_form}: expected chunked or sequential")
    temperatures = _temperatures(temperature)
    from .vad import VadOptions

    if not 0 < vad_threshold < 1:
        raise UsageError(f"--vad-threshold {vad_threshold:g}: expected a probability between 0 and 1")
    for name, value in (("--vad-min-speech-ms", vad_min_speech_ms), ("--vad-min-silence-ms", vad_min_silence_ms),
                        ("--vad-speech-pad-ms", vad_speech_pad_ms)):
        if value < 0:
            raise UsageError(f"{name} {value}: expected 0 or more")
    vad_options = VadOptions(vad, vad_threshold, vad_min_speech_ms, vad_min_silence_ms, vad_speech_pad_ms)
    if language is not None:
        language = _language_code(language)
    if beam_size < 1:
        raise UsageError(f"--beam-size {beam_size}: expected 1 or more")
    if beam_size > 1 and assistant:
        raise UsageError("--assistant decodes greedily: it cannot be combined with --beam-size")
    if quantize not in ("auto", "none", "int8"):
        raise UsageError(f"--quantize {quantize}: expected auto, none or int8")
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

    # Before torch loads OpenMP: idle threads sleep instead of spinning.  On a CPU shared
    # with other work (cron hosts, a decoding worker), spinning made each decoder step ~10x
    # slower in our measurements; alone on a CPU it costs nothing measurable.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from .batching import default_workers
    from .decoding import DecodingOptions
    from .discover import Discovery, MediaFile
    from .engine import Engine, default_batch_size, pick_attention, pick_device, pick_dtype, pick_quantize
    from .models import resolve_model
    from .parallel import EngineSpec, launched_rank, parse_devices, shard, transcribe_on_devices
    from .pipeline import FileOutcome, TranscribeOptions, transcribe_files
    from .resume import Recipe, Resume

    reporter = make_reporter(quiet, log_json)
    settled = [FileOutcome(MediaFile(missing, Path(missing)), "failed", f"{missing}: no such file or directory")
               for missing in found.missing]
    device_list = parse_devices(devices) if devices else None
    device_name = device_list[0] if device_list else pick_device(device)
    rank = launched_rank()
    if rank is not None:
        # torchrun / accelerate launch: this rank's fixed shard; rank 0 reports missing paths.
        if to_stdout:
            raise UsageError("under torchrun each rank writes files: give --output-dir, not standard output")
        found = Discovery(shard(found.files, rank), found.missing if rank.rank == 0 else [])
        settled = settled if rank.rank == 0 else []
        if device == "auto" and device_name.startswith("cuda"):
            device_name = f"cuda:{rank.local_rank}"
    if device_list and len(device_list) > 1 and long_form != "chunked":
        raise UsageError("--devices with several devices needs --long-form chunked")
    options = TranscribeOptions(
        formats=tuple(fmt_list),
        # Speculation pays at batch size 1 (each step of the model reads all its weights for one token).
        batch_size=1 if assistant else batch_size if batch_size > 0 else default_batch_size(device_name),
        workers=workers if workers >= 0 else default_workers(device_name),
        decoding=DecodingOptions(
            language=language,
            task=task,
            # Plain text needs no segment times: decoding without timestamp tokens is ~15%
            # faster (measured; same WER), except in sequential mode, which seeks by them.
            timestamps=not (set(fmt_list) == {"txt"} and long_form == "chunked"
                            and not (word_timestamps or highlight_words)),
            word_timestamps=word_timestamps or highlight_words,
            beam_size=beam_size,
            temperatures=temperatures,
            compression_ratio_threshold=compression_ratio_threshold or None,
            logprob_threshold=logprob_threshold,
            no_speech_threshold=no_speech_threshold if no_speech_threshold < 1 else None,
        ),
        writer=WriterOptions(SubtitleOptions(max_line_width, max_line_count, max_cue_duration, max_cps,
                                             highlight_words=highlight_words)),
        to_stdout=to_stdout,
        long_form=long_form,
        vad=vad_options,
    )
    if {"srt", "vtt"} & set(fmt_list) and not options.decoding.word_timestamps:
        _note("note: subtitle cues that split a segment are timed by character count; "
              "--word-timestamps times them by the words", quiet, log_json)
    todo, engine = found.files, None
    if todo:
        resolved = resolve_model(model, device_name)
        if resolved.note:
            _note(resolved.note, quiet, log_json)
        assistant_resolved = resolve_model(assistant, device_name) if assistant else None
        dtype_name = pick_dtype(dtype, device_name)
        quantize_name = pick_quantize(quantize, device_name)
        if not to_stdout:
            # With an assistant the model's decoder runs in float32 on CPU (see Engine).
            precision = {"decoder": "float32"} if assistant and device_name == "cpu" else {}
            recipe = Recipe.of(resolved.model_id, options, dtype=dtype_name, quantize=quantize_name, **precision)
            resume = Resume(recipe, skip_existing)
            options = replace(options, resume=resume)
            todo, done = resume.partition(found.files, fmt_list)
            settled += [FileOutcome(media, "skipped", outputs=[media.output_path(fmt) for fmt in fmt_list])
                        for media in done]
    if todo and device_list and len(device_list) > 1:
        spec = EngineSpec(resolved, dtype_name, pick_attention(attention, device_name), quantize_name,
                          assistant_resolved)
        summary = transcribe_on_devices(todo, device_list, spec, options, reporter, settled=settled)
        return _agreed(ExitStatus.FILE_FAILED if summary.failed else ExitStatus.OK, rank)
    if todo:  # load the model only when something is left to transcribe
        engine = Engine(
            resolved,
            device=device_name,
            dtype=dtype_name,
            attention=pick_attention(attention, device_name),
            quantize=quantize_name,
            assistant=assistant_resolved,
        )
        if language and engine.english_only and language != "en":
            raise UsageError(f"--language {language}: {engine.model_id} is an English-only model")
        if language and not engine.english_only and language not in engine.special.languages:
            raise UsageError(f"--language {language}: not one of {engine.model_id}'s languages")
        if task == "translate" and engine.english_only:
            _note(f"note: {engine.model_id} is English-only and cannot translate; it transcribes", quiet, log_json)
    summary = transcribe_files(todo, engine, options, reporter, stdout=real_stdout, settled=settled)
    return _agreed(ExitStatus.FILE_FAILED if summary.failed else ExitStatus.OK, rank)


def _agreed(status: ExitStatus, rank) -> ExitStatus:
    """Under a launcher, every rank exits with the worst status of all ranks."""
    if rank is None:
        return status
    from .parallel import agree_on_status

    return ExitStatus(agree_on_status(int(status), rank))


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
