"""``dw eval``: the same plan and run loop as ``dw transcribe``, with a collecting sink."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer

from ..errors import ExitStatus, UsageError
from ..options import Inputs, timestamps_needed
from . import groups
from .app import GroupedCommand, app, prepare_process, reporter, run
from .groups import INPUTS


@app.command("eval", cls=GroupedCommand)
@groups.uses(groups.ONE_DEVICE_MODEL_GROUP, groups.RUN_GROUP, groups.DECODING_GROUP, groups.SPEECH_GROUP,
             groups.SPEAKER_COUNT_GROUP, groups.MESSAGES)
def evaluate(
    data: Annotated[Path, typer.Argument(
        help="A JSONL manifest ({\"audio\": path relative to it, \"text\": reference} per line) or a folder "
             "with <name>.txt beside each recording.", show_default=False)],
    as_json: Annotated[bool, typer.Option("--json", rich_help_panel=INPUTS,
                                          help="Print one JSON object on stdout instead of the table on stderr.")] = False,
    limit: Annotated[int, typer.Option(rich_help_panel=INPUTS, help="Only the first N recordings (0: all).")] = 0,
    choice=None, run_options=None, decoding=None, vad=None, speaker_count=None, messages=None,
) -> None:
    """Measure a model on labelled speech: WER, insertions, deletions, repeats, speed.

    Transcribes every recording through the same plan, engine and run loop as dw
    transcribe (plain text, nothing written beside the audio) and scores it against its
    reference after Whisper's text normaliser (English; other languages: its basic one, and CER).

    When the manifest gives reference speaker turns ("rttm": an RTTM file, and optionally
    "utterances": a JSON list of {start, end, speaker, text}), speakers are labelled as
    with dw transcribe --speakers and scored: DER (0.25 s collar, overlap scored), files
    with the right number of speakers, and reference words given the right speaker.

    Example: dw eval speech/manifest.jsonl --model distil-whisper/distil-small.en --json
    """
    said = messages.get()

    def body(real_stdout):
        import json

        from ..evaluate import has_speaker_references, load_references, score_all
        from ..options import SpeakerOptions
        from ..plan import execute, make_plan
        from ..sinks import CollectingSink
        from ..speakers.stage import check_run

        references = load_references(data)
        if limit < 0:
            raise UsageError(f"--limit {limit}: expected 0 or more")
        references = references[:limit] if limit else references
        chosen, speech, counts = decoding.get(), vad.get(), speaker_count.get()
        labels = counts if has_speaker_references(references) else None
        if labels is None and counts != SpeakerOptions():
            given = next(name for name, value in (("--num-speakers", counts.num_speakers), ("--min-speakers",
                         counts.min_speakers), ("--max-speakers", counts.max_speakers)) if value is not None)
            raise UsageError(f"{given} needs speaker references (rttm in the manifest)")
        check_run(labels, speech.enabled, chosen.options.task, "speaker references (rttm in the manifest)")
        formats = ("txt",)
        words = labels is not None  # speaker labels go word by word
        options = replace(run_options.get(), formats=formats, long_form=chosen.long_form, vad=speech, speakers=labels,
                          decoding=replace(chosen.options, word_timestamps=words,
                                           timestamps=timestamps_needed(formats, chosen.long_form, words)))
        prepare_process()
        plan = make_plan(Inputs(tuple(str(reference.audio) for reference in references), collect=True),
                         choice.get(), options)
        report = reporter(said.quiet or as_json, said.log_json)
        for note in plan.notes:
            report.note(note)
        sink = CollectingSink()
        summary = execute(plan, report, sink=sink)
        evaluation = score_all(references, sink.transcripts, summary.failed, summary.wall_s)  # model load excluded
        result = {"model": plan.model.model_id if plan.model else choice["model"], **evaluation.total.as_dict(),
                  "failed": evaluation.failed}
        if evaluation.speakers is not None:
            result["speakers"] = {**evaluation.speakers.as_dict(), "per_file": evaluation.speaker_files}
        if as_json:
            real_stdout.write(json.dumps(result) + "\n")
        elif not said.quiet:
            print(_score_table(result), file=sys.stderr)
        return ExitStatus.FILE_FAILED if evaluation.failed else ExitStatus.OK

    run(body, said)


def _score_table(result: dict) -> str:
    rows = [("model", result["model"]), ("files", result["files"]), ("reference words", result["words"]),
            ("WER %", f"{result['wer']:.2f}"), ("substitutions", result["substitutions"]),
            ("insertions", result["insertions"]), ("deletions", result["deletions"]),
            ("insertion rate %", f"{result['insertion_rate']:.2f}"), ("repeated 5-grams", result["repeated_5grams"]),
            ("CER %", f"{result['cer']:.2f}"), ("audio s", f"{result['audio_s']:.1f}"),
            ("wall s", f"{result['wall_s']:.1f}"), ("x real time", f"{result['x_real_time']:.1f}")]
    speakers = result.get("speakers")
    if speakers:
        rows += [("DER %", f"{speakers['der']:.2f}"),
                 ("speaker count right", f"{speakers['count_right']} of {speakers['files']}")]
        if "word_accuracy" in speakers:
            rows += [("WDER %", f"{speakers['wder']:.2f}"),
                     ("words, right speaker %", f"{speakers['word_accuracy']:.2f}")]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)
