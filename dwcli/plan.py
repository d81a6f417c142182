"""From what the user asked for to a run: small checked steps that build a typed ``RunPlan``.

``make_plan`` gathers the inputs (arguments, ``--from-list``), decides whether results go to
standard output, takes this rank's shard under a launcher, picks the devices, resolves the
model, checks the options against the model's own configuration (languages, translation)
before any weights load, makes one ``DeviceRun`` per device (its precision plan, and the
options resolved for it: batch size, workers, the record its outputs carry), and leaves
out the files ``--skip-existing`` finds done.  ``execute`` runs the plan: one device is the
one-replica case of several (run in this process); several devices run a replica each.
``dw transcribe`` and ``dw eval`` both come through here; they differ only in their sink.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

from . import cluster as ray_cluster
from .decoding.alignment import alignment_heads_problem
from .decoding.options import SpecialTokens
from .devices import parse_devices, pick_device
from .discover import Discovery, MediaFile, discover, output_dir_problem, read_path_list
from .engine import Engine
from .errors import UsageError
from .events import FileOutcome, RunSummary
from .models import ResolvedModel, resolve_model
from .network import GenerationConfig, WhisperConfig, mel_bins
from .options import ClusterOptions, Inputs, ModelChoice, TranscribeOptions
from .parallel import Replica, launched_rank, shard, share_from_first_rank, transcribe_on_devices
from .pipeline import reading_for, transcribe_files
from .precision import PrecisionPlan, check_requests, describe, plan_precision
from .resume import Recipe, Resume
from .workers import stream_items


@dataclass(frozen=True)
class DeviceRun:
    """How one device runs: its precision plan and the options resolved for it."""

    precision: PrecisionPlan
    options: TranscribeOptions

    @property
    def device(self) -> str:
        return self.precision.device


@dataclass
class RunPlan:
    """Everything a run needs, checked."""

    files: list[MediaFile]  # to transcribe
    settled: list[FileOutcome]  # decided before the run: skipped, or missing paths
    options: TranscribeOptions  # as asked (auto values unresolved); each device's are in ``devices``
    model: ResolvedModel | None = None  # None when nothing is left to transcribe
    assistant: ResolvedModel | None = None
    devices: list[DeviceRun] = field(default_factory=list)
    rank: object = None  # parallel.Rank under torchrun / accelerate launch
    cluster: ClusterOptions | None = None  # --ray: the run goes to this Ray cluster
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
    if inputs.collect:
        return False
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
    if choice.devices:
        return parse_devices(choice.devices)
    device = pick_device(choice.device)
    if rank is not None and device == "cuda":  # --device auto or cuda, no index: one GPU per rank
        device = f"cuda:{rank.local_rank}"
    return [device]


def check_model_options(resolved: ResolvedModel, options) -> list[str]:
    """The decoding options against the model's own configuration, before its weights load:
    UsageError for a language it lacks, or for word times it cannot give; the notes to say."""
    try:
        generation = GenerationConfig.from_file(resolved.path / "generation_config.json")
        special = SpecialTokens.from_generation_config(generation)
        config = WhisperConfig.from_file(resolved.path / "config.json")
    except (OSError, ValueError, TypeError):
        return []  # the model cannot be loaded either: Engine says so, with exit status 3
    if options.word_timestamps:
        problem = alignment_heads_problem(generation.alignment_heads, config.decoder_layers,
                                          config.decoder_attention_heads)
        if problem:
            raise UsageError(f"--word-timestamps: {resolved.model_id} cannot time words: {problem}")
    language = options.language
    if language and not special.multilingual and language != "en":
        raise UsageError(f"--language {language}: {resolved.model_id} is an English-only model")
    if language and special.multilingual and language not in special.languages:
        raise UsageError(f"--language {language}: not one of {resolved.model_id}'s languages")
    if options.task == "translate" and not special.multilingual:
        return [f"{resolved.model_id} is English-only and cannot translate; it transcribes"]
    return []


def check_assistant(assistant: str | None, decoding) -> None:
    """UsageError for decoding options an assistant cannot serve."""
    if assistant and decoding.beam_size > 1:
        raise UsageError("--assistant decodes greedily: it cannot be combined with --beam-size")


def _for_device(options: TranscribeOptions, device: str, assistant: bool) -> TranscribeOptions:
    """``options`` resolved for one device.  With an assistant, batch size 1: speculation
    pays at batch size 1 (each step of the model reads all its weights for one token)."""
    if assistant:
        options = replace(options, batch_size=1)
    return options.for_device(device)


def _split_inputs(inputs: Inputs, found: Discovery, to_stdout: bool) -> tuple[list[MediaFile], list[FileOutcome]]:
    """The files to transcribe, and the paths that fail before any work (unusable, or
    whose outputs would leave --output-dir)."""
    settled = [FileOutcome(MediaFile(item.argument, Path(item.argument)), "failed", item.message)
               for item in found.unusable]
    files = []
    for media in found.files:
        if (inputs.output_dir is not None and not to_stdout and not inputs.collect
                and not _inside(inputs.output_dir, media.output_stem)):
            settled.append(FileOutcome(media, "failed", f"{media.label}: its outputs would be written outside "
                                                        f"--output-dir {inputs.output_dir}"))
        else:
            files.append(media)
    return files, settled


def _workers_capped(asked: int, workers: int, files: int) -> list[str]:
    """The note that --workers was capped at the cores, where the user asked for more and
    there are files enough to have used them."""
    if asked > workers and files > workers:
        return [f"--workers {asked}: {workers} decoding process(es), one per CPU core this process may use"]
    return []


def make_plan(inputs: Inputs, choice: ModelChoice, options: TranscribeOptions, stdin=None,
              cluster: ClusterOptions | None = None) -> RunPlan:
    """Check everything and decide everything a run needs; raises UsageError and
    ModelLoadError.  ``cluster``: the run goes to a Ray cluster (``--ray``)."""
    check_requests(choice.dtype, choice.quantize, choice.attention, choice.runtime)
    check_assistant(choice.assistant, options.decoding)
    if inputs.output_dir is not None and (problem := output_dir_problem(inputs.output_dir)):
        raise UsageError(f"--output-dir {inputs.output_dir}: {problem}")
    arguments = gather_arguments(inputs, stdin)
    found = discover(arguments, inputs.output_dir, () if inputs.collect else options.formats)
    to_stdout = _to_stdout(inputs, arguments, found, options.formats)
    rank = launched_rank()
    if cluster is not None:
        ray_cluster.check(cluster, choice, options, to_stdout, [media for media in found.files if media.stream], rank)
    if rank is not None:
        if to_stdout:
            raise UsageError("under torchrun each rank writes files: give --output-dir, not standard output")
        # Rank 0 reports the paths that are not inputs, and decides which files are left to
        # do (below); every rank plans with all of them.
        found = Discovery(found.files, found.unusable if rank.rank == 0 else [])
    devices = _devices(choice, rank) if cluster is None else None  # a cluster's: once it is known to be needed
    if devices and len(devices) > 1 and options.long_form != "chunked":
        raise UsageError("--devices with several devices needs --long-form chunked")
    options = replace(options, to_stdout=to_stdout)
    files, settled = _split_inputs(inputs, found, to_stdout)
    plan = RunPlan(files, settled, options, rank=rank, cluster=cluster)
    if files:
        _plan_model(plan, inputs, choice, options, devices, to_stdout)
    if (inputs.skip_existing and files and not to_stdout and not inputs.collect
            and (rank is None or rank.rank == 0)):
        done = [media for media in plan.files
                if any(run.options.resume.is_done(media, options.formats) for run in plan.devices)]
        plan.files = [media for media in plan.files if media not in done]
        plan.settled += [FileOutcome(media, "skipped", outputs=[media.output_path(fmt) for fmt in options.formats])
                         for media in done]
    if rank is not None:
        # Finished files are dropped before the files are shared out, so that a rerun
        # spreads what is left over every rank (rank 0 decides, over gloo).
        plan.files = shard(share_from_first_rank(plan.files, rank), rank)
        plan.settled = plan.settled if rank.rank == 0 else []  # said once, by rank 0
        if plan.files and plan.model is None:
            raise UsageError(f"rank {rank.rank} found no inputs where rank 0 did: give every rank the same inputs")
    return plan


def _plan_model(plan: RunPlan, inputs: Inputs, choice: ModelChoice, options: TranscribeOptions,
                devices: list[str] | None, to_stdout: bool) -> None:
    """The model, and one ``DeviceRun`` per device (None: the kind the cluster's replicas
    run on, described there)."""
    describe_device = describe
    if devices is None:
        replicas = ray_cluster.target(plan.cluster, choice.device)
        devices, describe_device = [replicas.device], replicas.describe
    plan.model = resolve_model(choice.model, devices[0])
    if plan.model.note:
        plan.notes.append(plan.model.note)
    plan.assistant = resolve_model(choice.assistant, devices[0]) if choice.assistant else None
    plan.notes += check_model_options(plan.model, options.decoding)
    for device in devices:
        precision = plan_precision(describe_device(device), choice.dtype, choice.quantize, choice.attention,
                                   plan.assistant is not None, choice.runtime)
        resolved = _for_device(options, device, plan.assistant is not None)
        if not to_stdout and not inputs.collect:
            recipe = Recipe.of(plan.model.model_id, resolved, **precision.recipe())
            resolved = replace(resolved, resume=Resume(recipe, inputs.skip_existing))
        plan.devices.append(DeviceRun(precision, resolved))
    plan.notes += _workers_capped(options.workers, plan.devices[0].options.workers, len(plan.files))


def execute(plan: RunPlan, reporter, sink=None, stdout=None) -> RunSummary:
    """Run the plan: in this process on its one device, else one replica per device.
    ``sink``: where transcripts go (default: what the options ask for, files or ``stdout``)."""
    if plan.cluster is not None and plan.files:
        if sink is not None:
            raise UsageError("--ray writes the files itself: it cannot hand transcripts to a collecting sink")
        return ray_cluster.transcribe_on_cluster(plan, reporter)
    if not plan.files or len(plan.devices) <= 1:
        engine = stream = None
        options = plan.options
        if plan.files:
            run = plan.devices[0]
            options = run.options
            # Decoding starts first: the workers read the media while the model loads.
            stream = stream_items(plan.files, reading_for(options, mel_bins(plan.model)), options.workers)
            engine = Engine(plan.model, run.precision, plan.assistant)
            for note in engine.notes:
                reporter.note(note)
        return transcribe_files(plan.files, engine, options, reporter, sink=sink, settled=plan.settled,
                                stream=stream, stdout=stdout)
    if sink is not None:
        raise UsageError("several devices write their own outputs: they cannot share one collecting sink")
    replicas = [Replica(plan.model, run.precision, plan.assistant, run.options) for run in plan.devices]
    return transcribe_on_devices(plan.files, replicas, reporter, settled=plan.settled)


__all__ = ["DeviceRun", "RunPlan", "check_model_options", "execute", "gather_arguments", "make_plan"]
