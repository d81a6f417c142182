"""Render the instrumental music of the non-speech test set (run once; outputs committed).

Each piece is composed here, procedurally and with a fixed seed (chord progressions, melodies,
bass lines and drum patterns in General MIDI), written as a MIDI file with mido, rendered
with FluidSynth and the FluidR3 General MIDI soundfont (Debian packages ``fluidsynth`` and
``fluid-soundfont-gm``, MIT licensed), and encoded as 16 kHz mono Opus with PyAV.  Nothing
here is a recording of anyone: every piece is dw's own, CC0.

    apt-get install fluidsynth fluid-soundfont-gm && pip install mido
    python tests/data/nonspeech/make_music.py            # writes tests/data/nonspeech/*.opus
"""

from __future__ import annotations

import random
import subprocess
import sys
import tempfile
from pathlib import Path

import mido
import numpy as np

HERE = Path(__file__).parent
SOUNDFONT = "/usr/share/sounds/sf2/FluidR3_GM.sf2"
SECONDS = 60  # each piece; two Whisper windows
TICKS = 480  # per beat

# Chord progressions as scale degrees of C major (root position triads, an octave per voice).
_MAJOR = [0, 2, 4, 5, 7, 9, 11]


def _triad(degree: int, root: int = 60) -> list[int]:
    return [root + _MAJOR[(degree + step) % 7] + 12 * ((degree + step) // 7) for step in (0, 2, 4)]


class _Track:
    """Notes on one channel, collected as (tick, message) then written in time order."""

    def __init__(self, channel: int, program: int | None):
        self.channel, self.events = channel, []
        if program is not None:
            self.events.append((0, mido.Message("program_change", channel=channel, program=program)))

    def note(self, start_beat: float, beats: float, pitch: int, velocity: int) -> None:
        start, end = round(start_beat * TICKS), round((start_beat + beats) * TICKS) - 1
        self.events.append((start, mido.Message("note_on", channel=self.channel, note=pitch, velocity=velocity)))
        self.events.append((end, mido.Message("note_off", channel=self.channel, note=pitch, velocity=0)))

    def to_midi(self) -> mido.MidiTrack:
        track, now = mido.MidiTrack(), 0
        for tick, message in sorted(self.events, key=lambda event: (event[0], event[1].type == "note_on")):
            track.append(message.copy(time=tick - now))
            now = tick
        return track


def _melody(rng: random.Random, track: _Track, chords, beats_per_chord: int, low: int, high: int, velocity: int):
    """A stepwise melody over the chords, landing on chord tones on strong beats."""
    pitch = (low + high) // 2
    beat = 0.0
    for chord in chords:
        end = beat + beats_per_chord
        while beat < end:
            length = rng.choice([0.5, 0.5, 1.0, 1.0, 1.5, 2.0])
            length = min(length, end - beat)
            if beat == int(beat):
                pitch = min((tone + 12 * octave for tone in chord for octave in (-1, 0, 1)),
                            key=lambda candidate: abs(candidate - pitch))
            else:
                pitch += rng.choice([-2, -1, 1, 2])
            pitch = max(low, min(high, pitch))
            if rng.random() > 0.1:
                track.note(beat, length, pitch, velocity + rng.randint(-10, 10))
            beat += length


def piano_ballad(rng: random.Random):
    tempo, progression = 76, [0, 4, 5, 3]
    piano = _Track(0, 0)
    bars = int(SECONDS * tempo / 60 / 4) + 1
    chords = [_triad(progression[bar % 4]) for bar in range(bars)]
    for bar, chord in enumerate(chords):
        for step in range(8):  # arpeggio in eighths
            piano.note(bar * 4 + step / 2, 0.5, chord[[0, 1, 2, 1][step % 4]] - 12, 60)
        piano.note(bar * 4, 4, chord[0] - 24, 55)
    _melody(rng, piano, chords, 4, 67, 84, 80)
    return tempo, [piano]


def string_ensemble(rng: random.Random):
    tempo, progression = 66, [5, 3, 0, 4]
    strings, cello = _Track(0, 48), _Track(1, 42)
    bars = int(SECONDS * tempo / 60 / 4) + 1
    chords = [_triad(progression[bar % 4], 55) for bar in range(bars)]
    for bar, chord in enumerate(chords):
        for pitch in chord:
            strings.note(bar * 4, 4, pitch, 70)
        cello.note(bar * 4, 2, chord[0] - 12, 75)
        cello.note(bar * 4 + 2, 2, chord[2] - 24, 70)
    violin = _Track(2, 40)
    _melody(rng, violin, chords, 4, 72, 88, 75)
    return tempo, [strings, cello, violin]


def pop_band(rng: random.Random):
    tempo, progression = 112, [0, 5, 3, 4]
    drums, bass, keys, lead = _Track(9, None), _Track(1, 33), _Track(2, 4), _Track(3, 81)
    bars = int(SECONDS * tempo / 60 / 4) + 1
    chords = [_triad(progression[bar % 4]) for bar in range(bars)]
    for bar, chord in enumerate(chords):
        for step in range(8):
            beat = bar * 4 + step / 2
            drums.note(beat, 0.25, 42, 70)  # closed hi-hat
            if step in (0, 3, 4):
                drums.note(beat, 0.25, 36, 100)  # kick
            if step in (2, 6):
                drums.note(beat, 0.25, 38, 95)  # snare
            bass.note(beat, 0.5, chord[0] - 24, 90)
        for beat in (0, 1.5, 2, 3.5):
            for pitch in chord:
                keys.note(bar * 4 + beat, 0.5, pitch, 65)
    _melody(rng, lead, chords, 4, 69, 86, 85)
    return tempo, [drums, bass, keys, lead]


def jazz_quartet(rng: random.Random):
    # The saxophone is the hardest case for a speech detector: a breathy, voice-like timbre.
    tempo, progression = 132, [1, 4, 0, 5]
    drums, bass, piano, sax = _Track(9, None), _Track(1, 32), _Track(2, 0), _Track(3, 65)
    bars = int(SECONDS * tempo / 60 / 4) + 1
    chords = [_triad(progression[bar % 4]) + [_triad(progression[bar % 4])[0] + 10] for bar in range(bars)]
    for bar, chord in enumerate(chords):
        for beat in range(4):
            drums.note(bar * 4 + beat, 0.3, 51, 75)  # ride
            if beat in (1, 3):
                drums.note(bar * 4 + beat, 0.2, 44, 60)  # pedal hi-hat
                drums.note(bar * 4 + beat + 0.66, 0.2, 51, 60)
            bass.note(bar * 4 + beat, 1, chord[beat % 3] - 24 + rng.choice([0, 0, 2, -1]), 85)
        for beat in (0.66, 2.0):
            for pitch in chord:
                piano.note(bar * 4 + beat, 0.6, pitch - 12, 55)
    _melody(rng, sax, chords, 4, 61, 79, 90)
    return tempo, [drums, bass, piano, sax]


PIECES = {"piano": piano_ballad, "strings": string_ensemble, "pop": pop_band, "jazz": jazz_quartet}


def render(name: str, compose) -> Path:
    tempo, tracks = compose(random.Random(name))
    midi = mido.MidiFile(ticks_per_beat=TICKS)
    meta = mido.MidiTrack([mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(tempo), time=0)])
    midi.tracks.append(meta)
    midi.tracks.extend(track.to_midi() for track in tracks)
    with tempfile.TemporaryDirectory() as scratch:
        midi_path, wav_path = Path(scratch) / f"{name}.mid", Path(scratch) / f"{name}.wav"
        midi.save(midi_path)
        subprocess.run(["fluidsynth", "-ni", "-q", "-r", "16000", "-g", "0.8", "-F", str(wav_path),
                        SOUNDFONT, str(midi_path)], check=True)
        sys.path.insert(0, str(HERE.parent.parent.parent))
        from dwcli.audio import load_audio

        samples = load_audio(wav_path)[: SECONDS * 16000]
    samples = samples / max(1e-6, float(np.abs(samples).max())) * 0.7  # about -3 dBFS peaks
    target = HERE / f"music_{name}.opus"
    _encode_opus(samples, target)
    return target


def _encode_opus(samples: np.ndarray, path: Path) -> None:
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libopus", rate=48000)
        stream.layout, stream.bit_rate = "mono", 24000
        resampler = av.AudioResampler(format="s16", layout="mono", rate=48000)
        frame = av.AudioFrame.from_ndarray((samples * 32767).astype(np.int16)[None, :], format="s16", layout="mono")
        frame.sample_rate = 16000
        for chunk in resampler.resample(frame) + resampler.resample(None):
            for packet in stream.encode(chunk):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


if __name__ == "__main__":
    for piece, composer in PIECES.items():
        print(render(piece, composer))
