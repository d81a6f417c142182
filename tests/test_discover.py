"""Discovery: folders, filters, de-duplication, output names and mirroring."""

from __future__ import annotations

import io
from pathlib import Path

from dwcli.discover import discover, read_path_list


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def test_folder_is_searched_recursively_sorted_and_filtered(tmp_path):
    for name in ["b.mp3", "a.wav", "sub/c.MKV", "sub/deeper/d.flac", "notes.txt", ".hidden/e.mp3", "sub/cover.jpg"]:
        _touch(tmp_path / "in" / name)
    found = discover([str(tmp_path / "in")])
    assert [Path(f.source).relative_to(tmp_path / "in").as_posix() for f in found.files] == [
        "a.wav", "b.mp3", "sub/c.MKV", "sub/deeper/d.flac"]
    assert found.unusable == []


def test_outputs_beside_inputs_or_mirrored_under_output_dir(tmp_path):
    _touch(tmp_path / "in/sub/talk.mp4")
    single = _touch(tmp_path / "other/solo.wav")
    beside = discover([str(tmp_path / "in")]).files[0]
    assert beside.output_path("srt") == tmp_path / "in/sub/talk.srt"
    mirrored = discover([str(tmp_path / "in"), str(single)], tmp_path / "out").files
    assert [f.output_path("srt") for f in mirrored] == [tmp_path / "out/sub/talk.srt", tmp_path / "out/solo.srt"]


def test_duplicates_are_dropped_and_name_clashes_keep_extensions(tmp_path):
    mp3 = _touch(tmp_path / "talk.mp3")
    wav = _touch(tmp_path / "talk.wav")
    found = discover([str(mp3), str(tmp_path), str(wav), str(tmp_path / "." / "talk.mp3")])
    assert [Path(f.source).name for f in found.files] == ["talk.mp3", "talk.wav"]
    assert [f.output_path("srt").name for f in found.files] == ["talk.mp3.srt", "talk.wav.srt"]


def test_missing_paths_are_reported_and_globs_expand(tmp_path):
    _touch(tmp_path / "x1.wav")
    _touch(tmp_path / "x2.wav")
    found = discover([str(tmp_path / "x*.wav"), str(tmp_path / "nope.wav")])
    assert [Path(f.source).name for f in found.files] == ["x1.wav", "x2.wav"]
    assert [(item.argument, item.reason) for item in found.unusable] == [(str(tmp_path / "nope.wav"), "no such file or directory")]


def test_stdin_is_one_input_named_stdin(tmp_path):
    [media] = discover(["-", "-"], tmp_path).files
    assert media.is_stdin and media.output_path("txt") == tmp_path / "stdin.txt"


def test_path_lists_newline_and_nul():
    assert read_path_list(io.BytesIO(b"a.wav\nb c.mp3\r\n\n"), False) == ["a.wav", "b c.mp3"]
    assert read_path_list(io.BytesIO(b"a\nb.wav\0c.mp3\0"), True) == ["a\nb.wav", "c.mp3"]
