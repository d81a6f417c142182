"""``dw eval``: how well a model transcribes labelled speech.

References come from a JSONL manifest (``{"audio": path relative to the manifest, "text":
reference}`` per line) or a folder with ``<name>.txt`` beside each recording.  Both sides go
through Whisper's text normaliser (English: ``EnglishTextNormalizer``, which also spells
numbers and British spellings one way; other languages: ``BasicTextNormalizer``), and jiwer
aligns them.  Besides WER this reports what long-form transcription gets wrong: insertions
(the insertion error rate) and repeated 5-grams, the Distil-Whisper paper's measures of
hallucination and looping.  Scores are summed over files (corpus WER), not averaged.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from .discover import MEDIA_EXTENSIONS, MediaFile
from .errors import UsageError, read_user_text
from .events import Reporter
from .pipeline import transcribe_files
from .sinks import CollectingSink
from .speakers.rttm import read_turns
from .speakers.score import DiarizationScore, load_utterances, score_file

_NGRAM = 5


@dataclass(frozen=True)
class Reference:
    """One labelled recording."""

    audio: Path
    text: str
    language: str = "en"
    rttm: Path | None = None  # reference speaker turns: diarization is scored too
    utterances: Path | None = None  # each utterance's speaker and text: words with the right speaker


def load_references(data: Path) -> list[Reference]:
    """The recordings and reference texts of a manifest or a folder; UsageError when there
    are none or a line is malformed (naming the line)."""
    if data.is_dir():
        references = [
            Reference(path, read_user_text(path.with_suffix(".txt")).strip())
            for path in sorted(data.rglob("*"))
            if path.suffix.lower().lstrip(".") in MEDIA_EXTENSIONS and path.with_suffix(".txt").is_file()
        ]
        if not references:
            raise UsageError(f"{data}: no recordings with a <name>.txt reference beside them")
        return references
    lines = read_user_text(data, "a UTF-8 JSONL manifest").splitlines()
    references = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            raise UsageError(f"{data}:{number}: not a JSON object") from None
        if not isinstance(row, dict) or not isinstance(row.get("audio"), str):
            raise UsageError(f"{data}:{number}: no \"audio\" path")
        if not isinstance(row.get("text"), str):
            raise UsageError(f"{data}:{number}: no \"text\" reference")
        language = str(row.get("lang") or row.get("language") or "en")
        extra = {}
        for key in ("rttm", "utterances"):
            if key in row:
                if not isinstance(row[key], str):
                    raise UsageError(f"{data}:{number}: \"{key}\" is not a path")
                extra[key] = data.parent / row[key]
        references.append(Reference((data.parent / row["audio"]), row["text"], language, **extra))
    if not references:
        raise UsageError(f"{data}: the manifest lists no recordings")
    return references


def normalize(text: str, language: str = "en") -> str:
    """Whisper's normaliser: the English one for English, the basic one otherwise."""
    if language.startswith("en"):
        from transformers.models.whisper.english_normalizer import EnglishTextNormalizer

        return EnglishTextNormalizer({})(text)
    from transformers.models.whisper.english_normalizer import BasicTextNormalizer

    return BasicTextNormalizer()(text)


def repeated_ngrams(hypothesis: list[str], reference: list[str], n: int = _NGRAM) -> int:
    """Word n-grams the hypothesis repeats beyond what the reference has: each n-gram seen
    k times in the hypothesis and r times in the reference counts k - max(r, 1).  The
    reference is also searched with spaces removed, so a word the two split differently
    ("shopboy", "shop boy") is not taken for a loop."""
    def grams(words: list[str]) -> Counter:
        return Counter(tuple(words[index : index + n]) for index in range(len(words) - n + 1))

    in_reference = grams(reference)
    joined = "".join(reference)
    total = 0
    for gram, count in grams(hypothesis).items():
        allowed = max(in_reference[gram], joined.count("".join(gram)), 1)
        total += max(0, count - allowed)
    return total


@dataclass
class Score:
    """Error counts over one or many files."""

    words: int = 0  # reference words
    substitutions: int = 0
    insertions: int = 0
    deletions: int = 0
    repeated_5grams: int = 0
    characters: int = 0  # reference characters (character error rate, for any language)
    character_errors: int = 0
    audio_s: float = 0.0
    wall_s: float = 0.0
    files: int = 0

    @property
    def wer(self) -> float:
        """Word error rate, percent."""
        return 100.0 * (self.substitutions + self.insertions + self.deletions) / max(self.words, 1)

    @property
    def insertion_rate(self) -> float:
        """Insertions per reference word, percent (the paper's IER)."""
        return 100.0 * self.insertions / max(self.words, 1)

    @property
    def cer(self) -> float:
        return 100.0 * self.character_errors / max(self.characters, 1)

    @property
    def x_real_time(self) -> float:
        return self.audio_s / self.wall_s if self.wall_s > 0 else 0.0

    def add(self, other: Score) -> None:
        for name in ("words", "substitutions", "insertions", "deletions", "repeated_5grams", "characters",
                     "character_errors", "audio_s", "files"):
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def as_dict(self) -> dict:
        return {
            "wer": round(self.wer, 2), "substitutions": self.substitutions, "insertions": self.insertions,
            "deletions": self.deletions, "words": self.words, "repeated_5grams": self.repeated_5grams,
            "insertion_rate": round(self.insertion_rate, 2), "cer": round(self.cer, 2), "files": self.files,
            "audio_s": round(self.audio_s, 2), "wall_s": round(self.wall_s, 2),
            "x_real_time": round(self.x_real_time, 1),
        }


def score(reference: str, hypothesis: str, language: str = "en", audio_s: float = 0.0) -> Score:
    """The errors of one hypothesis against its reference, both normalised."""
    import jiwer

    ref, hyp = normalize(reference, language), normalize(hypothesis, language)
    ref_words, hyp_words = ref.split(), hyp.split()
    result = Score(words=len(ref_words), repeated_5grams=repeated_ngrams(hyp_words, ref_words),
                   audio_s=audio_s, files=1)
    if ref_words:
        words = jiwer.process_words(ref, hyp)
        result.substitutions, result.insertions, result.deletions = words.substitutions, words.insertions, words.deletions
    else:
        result.insertions = len(hyp_words)  # anything written over non-speech is invented
    ref_chars, hyp_chars = ref.replace(" ", ""), hyp.replace(" ", "")
    result.characters = len(ref_chars)
    if ref_chars:
        characters = jiwer.process_characters(ref_chars, hyp_chars)
        result.character_errors = characters.substitutions + characters.insertions + characters.deletions
    else:
        result.character_errors = len(hyp_chars)
    return result


@dataclass
class Evaluation:
    """A whole run: the total and each file's score and text."""

    total: Score = field(default_factory=Score)
    files: list[tuple[Reference, Score, str]] = field(default_factory=list)
    failed: int = 0  # files that could not be transcribed
    # With RTTM references: speaker labels scored, in total and per file.
    speakers: object = None  # speakers.score.DiarizationScore
    speaker_files: list[dict] = field(default_factory=list)


def score_all(references: list[Reference], transcripts: dict, failed: int, wall_s: float) -> Evaluation:
    """Score each reference against its transcript (``transcripts`` by audio path, as the
    collecting sink keeps them); a recording without one failed (reported by the run)."""
    evaluation = Evaluation(failed=failed)
    for reference in references:
        transcript = transcripts.get(str(reference.audio))
        if transcript is None:
            continue
        result = score(reference.text, transcript.text, reference.language, transcript.duration_s)
        evaluation.files.append((reference, result, transcript.text))
        evaluation.total.add(result)
        if transcript.speakers is not None and reference.rttm is not None:
            _score_speakers(evaluation, reference, transcript)
    evaluation.total.wall_s = wall_s
    return evaluation


def has_speaker_references(references: list[Reference]) -> bool:
    """Whether the manifest gives reference speaker turns (then ``dw eval`` labels speakers)."""
    return any(reference.rttm is not None for reference in references)


def _score_speakers(evaluation: Evaluation, reference: Reference, transcript) -> None:
    turns = read_turns(reference.rttm)
    utterances = load_utterances(reference.utterances) if reference.utterances is not None else None
    result = score_file(turns, transcript, utterances, lambda text: normalize(text, reference.language))
    if evaluation.speakers is None:
        evaluation.speakers = DiarizationScore()
    evaluation.speakers.add(result)
    evaluation.speaker_files.append({"audio": str(reference.audio), "speakers": len({turn.speaker for turn in turns}),
                                     "found": len(transcript.speakers or []), **result.as_dict()})


def evaluate(references: list[Reference], engine, options, reporter=None) -> Evaluation:
    """Transcribe ``references`` with a loaded ``engine`` (a student being trained) and
    ``options`` (a ``TranscribeOptions``) through the run loop, and score them."""
    import time

    files = [MediaFile(str(reference.audio), reference.audio.with_suffix("")) for reference in references]
    sink = CollectingSink()
    started = time.monotonic()
    summary = transcribe_files(list({media.source: media for media in files}.values()), engine, options,
                               reporter or Reporter(), sink=sink)
    return score_all(references, sink.transcripts, summary.failed, time.monotonic() - started)
