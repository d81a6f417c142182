"""The speaker stage's two seams with the run: the decoding side's embedder, and the
assembler's labelling at a file's end (see the package's docstring)."""


from __future__ import annotations

from ..errors import UsageError
from ..options import SpeakerOptions
from .assign import Turn, apply_turns, turns_of
from .cluster import DEFAULT_MAX_SPEAKERS, SpeakerCount, cluster
from .embed import SpeechEmbedder
from .weights import require_extra


def check_run(options: SpeakerOptions | None, vad: bool, task: str = "transcribe",
              option: str = "--speakers") -> None:
    """What speaker labels need of the rest of a run (UsageError, one line each): speech
    detection, word times, and the installed extra."""
    if options is None:
        return
    if task == "translate":
        raise UsageError(f"{option} needs word timestamps, which a translation (--task translate) does not have")
    if not vad:
        raise UsageError(f"{option} needs speech detection: drop --no-vad")
    require_extra(option)


def embedder(options: SpeakerOptions | None):
    """A fresh ``SpeechEmbedder`` for one file, or None without ``--speakers``."""
    if options is None:
        return None
    return SpeechEmbedder()


def label_speakers(transcript, speech, options: SpeakerOptions | None, offset_s: float = 0.0):
    """``transcript`` with speakers on its segments and words (segments cut where the
    speaker changes), its speakers and turns; unchanged without ``--speakers``.  A file with
    no speech has no speakers.  ``offset_s``: where the audio starts on the transcript's
    (the container's) timeline; the speech was measured from the audio's first sample."""
    if options is None:
        return transcript
    if speech is None or len(speech.embeddings) == 0:
        turns = []
    else:
        count = SpeakerCount(options.num_speakers, options.min_speakers or 1,
                             options.max_speakers or max(DEFAULT_MAX_SPEAKERS, options.min_speakers or 1))
        labels = cluster(speech.embeddings, count)
        turns = [Turn(turn.start + offset_s, turn.end + offset_s, turn.speaker)
                 for turn in turns_of(speech.regions, speech.starts, speech.ends, labels)]
    return apply_turns(transcript, turns)


__all__ = ["SpeakerOptions", "check_run", "embedder", "label_speakers"]
