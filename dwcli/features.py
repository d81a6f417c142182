"""Audio window -> Whisper log-mel features (the encoder's input).

Matches ``transformers.WhisperFeatureExtractor`` numerically (the same filter bank, STFT and
normalisation) but runs in torch on a whole batch at once, which is several times faster
than the numpy path and lets DataLoader workers do it while the model runs.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from .audio import SAMPLE_RATE

WINDOW_SECONDS = 30  # Whisper's encoder always sees 30 s of audio
WINDOW_SAMPLES = WINDOW_SECONDS * SAMPLE_RATE  # 480000 samples
N_FFT = 400  # 25 ms analysis window
HOP_SAMPLES = 160  # 10 ms between frames -> 3000 frames per window
FRAMES_PER_WINDOW = WINDOW_SAMPLES // HOP_SAMPLES  # 3000
_LOG_DYNAMIC_RANGE = 8.0  # log10 units kept below the loudest bin (80 dB)


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney's mel scale: linear below 1 kHz, logarithmic above."""
    hz = np.asarray(hz, dtype=np.float64)
    linear = hz * 3.0 / 200.0
    return np.where(hz >= 1000.0, 15.0 + np.log(np.maximum(hz, 1e-10) / 1000.0) * 27.0 / np.log(6.4), linear)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    return np.where(mel >= 15.0, 1000.0 * np.exp(np.log(6.4) / 27.0 * (mel - 15.0)), 200.0 * mel / 3.0)


@lru_cache(maxsize=4)
def mel_filters(n_mels: int) -> np.ndarray:
    """Slaney-style mel filter bank, shape (n_fft // 2 + 1, n_mels), as Whisper (and
    librosa's ``filters.mel(norm="slaney")``) makes it: triangles between mel-spaced
    centres, each scaled to unit area.  Computed here rather than by transformers, whose
    import alone takes a second (``tests/test_features.py`` checks the two agree)."""
    bins = np.linspace(0.0, SAMPLE_RATE / 2, 1 + N_FFT // 2)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(0.0), _hz_to_mel(SAMPLE_RATE / 2), n_mels + 2))
    widths = np.diff(edges)
    slopes = edges[:, None] - bins[None, :]  # (n_mels + 2, bins)
    rising = -slopes[:-2] / widths[:-1, None]
    falling = slopes[2:] / widths[1:, None]
    triangles = np.maximum(0.0, np.minimum(rising, falling))
    triangles *= (2.0 / (edges[2:] - edges[:-2]))[:, None]  # slaney normalisation: unit area
    return triangles.T.astype(np.float32)


def log_mel(samples: np.ndarray, n_mels: int):
    """Log-mel features of one window (zero-padded to 30 s): tensor (n_mels, 3000)."""
    return log_mel_batch([samples], n_mels)[0]


def log_mel_batch(windows: list[np.ndarray], n_mels: int):
    """Log-mel features of several windows, each zero-padded to 30 s: (B, n_mels, 3000)."""
    import torch

    batch = torch.zeros(len(windows), WINDOW_SAMPLES, dtype=torch.float32)
    for row, samples in enumerate(windows):
        length = min(len(samples), WINDOW_SAMPLES)
        batch[row, :length] = torch.from_numpy(np.ascontiguousarray(samples[:length], dtype=np.float32))
    spectrum = torch.stft(
        batch, N_FFT, HOP_SAMPLES, window=torch.hann_window(N_FFT), return_complex=True
    )
    power = spectrum[..., :-1].abs() ** 2  # drop the extra frame stft's centring adds
    filters = torch.from_numpy(mel_filters(n_mels))
    mel = filters.T @ power
    log_spec = torch.clamp(mel, min=1e-10).log10()
    # Whisper normalises each window against its own loudest value.
    peak = log_spec.amax(dim=(1, 2), keepdim=True)
    log_spec = torch.maximum(log_spec, peak - _LOG_DYNAMIC_RANGE)
    return (log_spec + 4.0) / 4.0
