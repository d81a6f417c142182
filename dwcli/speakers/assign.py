"""Labelled sub-windows -> speaker turns -> words and segments with speakers.

Sub-windows overlap (1.5 s every 0.75 s); inside a speech region each instant belongs to
the sub-window whose middle is nearest, so a region is cut into pieces at the middles of
the overlaps, and consecutive pieces (and regions a short pause apart) of one speaker make
a turn.  Speech too short to be embedded takes the speaker of the nearest turn.

A word takes the speaker who talks most during it, or, when no turn overlaps it, the
nearest turn within ``NEAREST_TURN_S``; a word further from every turn than that takes its
neighbour's speaker.  A segment is cut wherever its words change speaker, so each segment
carries one speaker.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, replace

import numpy as np

from ..segments import Segment, Transcript, Word

NEAREST_TURN_S = 1.0
# Turns of one speaker less than this apart are one turn: the pauses inside a read sentence
# (the detector ends speech after 160 ms of silence) last up to ~1 s (90th percentile of the
# gaps between detected regions on the tune conversations: 1.0 s).  Joined at 0.5 s, the
# tune set's DER was 6.8-19.9%, nearly all missed speech; at 1.0 s 2.4-5.2%; at 1.5 s 0-1.9%.
_JOIN_GAP_S = 1.5


@dataclass(frozen=True)
class Turn:
    """A speaker talking from ``start`` to ``end`` (seconds)."""

    start: float
    end: float
    speaker: str


def label_name(index: int) -> str:
    return f"SPEAKER_{index:02d}"


def turns_of(regions: list[tuple[float, float]], starts: list[float], ends: list[float],
             labels: np.ndarray) -> list[Turn]:
    """Speaker turns from the speech regions and the labelled sub-windows in them, the
    speakers named ``SPEAKER_00``, ``SPEAKER_01``... in order of first appearance."""
    if len(labels) == 0:
        return []
    middles = (np.asarray(starts) + np.asarray(ends)) / 2
    order = np.argsort(middles, kind="stable")
    middles, labels = middles[order], np.asarray(labels)[order]
    pieces: list[tuple[float, float, int]] = []
    for region_start, region_end in regions:
        inside = np.flatnonzero((middles >= region_start) & (middles <= region_end))
        if len(inside) == 0:
            nearest = int(np.argmin(np.abs(middles - (region_start + region_end) / 2)))
            pieces.append((region_start, region_end, int(labels[nearest])))
            continue
        cuts = [region_start] + [float((middles[a] + middles[b]) / 2) for a, b in zip(inside, inside[1:])] + [region_end]
        pieces.extend((cuts[k], cuts[k + 1], int(labels[index])) for k, index in enumerate(inside))
    pieces.sort()
    joined: list[list] = []
    for start, end, label in pieces:
        if end <= start:
            continue
        if joined and joined[-1][2] == label and start - joined[-1][1] < _JOIN_GAP_S:
            joined[-1][1] = max(joined[-1][1], end)
        else:
            joined.append([start, end, label])
    names: dict[int, str] = {}
    return [Turn(round(start, 3), round(end, 3), names.setdefault(label, label_name(len(names))))
            for start, end, label in joined]


class _TurnIndex:
    """Turns sorted by start, for overlap and nearest-turn questions."""

    def __init__(self, turns: list[Turn]):
        self.turns = sorted(turns, key=lambda turn: turn.start)
        self.starts = [turn.start for turn in self.turns]
        self.longest = max((turn.end - turn.start for turn in self.turns), default=0.0)

    def speaker(self, start: float, end: float) -> str | None:
        """Who talks most in [start, end]; else the nearest turn within NEAREST_TURN_S."""
        first = bisect.bisect_left(self.starts, start - self.longest)
        talk: dict[str, float] = {}
        nearest, distance = None, NEAREST_TURN_S
        for turn in self.turns[first:]:
            if turn.start > end + NEAREST_TURN_S:
                break
            overlap = min(end, turn.end) - max(start, turn.start)
            if overlap > 0:
                talk[turn.speaker] = talk.get(turn.speaker, 0.0) + overlap
            gap = max(turn.start - end, start - turn.end, 0.0)
            if gap <= distance:
                nearest, distance = turn.speaker, gap
        if talk:
            return max(talk, key=lambda name: (talk[name], name == nearest))
        return nearest


def _with_speakers(words: list[Word], index: _TurnIndex) -> list[Word]:
    found = [index.speaker(word.start, max(word.end, word.start)) for word in words]
    # A word far from every turn takes its neighbour's speaker (the previous one, else the next).
    for position in range(len(found)):
        if found[position] is None and position > 0:
            found[position] = found[position - 1]
    for position in range(len(found) - 2, -1, -1):
        if found[position] is None:
            found[position] = found[position + 1]
    return [replace(word, speaker=speaker) for word, speaker in zip(words, found)]


def _split(segment: Segment, index: _TurnIndex) -> list[Segment]:
    """One segment per run of words with the same speaker."""
    if not segment.words:
        speaker = index.speaker(segment.start, segment.end)
        return [replace(segment, speaker=speaker)]
    words = _with_speakers(segment.words, index)
    runs: list[list[Word]] = [[words[0]]]
    for word in words[1:]:
        if word.speaker == runs[-1][-1].speaker or not word.word.strip() or not word.word[:1].isspace():
            runs[-1].append(word)  # punctuation and word pieces stay with their word
        else:
            runs.append([word])
    runs = [[replace(word, speaker=run[0].speaker) for word in run] for run in runs]
    if len(runs) == 1:
        return [replace(segment, words=runs[0], speaker=runs[0][0].speaker)]
    pieces = []
    for position, run in enumerate(runs):
        start = segment.start if position == 0 else run[0].start
        end = segment.end if position == len(runs) - 1 else max(run[-1].end, start)
        text = "".join(word.word for word in run).strip()
        pieces.append(Segment(start, end, text, run, speaker=run[0].speaker))
    return pieces


@dataclass(frozen=True)
class SpeakerTime:
    """One speaker of a file and how long they talk (seconds, from the turns)."""

    label: str
    talk_s: float


def apply_turns(transcript: Transcript, turns: list[Turn]) -> Transcript:
    """``transcript`` with a speaker on every segment and word, segments cut where the
    speaker changes, and the file's speakers and turns."""
    index = _TurnIndex(turns)
    segments = []
    for segment in transcript.segments:
        segments.extend(_split(segment, index) if turns else [segment])
    talk: dict[str, float] = {}
    for turn in turns:
        talk[turn.speaker] = talk.get(turn.speaker, 0.0) + turn.end - turn.start
    speakers = [SpeakerTime(label, round(seconds, 3)) for label, seconds in talk.items()]
    return replace(transcript, segments=segments, speakers=speakers, turns=list(turns))
