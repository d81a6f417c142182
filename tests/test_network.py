"""dw's own Whisper modules compute what transformers' do, from the same checkpoint."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from dwcli import network
from dwcli.audio import load_audio
from dwcli.features import log_mel_batch


@pytest.fixture(scope="module")
def transformers_model(reference_model):
    return reference_model


@pytest.mark.parametrize("kernel", ["sdpa", "eager"])
def test_the_encoder_computes_what_transformers_computes(offline_model, transformers_model, jfk, kernel):
    ours = network.load(offline_model.path)
    network.set_attention(ours, kernel)
    features = log_mel_batch([load_audio(jfk["path"])], ours.config.num_mel_bins)
    with torch.inference_mode():
        expected = transformers_model.model.encoder(features).last_hidden_state
        got = ours.model.encoder(features)
    torch.testing.assert_close(got, expected, atol=2e-4, rtol=1e-4)


def test_every_parameter_is_the_checkpoints(offline_model, transformers_model):
    ours = network.load(offline_model.path).state_dict()
    theirs = transformers_model.state_dict()
    assert set(ours) == set(theirs)
    assert all(torch.equal(ours[name], theirs[name]) for name in ours)
    loaded = network.load(offline_model.path)
    assert loaded.proj_out.weight is loaded.model.decoder.embed_tokens.weight  # tied


def _copy(offline_model, target, edit=None):
    shutil.copytree(offline_model.path, target)
    if edit:
        config = json.loads((target / "config.json").read_text())
        edit(config)
        (target / "config.json").write_text(json.dumps(config))
    return target


def test_a_checkpoint_that_is_not_whispers_is_refused(offline_model, tmp_path):
    folder = _copy(offline_model, tmp_path / "bert", lambda config: config.update(model_type="bert"))
    with pytest.raises(ValueError, match="not a Whisper checkpoint"):
        network.load(folder)


def test_a_config_that_does_not_fit_the_weights_is_refused(offline_model, tmp_path):
    folder = _copy(offline_model, tmp_path / "wide", lambda config: config.update(d_model=512))
    with pytest.raises(ValueError, match="shape"):
        network.load(folder)


def test_missing_weights_are_refused(offline_model, tmp_path):
    folder = _copy(offline_model, tmp_path / "deep", lambda config: config.update(decoder_layers=6))
    with pytest.raises(ValueError, match="lacks model.decoder.layers.4"):
        network.load(folder)
