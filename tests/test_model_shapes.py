"""The models dw's users run, in their published shapes, against transformers.

distil-large-v3 (dw's default on a GPU), distil-medium.en and distil-small.en (the default on
a CPU) are built from their repositories' own config.json and generation_config.json
(tests/data/models, SOURCES.md there) with random weights, and given the real tokenizer of
their vocabulary, built from openai-whisper's BPE ranks (tests/whisper_vocab.py).  On real
speech (JFK), dw must emit transformers' ``generate()`` tokens one for one, detect the same
language, translate with the same prompt, use the ids the checkpoint gives its control
tokens (large-v3's sit one later than large-v2's), compute the checkpoint's features, and
time words with the checkpoint's own alignment heads, or say that it cannot.

Random weights produce noise: equality is the point, not the text.

Shrunk, and only this: the encoders keep 2 of their layers (32, 24 and 12 published).  A
full-depth encoder pass costs 2.2, 1.1 and 0.34 TFLOP on 2 CPU cores (about 40 s, 20 s and 6 s
each, and both dw and transformers run it), and encoder layers are all alike: 2 of them test
the stacking.  Widths, heads, feed-forward sizes, mel bins, vocabularies, decoder layers
(which the alignment heads index) and every generation setting are the published ones.
Decoding stops at ``MAX_NEW_TOKENS``: each step reads the 51,866 x 1280 output projection,
and generate() spends about 0.1 s a step on its logits processors over that vocabulary.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from dwcli.audio import load_audio
from dwcli.chunking import Window
from dwcli.decoding import DecodingOptions
from dwcli.engine import Engine
from dwcli.features import log_mel_batch
from dwcli.models import ResolvedModel

MODELS = Path(__file__).parent / "data" / "models"
ENCODER_LAYERS = 2  # of 32 (large-v3), 24 (medium.en), 12 (small.en): see the module docstring
MAX_NEW_TOKENS = 24
VOCABULARY = {"distil-large-v3": "v3", "distil-medium.en": "english", "distil-small.en": "english"}
TIMESTAMPS = 1501  # <|0.00|> ... <|30.00|>, the last tokens of every Whisper vocabulary


@dataclass
class Shape:
    """One published shape, built: its checkpoint folder, dw's engine and transformers' model
    on it, and the JFK clip's features, encoded by each."""

    name: str
    folder: Path
    published: dict  # the repository's config.json
    generation: dict  # the repository's generation_config.json
    engine: Engine
    reference: object  # transformers' WhisperForConditionalGeneration
    features: torch.Tensor
    encoded: torch.Tensor  # dw's encoder output
    reference_encoded: torch.Tensor  # transformers'


def write_checkpoint(name: str, target: Path, tokenizer: Path) -> Path:
    """The published shape ``name`` with random weights (safetensors), its repository's
    configs as they are (the encoder's depth aside), and its vocabulary's tokenizer."""
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    published = json.loads((MODELS / name / "config.json").read_text())
    config = {**published, "encoder_layers": ENCODER_LAYERS, "num_hidden_layers": ENCODER_LAYERS}
    torch.manual_seed(0)
    model = WhisperForConditionalGeneration(WhisperConfig.from_dict(config))
    with torch.no_grad():
        # The timestamps' embeddings (the last 1501 tokens; the output projection is tied to
        # them) are halved, so that the model writes no timestamp after <|notimestamps|>, as a
        # trained one does not: random weights did (medium.en), and then generate() takes the
        # pair for a segment's end and decodes the window again from it (its seek), while dw
        # and openai-whisper read on.  With timestamps the rules still force them: together
        # they outweigh any text token.
        model.model.decoder.embed_tokens.weight[-TIMESTAMPS:] *= 0.5
    model.save_pretrained(target)
    (target / "config.json").write_text(json.dumps(config, indent=2))
    for side_file in ("generation_config.json", "preprocessor_config.json"):
        shutil.copy(MODELS / name / side_file, target / side_file)
    shutil.copy(tokenizer, target / "tokenizer.json")
    return target


@pytest.fixture(scope="module", params=list(VOCABULARY))
def shape(request, tmp_path_factory, tokenizer_files, jfk) -> Shape:
    """Each shape in turn (module scope: one checkpoint in memory at a time)."""
    from transformers import WhisperForConditionalGeneration

    name = request.param
    folder = write_checkpoint(name, tmp_path_factory.mktemp(name), tokenizer_files[VOCABULARY[name]])
    engine = Engine.load(ResolvedModel(folder, name), "cpu", dtype="float32")
    reference = WhisperForConditionalGeneration.from_pretrained(folder, dtype=torch.float32).eval()
    features = log_mel_batch([load_audio(jfk["path"])], engine.n_mels)
    with torch.inference_mode():
        encoded = engine.encode(features)
        reference_encoded = reference.model.encoder(features).last_hidden_state
    return Shape(name, folder, json.loads((MODELS / name / "config.json").read_text()),
                 json.loads((MODELS / name / "generation_config.json").read_text()), engine, reference, features,
                 encoded, reference_encoded)


def test_the_network_has_the_published_shape(shape):
    config, published = shape.engine.model.config, shape.published
    for field in ("vocab_size", "num_mel_bins", "d_model", "decoder_layers", "encoder_attention_heads",
                  "decoder_attention_heads", "encoder_ffn_dim", "decoder_ffn_dim", "max_source_positions",
                  "max_target_positions"):
        assert getattr(config, field) == published[field], field
    assert config.encoder_layers == ENCODER_LAYERS
    assert shape.engine.tokenizer.get_vocab_size() == published["vocab_size"]
    assert len(shape.engine.model.model.decoder.layers) == published["decoder_layers"]
    torch.testing.assert_close(shape.encoded, shape.reference_encoded, atol=3e-4, rtol=1e-4)


def test_features_are_the_checkpoints_feature_extractors(shape, jfk):
    """128 mel bins for large-v3, 80 for the others, as each preprocessor_config.json says."""
    import numpy as np
    from transformers import WhisperFeatureExtractor

    extractor = WhisperFeatureExtractor.from_pretrained(MODELS / shape.name)
    assert extractor.feature_size == shape.engine.n_mels == shape.published["num_mel_bins"]
    expected = extractor(load_audio(jfk["path"]), sampling_rate=16000, return_tensors="np").input_features
    np.testing.assert_allclose(shape.features.numpy(), expected, atol=2e-4)


def test_control_tokens_are_the_checkpoints(shape):
    """Every id dw decodes with is the one the checkpoint's tokenizer gives that token."""
    special, token_id = shape.engine.special, shape.engine.tokenizer.token_to_id
    assert special.end_of_text == token_id("<|endoftext|>")
    assert special.start_of_transcript == token_id("<|startoftranscript|>")
    assert special.start_of_previous == token_id("<|startofprev|>")
    assert special.no_speech == token_id("<|nospeech|>")
    assert special.no_timestamps == token_id("<|notimestamps|>")
    assert special.timestamp_begin == token_id("<|0.00|>")
    assert token_id("<|30.00|>") == shape.published["vocab_size"] - 1  # the last token
    if VOCABULARY[shape.name] == "english":
        assert not special.languages and special.end_of_text == 50256 and special.timestamp_begin == 50363
        return
    assert special.translate == token_id("<|translate|>") and special.transcribe == token_id("<|transcribe|>")
    assert len(special.languages) == 100
    assert all(special.languages[code] == token_id(f"<|{code}|>") for code in special.languages)
    # large-v3 added Cantonese after the 99 languages of large-v2: every control token after
    # the languages sits one id later than large-v2's (translate 50358, ... <|0.00|> 50364).
    assert special.languages["en"] == 50259 and special.languages["yue"] == 50358
    assert (special.translate, special.transcribe, special.start_of_previous, special.no_speech,
            special.no_timestamps, special.timestamp_begin) == (50359, 50360, 50362, 50363, 50364, 50365)


def _generate(shape: Shape, **options) -> list[int]:
    """transformers' generate() on the clip (given its own encoder's output unless it must
    detect the language itself, which wants the features), prompt and end of text removed."""
    from transformers.modeling_outputs import BaseModelOutput

    audio = ({"input_features": shape.features} if shape.engine.special.multilingual and "language" not in options
             else {"encoder_outputs": BaseModelOutput(last_hidden_state=shape.reference_encoded)})
    with torch.inference_mode():
        (row,) = shape.reference.generate(**audio, max_new_tokens=MAX_NEW_TOKENS, **options).tolist()
    return [token for token in row if token != shape.engine.special.end_of_text]


def _assert_same_tokens(shape: Shape, decoded, expected: list[int], options: DecodingOptions) -> None:
    prompt = shape.engine.runtime.prompt_tokens(decoded.language, options)
    if expected[: len(prompt)] == prompt:  # whether generate returns the prompt depends on its path
        expected = expected[len(prompt):]
    compared = decoded.tokens
    if options.timestamps:
        # A pass cut off by the token limit: generate() keeps it up to its last pair of
        # timestamps and decodes on from there (its long-form seek), so compare that far.
        begin = shape.engine.special.timestamp_begin
        pairs = [index for index in range(1, len(compared)) if min(compared[index - 1], compared[index]) >= begin]
        compared = compared[: pairs[-1] + 1]
        # Random weights' timestamps run to 30 s within a few segments; at least three are compared.
        assert len(compared) >= 10 and sum(token >= begin for token in compared) >= 6
    else:
        assert len(compared) == MAX_NEW_TOKENS
    assert compared == expected[: len(compared)]


@pytest.mark.parametrize("timestamps", [True, False])
def test_greedy_tokens_are_generates(shape, timestamps):
    """With no --language, a multilingual model detects it first, in both."""
    options = DecodingOptions(timestamps=timestamps, max_new_tokens=MAX_NEW_TOKENS)
    (decoded,) = shape.engine.greedy.decode(shape.encoded, options)
    assert decoded.truncated  # random weights never end: the whole budget was decoded
    generate_options = {"return_timestamps": timestamps}
    if shape.engine.special.multilingual and not timestamps:
        generate_options["language"] = decoded.language  # detection is compared with timestamps
    _assert_same_tokens(shape, decoded, _generate(shape, **generate_options), options)


def test_language_detection_and_translation_are_generates(shape):
    if not shape.engine.special.multilingual:
        pytest.skip("English-only: no language tokens, no translation")
    from transformers.modeling_outputs import BaseModelOutput

    engine = shape.engine
    with torch.inference_mode():
        (ours,) = engine.runtime.detect_language(engine.runtime.cross_attention_kv(shape.encoded), 1, shape.encoded)
        (theirs,) = shape.reference.detect_language(
            encoder_outputs=BaseModelOutput(last_hidden_state=shape.reference_encoded)).tolist()
    assert engine.special.languages[ours] == theirs
    options = DecodingOptions(task="translate", timestamps=False, max_new_tokens=MAX_NEW_TOKENS)
    (decoded,) = engine.greedy.decode(shape.encoded, options)
    assert decoded.language == ours
    assert engine.runtime.prompt_tokens(ours, options) == [50258, theirs, 50359, 50364]  # sot, language, translate
    _assert_same_tokens(shape, decoded, _generate(shape, language=ours, task="translate"), options)


def test_word_timestamps_use_the_checkpoints_alignment_heads(shape, dw_env, jfk, tmp_path):
    """distil-large-v3 and distil-small.en list heads of their own decoder; distil-medium.en
    lists its teacher's (layers 11-21 of medium.en), which its 2-layer decoder lacks: dw
    refuses --word-timestamps for it before loading any weights, in one line."""
    heads = shape.generation["alignment_heads"]
    if shape.name == "distil-medium.en":
        assert shape.engine.aligner is None
        weightless = tmp_path / "weightless"
        weightless.mkdir()
        for name in ("config.json", "generation_config.json", "tokenizer.json"):
            shutil.copy(shape.folder / name, weightless / name)
        done = subprocess.run(["dw", "transcribe", str(jfk["path"]), "--model", str(weightless), "--stdout",
                               "--word-timestamps"], env=dw_env, capture_output=True, text=True, timeout=120)
        assert (done.returncode, done.stdout) == (2, "")
        assert done.stderr == (f"Error: --word-timestamps: {weightless} cannot time words: its alignment heads "
                               "(generation_config.json) name decoder layer 11 head 4, but its decoder has 2 layers "
                               "of 16 heads\n")
        return
    assert shape.engine.aligner.heads == [tuple(pair) for pair in heads]
    samples = load_audio(jfk["path"])
    options = DecodingOptions(word_timestamps=True, temperatures=(0.0,), max_new_tokens=MAX_NEW_TOKENS)
    (result,) = shape.engine.transcribe(shape.features, [Window(0, 0.0, samples)], options, encoded=shape.encoded)
    words = [word for segment in result.segments for word in segment.words]
    assert result.segments and all(segment.words for segment in result.segments)
    assert all(segment.start <= word.start <= word.end <= segment.end
               for segment in result.segments for word in segment.words)
    assert [word.start for word in words] == sorted(word.start for word in words)


def test_a_checkpoint_without_alignment_heads_cannot_time_words(tokenizer_files, dw_env, jfk, tmp_path):
    """No heads listed: --word-timestamps is refused in one line before any weights load (this
    folder has none), rather than guessed heads timing words silently."""
    folder = tmp_path / "no-heads"
    folder.mkdir()
    shutil.copy(MODELS / "distil-small.en" / "config.json", folder)
    generation = json.loads((MODELS / "distil-small.en" / "generation_config.json").read_text())
    del generation["alignment_heads"]
    (folder / "generation_config.json").write_text(json.dumps(generation))
    shutil.copy(tokenizer_files["english"], folder)
    done = subprocess.run(["dw", "transcribe", str(jfk["path"]), "--model", str(folder), "--stdout",
                           "--highlight-words", "--format", "vtt"], env=dw_env, capture_output=True, text=True,
                          timeout=120)
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == (f"Error: --word-timestamps: {folder} cannot time words: its generation_config.json lists "
                           "no alignment heads (the cross-attention heads that time words)\n")


def test_the_english_vocabulary_is_tiny_en_s(tokenizer_files, offline_model):
    """The GPT-2 tokenizer built from openai-whisper's ranks encodes text as the real tiny.en
    tokenizer.json does, and gives its control tokens the same ids (tiny.en's calls
    <|nospeech|> <|nocaptions|>, an older name)."""
    from tokenizers import Tokenizer

    ours = Tokenizer.from_file(str(tokenizer_files["english"]))
    real = Tokenizer.from_file(str(offline_model.path / "tokenizer.json"))
    text = " And so, my fellow Americans: ask not what your country can do for you — naïve café, 1961."
    assert ours.encode(text, add_special_tokens=False).ids == real.encode(text, add_special_tokens=False).ids
    for token in ("<|endoftext|>", "<|startoftranscript|>", "<|en|>", "<|su|>", "<|translate|>", "<|transcribe|>",
                  "<|startofprev|>", "<|notimestamps|>"):
        assert ours.token_to_id(token) == real.token_to_id(token), token
    assert ours.token_to_id("<|nospeech|>") == real.token_to_id("<|nocaptions|>") == 50361


def test_control_tokens_the_generation_config_does_not_name_come_from_the_tokenizer(tokenizer_files):
    """A generation config that names only the tokens generate() needs: <|startofprev|>,
    <|nospeech|> (or <|nocaptions|>) and <|0.00|> are the tokenizer's."""
    from tokenizers import Tokenizer

    from dwcli.decoding import SpecialTokens
    from dwcli.network import GenerationConfig

    generation = GenerationConfig({"eos_token_id": 50257, "decoder_start_token_id": 50258,
                                   "no_timestamps_token_id": 50364})
    v3 = Tokenizer.from_file(str(tokenizer_files["v3"]))
    special = SpecialTokens.from_generation_config(generation, v3.token_to_id)
    assert (special.start_of_previous, special.no_speech, special.timestamp_begin) == (50362, 50363, 50365)
    older_names = {"<|nocaptions|>": 50363, "<|notimestamps|>": 50364}.get
    assert SpecialTokens.from_generation_config(generation, older_names).no_speech == 50363
