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


@lru_cache(maxsize=4)
def mel_filters(n_mels: int) -> np.ndarray:
    """Slaney-style mel filter bank, shape (n_fft // 2 + 1, n_mels), as Whisper uses."""
    from transformers.audio_utils import mel_filter_bank

    return mel_filter_bank(
        num_frequency_bins=1 + N_FFT // 2,
        num_mel_filters=n_mels,
        min_frequency=0.0,
        max_frequency=SAMPLE_RATE / 2,
        sampling_rate=SAMPLE_RATE,
        norm="slaney",
        mel_scale="slaney",
    ).astype(np.float32)


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
