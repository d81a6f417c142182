"""Every option a run takes, as typed dataclasses that check themselves.

Each dataclass is the one declaration of its options' defaults: the command line
(``cli.groups``) declares a flag for each field and takes its default from here, and a
library caller gets the same defaults.  A value out of range raises ``InvalidOption``
naming the field; the CLI turns that into a usage error naming the flag, in one place.

This module imports nothing heavy: ``dw --help`` reads the defaults from it.
"""

from __future__ import annotations

import math
from dataclasses import MISSING, dataclass, fields, replace

from .decoding.options import DecodingOptions
from .errors import InvalidOption
from .devices import cores_for_this_process, default_batch_size, default_workers

SAMPLE_RATE = 16_000  # Hz: what every Whisper model was trained on, and what audio decodes to
MAX_BATCH_SIZE = 256  # windows a batch may hold: 256 x 30 s is already 2 hours of audio in memory
LONG_FORM_MODES = ("chunked", "sequential")


def _check(instance, name: str, valid: bool, reason: str) -> None:
    if not valid:
        raise InvalidOption(type(instance).__name__, name, getattr(instance, name), reason)


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


@dataclass(frozen=True)
class VadOptions:
    """How speech is told from non-speech (faster-whisper's ``VadOptions``, dw's defaults)."""

    enabled: bool = True  # False: every sample goes to the model, Whisper alone decides
    threshold: float = 0.5  # a frame whose speech probability reaches this starts speech
    # Speech shorter than this is dropped (0: keep everything the detector calls speech).
    min_speech_duration_ms: int = 0
    # A pause must last this long to end a stretch of speech; shorter ones stay inside it.
    min_silence_duration_ms: int = 160
    # Each stretch of speech is widened by this much audio on both sides (consonants and
    # breaths at the edges, which the detector scores low), the gap shared when two meet.
    speech_pad_ms: int = 400

    def __post_init__(self) -> None:
        _check(self, "threshold", _finite(self.threshold) and 0.0 < self.threshold < 1.0,
               "expected a probability between 0 and 1")
        for name in ("min_speech_duration_ms", "min_silence_duration_ms", "speech_pad_ms"):
            _check(self, name, getattr(self, name) >= 0, "expected 0 or more")

    @property
    def pad_samples(self) -> int:
        return round(self.speech_pad_ms * SAMPLE_RATE / 1000)


@dataclass(frozen=True)
class SubtitleOptions:
    """Limits for SRT/VTT cues (the defaults follow common broadcast guidelines)."""

    max_line_width: int = 42  # columns per line (CJK takes two); a longer word gets its own line
    max_line_count: int = 2  # lines per cue
    max_cue_duration_s: float = 7.0  # seconds on screen at most
    max_cps: float = 20.0  # reading speed: characters per second at most, where gaps allow
    highlight_words: bool = False  # karaoke: the cue once per word, that word underlined

    def __post_init__(self) -> None:
        for name in ("max_line_width", "max_line_count", "max_cue_duration_s", "max_cps"):
            value = getattr(self, name)
            _check(self, name, _finite(value) and value > 0, "expected a positive number")


@dataclass(frozen=True)
class WriterOptions:
    """What shapes the written text beyond the transcript itself."""

    subtitles: SubtitleOptions = SubtitleOptions()


@dataclass(frozen=True)
class SpeakerOptions:
    """``--speakers``, and what constrains the count (None: estimated from the eigengap)."""

    num_speakers: int | None = None
    min_speakers: int | None = None
    max_speakers: int | None = None

    def __post_init__(self) -> None:
        for name in ("num_speakers", "min_speakers", "max_speakers"):
            value = getattr(self, name)
            _check(self, name, value is None or value >= 1, "expected 1 or more")
        low, high = self.min_speakers, self.max_speakers
        _check(self, "min_speakers", low is None or high is None or low <= high, f"above --max-speakers {high}")
        _check(self, "num_speakers", self.num_speakers is None or (low is None and high is None),
               "fixes the count, so --min-speakers and --max-speakers cannot be given with it")


@dataclass(frozen=True)
class TranscribeOptions:
    """Everything about a run that is not the model or the inputs."""

    formats: tuple[str, ...] = ("txt",)
    batch_size: int = 0  # windows per model call (0: auto, resolved for each device by for_device)
    workers: int = -1  # decoding processes beside the model (-1: auto; 0: decode in this process)
    decoding: DecodingOptions = DecodingOptions()
    writer: WriterOptions = WriterOptions()
    to_stdout: bool = False  # write the single format to stdout instead of files
    long_form: str = "chunked"  # "chunked" (windows cut in pauses, batched) or "sequential"
    vad: VadOptions = VadOptions()  # what is speech: only it reaches the model
    allow_partial: bool = False  # transcribe what a truncated file holds (marked partial) instead of failing it
    resume: object = None  # resume.Resume: records how each file's outputs were made (--skip-existing)
    audio_track: int | None = None  # which audio stream of each file, 0-based (None: the one a player starts with)
    speakers: SpeakerOptions | None = None  # --speakers: label who speaks (None: no labels)

    def __post_init__(self) -> None:
        _check(self, "batch_size", 0 <= self.batch_size <= MAX_BATCH_SIZE,
               f"expected 0 (auto) to {MAX_BATCH_SIZE}")
        _check(self, "workers", self.workers >= -1, "expected -1 (auto), 0 (none) or more")
        _check(self, "audio_track", self.audio_track is None or self.audio_track >= 0,
               "expected 0 or more (0 is the first audio track)")
        _check(self, "long_form", self.long_form in LONG_FORM_MODES, "expected chunked or sequential")

    def for_device(self, device: str, cores: int | None = None) -> TranscribeOptions:
        """These options with ``auto`` batch size and workers resolved for ``device`` (the one
        place they are resolved: the plan calls it once per device).  Workers are at most one
        per core: more only compete with the model and each other (64 asked for on 2 cores
        held 4.8 GB, and torch warned in plain lines under --log-json)."""
        cores = cores if cores is not None else cores_for_this_process()
        return replace(self, batch_size=self.batch_size or default_batch_size(device),
                       workers=min(self.workers, cores) if self.workers >= 0
                       else default_workers(device, cores, self.speakers is not None))

    @property
    def resolved(self) -> bool:
        return self.batch_size > 0 and self.workers >= 0


@dataclass(frozen=True)
class Inputs:
    """What to transcribe and where the results go."""

    paths: tuple[str, ...] = ()
    from_list: str | None = None  # a file of paths, "-" for standard input
    null_separated: bool = False  # --from-list entries end in NUL (find -print0)
    output_dir: object = None  # pathlib.Path, or None: beside each input
    stdout: bool = False  # --stdout: the result to standard output
    skip_existing: bool = False
    collect: bool = False  # the results are kept in memory (dw eval): nothing is written or skipped


@dataclass(frozen=True)
class ModelChoice:
    """The model and how to run it, as given (``auto`` and None: dw decides)."""

    model: str | None = None
    assistant: str | None = None
    device: str = "auto"
    devices: str | None = None  # several: "cuda:0,cuda:1" or "all"
    dtype: str = "auto"
    attention: str = "auto"
    quantize: str = "auto"
    runtime: str = "auto"  # what runs the float32 CPU encoder: auto, torch or onnxruntime


@dataclass(frozen=True)
class ClusterOptions:
    """``--ray``: the cluster a run goes to, and the size of its model pool."""

    address: str | None = None  # "auto", "local", or a Ray address; None: no cluster
    # Model replicas (0: one per GPU of the cluster; on a cluster without GPUs, one per
    # ``replica_cpus`` of three quarters of its CPUs, the rest left to decoding).
    replicas: int = 0
    replica_cpus: int = 0  # CPU threads of each replica (0: 1 beside a GPU, 4 on a CPU cluster)

    def __post_init__(self) -> None:
        _check(self, "address", self.address is None or bool(self.address.strip()),
               "expected auto, local or a Ray address (host:port)")
        _check(self, "replicas", self.replicas >= 0, "expected 0 (one per GPU) or more")
        _check(self, "replica_cpus", self.replica_cpus >= 0, "expected 0 (auto) or more")


def timestamps_needed(formats, long_form: str, word_timestamps: bool) -> bool:
    """Whether decoding emits timestamp tokens.  Plain text needs no segment times, and
    decoding without them is ~15% faster (measured; same WER), except in sequential mode,
    which seeks by them.  ``dw transcribe`` and ``dw eval`` both decide it here."""
    return not (set(formats) == {"txt"} and long_form == "chunked" and not word_timestamps)


@dataclass(frozen=True)
class TrainOptions:
    """How the student is trained (defaults: the seed's recipe, scaled to small data)."""

    steps: int = 300
    batch_size: int = 8  # windows per optimizer step
    learning_rate: float = 1e-4
    warmup_steps: int = 30
    weight_decay: float = 0.0
    ce_weight: float = 0.8
    kl_weight: float = 1.0
    temperature: float = 2.0
    timestamp_probability: float = 0.2  # examples that keep their timestamp tokens
    condition_probability: float = 0.2  # examples conditioned on the text before them
    eval_steps: int = 100
    checkpoint_steps: int = 50
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "eval_steps", "checkpoint_steps"):
            _check(self, name, getattr(self, name) >= 1, "expected 1 or more")
        _check(self, "warmup_steps", self.warmup_steps >= 0, "expected 0 or more")
        for name in ("learning_rate", "temperature"):
            _check(self, name, _finite(getattr(self, name)) and getattr(self, name) > 0, "expected a positive number")
        for name in ("ce_weight", "kl_weight", "weight_decay", "timestamp_probability", "condition_probability"):
            value = getattr(self, name)
            _check(self, name, _finite(value) and value >= 0 and (not name.endswith("probability") or value <= 1),
                   "out of range")
        _check(self, "kl_weight", self.ce_weight > 0 or self.kl_weight > 0,
               "cannot be 0 with --ce-weight 0: nothing to learn from")


DECODER_LAYERS = 2  # dw distill: Distil-Whisper's student keeps the teacher's encoder and two decoder layers


@dataclass(frozen=True)
class LabelOptions:
    """How ``dw distill label`` keeps the teacher's labels."""

    augmentations: tuple[str, ...] = ("clean", "speed0.9", "speed1.1", "noise15", "reverb0.4")
    wer_threshold: float = 10.0  # percent: Distil-Whisper's filter for English

    def __post_init__(self) -> None:
        _check(self, "wer_threshold", _finite(self.wer_threshold) and self.wer_threshold >= 0,
               "expected a percentage, 0 or more")
        _check(self, "augmentations", bool(self.augmentations), "name at least one version")


def defaults(cls) -> dict:
    """The declared defaults of an options dataclass, by field name (the docs test compares
    the command line's defaults with these)."""
    return {item.name: item.default for item in fields(cls) if item.default is not MISSING}


__all__ = ["ClusterOptions", "DecodingOptions", "InvalidOption", "Inputs", "LabelOptions", "ModelChoice", "SpeakerOptions", "SubtitleOptions", "TrainOptions",
           "TranscribeOptions", "VadOptions", "WriterOptions", "defaults", "timestamps_needed"]
