"""``dw transcribe``."""

from __future__ import annotations

import contextlib
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..errors import ExitStatus, UsageError
from ..options import Inputs, TranscribeOptions, WriterOptions, timestamps_needed
from . import groups
from .app import EXIT_CODES_HELP, GroupedCommand, app, prepare_process, reporter, run
from .groups import INPUTS

EXAMPLES = (
    "Examples:\n\n"
    "  dw transcribe talk.mp4 --format srt\n\n"
    "  dw transcribe ./videos --format srt,vtt --output-dir subs/\n\n"
    "  ffmpeg -i talk.mkv -f wav - | dw transcribe - --format srt > talk.srt\n\n"
    "  find /data -name '*.mp4' -print0 | dw transcribe --from-list - -0\n\n"
    "  dw transcribe clip.wav --stdout --format json | jq .text\n\n"
    "  dw transcribe /shared/videos -f srt -o /shared/subs --skip-existing --ray auto\n\n"
    "  0 3 * * * cd /data && flock -n /tmp/dw.lock dw transcribe videos --format srt --skip-existing --log-json 2>> dw.log\n\n"
    "Every option can also be set from the environment variable shown beside it (flags take 1 or 0).\n\n"
    + EXIT_CODES_HELP
)


@app.command(cls=GroupedCommand, epilog=EXAMPLES)
@groups.uses(groups.MODEL_GROUP, groups.CLUSTER_GROUP, groups.RUN_GROUP, groups.DECODING_WITH_WORDS_GROUP,
             groups.SPEECH_GROUP, groups.SPEAKERS_GROUP, groups.SUBTITLES_GROUP, groups.MESSAGES)
def transcribe(
    paths: Annotated[Optional[list[str]], typer.Argument(
        help="Media files, folders (searched recursively) or globs; - reads standard input.", show_default=False)] = None,
    formats: Annotated[str, typer.Option(
        "--format", "-f", envvar="DW_FORMAT", rich_help_panel=INPUTS,
        help="Output formats, comma-separated: txt, srt, vtt, json, tsv, rttm (speaker turns, with --speakers), "
             "or all.")] = ",".join(TranscribeOptions.formats),
    output_dir: Annotated[Optional[str], typer.Option(
        "--output-dir", "-o", envvar="DW_OUTPUT_DIR", rich_help_panel=INPUTS, metavar="<path>",
        help="Write outputs here, mirroring the input folders (default: beside each input).")] = None,
    stdout: Annotated[bool, typer.Option(
        "--stdout", envvar="DW_STDOUT", rich_help_panel=INPUTS,
        help="Write the result (one format, one input) to standard output instead of files (the default when the "
             "input is - and there is no --output-dir).")] = False,
    skip_existing: Annotated[bool, typer.Option(
        "--skip-existing/--overwrite", envvar="DW_SKIP_EXISTING", rich_help_panel=INPUTS,
        help="Skip inputs whose outputs all exist and were made by the same model and options from the same file "
             "(every run records that in a hidden .<name>.dw.json beside them); --overwrite (the default) transcribes "
             "every input again.")] = Inputs.skip_existing,
    from_list: Annotated[Optional[str], typer.Option(
        "--from-list", envvar="DW_FROM_LIST", rich_help_panel=INPUTS,
        help="Read input paths from this file, one per line (- for standard input).")] = None,
    null_separated: Annotated[bool, typer.Option(
        "--null", "-0", envvar="DW_NULL", rich_help_panel=INPUTS,
        help="Paths in --from-list are separated by NUL bytes (find -print0).")] = Inputs.null_separated,
    allow_partial: Annotated[bool, typer.Option(
        "--allow-partial", envvar="DW_ALLOW_PARTIAL", rich_help_panel=INPUTS,
        help="Transcribe what a truncated or damaged file holds (a note says so; JSON marks it partial) instead of "
             "failing it.")] = TranscribeOptions.allow_partial,
    choice=None, cluster=None, run_options=None, decoding=None, vad=None, speakers=None, subtitles=None,
    messages=None,
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
    said = messages.get()

    def body(real_stdout):
        from ..plan import execute, make_plan
        from ..speakers.stage import check_run
        from ..writers import parse_formats

        chosen, speech, labels = decoding.get(), vad.get(), speakers.get()
        check_run(labels, speech.enabled, chosen.options.task)
        format_list = tuple(parse_formats(formats, speakers=labels is not None))
        if output_dir is not None and not output_dir.strip():
            raise UsageError("--output-dir: give a folder (an empty name would mean the current one)")
        subtitle_options = subtitles.get()
        # Speaker labels go word by word: they need the words' times.
        words = chosen.options.word_timestamps or subtitle_options.highlight_words or labels is not None
        options = replace(
            run_options.get(),
            formats=format_list,
            decoding=replace(chosen.options, word_timestamps=words,
                             timestamps=timestamps_needed(format_list, chosen.long_form, words)),
            writer=WriterOptions(subtitle_options),
            long_form=chosen.long_form,
            vad=speech,
            allow_partial=allow_partial,
            speakers=labels,
        )
        inputs = Inputs(tuple(paths or ()), from_list, null_separated, Path(output_dir) if output_dir else None, stdout,
                        skip_existing)
        prepare_process()
        on_cluster = cluster.get()
        with _terminal(on_cluster):
            plan = make_plan(inputs, choice.get(), options, cluster=on_cluster)
            report = reporter(said.quiet, said.log_json)
            for note in plan.notes:
                report.note(note)
            summary = execute(plan, report, stdout=real_stdout)
        return _agreed(ExitStatus.FILE_FAILED if summary.failed else ExitStatus.OK, plan.rank)

    run(body, said)


def _terminal(on_cluster):
    """On a Ray cluster, standard error stays dw's (``cluster.terminal_kept_for_dw``)."""
    if on_cluster is None:
        return contextlib.nullcontext()
    from ..cluster import terminal_kept_for_dw

    return terminal_kept_for_dw()


def _agreed(status: ExitStatus, rank) -> ExitStatus:
    """Under a launcher, every rank exits with the worst status of all ranks."""
    if rank is None:
        return status
    from ..parallel import agree_on_status

    return ExitStatus(agree_on_status(int(status), rank))
