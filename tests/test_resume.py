"""--skip-existing decisions: when a file's outputs still stand, and the records that say so.

No model here: the records are about files on disk, so these run in milliseconds.  The end to
end run (a real batch killed with SIGKILL, then resumed) is in test_unix.py.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from dwcli.decoding import DecodingOptions
from dwcli.discover import MediaFile
from dwcli.options import TranscribeOptions
from dwcli.resume import Recipe, Record, Resume, read_record, record_path
from dwcli.options import SubtitleOptions
from dwcli.options import WriterOptions

FORMATS = ["srt", "txt"]


def _recipe(model="offline:tiny.en", language=None, max_line_width=42, quantize=None, beam_size=1, **run) -> Recipe:
    options = TranscribeOptions(decoding=DecodingOptions(language=language, beam_size=beam_size),
                                writer=WriterOptions(SubtitleOptions(max_line_width=max_line_width)), **run)
    return Recipe.of(model, options, dtype="float32", quantize=quantize)


@pytest.fixture
def media(tmp_path) -> MediaFile:
    source = tmp_path / "in" / "talk.wav"
    source.parent.mkdir()
    source.write_bytes(b"not really audio, but a file with a size and a time")
    return MediaFile(str(source), tmp_path / "out" / "talk")


def _finish(media: MediaFile, resume: Resume, formats=FORMATS) -> None:
    """What the pipeline does for a finished file: forget, write the outputs, remember."""
    previous = resume.forget(media)
    for fmt in formats:
        media.output_path(fmt).parent.mkdir(parents=True, exist_ok=True)
        media.output_path(fmt).write_text(fmt)
    resume.remember(media, formats, previous)


def test_record_is_hidden_beside_the_outputs(media):
    assert record_path(media) == media.output_stem.parent / ".talk.dw.json"


def test_finished_file_is_skipped_only_with_skip_existing(media):
    _finish(media, Resume(_recipe()))
    assert Resume(_recipe(), skip_existing=True).partition([media], FORMATS) == ([], [media])
    assert Resume(_recipe(), skip_existing=False).partition([media], FORMATS) == ([media], [])


def test_outputs_without_a_record_are_redone(media):
    """kill -9 after the outputs but before the record: the file counts as unfinished."""
    _finish(media, Resume(_recipe()))
    record_path(media).unlink()
    assert not Resume(_recipe(), True).is_done(media, FORMATS)


def test_missing_output_is_redone(media):
    _finish(media, Resume(_recipe()))
    media.output_path("txt").unlink()
    assert not Resume(_recipe(), True).is_done(media, FORMATS)
    assert Resume(_recipe(), True).is_done(media, ["srt"])


def test_format_never_written_is_redone(media):
    _finish(media, Resume(_recipe()), ["srt"])
    media.output_path("vtt").write_text("made by hand")
    assert not Resume(_recipe(), True).is_done(media, ["srt", "vtt"])


@pytest.mark.parametrize("other", [
    _recipe(model="distil-whisper/distil-small.en"),
    _recipe(language="en"),
    _recipe(quantize="int8"),
    _recipe(long_form="sequential"),
    _recipe(beam_size=5),
])
def test_other_model_or_result_option_is_redone(media, other):
    _finish(media, Resume(_recipe()))
    assert not Resume(other, True).is_done(media, FORMATS)


def test_a_record_from_before_an_option_existed_stands_for_its_old_default(media):
    """Records written before --beam-size existed were made greedily: they stand for beam 1."""
    _finish(media, Resume(_recipe()))
    data = json.loads(record_path(media).read_text())
    del data["options"]["decoding"]["beam_size"]
    record_path(media).write_text(json.dumps(data))
    assert Resume(_recipe(), True).is_done(media, FORMATS)
    assert not Resume(_recipe(beam_size=5), True).is_done(media, FORMATS)


def test_speed_settings_do_not_matter(media):
    _finish(media, Resume(_recipe()))
    assert Resume(_recipe(batch_size=32, workers=4, formats=("json",)), True).is_done(media, FORMATS)


def test_cue_shaping_matters_for_subtitles_only(media):
    _finish(media, Resume(_recipe()))
    narrower = Resume(_recipe(max_line_width=30), True)
    assert not narrower.is_done(media, ["srt"])
    assert narrower.is_done(media, ["txt"])


def test_changed_source_is_redone(media):
    _finish(media, Resume(_recipe()))
    stat = os.stat(media.source)
    os.utime(media.source, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert not Resume(_recipe(), True).is_done(media, FORMATS)


def test_unreadable_record_means_unfinished(media):
    _finish(media, Resume(_recipe()))
    record_path(media).write_text("{ truncated")
    assert read_record(media) is None
    assert not Resume(_recipe(), True).is_done(media, FORMATS)


def test_record_round_trips(media):
    _finish(media, Resume(_recipe()))
    record = read_record(media)
    assert record == Record.from_json(record.to_json())
    assert record.recipe == _recipe() and record.formats == tuple(FORMATS)


def test_formats_of_the_same_recipe_accumulate(media):
    """Alternating --format srt and --format vtt jobs do not redo each other's work."""
    resume = Resume(_recipe(), True)
    _finish(media, resume, ["srt"])
    _finish(media, resume, ["vtt"])
    assert set(read_record(media).formats) == {"srt", "vtt"}
    assert resume.is_done(media, ["srt"]) and resume.is_done(media, ["vtt"])


def test_formats_of_another_recipe_are_dropped(media):
    _finish(media, Resume(_recipe()), ["srt"])
    _finish(media, Resume(_recipe(language="en")), ["vtt"])
    assert read_record(media).formats == ("vtt",)
    assert not Resume(_recipe(language="en"), True).is_done(media, ["srt"])


def test_forget_removes_the_record_first(media):
    resume = Resume(_recipe(), True)
    _finish(media, resume)
    previous = resume.forget(media)
    assert previous is not None and not record_path(media).exists()
    assert not resume.is_done(media, FORMATS)


def test_standard_input_is_never_skipped(tmp_path):
    stdin = MediaFile("-", tmp_path / "stdin")
    resume = Resume(_recipe(), True)
    resume.remember(stdin, ["txt"])
    assert not record_path(stdin).exists()
    assert resume.partition([stdin], ["txt"]) == ([stdin], [])


def test_vanished_source_is_not_skipped(media):
    _finish(media, Resume(_recipe()))
    Path(media.source).unlink()
    assert not Resume(_recipe(), True).is_done(media, FORMATS)


def test_new_content_with_the_old_time_put_back_is_redone(media):
    """touch -r, rsync -t and copies that keep times restore the modification time: same
    size and time, other content.  The change time, inode and hash of the ends tell."""
    _finish(media, Resume(_recipe()))
    before = os.stat(media.source)
    content = Path(media.source).read_bytes()
    Path(media.source).write_bytes(content[::-1])  # the same length
    os.utime(media.source, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = os.stat(media.source)
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    assert not Resume(_recipe(), True).is_done(media, FORMATS)


def test_a_file_replaced_by_another_is_redone(media, tmp_path):
    """mv over it (a new inode), even with the same bytes at both ends and the same times."""
    _finish(media, Resume(_recipe()))
    replacement = tmp_path / "replacement.wav"
    replacement.write_bytes(Path(media.source).read_bytes())
    before = os.stat(media.source)
    os.utime(replacement, ns=(before.st_atime_ns, before.st_mtime_ns))
    os.replace(replacement, media.source)
    assert not Resume(_recipe(), True).is_done(media, FORMATS)


def test_a_record_without_the_whole_stamp_is_redone_once(media):
    """Records from before dw kept inode, change time and hash cannot vouch for the source:
    the file is done again once (its new record then stands)."""
    resume = Resume(_recipe(), True)
    _finish(media, resume)
    data = json.loads(record_path(media).read_text())
    for key in ("source_ctime_ns", "source_inode", "source_digest"):
        del data[key]
    record_path(media).write_text(json.dumps(data))
    assert read_record(media).source is None and not resume.is_done(media, FORMATS)
    _finish(media, resume)
    assert resume.is_done(media, FORMATS)


def test_the_audio_track_is_part_of_the_recipe(media):
    _finish(media, Resume(_recipe()))
    assert not Resume(_recipe(audio_track=1), True).is_done(media, FORMATS)
    assert Resume(_recipe(audio_track=None), True).is_done(media, FORMATS)
