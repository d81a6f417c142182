"""What the benchmark transcribes: sets of real speech and of non-speech, with references.

Sets (``--set``, comma-separated; one table each):

  clip       JFK's 11 s: the single-clip case (start-up dominates)
  longform   the two long-form files (LJ Speech 5.2 min, LibriSpeech test-other 1.8 min)
  joined     each LibriSpeech test-other speaker's clips joined in reading order (0.25 s
             apart), and the LibriVox clips likewise: long files whose 30 s windows fall
             inside words, for sequential long form
  short      the short English clips (LibriSpeech, LibriVox, JFK, FLEURS)
  all        longform + short
  nonspeech  silence, room noise, white noise and music (nothing said), speech with long
             noisy pauses, speech over a music bed (tests/nonspeech.py)

Generated files are written once into a cache folder (``--cache``, default the temp folder),
named by a digest of what they are made of, so a second run reuses them.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SHARED_DATA = Path("/work/shared/data/speech")
TESTS_DATA = REPO / "tests" / "data" / "speech"
SETS = ("clip", "longform", "joined", "short", "all", "nonspeech")


@dataclass
class Item:
    id: str
    audio: str  # absolute path
    text: str  # "" for recordings of non-speech
    duration: float
    set: str
    corpus: str = ""


def default_data_dir() -> Path:
    env = os.environ.get("DW_BENCH_DATA")
    if env:
        return Path(env)
    return SHARED_DATA if (SHARED_DATA / "manifest.jsonl").is_file() else TESTS_DATA


def _manifest(data_dir: Path) -> list[dict]:
    rows = []
    with open(data_dir / "manifest.jsonl", encoding="utf-8") as stream:
        for line in stream:
            if line.strip():
                rows.append(json.loads(line))
    return [row for row in rows if row.get("lang", "en") == "en"]


def _item(data_dir: Path, row: dict) -> Item:
    corpus, split = row.get("corpus", ""), row.get("split", "")
    corpus = f"{corpus} {split}" if split and split not in corpus else corpus  # LibriSpeech test-other
    return Item(row["id"], str((data_dir / row["audio"]).resolve()), row["text"], float(row["duration"]),
                row["set"], corpus)


def _digest(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:12]


def _write_flac(path: Path, samples) -> None:
    sys.path.insert(0, str(REPO / "tests"))
    from nonspeech import write_flac

    partial = path.with_name(path.name + ".partial.flac")
    write_flac(partial, samples)
    partial.rename(path)


def _joined(data_dir: Path, cache: Path) -> list[Item]:
    """Short clips of one speaker (or one book) joined into one long file each."""
    import numpy as np

    from dwcli.audio import SAMPLE_RATE, load_audio

    groups: dict[str, list[dict]] = {}
    rows = _manifest(data_dir)
    # Speakers whose clips already make up a long-form file are not joined again.
    in_longform = {row.get("speaker") for row in rows if row.get("set") == "longform"}
    for row in rows:
        if row.get("set") != "short" or row.get("speaker") in in_longform:
            continue
        if row.get("split") == "test-other":
            groups.setdefault(f"librispeech-test-other-{row['speaker']}", []).append(row)
        elif row.get("corpus", "").startswith("LibriVox"):
            groups.setdefault("librivox-sense-and-sensibility", []).append(row)
    items = []
    gap = np.zeros(SAMPLE_RATE // 4, np.float32)
    for name, rows in sorted(groups.items()):
        rows.sort(key=lambda row: row["id"])
        path = cache / f"dw-bench-joined-{name}-{_digest([row['id'] for row in rows])}.flac"
        if not path.is_file():
            pieces = []
            for row in rows:
                pieces += [load_audio(data_dir / row["audio"]), gap]
            _write_flac(path, np.concatenate(pieces[:-1]))
        duration = sum(float(row["duration"]) for row in rows) + 0.25 * (len(rows) - 1)
        items.append(Item(f"joined-{name}", str(path), " ".join(row["text"] for row in rows), duration, "joined",
                          rows[0].get("corpus", "")))
    return items


def _nonspeech(cache: Path) -> list[Item]:
    sys.path.insert(0, str(REPO / "tests"))
    import nonspeech

    recordings = nonspeech.nonspeech_set(minutes_scale=1.0) + [nonspeech.speech_with_noisy_pauses(),
                                                              nonspeech.speech_over_music()]
    items = []
    for recording in recordings:
        path = cache / f"dw-bench-nonspeech-{recording.name}-{_digest(recording.name, recording.seconds)}.flac"
        if not path.is_file():
            _write_flac(path, recording.samples)
        corpus = "speech among non-speech" if recording.text else "non-speech (generated)"
        items.append(Item(recording.name, str(path), recording.text, recording.seconds, "nonspeech", corpus))
    return items


def load_items(data_dir: Path, which: str, limit: int | None, cache: Path) -> list[Item]:
    """The items of one set (see the module docstring)."""
    rows = _manifest(data_dir)
    if which == "clip":
        items = [_item(data_dir, row) for row in rows if "jfk" in row["id"].lower()][:1]
    elif which in ("longform", "short"):
        items = [_item(data_dir, row) for row in rows if row.get("set") == which]
    elif which == "all":
        items = [_item(data_dir, row) for row in rows if row.get("set") == "longform"]
        items += [_item(data_dir, row) for row in rows if row.get("set") == "short"]
    elif which == "joined":
        items = _joined(data_dir, cache)
    elif which == "nonspeech":
        items = _nonspeech(cache)
    else:
        raise SystemExit(f"bench.py: --set {which}: expected one of {', '.join(SETS)}")
    return items[:limit] if limit else items


def build_long_file(items: list[Item], hours: float, folder: Path) -> tuple[Path, float, str]:
    """Loop ``items`` (1 s of silence between loops) into one 16 kHz FLAC of about
    ``hours``; (path, duration s, reference text).  Kept in ``folder``, named by a digest of
    its ingredients, for the next run."""
    import numpy as np

    from dwcli.audio import SAMPLE_RATE, load_audio, probe

    loop_s = sum(item.duration for item in items) + 1.0
    loops = max(1, round(hours * 3600 / loop_s))
    reference = " ".join([" ".join(item.text for item in items)] * loops)
    path = folder / f"dw-bench-long-{loops}x-{_digest([item.id for item in items])}.flac"
    if path.is_file():
        return path, probe(path).duration_s or loops * loop_s, reference
    import av

    clips = [(np.clip(load_audio(item.audio), -1, 1) * 32767).astype(np.int16) for item in items]
    clips.append(np.zeros(SAMPLE_RATE, dtype=np.int16))
    partial = path.with_name(path.name + ".partial.flac")
    pts = 0
    with av.open(str(partial), "w", format="flac") as container:
        stream = container.add_stream("flac", rate=SAMPLE_RATE, layout="mono")
        stream.format = "s16"
        for _ in range(loops):
            for clip in clips:
                for start in range(0, len(clip), 10 * SAMPLE_RATE):
                    chunk = np.ascontiguousarray(clip[start : start + 10 * SAMPLE_RATE])
                    frame = av.AudioFrame.from_ndarray(chunk[None, :], format="s16", layout="mono")
                    frame.sample_rate, frame.pts = SAMPLE_RATE, pts
                    pts += len(chunk)
                    for packet in stream.encode(frame):
                        container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    partial.rename(path)
    return path, pts / SAMPLE_RATE, reference
