"""From what the user asked for to a run: small checked steps that build a typed ``RunPlan``.

``make_plan`` gathers the inputs (arguments, ``--from-list``), decides whether results go to
standard output, takes this rank's shard under a launcher, picks the devices, resolves the
model, checks the options against the model's own configuration (languages, translation)
before any weights load, makes one precision plan per device, and leaves out the files
``--skip-existing`` finds done.  ``execute`` runs the plan: one device is the one-replica
case of several (run in this process); several devices run a replica each.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

from .discover import Discovery, MediaFile, discover, read_path_list
from .errors import UsageError
from .models import ResolvedModel, resolve_model
from .pipeline import FileOutcome, RunSummary, TranscribeOptions
from .precision import PrecisionPlan, check_requests, describe, plan_precision


@dataclass(frozen=True)
class Inputs:
    """What to transcribe and where the results go."""

    paths: tuple[str, ...] = ()
    from_list: str | None = None  # a file of paths, "-" for standard input
    null_separated: bool = False  # --from-list entries end in NUL (find -print0)
    output_dir: Path | None = None
    stdout: bool = False  # --stdout: the result to standard output
    skip_existing: bool = False


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


@dataclass
class RunPlan:
    """Everything a run needs, checked."""

    files: list[MediaFile]  # to transcribe
    settled: list[FileOutcome]  # decided before the run: skipped, or missing paths
    options: TranscribeOptions
    model: ResolvedModel | None = None  # None when nothing is left to transcribe
    assistant: ResolvedModel | None = None
    replicas: list[PrecisionPlan] = field(default_factory=list)  # one per device
    rank: object = None  # parallel.Rank under torchrun / accelerate launch
    notes: list[str] = field(default_factory=list)  # said on stderr before the run


def gather_arguments(inputs: Inputs, stdin=None) -> list[str]:
    """The input paths: the arguments, then the ``--from-list`` entries."""
    arguments = list(inputs.paths)
    if inputs.from_list is not None:
        if inputs.from_list == "-":
            if "-" in arguments:
                raise UsageError("standard input cannot hold both the media and the --from-list")
            stream = stdin if stdin is not None else sys.stdin
            if stream is None or getattr(stream, "closed", False):
                raise UsageError("--from-list -: standard input is closed")
            arguments += read_path_list(getattr(stream, "buffer", stream), inputs.null_separated)
        else:
            try:
                with open(inputs.from_list, "rb") as stream:
                    arguments += read_path_list(stream, inputs.null_separated)
            except OSError as error:
                raise UsageError(f"--from-list {inputs.from_list}: {error.strerror}") from None
    if not arguments:
        raise UsageError("no input: name files, folders or - (standard input), or use --from-list")
    return arguments


def _to_stdout(inputs: Inputs, arguments: list[str], found: Discovery, formats: tuple[str, ...]) -> bool:
    to_stdout = inputs.stdout or ("-" in arguments and inputs.output_dir is None)
    if to_stdout:
        if len(formats) != 1:
            raise UsageError(f"writing to standard output takes one format, got {','.join(formats)}")
        if len(found.files) + len(found.unusable) != 1:
            raise UsageError("writing to standard output takes exactly one input")
    return to_stdout


def _inside(folder: Path, stem: Path) -> bool:
    """Whether outputs named ``stem.*`` land in ``folder`` (links followed, as writes follow them)."""
    root = os.path.realpath(folder)
    return os.path.commonpath([root, os.path.realpath(stem)]) == root


def _devices(choice: ModelChoice, rank) -> list[str]:
    from .engine import pick_device
    from .parallel import parse_devices

    if choice.devices:
        return parse_devices(choice.devices)
    device = pick_device(choice.device)
    if rank is not None and device == "cuda":  # --device auto or cuda, no index: one GPU per rank
        device = f"cuda:{rank.local_rank}"
    return [device]


def check_model_options(resolved: ResolvedModel, options) -> list[str]:
    """The decoding options against the model's own configuration, before its weights load:
    UsageError for a language it lacks; the notes to say."""
    from .decoding.options import SpecialTokens
    from .network import GenerationConfig

    path = resolved.path / "generation_config.json"
    try:
        special = SpecialTokens.from_generation_config(GenerationConfig.from_file(path))
    except (OSError, ValueError, TypeError):
        return []  # the model cannot be loaded either: Engine says so, with exit status 3
    language = options.language
    if language and not special.multilingual and language != "en":
        raise UsageError(f"--language {language}: {resolved.model_id} is an English-only model")
    if language and special.multilingual and language not in special.languages:
        raise UsageError(f"--language {language}: not one of {resolved.model_id}'s languages")
    if options.task == "translate" and not special.multilingual:
        return [f"{resolved.model_id} is English-only and cannot translate; it transcribes"]
    return []


def default_workers(device: str, rank) -> int:
    """Decoding workers: enough to keep a GPU fed; on CPU one, the model needs the cores.
    Under a launcher the machine's cores are shared by its ranks."""
    cores = os.cpu_count() or 1
    if rank is not None:
        cores = max(1, cores // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)))
    if device.startswith("cuda"):
        return max(1, min(8, cores - 1))
    return 1 if cores > 1 else 0


def check_assistant(assistant: str | None, decoding) -> None:
    """UsageError for decoding options an assistant cannot serve (``dw transcribe``, ``dw eval``)."""
    if assistant and decoding.beam_size > 1:
        raise UsageError("--assistant decodes greedily: it cannot be combined with --beam-size")


def batch_size_for(assistant: str | None, requested: int, device: str) -> int:
    """Windows per model call: 1 with an assistant (speculation pays at batch size 1: each
    step of the model reads all its weights for one token), else ``requested`` (0: auto)."""
    from .engine import default_batch_size

    return 1 if assistant else requested or default_batch_size(device)


def make_plan(inputs: Inputs, choice: ModelChoice, options: TranscribeOptions, stdin=None) -> RunPlan:
    """Check everything and decide everything a run needs; raises UsageError and
    ModelLoadError."""
    from .parallel import launched_rank, shard
    from .resume import Recipe, Resume

    check_requests(choice.dtype, choice.quantize, choice.attention, choice.runtime)
    check_assistant(choice.assistant, options.decoding)
    arguments = gather_arguments(inputs, stdin)
    found = discover(arguments, inputs.output_dir)
    to_stdout = _to_stdout(inputs, arguments, found, options.formats)
    rank = launched_rank()
    if rank is not None:
        if to_stdout:
            raise UsageError("under torchrun each rank writes files: give --output-dir, not standard output")
        # Each rank its fixed shard; rank 0 reports the paths that are not inputs.
        found = Discovery(shard(found.files, rank), found.unusable if rank.rank == 0 else [])
    devices = _devices(choice, rank)
    if len(devices) > 1 and options.long_form != "chunked":
        raise UsageError("--devices with several devices needs --long-form chunked")
    options = replace(
        options,
        to_stdout=to_stdout,
        batch_size=batch_size_for(choice.assistant, options.batch_size, devices[0]),
        workers=options.workers if options.workers >= 0 else default_workers(devices[0], rank),
    )
    settled = [FileOutcome(MediaFile(item.argument, Path(item.argument)), "failed", item.message)
               for item in found.unusable]
    files = []
    for media in found.files:
        if inputs.output_dir is not None and not to_stdout and not _inside(inputs.output_dir, media.output_stem):
            settled.append(FileOutcome(media, "failed", f"{media.label}: its outputs would be written outside "
                                                        f"--output-dir {inputs.output_dir}"))
        else:
            files.append(media)
    found = Discovery(files, found.unusable)
    plan = RunPlan(found.files, settled, options, rank=rank)
    if not found.files:
        return plan
    plan.model = resolve_model(choice.model, devices[0])
    if plan.model.note:
        plan.notes.append(plan.model.note)
    plan.assistant = resolve_model(choice.assistant, devices[0]) if choice.assistant else None
    plan.notes += check_model_options(plan.model, options.decoding)
    plan.replicas = [plan_precision(describe(device), choice.dtype, choice.quantize, choice.attention,
                                    plan.assistant is not None, choice.runtime) for device in devices]
    if not to_stdout:
        resumes = [Resume(Recipe.of(plan.model.model_id, options, **precision.recipe()), inputs.skip_existing)
                   for precision in plan.replicas]
        plan.options = replace(options, resume=resumes[0])
        done = [media for media in found.files if inputs.skip_existing and any(r.is_done(media, options.formats)
                                                                               for r in resumes)]
        plan.files = [media for media in found.files if media not in done]
        plan.settled += [FileOutcome(media, "skipped", outputs=[media.output_path(fmt) for fmt in options.formats])
                         for media in done]
    return plan


def _mel_bins(resolved: ResolvedModel) -> int:
    """The model's log-mel bins, from its config (the weights not loaded yet)."""
    from .errors import ModelLoadError
    from .network import WhisperConfig

    try:
        return WhisperConfig.from_file(resolved.path / "config.json").num_mel_bins
    except (OSError, ValueError, TypeError, KeyError) as error:
        raise ModelLoadError(f"cannot load model {resolved.model_id}: {error}") from None


def execute(plan: RunPlan, reporter, stdout=None) -> RunSummary:
    """Run the plan: in this process on its one device, else one replica per device."""
    from .pipeline import transcribe_files

    if not plan.files or len(plan.replicas) <= 1:
        engine = items = None
        if plan.files:
            from .batching import stream_items
            from .engine import Engine

            if plan.options.long_form == "chunked":
                # Decoding starts first: the workers read the media while the model loads.
                n_mels = _mel_bins(plan.model)
                items = stream_items(plan.files, n_mels, plan.options.workers, vad=plan.options.vad,
                                     allow_partial=plan.options.allow_partial)
            engine = Engine(plan.model, plan.replicas[0], plan.assistant)
            for note in engine.notes:
                reporter.note(note)
        return transcribe_files(plan.files, engine, plan.options, reporter, stdout=stdout, settled=plan.settled,
                                items=items)
    from .parallel import Replica, transcribe_on_devices
    from .resume import Recipe, Resume

    replicas = []
    for precision in plan.replicas:
        options = plan.options
        if options.resume is not None:
            recipe = Recipe.of(plan.model.model_id, options, **precision.recipe())
            options = replace(options, resume=Resume(recipe, options.resume.skip_existing))
        replicas.append(Replica(plan.model, precision, plan.assistant, options))
    return transcribe_on_devices(plan.files, replicas, reporter, settled=plan.settled)


__all__ = ["Inputs", "ModelChoice", "RunPlan", "check_model_options", "execute", "gather_arguments", "make_plan"]
