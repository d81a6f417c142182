"""How well speakers were labelled, against reference turns: for ``dw eval``.

- Diarization error rate through pyannote.metrics (the maintained implementation of NIST's
  definition): missed speech + false alarm + speaker confusion, over the scored reference
  speech, with the usual 0.25 s collar on each side of every reference boundary (pyannote's
  ``collar`` is the collar's whole width, so 0.5) and overlapping speech scored (each
  speaker of an overlap counts); hypothesis speakers are mapped onto reference speakers
  one to one so as to agree most (the Hungarian algorithm).
- Speaker count: whether the file got as many speakers as its reference has.
- Words with the right speaker, when the reference also gives each utterance's text and
  speaker (``utterances``): the reference words, in the utterances' time order, each said
  by its utterance's speaker, are aligned to the transcript's words (after Whisper's
  normaliser, through jiwer); a reference word counts when it has a transcribed word (the
  same or a misrecognised one) whose speaker maps onto the reference speaker.  Two shares:
  the word diarization error rate (WDER, Shafey et al. 2019: of the reference words the
  transcript has, the share given the wrong speaker), which scores the labels alone; and
  the share of all reference words given the right speaker, where a word the recogniser
  lost (most of them in overlapped speech) counts as wrong too.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path

from ..errors import UsageError
from .assign import Turn

COLLAR_S = 0.25  # each side of a reference boundary


@dataclass
class DiarizationScore:
    """Diarization errors over one or many files (seconds, words, files)."""

    scored_s: float = 0.0  # reference speech scored (outside the collars)
    missed_s: float = 0.0
    false_alarm_s: float = 0.0
    confusion_s: float = 0.0
    files: int = 0
    count_right: int = 0  # files with the reference's number of speakers
    words: int = 0  # reference words (of files with utterances)
    words_transcribed: int = 0  # of them, those the transcript has (the same or misrecognised)
    words_right: int = 0  # of those, the ones given the right speaker

    @property
    def der(self) -> float:
        """Diarization error rate, percent."""
        return 100.0 * (self.missed_s + self.false_alarm_s + self.confusion_s) / max(self.scored_s, 1e-9)

    def add(self, other: DiarizationScore) -> None:
        for name in ("scored_s", "missed_s", "false_alarm_s", "confusion_s", "files", "count_right", "words",
                     "words_transcribed", "words_right"):
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def as_dict(self) -> dict:
        result = {
            "der": round(self.der, 2),
            "missed_s": round(self.missed_s, 2), "false_alarm_s": round(self.false_alarm_s, 2),
            "confusion_s": round(self.confusion_s, 2), "scored_s": round(self.scored_s, 2),
            "files": self.files, "count_right": self.count_right,
            "count_accuracy": round(100.0 * self.count_right / max(self.files, 1), 2),
        }
        if self.words:
            result.update(words=self.words, words_transcribed=self.words_transcribed, words_right=self.words_right,
                          wder=round(100.0 * (1 - self.words_right / max(self.words_transcribed, 1)), 2),
                          word_accuracy=round(100.0 * self.words_right / self.words, 2))
        return result


def _annotation(turns: list[Turn]):
    from pyannote.core import Annotation, Segment

    annotation = Annotation()
    for index, turn in enumerate(turns):
        if turn.end > turn.start:
            annotation[Segment(turn.start, turn.end), index] = turn.speaker
    return annotation


def diarization_errors(reference: list[Turn], hypothesis: list[Turn]) -> tuple[DiarizationScore, dict]:
    """The DER components of one file, and the map of hypothesis speakers onto reference ones."""
    from pyannote.metrics.diarization import DiarizationErrorRate

    metric = DiarizationErrorRate(collar=2 * COLLAR_S, skip_overlap=False)
    ref, hyp = _annotation(reference), _annotation(hypothesis)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "uem approximated by the extents": what is meant here
        detail = metric(ref, hyp, detailed=True)
        mapping = metric.optimal_mapping(ref, hyp) if len(hyp) and len(ref) else {}
    score = DiarizationScore(scored_s=detail["total"], missed_s=detail["missed detection"],
                             false_alarm_s=detail["false alarm"], confusion_s=detail["confusion"], files=1)
    score.count_right = int(len(set(t.speaker for t in reference)) == len(set(t.speaker for t in hypothesis)))
    return score, mapping


def load_utterances(path: Path) -> list[dict]:
    """The reference utterances (``{"start", "end", "speaker", "text"}``) of a JSON file."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        utterances = data["utterances"] if isinstance(data, dict) else data
        return [{"start": float(u["start"]), "end": float(u["end"]), "speaker": str(u["speaker"]),
                 "text": str(u["text"])} for u in utterances]
    except OSError as error:
        raise UsageError(f"{path}: {error.strerror or error}") from None
    except (ValueError, KeyError, TypeError):
        raise UsageError(f"{path}: not a list of utterances with start, end, speaker and text") from None


def word_speakers(utterances: list[dict], transcript, mapping: dict, normalize) -> tuple[int, int, int]:
    """(reference words, those the transcript has, those given the right speaker) for one
    file."""
    import jiwer

    reference: list[tuple[str, str]] = []
    for utterance in sorted(utterances, key=lambda u: (u["start"], u["end"])):
        reference += [(word, utterance["speaker"]) for word in normalize(utterance["text"]).split()]
    hypothesis: list[tuple[str, str | None]] = []
    for segment in transcript.segments:
        for word in segment.words or []:
            speaker = mapping.get(word.speaker)
            hypothesis += [(token, speaker) for token in normalize(word.word).split()]
    if not reference:
        return 0, 0, 0
    if not hypothesis:
        return len(reference), 0, 0
    alignment = jiwer.process_words(" ".join(w for w, _ in reference), " ".join(w for w, _ in hypothesis))
    transcribed = right = 0
    for chunk in alignment.alignments[0]:
        if chunk.type in ("equal", "substitute"):
            transcribed += chunk.ref_end_idx - chunk.ref_start_idx
            for offset in range(chunk.ref_end_idx - chunk.ref_start_idx):
                right += reference[chunk.ref_start_idx + offset][1] == hypothesis[chunk.hyp_start_idx + offset][1]
    return len(reference), transcribed, right


def score_file(reference_turns: list[Turn], transcript, utterances: list[dict] | None, normalize) -> DiarizationScore:
    """Everything about one file's speaker labels against its references."""
    score, mapping = diarization_errors(reference_turns, transcript.turns or [])
    if utterances is not None:
        score.words, score.words_transcribed, score.words_right = word_speakers(utterances, transcript, mapping,
                                                                                normalize)
    return score
