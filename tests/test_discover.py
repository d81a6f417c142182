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


def test_folder_search_takes_every_media_container_and_none_of_dws_outputs(tmp_path):
    """Audiobooks (.m4b), Ogg video (.ogv), 3GPP (.3gpp) and MPEG audio (.mpga) are found
    (FFmpeg reads them: tests/test_audio.py decodes each); text, subtitles, pictures, data
    and dw's own outputs are not, so a rerun over a folder never takes its outputs for media."""
    from dwcli.discover import MEDIA_EXTENSIONS
    from dwcli.writers import WRITERS

    media = ["book.m4b", "film.ogv", "phone.3gpp", "song.mpga", "talk.opus", "clip.MOV"]
    others = ["notes.txt", "talk.srt", "talk.vtt", "talk.json", "talk.tsv", "cover.jpg", "list.m3u8", "info.nfo",
              "manifest.xml", "subs.sub"]
    for name in media + others:
        _touch(tmp_path / "in" / name)
    found = discover([str(tmp_path / "in")])
    assert sorted(Path(f.source).name for f in found.files) == sorted(media)
    assert found.unusable == [] and not MEDIA_EXTENSIONS & set(WRITERS)
    only_books = tmp_path / "books"
    _touch(only_books / "one.m4b")
    assert [Path(f.source).name for f in discover([str(only_books)]).files] == ["one.m4b"]


def test_broken_links_and_loops_in_a_folder_are_named(tmp_path):
    """Found in a folder, they fail as named ones do (a cron job's log says its input is gone)."""
    folder = tmp_path / "in"
    _touch(folder / "ok.wav")
    (folder / "gone.mp4").symlink_to(folder / "deleted.mp4")
    (folder / "loop.flac").symlink_to(folder / "loop.flac")
    (folder / "notes.txt").symlink_to(folder / "nowhere.txt")  # not media: not said
    found = discover([str(folder)])
    assert [Path(f.source).name for f in found.files] == ["ok.wav"]
    assert [(Path(item.argument).name, item.reason) for item in found.unusable] == [
        ("gone.mp4", "broken symbolic link"), ("loop.flac", "symbolic link loop")]
    (folder / "ok.wav").unlink()
    assert [item.reason for item in discover([str(folder)]).unusable] == ["broken symbolic link", "symbolic link loop"]


def test_an_output_is_never_an_input(tmp_path):
    """A WAV named notes.txt transcribed to txt was replaced by its own transcript: outputs
    (and the record) that would be an input, by any name, take the input's full name."""
    notes, clip = _touch(tmp_path / "notes.txt"), _touch(tmp_path / "clip.json")
    found = discover([str(notes), str(clip)], None, ("txt", "json"))
    assert [f.output_path(fmt).name for f in found.files for fmt in ("txt", "json")] == [
        "notes.txt.txt", "notes.txt.json", "clip.json.txt", "clip.json.json"]
    # Another input's name, reached through a link: talk.wav's txt would be the other input.
    _touch(tmp_path / "real" / "talk.wav")
    (tmp_path / "real" / "talk.txt").symlink_to(notes)
    [talk, _] = discover([str(tmp_path / "real" / "talk.wav"), str(notes)], None, ("txt",)).files
    assert talk.output_path("txt") == tmp_path / "real" / "talk.wav.txt"
    # Under --output-dir, an input inside it.
    out = tmp_path / "out"
    inside = _touch(out / "take.srt")
    [media] = discover([str(inside)], out, ("srt",)).files
    assert media.output_path("srt") == out / "take.srt.srt"


def test_an_input_without_a_safe_name_is_refused(tmp_path):
    first, second = _touch(tmp_path / "notes.txt"), _touch(tmp_path / "notes.txt.txt")
    found = discover([str(first), str(second)], None, ("txt",))
    assert [f.output_path("txt").name for f in found.files] == ["notes.txt.txt.txt"]
    assert [item.message for item in found.unusable] == [
        f"{first}: every name for its outputs would write over an input of this run ({second}); rename it or use "
        "--output-dir"]


def test_what_an_output_dir_cannot_be(tmp_path):
    from dwcli.discover import output_dir_problem

    taken = _touch(tmp_path / "subs.txt")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    assert output_dir_problem(tmp_path / "new" / "deeper") is None
    assert output_dir_problem(tmp_path) is None
    assert output_dir_problem(taken) == "a file, not a folder"
    assert output_dir_problem(taken / "srt") == f"{taken} is a file, not a folder"
    assert output_dir_problem(tmp_path / "dangling") == "a broken symbolic link"
