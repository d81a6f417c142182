"""Whisper's real tokenizers, built offline from the BPE ranks openai-whisper ships.

openai-whisper's package holds ``whisper/assets/gpt2.tiktoken`` (the English-only models'
GPT-2 vocabulary) and ``multilingual.tiktoken`` (every multilingual model's).  A Whisper
vocabulary is those ranks followed by its control tokens, in openai-whisper's order
(``whisper/tokenizer.py`` ``get_encoding``): <|endoftext|>, <|startoftranscript|>, one token
per language, <|translate|>, <|transcribe|>, <|startoflm|>, <|startofprev|>, <|nospeech|>,
<|notimestamps|>, then the 1501 timestamps <|0.00|> ... <|30.00|>.  English-only models and
large-v2 have 99 languages, large-v3 100 (<|yue|> last), which moves every token after the
languages one id later.  The ranks become a tokenizers BPE (vocabulary and merges) through
transformers' ``TikTokenConverter``, with GPT-2's byte-level pre-tokenizer, whose regular
expression is the one openai-whisper splits text with.

openai-whisper is installed without its dependencies (``pip install --no-deps``): only its
asset files are read, and its own requirements (numba, triton, an unpinned torch) are not
wanted here.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from dwcli.languages import LANGUAGES

TIMESTAMPS = 1501  # <|0.00|> ... <|30.00|>, 20 ms apart
ENGLISH_ONLY_LANGUAGES = 99  # the GPT-2 vocabulary's, and large-v2's
V3_LANGUAGES = 100  # large-v3 added <|yue|>


def assets() -> Path:
    """openai-whisper's asset folder, found without importing the package (its __init__
    imports numba, which is not installed)."""
    spec = importlib.util.find_spec("whisper")
    folder = Path(next(iter(spec.submodule_search_locations or []), "")) / "assets" if spec else None
    if folder is None or not (folder / "multilingual.tiktoken").is_file():
        raise RuntimeError("openai-whisper's tokenizer files are missing: "
                           "pip install --no-deps openai-whisper==20250625")
    return folder


def control_tokens(num_languages: int) -> list[str]:
    """Whisper's control tokens after the BPE ranks, in their id order."""
    return [
        "<|endoftext|>", "<|startoftranscript|>",
        *[f"<|{code}|>" for code in list(LANGUAGES)[:num_languages]],
        "<|translate|>", "<|transcribe|>", "<|startoflm|>", "<|startofprev|>", "<|nospeech|>", "<|notimestamps|>",
        *[f"<|{index * 0.02:.2f}|>" for index in range(TIMESTAMPS)],
    ]


def build_tokenizer(name: str, num_languages: int):
    """The tokenizers ``Tokenizer`` of openai-whisper's ``name`` vocabulary ("gpt2" or
    "multilingual") with ``num_languages`` language tokens."""
    from tokenizers import AddedToken, Tokenizer, decoders, pre_tokenizers
    from tokenizers.models import BPE
    from transformers.convert_slow_tokenizer import TikTokenConverter

    ranks_file = assets() / f"{name}.tiktoken"
    vocab, merges = TikTokenConverter(vocab_file=str(ranks_file)).extract_vocab_merges_from_model(str(ranks_file))
    tokenizer = Tokenizer(BPE(vocab, merges, fuse_unk=False))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    # gpt2.tiktoken has no <|endoftext|> among its ranks (it is the first control token);
    # multilingual.tiktoken's last rank is one more byte sequence, so its ids start a token later.
    first = len(vocab)
    tokens = control_tokens(num_languages)
    tokenizer.add_special_tokens([AddedToken(token, normalized=False, special=True) for token in tokens])
    for offset, token in enumerate(tokens):
        assert tokenizer.token_to_id(token) == first + offset, token
    return tokenizer


def write_tokenizers(folder: Path) -> dict[str, Path]:
    """tokenizer.json of the English-only ("english"), large-v2's ("v2") and large-v3's ("v3")
    vocabulary, written into ``folder``."""
    paths = {}
    for key, name, languages in (("english", "gpt2", ENGLISH_ONLY_LANGUAGES), ("v2", "multilingual", 99),
                                 ("v3", "multilingual", V3_LANGUAGES)):
        path = folder / key / "tokenizer.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        build_tokenizer(name, languages).save(str(path))
        paths[key] = path
    return paths
