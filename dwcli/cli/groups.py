"""Option groups, each declared once: its flags (with their help, environment variable and
``--help`` heading) and the one function that turns their values into the options
dataclass a stage takes.  ``uses`` puts a group's flags on a command and hands the command
the built dataclass instead; every command that takes, say, speech-detection options takes
these very flags, with the defaults ``dwcli.options`` declares.

A value a dataclass refuses (``InvalidOption``) becomes one usage error naming the flag,
here, for every command: ``--batch-size 300: expected 0 (auto) to 256``.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Optional

import typer

from ..decoding.options import DecodingOptions
from ..errors import InvalidOption, UsageError
from ..languages import LANGUAGES, TO_LANGUAGE_CODE
from ..options import (LONG_FORM_MODES, ClusterOptions, LabelOptions, ModelChoice, SpeakerOptions, SubtitleOptions,
                       TrainOptions, TranscribeOptions, VadOptions, defaults)

# Headings of --help and the man page, in the order they are shown.
INPUTS, MODEL, CLUSTER, DECODING, SPEECH, SPEAKERS, SUBTITLES, TRAINING, LOGGING = (
    "Inputs and outputs", "Model and device", "Cluster", "Decoding", "Speech detection", "Speaker labels", "Subtitles",
    "Training", "Messages")


@dataclass(frozen=True)
class Flag:
    """One command-line option: the parameter ``name``, its Typer declaration, its default
    (the CLI's spelling of the options dataclass's default), and the dataclass field it
    fills (for naming the flag in an error)."""

    name: str
    annotation: object  # Annotated[type, typer.Option(...)]
    default: object
    field: str = ""

    @property
    def flag(self) -> str:
        option = self.annotation.__metadata__[0]
        return next((name for name in option.param_decls if name.startswith("--")), f"--{self.name.replace('_', '-')}")


def _flag(name: str, kind, default, *decls: str, field: str = "", **option) -> Flag:
    return Flag(name, Annotated[kind, typer.Option(*decls, **option)], default, field or name)


@dataclass(frozen=True)
class Group:
    """Flags a command takes together and how their values become one object."""

    keyword: str  # the command's parameter that receives the built object
    flags: tuple[Flag, ...]
    build: Callable[..., object]  # (**values of the flags) -> the object; raises InvalidOption, UsageError


def _number(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def built(group: Group, values: dict):
    """``group.build(**values)``, an ``InvalidOption`` said as a usage error naming its flag."""
    try:
        return group.build(**values)
    except InvalidOption as error:
        flag = next((item for item in group.flags if item.field == error.field), None)
        if flag is None:
            raise UsageError(str(error)) from None
        raise UsageError(f"{flag.flag} {_number(values[flag.name])}: {error.reason}") from None


def uses(*groups: Group):
    """Put ``groups``' flags on a Typer command (after its own parameters) and call it with
    each group's built object as the keyword the group names.  Building happens inside the
    command, so that its errors are reported as the command's (``cli.app.run``)."""
    def decorate(command):
        signature = inspect.signature(command, eval_str=True)
        keywords = {group.keyword for group in groups}
        kept = [parameter for parameter in signature.parameters.values() if parameter.name not in keywords]
        added = [inspect.Parameter(flag.name, inspect.Parameter.KEYWORD_ONLY, default=flag.default,
                                   annotation=flag.annotation) for group in groups for flag in group.flags]

        @functools.wraps(command)
        def wrapper(**values):
            for group in groups:
                values[group.keyword] = _Pending(group, {flag.name: values.pop(flag.name) for flag in group.flags})
            return command(**values)

        parameters = [parameter.replace(kind=inspect.Parameter.KEYWORD_ONLY) for parameter in kept] + added
        wrapper.__signature__ = signature.replace(parameters=parameters)
        wrapper.__annotations__ = {parameter.name: parameter.annotation for parameter in parameters}
        del wrapper.__wrapped__  # typer must read the new signature, not the command's
        return wrapper

    return decorate


@dataclass(frozen=True)
class _Pending:
    """A group's values, built on demand inside the command (``get()``)."""

    group: Group
    values: dict

    def get(self):
        return built(self.group, self.values)

    def __getitem__(self, name: str):
        return self.values[name]


# -- messages --------------------------------------------------------------------------------
QUIET = _flag("quiet", bool, False, "--quiet", "-q", envvar="DW_QUIET", rich_help_panel=LOGGING,
              help="Print only errors on stderr.")
LOG_JSON = _flag("log_json", bool, False, "--log-json", envvar="DW_LOG_JSON", rich_help_panel=LOGGING,
                 help="Messages on stderr as one JSON object per line, every line (files, notes, errors, the summary).")


@dataclass(frozen=True)
class Messages:
    quiet: bool = False
    log_json: bool = False


MESSAGES = Group("messages", (QUIET, LOG_JSON), Messages)
QUIET_ONLY = Group("messages", (QUIET,), Messages)


# -- the model -------------------------------------------------------------------------------
MODEL_ID = _flag(
    "model", Optional[str], None, "--model", "-m", envvar="DW_MODEL", rich_help_panel=MODEL,
    help="Hub id, local transformers or CTranslate2 checkpoint, or offline:tiny.en (default: distil-large-v3 on GPU, "
         "distil-small.en on CPU, offline:tiny.en when those cannot be had).")
ASSISTANT = _flag(
    "assistant", Optional[str], None, "--assistant", envvar="DW_ASSISTANT", rich_help_panel=MODEL,
    help="A smaller Whisper with the model's vocabulary (e.g. its Distil-Whisper student) that drafts tokens for the "
         "model to check: speculative decoding, the model's own greedy transcript, faster at batch size 1 (forced).")
DEVICE = _flag("device", str, ModelChoice.device, "--device", envvar="DW_DEVICE", rich_help_panel=MODEL,
               help="auto, cpu, cuda or cuda:N.")
DEVICES = _flag(
    "devices", Optional[str], ModelChoice.devices, "--devices", envvar="DW_DEVICES", rich_help_panel=MODEL,
    help="Several devices, e.g. cuda:0,cuda:1 or all: one model replica each, sharing the files (chunked long-form "
         "only).")
DTYPE = _flag(
    "dtype", str, ModelChoice.dtype, "--dtype", envvar="DW_DTYPE", rich_help_panel=MODEL,
    help="auto (GPU: bfloat16 where native, else float16; CPU: float32 weights, and where the CPU multiplies bfloat16 "
         "natively, AVX512-BF16 or AMX, the encoder under bfloat16 autocast and bfloat16 copies of what the decoder "
         "reads at every step: as accurate as float32 on the dev sets, 1.2-1.4x faster), float32, float16 or "
         "bfloat16.")
ATTENTION = _flag(
    "attention", str, ModelChoice.attention, "--attention", envvar="DW_ATTENTION", rich_help_panel=MODEL,
    help="Encoder attention kernel: auto (flash_attention_2 where flash-attn loads on an Ampere or newer GPU in 16 "
         "bits, else sdpa), sdpa, eager or flash_attention_2.")
QUANTIZE = _flag(
    "quantize", str, ModelChoice.quantize, "--quantize", envvar="DW_QUANTIZE", rich_help_panel=MODEL,
    help="auto (none), none, or int8: dynamic int8 Linear layers on CPU. Measured with tiny.en on 2 cores: 0.5-0.8 "
         "WER points worse than the default on the dev sets (0.3-1.4 on others), 1.1-1.2x faster, and a transcript "
         "then depends on the other windows of its batch.")
RUNTIME = _flag(
    "runtime", str, ModelChoice.runtime, "--runtime", envvar="DW_RUNTIME", rich_help_panel=MODEL,
    help="What runs the float32 encoder on a CPU: auto (ONNX Runtime on CPUs without AVX-512, exported once and "
         "cached, PyTorch with a note where the export fails; PyTorch on AVX-512 CPUs), onnxruntime or torch. "
         "Measured with tiny.en on 2 cores: ONNX Runtime 1.3-1.5x faster than PyTorch's AVX2 kernels, level with its "
         "AVX-512 ones; the same transcripts.")
MODEL_GROUP = Group("choice", (MODEL_ID, ASSISTANT, DEVICE, DEVICES, DTYPE, ATTENTION, QUANTIZE, RUNTIME), ModelChoice)
ONE_DEVICE_MODEL_GROUP = Group("choice", (MODEL_ID, ASSISTANT, DEVICE, DTYPE, ATTENTION, QUANTIZE, RUNTIME),
                               ModelChoice)
TEACHER = _flag("teacher", Optional[str], None, "--teacher", envvar="DW_TEACHER", rich_help_panel=MODEL,
                help="The teacher: any model --model takes (offline:tiny.en on this machine).")


# -- a Ray cluster ---------------------------------------------------------------------------
RAY = _flag(
    "ray", Optional[str], ClusterOptions.address, "--ray", envvar="DW_RAY", field="address", rich_help_panel=CLUSTER,
    metavar="ADDRESS",
    help="Run on a Ray cluster (pip install 'dw[ray]'): auto (the cluster this machine belongs to), local (start one "
         "on this machine) or host:port. Files are read and decoded on the nodes, batched through a pool of model "
         "replicas, and written here; inputs and --output-dir must be on storage every node shares.")
RAY_REPLICAS = _flag(
    "ray_replicas", int, ClusterOptions.replicas, "--ray-replicas", envvar="DW_RAY_REPLICAS", field="replicas",
    rich_help_panel=CLUSTER,
    help="Model replicas on the cluster (0: one per GPU; without GPUs, one per --ray-replica-cpus of three quarters "
         "of the CPUs, the rest decoding).")
RAY_REPLICA_CPUS = _flag(
    "ray_replica_cpus", int, ClusterOptions.replica_cpus, "--ray-replica-cpus", envvar="DW_RAY_REPLICA_CPUS",
    field="replica_cpus", rich_help_panel=CLUSTER,
    help="CPU threads of each replica (0: 1 beside a GPU, 4 on a cluster without GPUs).")


def _cluster(ray, ray_replicas, ray_replica_cpus) -> ClusterOptions | None:
    options = ClusterOptions(ray, ray_replicas, ray_replica_cpus)
    return options if options.address is not None else None


CLUSTER_GROUP = Group("cluster", (RAY, RAY_REPLICAS, RAY_REPLICA_CPUS), _cluster)


# -- how a run goes --------------------------------------------------------------------------
BATCH_SIZE = _flag(
    "batch_size", int, TranscribeOptions.batch_size, "--batch-size", "-b", envvar="DW_BATCH_SIZE",
    rich_help_panel=MODEL, help="30-second windows per model call (0: auto, 16 on CPU, 32 on GPU; at most 256).")
WORKERS = _flag("workers", int, TranscribeOptions.workers, "--workers", envvar="DW_WORKERS", rich_help_panel=MODEL,
                help="Processes decoding media beside the model (-1: auto, 0: none).")
LONG_FORM = _flag(
    "long_form", str, TranscribeOptions.long_form, "--long-form", envvar="DW_LONG_FORM", rich_help_panel=DECODING,
    help="chunked: windows assembled from the detected speech, batched across files (fast); sequential: Whisper's "
         "seek-based algorithm, one window after another per file.")


# -- decoding --------------------------------------------------------------------------------
def _temperatures_text(temperatures) -> str:
    return ",".join(_number(float(value)) for value in temperatures)


def language_code(value: str) -> str:
    """``--language``: a Whisper language code or name (``de``, ``German``) -> the code."""
    key = value.strip().lower()
    if key in LANGUAGES:
        return key
    if key in TO_LANGUAGE_CODE:
        return TO_LANGUAGE_CODE[key]
    raise UsageError(f"--language {value}: unknown language; give a code such as en, de or fr, or a name such as german")


def _temperatures(value: str) -> tuple[float, ...]:
    try:
        return tuple(float(part) for part in value.split(",") if part.strip())
    except ValueError:
        raise UsageError(f"--temperature {value}: expected rising non-negative numbers, e.g. 0,0.2,0.4") from None


LANGUAGE = _flag("language", Optional[str], DecodingOptions.language, "--language", "-l", envvar="DW_LANGUAGE",
                 rich_help_panel=DECODING, help="Language code or name, e.g. de or german (default: detect per window).")
TASK = _flag("task", str, DecodingOptions.task, "--task", envvar="DW_TASK", rich_help_panel=DECODING,
             help="transcribe, or translate (into English).")
CONDITION = _flag(
    "condition_on_previous_text", bool, DecodingOptions.condition_on_previous_text,
    "--condition-on-previous-text/--no-condition-on-previous-text", envvar="DW_CONDITION_ON_PREVIOUS_TEXT",
    rich_help_panel=DECODING,
    help="Sequential long form: each window reads the file's text so far as context, reset after a window sampled "
         "above temperature 0.5 (openai-whisper's way). Chosen by measurement: see the README.")
PROMPT = _flag(
    "initial_prompt", Optional[str], DecodingOptions.initial_prompt, "--initial-prompt", envvar="DW_INITIAL_PROMPT",
    rich_help_panel=DECODING,
    help="Text read as if said before the audio: names, jargon, spelling (every window in chunked mode; the first in "
         "sequential mode).")
WORDS = _flag(
    "word_timestamps", bool, DecodingOptions.word_timestamps, "--word-timestamps", envvar="DW_WORD_TIMESTAMPS",
    rich_help_panel=DECODING,
    help="Time every word (cross-attention + DTW): words in JSON, word-accurate subtitle cues (without, a cue that "
         "splits a segment is timed by its characters).")
BEAM = _flag(
    "beam_size", int, DecodingOptions.beam_size, "--beam-size", envvar="DW_BEAM_SIZE", rich_help_panel=DECODING,
    help="Beams searched at temperature 0. 1: greedy, as Distil-Whisper is meant to run; 5: openai-whisper's default, "
         "a little more accurate and slower.")
TEMPERATURE = _flag(
    "temperature", str, _temperatures_text(DecodingOptions.temperatures), "--temperature", envvar="DW_TEMPERATURE",
    field="temperatures", rich_help_panel=DECODING,
    help="Temperatures to try, comma-separated: greedy first, then sampling when a window fails the thresholds below.")
COMPRESSION = _flag(
    "compression_ratio_threshold", float, DecodingOptions.compression_ratio_threshold,
    "--compression-ratio-threshold", envvar="DW_COMPRESSION_RATIO_THRESHOLD", rich_help_panel=DECODING,
    help="Retry a window whose text compresses better than this (a loop); 0 disables.")
LOGPROB = _flag(
    "logprob_threshold", float, DecodingOptions.logprob_threshold, "--logprob-threshold",
    envvar="DW_LOGPROB_THRESHOLD", rich_help_panel=DECODING,
    help="Retry a window whose mean token log-probability is below this.")
NO_SPEECH = _flag(
    "no_speech_threshold", float, DecodingOptions.no_speech_threshold, "--no-speech-threshold",
    envvar="DW_NO_SPEECH_THRESHOLD", rich_help_panel=DECODING,
    help="A window is silence when P(no speech) exceeds this and its log-probability is below --logprob-threshold; "
         "1 disables.")


@dataclass(frozen=True)
class Decoding:
    """The decoding group's result: the options, and the long-form mode they go with."""

    options: DecodingOptions
    long_form: str


def _decoding(language, task, long_form, condition_on_previous_text, initial_prompt, beam_size, temperature,
              compression_ratio_threshold, logprob_threshold, no_speech_threshold,
              word_timestamps=DecodingOptions.word_timestamps) -> Decoding:
    if long_form not in LONG_FORM_MODES:
        raise UsageError(f"--long-form {long_form}: expected chunked or sequential")
    options = DecodingOptions(
        language=language_code(language) if language is not None else None,
        task=task,
        word_timestamps=word_timestamps,
        beam_size=beam_size,
        temperatures=_temperatures(temperature),
        compression_ratio_threshold=compression_ratio_threshold or None,
        logprob_threshold=logprob_threshold,
        no_speech_threshold=no_speech_threshold if no_speech_threshold < 1 else None,
        initial_prompt=initial_prompt.strip() if initial_prompt and initial_prompt.strip() else None,
        # Only the sequential mode reads previous text; the chunked mode records False.
        condition_on_previous_text=condition_on_previous_text and long_form == "sequential",
    )
    return Decoding(options, long_form)


_DECODING_FLAGS = (LANGUAGE, TASK, LONG_FORM, CONDITION, PROMPT, BEAM, TEMPERATURE, COMPRESSION, LOGPROB, NO_SPEECH)
DECODING_GROUP = Group("decoding", _DECODING_FLAGS, _decoding)
DECODING_WITH_WORDS_GROUP = Group("decoding", (*_DECODING_FLAGS[:5], WORDS, *_DECODING_FLAGS[5:]), _decoding)
AUDIO_TRACK = _flag(
    "audio_track", Optional[int], TranscribeOptions.audio_track, "--audio-track", envvar="DW_AUDIO_TRACK",
    rich_help_panel=INPUTS, metavar="N",
    help="Which audio track of each file to transcribe, counted from 0 as in ffmpeg's -map 0:a:N (default: the one "
         "a player starts with, the first marked default, else the first; a note names it when a file has several). "
         "A file without track N fails, saying how many it has.")
RUN_GROUP = Group("run_options", (BATCH_SIZE, WORKERS, AUDIO_TRACK),
                  lambda batch_size, workers, audio_track: TranscribeOptions(batch_size=batch_size, workers=workers,
                                                                             audio_track=audio_track))
BATCH_GROUP = Group("run_options", (BATCH_SIZE,), lambda batch_size: TranscribeOptions(batch_size=batch_size))


# -- speech detection ------------------------------------------------------------------------
VAD = _flag(
    "vad", bool, VadOptions.enabled, "--vad/--no-vad", envvar="DW_VAD", field="enabled", rich_help_panel=SPEECH,
    help="Detect speech (Silero VAD) and transcribe only it: music, noise and silence never reach the model. --no-vad "
         "gives every sample to Whisper.")
VAD_THRESHOLD = _flag(
    "vad_threshold", float, VadOptions.threshold, "--vad-threshold", envvar="DW_VAD_THRESHOLD", field="threshold",
    rich_help_panel=SPEECH,
    help="Speech probability at which speech starts (lower finds more, and quieter, speech).")
VAD_SPEECH = _flag("vad_min_speech_ms", int, VadOptions.min_speech_duration_ms, "--vad-min-speech-ms",
                   envvar="DW_VAD_MIN_SPEECH_MS", field="min_speech_duration_ms", rich_help_panel=SPEECH,
                   help="Drop detected speech shorter than this (ms).")
VAD_SILENCE = _flag("vad_min_silence_ms", int, VadOptions.min_silence_duration_ms, "--vad-min-silence-ms",
                    envvar="DW_VAD_MIN_SILENCE_MS", field="min_silence_duration_ms", rich_help_panel=SPEECH,
                    help="A pause must last this long (ms) to end speech.")
VAD_PAD = _flag("vad_speech_pad_ms", int, VadOptions.speech_pad_ms, "--vad-speech-pad-ms", envvar="DW_VAD_SPEECH_PAD_MS",
                field="speech_pad_ms", rich_help_panel=SPEECH, help="Audio kept around detected speech on each side (ms).")
SPEECH_GROUP = Group("vad", (VAD, VAD_THRESHOLD, VAD_SPEECH, VAD_SILENCE, VAD_PAD),
                     lambda vad, vad_threshold, vad_min_speech_ms, vad_min_silence_ms, vad_speech_pad_ms: VadOptions(
                         vad, vad_threshold, vad_min_speech_ms, vad_min_silence_ms, vad_speech_pad_ms))


# -- speaker labels --------------------------------------------------------------------------
SPEAKERS_ON = _flag(
    "speakers", bool, TranscribeOptions.speakers is not None, "--speakers", envvar="DW_SPEAKERS",
    rich_help_panel=SPEAKERS,
    help="Label who speaks (SPEAKER_00, SPEAKER_01... in order of first appearance): CAM++ speaker embeddings of the "
         "detected speech, spectral clustering; words timed, segments cut where the speaker changes, and the rttm "
         "format. Offline; needs pip install 'dw[speakers]'.")
NUM_SPEAKERS = _flag("num_speakers", Optional[int], SpeakerOptions.num_speakers, "--num-speakers",
                     envvar="DW_NUM_SPEAKERS", rich_help_panel=SPEAKERS, show_default=False,
                     help="With --speakers: exactly this many speakers (default: estimated per file).")
MIN_SPEAKERS = _flag("min_speakers", Optional[int], SpeakerOptions.min_speakers, "--min-speakers",
                     envvar="DW_MIN_SPEAKERS", rich_help_panel=SPEAKERS, show_default=False,
                     help="With --speakers: at least this many speakers per file.")
MAX_SPEAKERS = _flag("max_speakers", Optional[int], SpeakerOptions.max_speakers, "--max-speakers",
                     envvar="DW_MAX_SPEAKERS", rich_help_panel=SPEAKERS, show_default=False,
                     help="With --speakers: at most this many speakers per file (default 10).")


def _speaker_counts(num_speakers, min_speakers, max_speakers) -> SpeakerOptions:
    return SpeakerOptions(num_speakers, min_speakers, max_speakers)


def _speakers(speakers, num_speakers, min_speakers, max_speakers) -> SpeakerOptions | None:
    counts = _speaker_counts(num_speakers, min_speakers, max_speakers)
    if speakers:
        return counts
    given = [flag.flag for flag, value in ((NUM_SPEAKERS, num_speakers), (MIN_SPEAKERS, min_speakers),
                                           (MAX_SPEAKERS, max_speakers)) if value is not None]
    if given:
        raise UsageError(f"{given[0]} needs --speakers")
    return None


SPEAKERS_GROUP = Group("speakers", (SPEAKERS_ON, NUM_SPEAKERS, MIN_SPEAKERS, MAX_SPEAKERS), _speakers)
SPEAKER_COUNT_GROUP = Group("speaker_count", (NUM_SPEAKERS, MIN_SPEAKERS, MAX_SPEAKERS), _speaker_counts)


# -- subtitles -------------------------------------------------------------------------------
HIGHLIGHT = _flag("highlight_words", bool, SubtitleOptions.highlight_words, "--highlight-words",
                  envvar="DW_HIGHLIGHT_WORDS", rich_help_panel=SUBTITLES,
                  help="Karaoke style, each word underlined as it is spoken (implies --word-timestamps).")
LINE_WIDTH = _flag("max_line_width", int, SubtitleOptions.max_line_width, "--max-line-width",
                   envvar="DW_MAX_LINE_WIDTH", rich_help_panel=SUBTITLES, help="Characters per line.")
LINE_COUNT = _flag("max_line_count", int, SubtitleOptions.max_line_count, "--max-line-count",
                   envvar="DW_MAX_LINE_COUNT", rich_help_panel=SUBTITLES, help="Lines per cue.")
CUE_DURATION = _flag("max_cue_duration", float, SubtitleOptions.max_cue_duration_s, "--max-cue-duration",
                     envvar="DW_MAX_CUE_DURATION", field="max_cue_duration_s", rich_help_panel=SUBTITLES,
                     help="Seconds per cue at most.")
CPS = _flag("max_cps", float, SubtitleOptions.max_cps, "--max-cps", envvar="DW_MAX_CPS", rich_help_panel=SUBTITLES,
            help="Reading speed, characters per second at most.")
SUBTITLES_GROUP = Group("subtitles", (HIGHLIGHT, LINE_WIDTH, LINE_COUNT, CUE_DURATION, CPS),
                        lambda highlight_words, max_line_width, max_line_count, max_cue_duration, max_cps:
                        SubtitleOptions(max_line_width, max_line_count, max_cue_duration, max_cps, highlight_words))


# -- training (dw distill) -------------------------------------------------------------------
def _train(**values) -> TrainOptions:
    return TrainOptions(**{("batch_size" if name == "train_batch_size" else
                            "temperature" if name == "kl_temperature" else name): value
                           for name, value in values.items()})


_TRAIN_HELP = {
    "steps": "Optimizer steps.", "batch_size": "Windows per optimizer step.",
    "learning_rate": "AdamW's peak learning rate.", "warmup_steps": "Linear warm-up steps.",
    "ce_weight": "Weight of cross-entropy on the pseudo-labels.", "kl_weight": "Weight of the KL divergence to the teacher.",
    "temperature": "Temperature of the KL term.", "timestamp_probability": "Share of examples trained with timestamps.",
    "condition_probability": "Share of examples conditioned on previous text.",
    "eval_steps": "Measure on --eval every this many steps.",
    "checkpoint_steps": "Save the training state every this many steps.", "seed": "Seed of the data order and draws.",
}
# Training's own batch size and temperature are not decoding's: they get names of their own.
_TRAIN_NAMES = {"batch_size": "train_batch_size", "temperature": "kl_temperature"}
TRAIN_FLAGS = tuple(
    _flag(_TRAIN_NAMES.get(name, name), type(default), default, "--" + _TRAIN_NAMES.get(name, name).replace("_", "-"),
          field=name, rich_help_panel=TRAINING, help=text)
    for name, text in _TRAIN_HELP.items() for default in [defaults(TrainOptions)[name]])
TRAINING_GROUP = Group("training", TRAIN_FLAGS, _train)

AUGMENT = _flag("augment", str, ",".join(LabelOptions.augmentations), "--augment", field="augmentations",
                rich_help_panel=INPUTS,
                help="Versions of each recording to label, comma-separated: clean, speed<factor>, noise<SNR dB>, "
                     "reverb<RT60 s>.")
WER_THRESHOLD = _flag("wer_threshold", float, LabelOptions.wer_threshold, "--wer-threshold", rich_help_panel=INPUTS,
                      help="Drop a recording's labels when the teacher's WER against its reference is above this "
                           "(percent; Distil-Whisper's 10 for English).")
LABELLING_GROUP = Group("labelling", (AUGMENT, WER_THRESHOLD), lambda augment, wer_threshold: LabelOptions(
    tuple(part.strip() for part in augment.split(",") if part.strip()), wer_threshold))
