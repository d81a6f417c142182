"""More training audio from little: speed perturbation, added noise, reverberation.

Each augmentation is named by a short spec (``speed0.9``, ``noise15``, ``reverb0.4``, or
``clean``) and is deterministic: the same recording and spec always give the same samples,
so labels cached on disk stay valid and a resumed run sees the same data.
"""

from __future__ import annotations

import hashlib

import numpy as np

from ..audio import SAMPLE_RATE



def _rng(name: str, spec: str) -> np.random.Generator:
    seed = int.from_bytes(hashlib.sha256(f"{name}|{spec}".encode()).digest()[:8], "little")
    return np.random.default_rng(seed)


def _speed(samples: np.ndarray, factor: float) -> np.ndarray:
    """Played ``factor`` times faster (tempo and pitch together, as Kaldi's speed
    perturbation): the samples are read as if recorded at 16 kHz x factor and resampled
    back to 16 kHz by FFmpeg's resampler."""
    import av

    resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
    frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples, np.float32)[None, :], format="flt", layout="mono")
    frame.sample_rate = round(SAMPLE_RATE * factor)
    out = [chunk.to_ndarray().reshape(-1) for chunk in resampler.resample(frame) + resampler.resample(None)]
    return np.concatenate(out) if out else np.zeros(0, np.float32)


def _pink(count: int, rng: np.random.Generator) -> np.ndarray:
    spectrum = np.fft.rfft(rng.standard_normal(count))
    frequencies = np.fft.rfftfreq(count, 1 / SAMPLE_RATE)
    spectrum[1:] /= np.sqrt(frequencies[1:])
    spectrum[0] = 0
    return np.fft.irfft(spectrum, count)


def _noise(samples: np.ndarray, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    """Room-like (pink) noise added at ``snr_db`` below the speech."""
    noise = _pink(len(samples), rng)
    speech_power = float(np.mean(samples.astype(np.float64) ** 2)) or 1e-10
    noise *= np.sqrt(speech_power / (10 ** (snr_db / 10)) / (float(np.mean(noise**2)) or 1e-10))
    return np.clip(samples + noise, -1, 1).astype(np.float32)


def _reverb(samples: np.ndarray, rt60_s: float, rng: np.random.Generator) -> np.ndarray:
    """A room of reverberation time ``rt60_s``: an impulse response of exponentially decaying
    noise after the direct sound, convolved in the frequency domain."""
    length = int(rt60_s * SAMPLE_RATE)
    decay = np.exp(-6.9 * np.arange(length) / length)  # -60 dB at rt60
    response = rng.standard_normal(length) * decay * 0.3
    response[0] = 1.0
    size = len(samples) + length - 1
    wet = np.fft.irfft(np.fft.rfft(samples, size) * np.fft.rfft(response, size), size)[: len(samples)]
    peak = np.abs(wet).max() or 1.0
    return (wet * min(1.0, np.abs(samples).max() / peak)).astype(np.float32)


def parse(spec: str) -> tuple[str, float]:
    """``"speed0.9"`` -> ("speed", 0.9); ValueError for a spec dw does not know."""
    for kind in ("speed", "noise", "reverb"):
        if spec.startswith(kind):
            value = float(spec[len(kind):])
            if kind == "speed" and not 0.5 <= value <= 2.0:
                raise ValueError(f"{spec}: a speed factor between 0.5 and 2")
            if kind == "reverb" and not 0.05 <= value <= 3.0:
                raise ValueError(f"{spec}: a reverberation time between 0.05 and 3 s")
            return kind, value
    if spec == "clean":
        return "clean", 0.0
    raise ValueError(f"{spec}: expected clean, speed<factor>, noise<SNR dB> or reverb<RT60 s>")


def augment(samples: np.ndarray, spec: str, name: str) -> np.ndarray:
    """``samples`` (16 kHz mono) changed by ``spec``; ``name`` (the recording) seeds the noise."""
    kind, value = parse(spec)
    if kind == "clean":
        return samples
    if kind == "speed":
        return _speed(samples, value)
    rng = _rng(name, spec)
    return _noise(samples, value, rng) if kind == "noise" else _reverb(samples, value, rng)
