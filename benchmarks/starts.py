"""Do segment starts follow utterance starts?  Two measures on two kinds of joined speech.

Files: real utterances one after another with known pauses.

- ``joined`` (held out: the benchmark's joined set): each LibriSpeech test-other speaker's
  clips and the LibriVox clips in reading order, 0.25 s apart, room tone left in; the truth
  is where each clip's voice starts (its first 10 ms reaching 10% of its peak), and, as a
  second reading (``clip``), where the clip itself starts, room tone and all.
- ``timestamps`` (tests/test_timestamps.py's files): the 10 utterances of test-other 3080,
  trimmed to the voice, joined with silences of 0.6 to 5 s.

Measures, over every true utterance start:

- ``nearest start``: the distance to the nearest segment start (what a speaker turn needs:
  a turn starts where a segment does);
- ``boundary``: tests/test_timestamps.py's measure, starts and ends pooled, each true edge
  against the nearest predicted edge of its kind.

    python benchmarks/starts.py [--dw-args "--vad-speech-pad-ms 200"] [--cache DIR]
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
sys.path.insert(0, str(HERE))

from conversations import JOIN_ORDERS, SAMPLE_RATE, join_utterances, trim_to_speech, write_flac  # noqa: E402
from measure import DW  # noqa: E402



def _voice_edges(clip: np.ndarray) -> tuple[float, float]:
    """Where the voice starts and ends inside a clip (seconds)."""
    trimmed = trim_to_speech(clip)
    frames = np.abs(clip[: len(clip) // 160 * 160]).reshape(-1, 160).max(axis=1)
    first = int(np.flatnonzero(frames >= 0.1 * frames.max())[0]) * 160
    return first / SAMPLE_RATE, (first + len(trimmed)) / SAMPLE_RATE


def joined_files(data: Path, cache: Path) -> list[tuple[Path, list[tuple[float, float]]]]:
    """The benchmark's joined set, with each clip's voice edges in the joined file."""
    from data import _joined

    from dwcli.audio import load_audio

    files = []
    for item in _joined(data, cache):
        rows = sorted((json.loads(line) for line in (data / "manifest.jsonl").read_text().splitlines()),
                      key=lambda row: row["id"])
        name = item.id.replace("joined-", "")
        members = [row for row in rows if row.get("set") == "short" and (
            f"librispeech-test-other-{row.get('speaker')}" == name
            or (name.startswith("librivox") and row.get("corpus", "").startswith("LibriVox")))]
        truth, cursor = [], 0
        for row in members:
            clip = load_audio(data / row["audio"])
            start, end = _voice_edges(clip)
            truth.append((cursor / SAMPLE_RATE + start, cursor / SAMPLE_RATE + end, cursor / SAMPLE_RATE))
            cursor += len(clip) + SAMPLE_RATE // 4
        files.append((Path(item.audio), truth))
    return files


def timestamp_files(cache: Path) -> list[tuple[Path, list[tuple[float, float]]]]:
    """tests/test_timestamps.py's two files, written again here."""
    from dwcli.audio import load_audio

    speech = HERE.parent / "tests" / "data" / "speech"
    name = "librispeech_test-other_3080-5032-0000_to_0009"
    audio = load_audio(speech / f"{name}.flac")
    segments = json.loads((speech / f"{name}.segments.json").read_text())["segments"]
    utterances = [trim_to_speech(audio[round(s["start"] * SAMPLE_RATE) : round(s["end"] * SAMPLE_RATE)])
                  for s in segments]
    files = []
    for label, order in JOIN_ORDERS:
        samples, truth = join_utterances(utterances, order)
        path = cache / f"dw-starts-{label}.flac"
        if not path.is_file():
            write_flac(path, samples)
        files.append((path, truth))
    return files


def measure(files, dw_args: list[str], out: Path) -> dict:
    """Run ``dw transcribe`` on the files; the two measures over all of them."""
    command = [DW, "transcribe", *map(str, (path for path, _ in files)),
               "-f", "json", "-o", str(out),
               "--model", "offline:tiny.en", "--quiet", *dw_args]
    subprocess.run(command, check=True)
    nearest, boundary, clip = [], [], []
    for path, truth in files:
        segments = json.loads((out / f"{path.stem}.json").read_text())["segments"]
        starts = np.array([s["start"] for s in segments])
        ends = np.array([s["end"] for s in segments])
        for true_start, true_end, *clip_start in truth:
            nearest.append(float(np.min(np.abs(starts - true_start))))
            boundary += [float(np.min(np.abs(starts - true_start))), float(np.min(np.abs(ends - true_end)))]
            clip += [float(np.min(np.abs(starts - clip_start[0])))] if clip_start else []
    result = {"utterances": len(nearest),
              "nearest_start_median_s": round(float(np.median(nearest)), 3),
              "nearest_start_p90_s": round(float(np.percentile(nearest, 90)), 3),
              "boundary_median_s": round(float(np.median(boundary)), 3),
              "boundary_p90_s": round(float(np.percentile(boundary, 90)), 3)}
    if clip:
        result.update(clip_start_median_s=round(float(np.median(clip)), 3),
                      clip_start_p90_s=round(float(np.percentile(clip, 90)), 3))
    return result


def main() -> None:
    from data import default_data_dir

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dw-args", action="append", default=[],
                        help="dw transcribe options of one variant (repeat for several); none: dw as it is")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument("--data", type=Path, default=default_data_dir())
    parser.add_argument("--set", default="joined,timestamps")
    parser.add_argument("--keep", type=Path, help="keep each variant's JSON outputs under this folder")
    args = parser.parse_args()
    makers = {"joined": lambda: joined_files(args.data, args.cache), "timestamps": lambda: timestamp_files(args.cache)}
    sets = {name: makers[name]() for name in args.set.split(",")}
    for number, variant in enumerate(args.dw_args or [""]):
        for name, files in sets.items():
            with tempfile.TemporaryDirectory() as scratch:
                out = args.keep / f"{number}-{name}" if args.keep else Path(scratch)
                out.mkdir(parents=True, exist_ok=True)
                result = measure(files, shlex.split(variant), out)
            print(json.dumps({"variant": variant or "default", "set": name, **result}), flush=True)


if __name__ == "__main__":
    main()
