"""Multilingual checkpoints (distil-large-v3 is one): language detection and the
language/task prompt, against transformers' own generate on a random-weight multilingual
Whisper.  Plumbing only: no offline multilingual weights exist to test transcription."""

from __future__ import annotations

import shutil

import pytest
import torch

from dwcli.audio import load_audio
from dwcli.decoding import DecodingOptions
from dwcli.engine import Engine
from dwcli.features import log_mel_batch
from dwcli.models import ResolvedModel

# The multilingual vocabulary's layout (openai-whisper's tokenizer).
END_OF_TEXT, START_OF_TRANSCRIPT, FIRST_LANGUAGE = 50257, 50258, 50259
TRANSLATE, TRANSCRIBE, NO_TIMESTAMPS = 50358, 50359, 50363


@pytest.fixture(scope="module")
def multilingual_dir(tmp_path_factory, offline_model, tokenizer_files):
    from transformers import GenerationConfig, WhisperConfig, WhisperForConditionalGeneration
    from transformers.models.whisper.tokenization_whisper import LANGUAGES

    torch.manual_seed(0)
    config = WhisperConfig(
        vocab_size=51865, num_mel_bins=80, d_model=64, encoder_layers=1, decoder_layers=2,
        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=128, decoder_ffn_dim=128,
        max_source_positions=1500, max_target_positions=448, pad_token_id=END_OF_TEXT,
        bos_token_id=END_OF_TEXT, eos_token_id=END_OF_TEXT, decoder_start_token_id=START_OF_TRANSCRIPT,
    )
    model = WhisperForConditionalGeneration(config).eval()
    english = GenerationConfig.from_pretrained(offline_model.path)
    model.generation_config = GenerationConfig(
        decoder_start_token_id=START_OF_TRANSCRIPT, eos_token_id=END_OF_TEXT, pad_token_id=END_OF_TEXT,
        bos_token_id=END_OF_TEXT, no_timestamps_token_id=NO_TIMESTAMPS, prev_sot_token_id=50361,
        is_multilingual=True, max_initial_timestamp_index=50, max_length=448,
        # large-v2's 99 languages: every one but Cantonese, which large-v3 added.
        lang_to_id={f"<|{code}|>": FIRST_LANGUAGE + index for index, code in enumerate(LANGUAGES) if code != "yue"},
        task_to_id={"translate": TRANSLATE, "transcribe": TRANSCRIBE},
        # tiny.en's text-token list; its ids from 50256 up name other tokens in this vocabulary
        # (50257 is the end of text here), so the control tokens are listed anew.
        suppress_tokens=[token for token in english.suppress_tokens if token < END_OF_TEXT - 1]
        + [START_OF_TRANSCRIPT, TRANSLATE, TRANSCRIBE, 50360, 50361, 50362],
        begin_suppress_tokens=[220, END_OF_TEXT],
    )
    target = tmp_path_factory.mktemp("random-multilingual-whisper")
    model.save_pretrained(target)
    shutil.copy(offline_model.path / "preprocessor_config.json", target)
    shutil.copy(tokenizer_files["v2"], target)  # large-v2's vocabulary (tiny.en's has other ids)
    return target


@pytest.fixture(scope="module")
def multilingual_engine(multilingual_dir) -> Engine:
    return Engine.load(ResolvedModel(multilingual_dir, "random-multilingual"), "cpu", dtype="float32")


@pytest.fixture(scope="module")
def multilingual_reference(multilingual_dir):
    from conftest import transformers_whisper

    return transformers_whisper(multilingual_dir)


@pytest.fixture(scope="module")
def features(multilingual_engine, speech):
    clips = [load_audio(speech[name]["path"]) for name in ("jfk.flac", "2412-153948-0000.flac")]
    return log_mel_batch(clips, multilingual_engine.n_mels)


def test_language_detection_matches_transformers(multilingual_engine, multilingual_reference, features):
    engine = multilingual_engine
    with torch.inference_mode():
        encoded = engine.encode(features)
        ours = engine.runtime.detect_language(engine.runtime.cross_attention_kv(encoded), len(features), encoded)
        theirs = multilingual_reference.detect_language(features)
    code_of = {token: code for code, token in engine.special.languages.items()}
    assert ours == [code_of[token] for token in theirs.tolist()]
    options = DecodingOptions(max_new_tokens=5)  # no --language: each window's own
    assert [window.language for window in engine.greedy.decode(encoded, options)] == ours
    beams = engine.beam_search.decode(encoded, DecodingOptions(max_new_tokens=5, beam_size=2))
    assert [window.language for window in beams] == ours


@pytest.mark.parametrize("task, timestamps, beams", [
    ("transcribe", True, 1), ("translate", False, 1), ("transcribe", False, 3),
])
def test_language_and_task_prompt_decodes_as_generate(multilingual_engine, multilingual_reference, features, task,
                                                      timestamps, beams):
    engine = multilingual_engine
    options = DecodingOptions(language="fr", task=task, timestamps=timestamps, beam_size=beams, max_new_tokens=20)
    encoded = engine.encode(features)
    decoder = engine.beam_search if beams > 1 else engine.greedy
    ours = decoder.decode(encoded, options)
    with torch.inference_mode():
        reference = multilingual_reference.generate(features, language="fr", task=task, return_timestamps=timestamps,
                                                    num_beams=beams, max_new_tokens=20)
    assert engine.special.languages["fr"] == FIRST_LANGUAGE + 6  # en zh de es ru ko fr
    prompt = [START_OF_TRANSCRIPT, engine.special.languages["fr"],
              TRANSLATE if task == "translate" else TRANSCRIBE] + ([] if timestamps else [NO_TIMESTAMPS])
    for row, decoded in enumerate(ours):
        assert decoded.language == "fr" and decoded.prompt_length == len(prompt)
        expected = [token for token in reference[row].tolist() if token != END_OF_TEXT]
        if expected[: len(prompt)] == prompt:  # whether generate returns the prompt depends on its path
            expected = expected[len(prompt):]
        compared = decoded.tokens
        if timestamps and decoded.truncated:
            # A pass cut off by the token limit: generate() keeps it up to its last pair of
            # timestamps and decodes on from there (its long-form seek), so compare that far.
            begin = engine.special.timestamp_begin
            pairs = [index for index in range(1, len(compared))
                     if compared[index] >= begin and compared[index - 1] >= begin]
            compared = compared[: pairs[-1] + 1]
        assert len(compared) > 2 and compared == expected[: len(compared)], row


def test_detected_language_reaches_the_json_output(multilingual_engine, multilingual_dir, jfk, dw_env):
    """Plumbing end to end (random weights: the text is noise): with no --language each
    window's detected language is the transcript's; with one, it is that language."""
    import json
    import subprocess

    model_dir = str(multilingual_dir)
    with torch.inference_mode():
        features = log_mel_batch([load_audio(jfk["path"])], multilingual_engine.n_mels)
        encoded = multilingual_engine.encode(features)
        (detected,) = multilingual_engine.runtime.detect_language(
            multilingual_engine.runtime.cross_attention_kv(encoded), 1, encoded)
    for extra, language in (([], detected), (["--language", "German", "--task", "translate"], "de")):
        result = subprocess.run(
            ["dw", "transcribe", str(jfk["path"]), "--model", model_dir, "--format", "json", "--stdout",
             "--temperature", "0", *extra], env=dw_env, capture_output=True, timeout=300)
        assert result.returncode == 0, result.stderr.decode()
        data = json.loads(result.stdout)
        assert data["language"] == language and data["options"]["task"] == (extra[-1] if extra else "transcribe")


def test_a_language_the_model_lacks_is_a_usage_error(multilingual_dir, jfk, dw_env):
    import subprocess

    result = subprocess.run(["dw", "transcribe", str(jfk["path"]), "--model", str(multilingual_dir), "--stdout",
                             "--language", "cantonese"], env=dw_env, capture_output=True, timeout=300)
    assert result.returncode == 2
    assert result.stderr.decode() == f"Error: --language yue: not one of {multilingual_dir}'s languages\n"
