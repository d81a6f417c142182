"""Conversations of known speakers, built from real speech: the speaker-label test set.

Each conversation takes utterances of 2 to 5 real speakers (LibriSpeech, LJ Speech,
LibriVox, JFK...: every manifest item that names its speaker), trims each to its voice,
levels it, and lays them one after another, speakers taking turns, with pauses of 0.2 to
1.2 s and some turns starting before the previous one ends (0.3 to 1.0 s of overlap, mixed),
over a faint noise floor so no pause is digital silence.  Everything follows from the
conversation's spec and its seed, so the same speech gives the same files.

For each conversation it writes ``<name>.flac``, ``<name>.rttm`` (the reference turns: each
utterance from its first to its last voiced 10 ms) and ``<name>.json`` (the utterances with
speaker and text, in time order: the word-level reference, each word said by its
utterance's speaker), and one manifest line ``{"audio", "text", "rttm", "utterances",
"speakers", "split"}`` as ``dw eval`` reads it.

Two splits: ``tune`` (thresholds were chosen on it) and ``dev`` (held out: its utterances
are other clips of the same LibriSpeech and LJ Speech speakers, plus voices tune never
hears).  Used by the benchmark (``benchmarks/data.py``: the whole set, from
/work/shared/data/speech) and by the tests (a small conversation from tests/data/speech).

    python tests/conversations.py /work/shared/data/speech OUT_DIR   # writes the set and OUT_DIR/manifest.jsonl
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

SAMPLE_RATE = 16000
_LEVEL_DBFS = -24.0  # every utterance's RMS, give or take _LEVEL_SPREAD_DB
_LEVEL_SPREAD_DB = 3.0
_NOISE_DBFS = -60.0  # the noise floor under the whole conversation
_GAP_S = (0.2, 1.2)
_OVERLAP_S = (0.3, 1.0)


def trim_to_speech(clip: np.ndarray) -> np.ndarray:
    """Cut a recording's leading and trailing room tone, so the truth is where the voice
    starts and stops: the first and last 10 ms whose peak reaches 10% of the clip's peak."""
    frames = np.abs(clip[: len(clip) // 160 * 160]).reshape(-1, 160).max(axis=1)
    voiced = np.flatnonzero(frames >= 0.1 * frames.max())
    return clip[voiced[0] * 160 : (voiced[-1] + 1) * 160]


@dataclass(frozen=True)
class Utterance:
    """One utterance of a known speaker: a whole file, or [start, end) of a long one."""

    speaker: str
    gender: str | None
    path: Path
    text: str
    start: float | None = None
    end: float | None = None
    key: str = ""  # sorts a speaker's utterances, decides the tune/dev halves


def speaker_utterances(manifest: Path) -> dict[str, list[Utterance]]:
    """Every utterance of every named speaker in a speech manifest (long-form items are cut
    into their clips by their ``segments_file``), each speaker's sorted by id."""
    found: dict[str, dict[str, Utterance]] = {}
    for line in manifest.read_text().splitlines():
        row = json.loads(line)
        speaker = row.get("speaker")
        if not speaker or not row.get("lang", "en").startswith("en"):
            continue
        path = manifest.parent / row["audio"]
        if row.get("segments_file"):
            segments = json.loads((manifest.parent / row["segments_file"]).read_text())["segments"]
            for segment in segments:
                found.setdefault(speaker, {})[segment["id"]] = Utterance(
                    speaker, row.get("gender"), path, segment["text"], segment["start"], segment["end"], segment["id"])
        else:
            key = row.get("id") or row["audio"]
            key = key.split("-", 3)[-1] if key.startswith("librispeech-") else key
            found.setdefault(speaker, {}).setdefault(key, Utterance(speaker, row.get("gender"), path, row["text"],
                                                                    key=key))
    return {speaker: [clips[key] for key in sorted(clips)] for speaker, clips in found.items()}


@dataclass(frozen=True)
class Spec:
    """One conversation: who takes part, which half of their clips, how long, its seed."""

    name: str
    speakers: tuple[str, ...]
    split: str  # "tune" or "dev"
    seed: int
    minutes: float = 2.0  # at least this long (clips are reused when the speakers have too few)
    overlap_share: float = 0.2  # turns that start before the previous one ends
    half: str = ""  # "first", "second" or "all" of each speaker's clips (default: by split)


# The benchmark's set: tune on the first half of each LibriSpeech/LJ speaker's clips, dev on
# the second half and on voices tune never hears (LibriVox, JFK, test-clean).
SPECS = (
    Spec("tune-2-mf", ("librispeech-1688", "librispeech-1998"), "tune", 1),
    Spec("tune-2-mm", ("librispeech-2033", "librispeech-2414"), "tune", 2),
    Spec("tune-3-ffm", ("librispeech-1998", "librispeech-3080", "librispeech-1688"), "tune", 3),
    Spec("tune-4", ("librispeech-1688", "librispeech-1998", "librispeech-2033", "ljspeech-linda-johnson"), "tune", 4,
         minutes=3.0),
    Spec("tune-5", ("librispeech-1688", "librispeech-1998", "librispeech-2033", "librispeech-2414",
                    "librispeech-3080"), "tune", 5, minutes=3.0),
    Spec("dev-2-fm", ("ljspeech-linda-johnson", "librispeech-2414"), "dev", 11),
    Spec("dev-2-ff", ("librispeech-1998", "librispeech-3080"), "dev", 12),
    Spec("dev-2-mm", ("librispeech-1688", "librispeech-2033"), "dev", 13),
    Spec("dev-3-mfx", ("librispeech-2033", "librispeech-3080", "librivox-sense_and_sensibility_01-reader"), "dev", 14),
    Spec("dev-4", ("librispeech-2414", "librispeech-1998", "jfk", "ljspeech-linda-johnson"), "dev", 15,
         minutes=3.0),
    Spec("dev-5", ("librispeech-1688", "librispeech-1998", "librispeech-2033", "librispeech-2414",
                   "librispeech-3080"), "dev", 16, minutes=3.0),
    Spec("dev-4-long", ("librispeech-1688", "librispeech-1998", "librispeech-2033", "ljspeech-linda-johnson"),
         "dev", 17, minutes=21.0),
)


@dataclass
class Conversation:
    """A built conversation: its samples and its reference."""

    spec: Spec
    samples: np.ndarray
    utterances: list[dict] = field(default_factory=list)  # {"start", "end", "speaker", "text"}

    @property
    def text(self) -> str:
        return " ".join(utterance["text"] for utterance in sorted(self.utterances, key=lambda u: u["start"]))


def _clip(utterance: Utterance, cache: dict) -> np.ndarray:
    from dwcli.audio import load_audio

    if utterance.path not in cache:
        cache[utterance.path] = load_audio(str(utterance.path))
    audio = cache[utterance.path]
    if utterance.start is not None:
        audio = audio[round(utterance.start * SAMPLE_RATE) : round(utterance.end * SAMPLE_RATE)]
    return trim_to_speech(audio)


def _pool(utterances: list[Utterance], spec: Spec, single_split: bool) -> list[Utterance]:
    """The speaker's clips this conversation may use: one half by the split, or all of them
    for a voice that appears in one split only."""
    if single_split or len(utterances) < 2 or spec.half == "all":
        return utterances
    half = spec.half or ("first" if spec.split == "tune" else "second")
    middle = len(utterances) // 2
    return utterances[:middle] if half == "first" else utterances[middle:]


def build(spec: Spec, voices: dict[str, list[Utterance]], cache: dict | None = None) -> Conversation:
    """The conversation ``spec`` describes, from the speakers' ``voices``."""
    cache = {} if cache is None else cache
    rng = np.random.default_rng(spec.seed)
    in_tune = {name for other in SPECS if other.split == "tune" for name in other.speakers}
    in_dev = {name for other in SPECS if other.split == "dev" for name in other.speakers}
    pools = {name: _pool(voices[name], spec, not (name in in_tune and name in in_dev)) for name in spec.speakers}
    orders = {name: list(rng.permutation(len(pool))) for name, pool in pools.items()}
    pieces: list[tuple[int, np.ndarray]] = []
    utterances: list[dict] = []
    cursor, previous_end, speaker = 0, 0, None
    target = spec.minutes * 60 * SAMPLE_RATE
    turn = 0
    while cursor < target or turn < 2 * len(spec.speakers):
        # Every speaker speaks early on; then a random other speaker takes the turn.
        if turn < len(spec.speakers):
            speaker = spec.speakers[turn]
        else:
            speaker = str(rng.choice([name for name in spec.speakers if name != speaker]))
        if not orders[speaker]:
            orders[speaker] = list(rng.permutation(len(pools[speaker])))
        utterance = pools[speaker][orders[speaker].pop()]
        clip = _clip(utterance, cache)
        level = _LEVEL_DBFS + rng.uniform(-_LEVEL_SPREAD_DB, _LEVEL_SPREAD_DB)
        clip = clip * (10 ** (level / 20) / max(float(np.sqrt(np.mean(clip ** 2))), 1e-6))
        if turn > 0 and rng.random() < spec.overlap_share:
            start = previous_end - round(rng.uniform(*_OVERLAP_S) * SAMPLE_RATE)
        else:
            start = previous_end + round(rng.uniform(*_GAP_S) * SAMPLE_RATE)
        start = max(start, 0)
        pieces.append((start, clip.astype(np.float32)))
        utterances.append({"start": round(start / SAMPLE_RATE, 3), "end": round((start + len(clip)) / SAMPLE_RATE, 3),
                           "speaker": speaker, "text": utterance.text, "clip": utterance.key})
        previous_end = start + len(clip)
        cursor = max(cursor, previous_end)
        turn += 1
    total = cursor + SAMPLE_RATE // 2
    samples = rng.normal(0.0, 10 ** (_NOISE_DBFS / 20), total).astype(np.float32)
    for start, clip in pieces:
        samples[start : start + len(clip)] += clip
    return Conversation(spec, np.clip(samples, -1.0, 1.0), utterances)


# Gaps between joined utterances, seconds: short pauses to long silences, in a fixed order.
GAPS_S = [0.8, 2.5, 1.2, 4.0, 0.6, 3.1, 1.7, 5.0, 0.9]
# The two orders of tests/test_timestamps.py's and benchmarks/starts.py's joined files.
JOIN_ORDERS = (("forward", list(range(10))), ("shuffled", [3, 7, 0, 9, 5, 1, 8, 2, 6, 4]))


def join_utterances(utterances: list[np.ndarray], order) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """``utterances`` in ``order`` with ``GAPS_S`` of silence between them; the audio and
    each utterance's (start, end) in it, seconds."""
    pieces, truth, cursor = [], [], 0
    for position, index in enumerate(order):
        if position:
            gap = np.zeros(round(GAPS_S[position - 1] * SAMPLE_RATE), np.float32)
            pieces.append(gap)
            cursor += len(gap)
        pieces.append(utterances[index])
        truth.append((cursor / SAMPLE_RATE, (cursor + len(utterances[index])) / SAMPLE_RATE))
        cursor += len(utterances[index])
    return np.concatenate(pieces), truth


def write_flac(path: Path, samples: np.ndarray) -> None:
    """16 kHz mono 16-bit FLAC."""
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("flac", rate=SAMPLE_RATE)
        stream.layout = "mono"
        frame = av.AudioFrame.from_ndarray((samples * 32767).astype(np.int16)[None, :], format="s16", layout="mono")
        frame.sample_rate = SAMPLE_RATE
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


def write(conversation: Conversation, folder: Path) -> dict:
    """The conversation's audio, RTTM and utterances in ``folder``; its manifest line."""
    name = conversation.spec.name
    write_flac(folder / f"{name}.flac", conversation.samples)
    lines = [f"SPEAKER {name} 1 {u['start']:.3f} {u['end'] - u['start']:.3f} <NA> <NA> {u['speaker']} <NA> <NA>\n"
             for u in conversation.utterances]
    (folder / f"{name}.rttm").write_text("".join(lines))
    (folder / f"{name}.json").write_text(json.dumps({"utterances": conversation.utterances}, indent=1) + "\n")
    return {"audio": f"{name}.flac", "text": conversation.text, "rttm": f"{name}.rttm",
            "utterances": f"{name}.json", "speakers": len(conversation.spec.speakers),
            "split": conversation.spec.split, "duration": round(len(conversation.samples) / SAMPLE_RATE, 2)}


def build_set(speech: Path, folder: Path, specs=SPECS) -> Path:
    """Every conversation of ``specs`` from the speech manifest in ``speech``, written into
    ``folder`` with a ``manifest.jsonl``; returns the manifest's path."""
    folder.mkdir(parents=True, exist_ok=True)
    voices = speaker_utterances(speech / "manifest.jsonl")
    cache: dict = {}
    rows = [write(build(spec, voices, cache), folder) for spec in specs]
    manifest = folder / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return manifest


if __name__ == "__main__":
    print(build_set(Path(sys.argv[1]), Path(sys.argv[2])))


# Two women (LibriSpeech 3080 and 2412) and a man (JFK), clips reused, some turns overlapping:
# the end-to-end tests' conversation (tests/test_speakers_e2e.py, tests/test_cluster.py).
THREE_SPEAKERS = Spec("three", ("librispeech-3080", "jfk", "librispeech-2412"), "test", seed=9, minutes=0.6,
                      half="all", overlap_share=0.35)


def write_three_speakers(speech: Path, folder: Path) -> dict:
    """THREE_SPEAKERS built from ``speech`` (tests/data/speech) into ``folder`` with its
    manifest; the paths of its audio and RTTM, and its manifest row."""
    row = write(build(THREE_SPEAKERS, speaker_utterances(speech / "manifest.jsonl")), folder)
    (folder / "manifest.jsonl").write_text(json.dumps(row) + "\n")
    return {"folder": folder, "audio": folder / row["audio"], "rttm": folder / row["rttm"], "row": row}
