"""CTranslate2 Whisper checkpoints (faster-whisper models) -> transformers checkpoints.

faster-whisper ships Whisper as a CTranslate2 ``model.bin`` plus ``config.json`` and
``tokenizer.json``.  dw runs on transformers, so such a checkpoint is rewritten once into a
``WhisperForConditionalGeneration`` directory.  The binary layout (see shared DESIGN.md):

    u32 version, str name, u32 revision, u32 n_vars,
    n_vars x (str name, u8 rank, u32 dims[rank], u8 dtype, u32 nbytes, bytes),
    u32 n_aliases, n_aliases x (str alias, str target)

where a ``str`` is ``u16 length`` + bytes including a trailing NUL.  CTranslate2 fuses the
self-attention q/k/v projections into ``self_attention/linear_0`` (k has no bias) and the
cross-attention k/v projections into ``attention/linear_1``.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from .errors import ConversionError

# CTranslate2's DataType enum, in its numbering.
_CT2_DTYPES = {
    0: np.float32,
    1: np.int8,
    2: np.int16,
    3: np.int32,
    4: np.float16,
}
_CT2_BFLOAT16 = 5  # no numpy dtype: widened to float32 by hand

# Whisper token ids that are fixed by the tokenizer layout and not stored in model.bin.
_ENGLISH_ONLY_VOCAB_SIZE = 51864


@dataclass(frozen=True)
class CT2Checkpoint:
    """A parsed CTranslate2 model.bin: its spec name and its variables as arrays."""

    spec_name: str
    variables: dict[str, np.ndarray]


def _read_exact(stream: BinaryIO, size: int) -> bytes:
    data = stream.read(size)
    if len(data) != size:
        raise ConversionError("model.bin is truncated")
    return data


def _read_u32(stream: BinaryIO) -> int:
    return struct.unpack("<I", _read_exact(stream, 4))[0]


def _read_str(stream: BinaryIO) -> str:
    (length,) = struct.unpack("<H", _read_exact(stream, 2))
    return _read_exact(stream, length).rstrip(b"\0").decode("utf-8")


def read_ct2_checkpoint(model_bin: Path) -> CT2Checkpoint:
    """Parse a CTranslate2 ``model.bin`` into named numpy arrays (aliases resolved)."""
    variables: dict[str, np.ndarray] = {}
    with open(model_bin, "rb") as stream:
        _read_u32(stream)  # binary format version
        spec_name = _read_str(stream)
        _read_u32(stream)  # spec revision
        for _ in range(_read_u32(stream)):
            name = _read_str(stream)
            rank = _read_exact(stream, 1)[0]
            dims = [_read_u32(stream) for _ in range(rank)]
            dtype_code = _read_exact(stream, 1)[0]
            raw = _read_exact(stream, _read_u32(stream))
            variables[name] = _to_array(raw, dtype_code, dims, name)
        tail = stream.read(4)
        if len(tail) == 4:
            for _ in range(struct.unpack("<I", tail)[0]):
                alias, target = _read_str(stream), _read_str(stream)
                variables[alias] = variables[target]
    return CT2Checkpoint(spec_name, variables)


def _to_array(raw: bytes, dtype_code: int, dims: list[int], name: str) -> np.ndarray:
    if dtype_code == _CT2_BFLOAT16:
        # bfloat16 is the upper half of a float32.
        widened = np.frombuffer(raw, dtype=np.uint16).astype(np.uint32) << 16
        return widened.view(np.float32).reshape(dims)
    if dtype_code not in _CT2_DTYPES:
        raise ConversionError(f"variable {name} has unsupported CTranslate2 dtype {dtype_code}")
    return np.frombuffer(raw, dtype=_CT2_DTYPES[dtype_code]).reshape(dims)


class _WeightReader:
    """Reads CTranslate2 variables as float32 tensors, undoing int8 quantization."""

    def __init__(self, checkpoint: CT2Checkpoint):
        self._vars = checkpoint.variables

    def has(self, name: str) -> bool:
        return name in self._vars

    def scalar(self, name: str) -> int:
        return int(self._vars[name].reshape(-1)[0])

    def get(self, name: str) -> np.ndarray:
        if name not in self._vars:
            raise ConversionError(f"model.bin lacks variable {name}")
        value = self._vars[name]
        scale_name = name + "_scale"
        if value.dtype in (np.int8, np.int16) and scale_name in self._vars:
            # Quantized per output row: weight = q / scale.
            scale = self._vars[scale_name].astype(np.float32)
            return value.astype(np.float32) / scale.reshape(-1, *([1] * (value.ndim - 1)))
        return value.astype(np.float32)


def _linear(reader: _WeightReader, ct2: str, hf: str, out: dict) -> None:
    out[f"{hf}.weight"] = reader.get(f"{ct2}/weight")
    if reader.has(f"{ct2}/bias"):
        out[f"{hf}.bias"] = reader.get(f"{ct2}/bias")


def _layer_norm(reader: _WeightReader, ct2: str, hf: str, out: dict) -> None:
    out[f"{hf}.weight"] = reader.get(f"{ct2}/gamma")
    out[f"{hf}.bias"] = reader.get(f"{ct2}/beta")


def _split_rows(reader: _WeightReader, ct2: str, hf_names: list[str | None], out: dict) -> None:
    """Split a fused projection into equal row blocks; ``None`` names a key projection
    whose bias is dropped (Whisper's k_proj has none)."""
    weights = np.split(reader.get(f"{ct2}/weight"), len(hf_names), axis=0)
    biases = np.split(reader.get(f"{ct2}/bias"), len(hf_names)) if reader.has(f"{ct2}/bias") else None
    for index, hf in enumerate(hf_names):
        key_only = hf.endswith("k_proj")
        out[f"{hf}.weight"] = weights[index]
        if biases is not None and not key_only:
            out[f"{hf}.bias"] = biases[index]


def _layer_count(reader: _WeightReader, prefix: str) -> int:
    count = 0
    while reader.has(f"{prefix}/layer_{count}/ffn/linear_0/weight"):
        count += 1
    return count


def _convert_layer(reader: _WeightReader, ct2: str, hf: str, out: dict, cross: bool) -> None:
    _layer_norm(reader, f"{ct2}/self_attention/layer_norm", f"{hf}.self_attn_layer_norm", out)
    _split_rows(
        reader,
        f"{ct2}/self_attention/linear_0",
        [f"{hf}.self_attn.q_proj", f"{hf}.self_attn.k_proj", f"{hf}.self_attn.v_proj"],
        out,
    )
    _linear(reader, f"{ct2}/self_attention/linear_1", f"{hf}.self_attn.out_proj", out)
    if cross:
        _layer_norm(reader, f"{ct2}/attention/layer_norm", f"{hf}.encoder_attn_layer_norm", out)
        _linear(reader, f"{ct2}/attention/linear_0", f"{hf}.encoder_attn.q_proj", out)
        _split_rows(
            reader,
            f"{ct2}/attention/linear_1",
            [f"{hf}.encoder_attn.k_proj", f"{hf}.encoder_attn.v_proj"],
            out,
        )
        _linear(reader, f"{ct2}/attention/linear_2", f"{hf}.encoder_attn.out_proj", out)
    _layer_norm(reader, f"{ct2}/ffn/layer_norm", f"{hf}.final_layer_norm", out)
    _linear(reader, f"{ct2}/ffn/linear_0", f"{hf}.fc1", out)
    _linear(reader, f"{ct2}/ffn/linear_1", f"{hf}.fc2", out)


def ct2_state_dict(checkpoint: CT2Checkpoint) -> tuple[dict[str, np.ndarray], dict]:
    """Map a CTranslate2 Whisper checkpoint onto transformers' parameter names.

    Returns the state dict and the architecture facts a ``WhisperConfig`` needs.
    """
    if "Whisper" not in checkpoint.spec_name:
        raise ConversionError(f"not a Whisper checkpoint (spec {checkpoint.spec_name})")
    reader = _WeightReader(checkpoint)
    out: dict[str, np.ndarray] = {}
    _linear(reader, "encoder/conv1", "model.encoder.conv1", out)
    _linear(reader, "encoder/conv2", "model.encoder.conv2", out)
    out["model.encoder.embed_positions.weight"] = reader.get("encoder/position_encodings/encodings")
    encoder_layers = _layer_count(reader, "encoder")
    for index in range(encoder_layers):
        _convert_layer(reader, f"encoder/layer_{index}", f"model.encoder.layers.{index}", out, cross=False)
    _layer_norm(reader, "encoder/layer_norm", "model.encoder.layer_norm", out)

    out["model.decoder.embed_tokens.weight"] = reader.get("decoder/embeddings/weight")
    out["model.decoder.embed_positions.weight"] = reader.get("decoder/position_encodings/encodings")
    decoder_layers = _layer_count(reader, "decoder")
    for index in range(decoder_layers):
        _convert_layer(reader, f"decoder/layer_{index}", f"model.decoder.layers.{index}", out, cross=True)
    _layer_norm(reader, "decoder/layer_norm", "model.decoder.layer_norm", out)

    vocab_size, d_model = out["model.decoder.embed_tokens.weight"].shape
    arch = {
        "vocab_size": int(vocab_size),
        "d_model": int(d_model),
        "num_mel_bins": int(out["model.encoder.conv1.weight"].shape[1]),
        "encoder_layers": encoder_layers,
        "decoder_layers": decoder_layers,
        "encoder_attention_heads": reader.scalar("encoder/num_heads"),
        "decoder_attention_heads": reader.scalar("decoder/num_heads"),
        "encoder_ffn_dim": int(out["model.encoder.layers.0.fc1.weight"].shape[0]),
        "decoder_ffn_dim": int(out["model.decoder.layers.0.fc1.weight"].shape[0]),
        "max_source_positions": int(out["model.encoder.embed_positions.weight"].shape[0]),
        "max_target_positions": int(out["model.decoder.embed_positions.weight"].shape[0]),
    }
    return out, arch


@dataclass(frozen=True)
class _SpecialTokens:
    end_of_text: int
    start_of_transcript: int
    translate: int
    transcribe: int
    start_of_prev: int
    no_speech: int
    no_timestamps: int
    languages: dict[str, int]


def _special_tokens(tokenizer_json: Path) -> _SpecialTokens:
    added = {
        token["content"]: token["id"]
        for token in json.loads(tokenizer_json.read_text(encoding="utf-8"))["added_tokens"]
    }
    try:
        no_speech = added.get("<|nospeech|>", added.get("<|nocaptions|>"))
        languages = {
            content[2:-2]: token_id
            for content, token_id in added.items()
            if 2 <= len(content) - 4 <= 3 and content[2:-2].isalpha() and content[2:-2].islower()
        }
        return _SpecialTokens(
            end_of_text=added["<|endoftext|>"],
            start_of_transcript=added["<|startoftranscript|>"],
            translate=added["<|translate|>"],
            transcribe=added["<|transcribe|>"],
            start_of_prev=added["<|startofprev|>"],
            no_speech=no_speech,
            no_timestamps=added["<|notimestamps|>"],
            languages=languages,
        )
    except KeyError as missing:
        raise ConversionError(f"tokenizer.json lacks the special token {missing}") from None


def convert_ct2_checkpoint(source: Path, destination: Path, dtype: str = "float16") -> Path:
    """Convert the CTranslate2 Whisper checkpoint in ``source`` into a transformers
    checkpoint in ``destination`` (created; written to a temp dir, then renamed).

    Example: ``convert_ct2_checkpoint(Path("faster-whisper-tiny.en"), Path("tiny.en-hf"))``
    """
    import shutil
    import tempfile

    import torch
    from transformers import (
        GenerationConfig,
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
        WhisperTokenizerFast,
    )
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()

    source = Path(source)
    for required in ("model.bin", "config.json", "tokenizer.json"):
        if not (source / required).is_file():
            raise ConversionError(f"{source} is not a CTranslate2 Whisper checkpoint: no {required}")
    state, arch = ct2_state_dict(read_ct2_checkpoint(source / "model.bin"))
    ct2_config = json.loads((source / "config.json").read_text(encoding="utf-8"))
    special = _special_tokens(source / "tokenizer.json")
    multilingual = arch["vocab_size"] > _ENGLISH_ONLY_VOCAB_SIZE

    config = WhisperConfig(
        **arch,
        pad_token_id=special.end_of_text,
        bos_token_id=special.end_of_text,
        eos_token_id=special.end_of_text,
        decoder_start_token_id=special.start_of_transcript,
        begin_suppress_tokens=ct2_config.get("suppress_ids_begin", [220, special.end_of_text]),
        suppress_tokens=ct2_config.get("suppress_ids", []),
        tie_word_embeddings=True,
    )
    with torch.device("meta"):
        model = WhisperForConditionalGeneration(config)
    tensors = {name: torch.from_numpy(np.ascontiguousarray(value)) for name, value in state.items()}
    tensors["proj_out.weight"] = tensors["model.decoder.embed_tokens.weight"]
    missing, unexpected = model.load_state_dict(tensors, strict=False, assign=True)
    if unexpected or [name for name in missing if name != "proj_out.weight"]:
        raise ConversionError(f"weights do not fit Whisper: missing {missing}, unexpected {unexpected}")
    model.tie_weights()
    model = model.to(getattr(torch, dtype))

    generation = GenerationConfig(
        decoder_start_token_id=special.start_of_transcript,
        bos_token_id=special.end_of_text,
        eos_token_id=special.end_of_text,
        pad_token_id=special.end_of_text,
        max_length=arch["max_target_positions"],
        no_timestamps_token_id=special.no_timestamps,
        prev_sot_token_id=special.start_of_prev,
        suppress_tokens=ct2_config.get("suppress_ids", []),
        begin_suppress_tokens=ct2_config.get("suppress_ids_begin", [220, special.end_of_text]),
        alignment_heads=ct2_config.get("alignment_heads", []),
        is_multilingual=multilingual,
        max_initial_timestamp_index=50,
        return_timestamps=False,
    )
    if multilingual:
        generation.lang_to_id = {f"<|{code}|>": token for code, token in special.languages.items()}
        generation.task_to_id = {"transcribe": special.transcribe, "translate": special.translate}
    model.generation_config = generation

    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{destination.name}.", dir=destination.parent))
    try:
        model.save_pretrained(staging)
        WhisperFeatureExtractor(feature_size=arch["num_mel_bins"]).save_pretrained(staging)
        # Whisper pads with <|endoftext|>; naming it lets transformers' pipeline batch inputs.
        end_of_text = "<|endoftext|>"
        tokenizer = WhisperTokenizerFast(
            tokenizer_file=str(source / "tokenizer.json"),
            unk_token=end_of_text, bos_token=end_of_text, eos_token=end_of_text, pad_token=end_of_text,
        )
        tokenizer.save_pretrained(staging)
        shutil.copy(source / "tokenizer.json", staging / "tokenizer.json")
        (staging / "dw_source.json").write_text(
            json.dumps({"converted_from": str(source.resolve()), "format": "ctranslate2"}) + "\n"
        )
        if destination.exists():
            shutil.rmtree(destination)
        staging.rename(destination)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return destination
