"""Speculative decoding emits exactly the teacher's greedy tokens, whatever the assistant.

The teacher is the real tiny.en.  Assistants: a copy of it whose decoder keeps only its first
layer, saved and loaded like a real checkpoint (a poor drafter: most proposals are rejected),
the teacher itself (every proposal accepted: long accepted runs, bonus tokens, a proposed end
of text), and a random 2-layer Whisper with its own encoder (the unshared-encoder path).
"""

from __future__ import annotations

import shutil

import pytest
import torch

from conftest import contexts, speech_end_s

from dwcli.audio import load_audio
from dwcli.chunking import split_windows
from dwcli.decoding import DecodingOptions
from dwcli.decoding.greedy import GreedySearch
from dwcli.decoding.runtime import DecoderRuntime
from dwcli.errors import ModelLoadError
from dwcli.features import log_mel_batch
from dwcli.models import ResolvedModel
from dwcli.decoding.speculative import (INITIAL_DRAFT_TOKENS, DraftRuntime, SpeculativeEncoded, SpeculativeSearch,
                                       load_assistant, teacher_states)


def _save_with_tokenizer(model, source, target):
    model.save_pretrained(target)
    for name in ("tokenizer.json", "tokenizer_config.json", "preprocessor_config.json"):
        shutil.copy(source / name, target / name)
    return ResolvedModel(target, str(target))


@pytest.fixture(scope="module")
def one_layer_assistant(tmp_path_factory, offline_model):
    """tiny.en with its decoder cut to the first layer: a checkpoint on disk."""
    from transformers import WhisperForConditionalGeneration

    model = WhisperForConditionalGeneration.from_pretrained(offline_model.path)
    model.model.decoder.layers = model.model.decoder.layers[:1]
    model.config.decoder_layers = 1
    return _save_with_tokenizer(model, offline_model.path, tmp_path_factory.mktemp("tiny-1-layer"))


def _draft_decoder(engine, assistant_model, int8=False):
    generation = engine.model.generation_config
    return DraftRuntime(assistant_model, engine.special, generation.suppress_tokens, generation.begin_suppress_tokens,
                        int8=int8, shared_encoder=engine.model.model.encoder)


@pytest.fixture(scope="module")
def speculative(engine, one_layer_assistant):
    model = load_assistant(one_layer_assistant, engine.model, "cpu", torch.float32)
    return SpeculativeSearch(engine.runtime, _draft_decoder(engine, model, int8=True))


@pytest.fixture(scope="module")
def samples(longform, jfk):
    windows = [window.samples for window in split_windows([load_audio(longform["path"])])]
    return [windows[3], load_audio(jfk["path"])]


@pytest.fixture(scope="module")
def encoded(engine, samples):
    return engine.encode(log_mel_batch(samples, engine.n_mels))


@pytest.fixture(scope="module")
def reference(engine, encoded, samples):
    """The teacher alone on ``samples``, with and without timestamps (computed once)."""
    cache = {}

    def get(timestamps):
        if timestamps not in cache:
            speech_end = [speech_end_s(window) for window in samples] if timestamps else None
            cache[timestamps] = _teacher_alone(engine, encoded, DecodingOptions(timestamps=timestamps), speech_end)
        return cache[timestamps]

    return get


def _teacher_alone(engine, encoded, options, speech_end=None):
    """The teacher's greedy decoding at batch 1, window by window."""
    return [
        engine.greedy.decode(encoded[row : row + 1], options,
                             contexts(None if speech_end is None else [speech_end[row]]))[0]
        for row in range(len(encoded))
    ]


def _assert_same(ours, reference):
    for row, (got, expected) in enumerate(zip(ours, reference)):
        assert got.tokens == expected.tokens, row
        assert got.truncated == expected.truncated, row
        assert got.language == expected.language and got.prompt_length == expected.prompt_length
        assert got.avg_logprob == pytest.approx(expected.avg_logprob, abs=1e-4), row
        assert got.no_speech_prob == pytest.approx(expected.no_speech_prob, abs=1e-5), row


@pytest.mark.parametrize("timestamps", [True, False])
def test_one_layer_assistant_gives_the_teachers_tokens(engine, speculative, samples, reference, timestamps):
    assert speculative.shares_encoder  # the truncated copy kept tiny.en's encoder: encoded once
    options = DecodingOptions(timestamps=timestamps)
    speech_end = [speech_end_s(window) for window in samples] if timestamps else None
    before = (speculative.stats.drafted, speculative.stats.accepted)
    ours = speculative.decode(speculative.encode(log_mel_batch(samples, engine.n_mels)), options,
                              contexts(speech_end))
    _assert_same(ours, reference(timestamps))
    assert "ask not what your country can do for you" in engine.decode_text(ours[-1].tokens).lower()
    drafted, accepted = speculative.stats.drafted - before[0], speculative.stats.accepted - before[1]
    print(f"1-layer assistant, timestamps={timestamps}: {accepted}/{drafted} proposals accepted "
          f"({accepted / drafted:.0%})")
    assert drafted > 0


@pytest.mark.parametrize("timestamps", [True, False])
def test_teacher_as_its_own_assistant_accepts_nearly_everything(engine, encoded, samples, reference, timestamps):
    speculative = SpeculativeSearch(engine.runtime, engine.runtime)
    options = DecodingOptions(timestamps=timestamps)
    speech_end = [speech_end_s(window) for window in samples] if timestamps else None
    _assert_same(speculative.decode(encoded, options, contexts(speech_end)), reference(timestamps))
    stats = speculative.stats
    print(f"teacher as assistant, timestamps={timestamps}: acceptance {stats.acceptance_rate:.0%}, "
          f"{stats.tokens_per_round:.1f} tokens per teacher pass")
    assert stats.acceptance_rate > 0.9 and stats.tokens_per_round > 4
    assert speculative.draft_tokens > INITIAL_DRAFT_TOKENS  # grew while all were accepted


def test_max_new_tokens_truncates_like_the_teacher(engine, speculative, encoded):
    for limit in (1, 9):
        options = DecodingOptions(max_new_tokens=limit)
        ours = speculative.decode(encoded, options)
        _assert_same(ours, _teacher_alone(engine, encoded, options))
        assert all(result.truncated and len(result.tokens) == limit for result in ours)
    own = SpeculativeSearch(engine.runtime, engine.runtime)
    options = DecodingOptions(max_new_tokens=12)
    _assert_same(own.decode(encoded, options), _teacher_alone(engine, encoded, options))


def test_sampling_is_the_teachers(engine, speculative, encoded):
    options = DecodingOptions(max_new_tokens=24)
    rows = [0, 1]
    ours = speculative.decode(SpeculativeEncoded(encoded)[rows], options, temperature=0.6)
    theirs = engine.greedy.decode(encoded[rows], options, temperature=0.6)
    assert [result.tokens for result in ours] == [result.tokens for result in theirs]


def test_encoded_rows_select_like_a_tensor(encoded):
    both = SpeculativeEncoded(encoded, encoded * 2)
    picked = both[[1, 0]]
    assert isinstance(picked, SpeculativeEncoded) and len(picked) == 2 and picked.shape == encoded.shape
    assert torch.equal(picked.assistant, encoded[[1, 0]] * 2)
    assert torch.equal(teacher_states(picked), encoded[[1, 0]]) and teacher_states(encoded) is encoded
    assert len(both[1]) == 1


def test_assistant_with_its_own_encoder(engine, random_model_dir, samples, encoded):
    """A random 2-layer model: another encoder (d_model 64), nearly every proposal wrong."""
    assistant = load_assistant(ResolvedModel(random_model_dir, "random"), engine.model, "cpu", torch.float32)
    speculative = SpeculativeSearch(engine.runtime, _draft_decoder(engine, assistant))
    assert not speculative.shares_encoder
    both = speculative.encode(log_mel_batch(samples[-1:], engine.n_mels))
    assert both.assistant is not None and both.assistant.shape[-1] == 64
    options = DecodingOptions()
    _assert_same(speculative.decode(both, options), _teacher_alone(engine, encoded[-1:], options))
    with pytest.raises(TypeError):
        speculative.decode(both.teacher, options)  # the assistant's states are missing


def test_assistant_must_share_the_vocabulary(engine, tmp_path, offline_model):
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    config = WhisperConfig(vocab_size=1000, d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                           decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64, pad_token_id=0,
                           bos_token_id=1, eos_token_id=2, decoder_start_token_id=3)
    model = WhisperForConditionalGeneration(config)
    resolved = _save_with_tokenizer(model, offline_model.path, tmp_path / "small-vocab")
    with pytest.raises(ModelLoadError, match="vocabulary"):
        load_assistant(resolved, engine.model, "cpu", torch.float32)


def test_forward_of_several_tokens_after_cached_ones(engine, encoded):
    """Verification runs the decoder over several new tokens at a start > 0: it must equal
    feeding them one at a time."""
    decoder: DecoderRuntime = engine.runtime
    tokens = torch.tensor([[decoder.special.start_of_transcript, 50364, 440, 1332, 318, 11, 290, 13]])
    with torch.inference_mode():
        cross = decoder.cross_attention_kv(encoded[:1])
        one_by_one = decoder.new_self_kv(1, 8, encoded)
        expected = torch.cat([decoder.forward(tokens[:, i : i + 1], i, one_by_one, cross) for i in range(8)], dim=1)
        chunked = decoder.new_self_kv(1, 8, encoded)
        first = decoder.forward(tokens[:, :3], 0, chunked, cross)
        rest = decoder.forward(tokens[:, 3:], 3, chunked, cross)
    torch.testing.assert_close(torch.cat([first, rest], dim=1), expected, atol=1e-4, rtol=1e-4)


def test_engine_with_an_assistant(offline_model, one_layer_assistant, samples):
    """Once the engine takes ``assistant=``: what it transcribes (segments, words) is what its
    model alone transcribes."""
    from dwcli.sources import Window
    from dwcli.engine import Engine

    engine = Engine.load(offline_model, "cpu", dtype="float32", quantize="int8", assistant=one_layer_assistant)
    assert isinstance(engine.greedy, SpeculativeSearch) and engine.greedy.shares_encoder
    window = Window(0, 0.0, samples[-1])
    features = log_mel_batch([window.samples], engine.n_mels)
    options = DecodingOptions(word_timestamps=True)
    got = engine.transcribe(features, [window], options)[0]
    speculative, engine.greedy = engine.greedy, GreedySearch(engine.runtime)
    try:
        expected = engine.transcribe(features, [window], options)[0]
    finally:
        engine.greedy = speculative
    assert got.tokens == expected.tokens and got.tokens
    assert [(segment.start, segment.end, segment.text) for segment in got.segments] == \
        [(segment.start, segment.end, segment.text) for segment in expected.segments]
    assert [[(word.start, word.end, word.word) for word in segment.words] for segment in got.segments] == \
        [[(word.start, word.end, word.word) for word in segment.words] for segment in expected.segments]
