"""The file assembler: each file's decoded windows -> its ``Transcript`` -> the sink.

It keeps what every file has gathered so far (segments on the file's timeline, the
language of each window, what decoding reported), and when a file is complete it checks
that the source did not change while it was read, builds the transcript and hands it to the
sink at once, so a long batch leaves finished files behind it as it goes.  A failure in one
file never touches another.
"""

from __future__ import annotations

import traceback
from collections import Counter
from dataclasses import dataclass, field

from .discover import MediaFile
from .events import FileOutcome, Reporter, RunSummary
from .options import SpeakerOptions
from .resume import source_stamp
from .segments import Segment, Transcript, timeline
from .sinks import CANNOT_WRITE, Sink, WritingImpossible
from .sources import FileEnd
from .speakers.stage import label_speakers


@dataclass
class _File:
    media: MediaFile
    segments: list[Segment] = field(default_factory=list)
    languages: Counter = field(default_factory=Counter)
    end: FileEnd | None = None  # its reader's end: duration, source stamp, damage
    begun: bool = False  # a decoding worker has started reading it
    closed: bool = False  # failed or finished: nothing more happens to it
    progress_s: float = 0.0  # seconds of it reported to the progress display


class FileAssembler:
    """Gathers files' results and finishes them through ``sink``, counting in ``summary``."""

    def __init__(self, files: list[MediaFile], model_id: str, result_options: dict, sink: Sink,
                 reporter: Reporter, summary: RunSummary, speakers: SpeakerOptions | None = None,
                 track_asked: bool = False):
        self.files = [_File(media) for media in files]
        self.model_id = model_id
        self.result_options = result_options
        self.sink = sink
        self.reporter = reporter
        self.summary = summary
        self.speakers = speakers  # --speakers: label who speaks, at each file's end
        self.track_asked = track_asked  # --audio-track was given: the track read goes unsaid (JSON keeps it)

    def label(self, file_index: int) -> str:
        return self.files[file_index].media.label

    def is_open(self, file_index: int) -> bool:
        return not self.files[file_index].closed

    def begun(self, file_index: int) -> None:
        self.files[file_index].begun = True

    def add(self, file_index: int, segments: list[Segment], language: str | None, progress_s: float) -> None:
        state = self.files[file_index]
        state.segments.extend(segments)
        if language:
            state.languages[language] += 1
        state.progress_s += progress_s
        self.reporter.advance(progress_s)

    def ended(self, end: FileEnd) -> None:
        self.files[end.file_index].end = end

    def reset(self, file_index: int) -> None:
        """Forget what a file gathered: it is read again from its start."""
        self.files[file_index] = _File(self.files[file_index].media)

    def in_flight(self) -> list[int]:
        """Open files a worker has begun and not finished reading."""
        return [index for index, state in enumerate(self.files) if state.begun and state.end is None and not state.closed]

    def unread(self) -> list[int]:
        """Open files no worker has begun."""
        return [index for index, state in enumerate(self.files) if not state.begun and not state.closed]

    def fail(self, file_index: int, message: str, detail: str = "") -> None:
        state = self.files[file_index]
        if state.closed:
            return
        state.closed = True
        state.segments = []
        self.summary.failed += 1
        self.reporter.file_done(FileOutcome(state.media, "failed", message, detail=detail))

    def finish(self, file_index: int) -> None:
        """The file is complete: check its source, build its transcript, deliver it."""
        state = self.files[file_index]
        end = state.end
        if end.source_stamp is not None and source_stamp(state.media) != end.source_stamp:
            self.fail(file_index, f"{state.media.label}: changed while dw read it (still being written?); "
                                  "transcribe it again once it is complete")
            return
        if end.decoding:
            self._say_decoding(state.media, end.decoding)
        self.reporter.advance(max(0.0, end.duration_s - state.progress_s))  # its non-speech, and what is left
        duration_s = end.placement.duration_s(end.duration_s)  # on the container's timeline, a player's
        transcript = Transcript(
            source=state.media.source,
            duration_s=duration_s,
            language=state.languages.most_common(1)[0][0] if state.languages else None,
            model_id=self.model_id,
            segments=timeline(state.segments, duration_s, end.placement.start_s),
            options=self.result_options,
            decoding=end.decoding or {},
        )
        transcript = label_speakers(transcript, end.speech, self.speakers, end.placement.start_s)
        try:
            outputs = self.sink.deliver(state.media, transcript, end.source_stamp)
        except OSError as error:
            reason = error.strerror or str(error)
            self.fail(file_index, f"{state.media.label}: cannot write output ({reason})", traceback.format_exc())
            if error.errno in CANNOT_WRITE:
                raise WritingImpossible(reason) from None
            return
        state.segments, state.end = [], None  # (its speaker embeddings too)
        state.closed = True
        self.summary.ok += 1
        self.summary.audio_s += transcript.duration_s
        self.reporter.file_done(FileOutcome(state.media, "ok", duration_s=transcript.duration_s, outputs=outputs))

    def _say_decoding(self, media: MediaFile, decoding: dict) -> None:
        if decoding.get("audio_tracks") and not self.track_asked:
            self.reporter.note(f"{media.label}: transcribed audio track {decoding['audio_track']} of its "
                               f"{decoding['audio_tracks']} (counted from 0; --audio-track N picks another)")
        if decoding.get("non_finite_samples_replaced"):
            self.reporter.note(f"{media.label}: {decoding['non_finite_samples_replaced']} sample(s) that were not "
                               "numbers (NaN) or infinite replaced by silence or full scale")
        if decoding.get("partial"):
            self.reporter.note(f"{media.label}: transcribed {decoding['decoded_s']:.1f} s of the "
                               f"{decoding['declared_s']:.1f} s its container declares (marked partial in JSON)")
        if decoding.get("damaged_packets_skipped"):
            self.reporter.note(f"{media.label}: {decoding['damaged_packets_skipped']} damaged packet(s) skipped")

    def abandon(self, reason: str, begun_only: bool = False) -> None:
        """Writing is impossible: every file not finished yet fails, said once (``begun_only``:
        those this run began; a replica's other files belong to other replicas)."""
        left = [state for state in self.files if not state.closed and (state.begun or not begun_only)]
        for state in left:
            state.closed = True
            self.summary.failed += 1
        self.reporter.note(f"stopped: outputs cannot be written ({reason}); {len(left)} file(s) left undone")
