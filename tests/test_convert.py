"""The CTranslate2 -> transformers conversion reproduces the original model.

Reference computed another way: CTranslate2 itself (the engine faster-whisper runs) on the
very checkpoint dw converted, fed the same log-mel features.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from dwcli.audio import load_audio
from dwcli.convert import read_ct2_checkpoint
from dwcli.decoding import DecodingOptions
from dwcli.errors import ConversionError
from dwcli.features import log_mel_batch
from dwcli.models import offline_model_source

ctranslate2 = pytest.importorskip("ctranslate2")


@pytest.fixture(scope="module")
def ct2_model():
    return ctranslate2.models.Whisper(str(offline_model_source()), device="cpu", compute_type="float32")


@pytest.fixture(scope="module")
def clips(speech, longform):
    names = ["jfk.flac", "2412-153948-0000.flac", "1995-1837-0001.wav"]
    return [load_audio(speech[name]["path"]) for name in names] + [load_audio(longform["path"])[: 16000 * 30]]


def test_encoder_output_matches_ctranslate2(engine, ct2_model, clips):
    features = log_mel_batch(clips[:2], engine.n_mels)
    ours = engine.encode(features).numpy()
    theirs = np.array(ct2_model.encode(ctranslate2.StorageView.from_array(features.numpy())))
    # Weights are float16 in both; only summation order differs.
    assert np.abs(ours - theirs).max() < 2e-2
    assert np.abs(ours - theirs).mean() < 1e-3


def test_greedy_transcript_matches_ctranslate2(engine, ct2_model, clips):
    features = log_mel_batch(clips, engine.n_mels)
    special = engine.special
    ours = engine.greedy.decode(engine.encode(features), DecodingOptions(timestamps=False))
    prompt = [special.start_of_transcript, special.no_timestamps]
    theirs = ct2_model.generate(
        ctranslate2.StorageView.from_array(features.numpy()), [prompt] * len(clips),
        beam_size=1, max_length=224 + len(prompt), suppress_blank=True,
    )
    for decoded, result in zip(ours, theirs):
        assert engine.decode_text(decoded.tokens) == engine.decode_text(result.sequences_ids[0])


def test_converted_checkpoint_is_a_complete_transformers_model(offline_model):
    config = json.loads((offline_model.path / "config.json").read_text())
    assert config["d_model"] == 384 and config["encoder_layers"] == 4 and config["decoder_layers"] == 4
    generation = json.loads((offline_model.path / "generation_config.json").read_text())
    assert generation["alignment_heads"] == [[1, 0], [2, 0], [2, 5], [3, 0], [3, 1], [3, 2], [3, 3], [3, 4]]
    assert generation["no_timestamps_token_id"] == 50362
    assert generation["is_multilingual"] is False


def test_reader_rejects_truncated_file(tmp_path):
    source = offline_model_source() / "model.bin"
    truncated = tmp_path / "model.bin"
    truncated.write_bytes(source.read_bytes()[:5000])
    with pytest.raises(ConversionError, match="truncated"):
        read_ct2_checkpoint(truncated)


def test_models_convert_command(tmp_path):
    from typer.testing import CliRunner

    from dwcli.cli import app

    result = CliRunner().invoke(app, ["models", "convert", str(offline_model_source()), str(tmp_path / "hf")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "hf" / "model.safetensors").is_file()
    missing = CliRunner().invoke(app, ["models", "convert", str(tmp_path), str(tmp_path / "x")])
    assert missing.exit_code == 3
    assert f"Error: {tmp_path} is not a CTranslate2 Whisper checkpoint: no model.bin" in missing.output
