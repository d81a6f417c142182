"""Log-mel features: what transformers' WhisperFeatureExtractor computes, without it."""

from __future__ import annotations

import numpy as np
import pytest

from dwcli.audio import load_audio
from dwcli.features import log_mel_batch, mel_filters


@pytest.mark.parametrize("n_mels", [80, 128])
def test_the_filter_bank_is_whispers(n_mels):
    from transformers.audio_utils import mel_filter_bank

    expected = mel_filter_bank(num_frequency_bins=201, num_mel_filters=n_mels, min_frequency=0.0, max_frequency=8000,
                               sampling_rate=16000, norm="slaney", mel_scale="slaney")
    np.testing.assert_allclose(mel_filters(n_mels), expected, rtol=1e-5, atol=1e-7)


def test_features_match_the_feature_extractor(jfk):
    from transformers import WhisperFeatureExtractor

    samples = load_audio(jfk["path"])
    expected = WhisperFeatureExtractor(feature_size=80)(samples, sampling_rate=16000, return_tensors="np").input_features
    np.testing.assert_allclose(log_mel_batch([samples], 80).numpy(), expected, atol=2e-4)
