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
    folder = _copy(offline_model, tmp_path / "wide", lambda config: config.update(d_model=768))
    with pytest.raises(ValueError, match="shape"):
        network.load(folder)


def test_missing_weights_are_refused(offline_model, tmp_path):
    folder = _copy(offline_model, tmp_path / "deep", lambda config: config.update(decoder_layers=6))
    with pytest.raises(ValueError, match="lacks model.decoder.layers.4"):
        network.load(folder)


def test_a_float16_checkpoint_is_converted_once_and_kept(random_model_dir, tmp_path, monkeypatch):
    """The prepared weights are cached in their final dtype: the second start reads them as
    they are, without the checkpoint or a conversion."""
    from safetensors.torch import load_file, save_file

    monkeypatch.setenv("DW_CACHE_DIR", str(tmp_path / "cache"))
    folder = tmp_path / "half"
    shutil.copytree(random_model_dir, folder)
    tensors = load_file(folder / "model.safetensors")
    save_file({name: tensor.half() for name, tensor in tensors.items()}, folder / "model.safetensors")
    first = network.load(folder)
    [prepared] = (tmp_path / "cache" / "prepared").iterdir()
    assert {tensor.dtype for tensor in load_file(prepared).values()} == {torch.float32}

    monkeypatch.setattr(network, "_state_dict", lambda folder: pytest.fail("read the checkpoint again"))
    second = network.load(folder)
    for (name, a), (_, b) in zip(first.state_dict().items(), second.state_dict().items()):
        assert a.dtype == torch.float32 and torch.equal(a, b), name
    assert torch.equal(second.model.encoder.layers[0].fc1.weight, tensors["model.encoder.layers.0.fc1.weight"].half().float())

    save_file({name: tensor.half() * 2 for name, tensor in tensors.items()}, folder / "model.safetensors")
    monkeypatch.undo()
    monkeypatch.setenv("DW_CACHE_DIR", str(tmp_path / "cache"))
    network.load(folder)  # an updated checkpoint is converted again, and replaces the old copy
    [replaced] = (tmp_path / "cache" / "prepared").iterdir()
    assert replaced != prepared
