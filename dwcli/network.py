"""The Whisper network as plain torch modules, loaded from a transformers checkpoint.

Why not transformers' ``WhisperForConditionalGeneration``: importing it costs about 4 s on a
2-core machine (most of transformers comes with it) against 2 s for torch itself, and dw
needs none of it at run time: ``decoding.runtime`` drives the decoder's layers itself and
only calls the encoder.  These modules hold the same parameters under the same names
(``model.encoder.layers.0.self_attn.q_proj.weight``...), so transformers checkpoints load
as they are, memory-mapped from safetensors, and ``tests/test_network.py`` checks that the
encoder computes what transformers' does and that decoding emits ``generate``'s tokens.
``dw distill`` trains with transformers itself.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
from dataclasses import MISSING, dataclass, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .errors import ModelLoadError
from .models import cache_dir


@dataclass(frozen=True)
class WhisperConfig:
    """The fields of a transformers ``config.json`` that shape the network."""

    vocab_size: int
    num_mel_bins: int
    d_model: int
    encoder_layers: int
    encoder_attention_heads: int
    encoder_ffn_dim: int
    decoder_layers: int
    decoder_attention_heads: int
    decoder_ffn_dim: int
    max_source_positions: int = 1500
    max_target_positions: int = 448
    activation_function: str = "gelu"
    scale_embedding: bool = False

    @classmethod
    def from_file(cls, path: Path) -> WhisperConfig:
        """ValueError, in words, for a config dw cannot build a network from; OSError."""
        data = read_json(path)
        if data.get("model_type", "whisper") != "whisper":
            raise ValueError(f"not a Whisper checkpoint (model_type {data.get('model_type')!r})")
        missing = [field.name for field in fields(cls) if field.default is MISSING and field.name not in data]
        if missing:
            raise ValueError(f"its config.json lacks {', '.join(missing)}")
        values = {field.name: data[field.name] for field in fields(cls) if field.name in data}
        for name, value in values.items():
            sizes = name not in ("activation_function", "scale_embedding")
            if sizes and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
                raise ValueError(f"its config.json has {name} {value!r}, not a positive whole number")
        if values.get("activation_function", "gelu") not in _ACTIVATIONS:
            raise ValueError(f"its config.json has activation_function {values['activation_function']!r}, "
                             f"not one of {', '.join(_ACTIVATIONS)}")
        for heads in ("encoder_attention_heads", "decoder_attention_heads"):
            if values["d_model"] % values[heads]:
                raise ValueError(f"its config.json has d_model {values['d_model']}, not a multiple of {heads} "
                                 f"{values[heads]}")
        return cls(**values)


def read_json(path: Path) -> dict:
    """A checkpoint's JSON file as a dict; ValueError naming the file when it is not one."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ValueError(f"its {path.name} is not UTF-8 text") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"its {path.name} is not JSON ({error})") from None
    if not isinstance(data, dict):
        raise ValueError(f"its {path.name} is not a JSON object")
    return data


def model_config(resolved) -> WhisperConfig:
    """A ``models.ResolvedModel``'s config.json, read (and checked) before its tokenizer and
    weights; ModelLoadError."""
    try:
        return WhisperConfig.from_file(resolved.path / "config.json")
    except (OSError, ValueError) as error:
        raise ModelLoadError(f"cannot load model {resolved.model_id}: {error}") from None


def mel_bins(resolved) -> int:
    """The log-mel bins a model takes (weights not loaded yet: the decoding workers start
    reading with it while the model loads)."""
    return model_config(resolved).num_mel_bins


class GenerationConfig:
    """``generation_config.json`` as attributes (what decoding reads of it)."""

    def __init__(self, data: dict):
        self.__dict__.update(data)

    def __getattr__(self, name):  # an absent field reads as None, as in transformers
        return None

    @classmethod
    def from_file(cls, path: Path) -> GenerationConfig:
        return cls(read_json(path))


_ACTIVATIONS = {"gelu": F.gelu, "relu": F.relu, "gelu_new": lambda x: F.gelu(x, approximate="tanh")}


class Attention(nn.Module):
    def __init__(self, d_model: int, heads: int):
        super().__init__()
        self.num_heads, self.head_dim = heads, d_model // heads
        self.q_proj = nn.Linear(d_model, d_model)
        self.k_proj = nn.Linear(d_model, d_model, bias=False)
        self.v_proj = nn.Linear(d_model, d_model)
        self.out_proj = nn.Linear(d_model, d_model)
        self.kernel = "sdpa"  # or "eager", "flash_attention_2": see set_attention

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Self-attention over the whole sequence (the encoder's; the decoder's runs in
        ``decoding.runtime`` with its caches)."""
        batch, length, width = x.shape
        shape = (batch, length, self.num_heads, self.head_dim)
        query, key, value = self.q_proj(x).view(shape), self.k_proj(x).view(shape), self.v_proj(x).view(shape)
        if self.kernel == "flash_attention_2":
            from flash_attn import flash_attn_func

            context = flash_attn_func(query, key, value)  # (batch, length, heads, head_dim)
        else:
            query, key, value = query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2)
            if self.kernel == "eager":
                weights = ((query * self.head_dim**-0.5) @ key.transpose(-1, -2)).float().softmax(dim=-1)
                context = (weights.to(value.dtype) @ value).transpose(1, 2)
            else:
                context = F.scaled_dot_product_attention(query, key, value).transpose(1, 2)
        return self.out_proj(context.reshape(batch, length, width))


class EncoderLayer(nn.Module):
    def __init__(self, config: WhisperConfig):
        super().__init__()
        self.self_attn = Attention(config.d_model, config.encoder_attention_heads)
        self.self_attn_layer_norm = nn.LayerNorm(config.d_model)
        self.fc1 = nn.Linear(config.d_model, config.encoder_ffn_dim)
        self.fc2 = nn.Linear(config.encoder_ffn_dim, config.d_model)
        self.final_layer_norm = nn.LayerNorm(config.d_model)
        self.activation_fn = _ACTIVATIONS[config.activation_function]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.self_attn_layer_norm(x))
        return x + self.fc2(self.activation_fn(self.fc1(self.final_layer_norm(x))))


class DecoderLayer(nn.Module):
    """Parameters only: ``decoding.runtime`` runs the decoder with its own caches."""

    def __init__(self, config: WhisperConfig):
        super().__init__()
        self.self_attn = Attention(config.d_model, config.decoder_attention_heads)
        self.self_attn_layer_norm = nn.LayerNorm(config.d_model)
        self.encoder_attn = Attention(config.d_model, config.decoder_attention_heads)
        self.encoder_attn_layer_norm = nn.LayerNorm(config.d_model)
        self.fc1 = nn.Linear(config.d_model, config.decoder_ffn_dim)
        self.fc2 = nn.Linear(config.decoder_ffn_dim, config.d_model)
        self.final_layer_norm = nn.LayerNorm(config.d_model)
        self.activation_fn = _ACTIVATIONS[config.activation_function]


class Encoder(nn.Module):
    def __init__(self, config: WhisperConfig):
        super().__init__()
        self.conv1 = nn.Conv1d(config.num_mel_bins, config.d_model, kernel_size=3, padding=1)
        self.conv2 = nn.Conv1d(config.d_model, config.d_model, kernel_size=3, stride=2, padding=1)
        self.embed_positions = nn.Embedding(config.max_source_positions, config.d_model)
        self.layers = nn.ModuleList(EncoderLayer(config) for _ in range(config.encoder_layers))
        self.layer_norm = nn.LayerNorm(config.d_model)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """(batch, n_mels, 3000) log-mel -> (batch, 1500, d_model)."""
        x = F.gelu(self.conv2(F.gelu(self.conv1(features)))).transpose(1, 2)
        x = x + self.embed_positions.weight[: x.shape[1]]
        for layer in self.layers:
            x = layer(x)
        return self.layer_norm(x)


class Decoder(nn.Module):
    def __init__(self, config: WhisperConfig):
        super().__init__()
        self.embed_tokens = nn.Embedding(config.vocab_size, config.d_model)
        self.embed_positions = nn.Embedding(config.max_target_positions, config.d_model)
        self.layers = nn.ModuleList(DecoderLayer(config) for _ in range(config.decoder_layers))
        self.layer_norm = nn.LayerNorm(config.d_model)


class _Body(nn.Module):
    def __init__(self, config: WhisperConfig):
        super().__init__()
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)


class Whisper(nn.Module):
    """The network: ``model.encoder``, ``model.decoder``, ``proj_out`` (tied to the token
    embedding), with its ``config`` and ``generation_config``."""

    def __init__(self, config: WhisperConfig, generation_config: GenerationConfig):
        super().__init__()
        if config.scale_embedding:
            raise ValueError("checkpoints with scale_embedding are not Whisper's")
        self.config = config
        self.generation_config = generation_config
        self.model = _Body(config)
        self.proj_out = nn.Linear(config.d_model, config.vocab_size, bias=False)


def set_attention(network: Whisper, kernel: str) -> None:
    """The encoder's attention kernel: ``sdpa`` (PyTorch's, which picks flash or memory-
    efficient kernels on a GPU itself), ``eager`` (plain matmuls) or ``flash_attention_2``
    (the flash-attn package; 16-bit on Ampere or newer: ``precision`` decides)."""
    for layer in network.model.encoder.layers:
        layer.self_attn.kernel = kernel


def _state_dict(folder: Path) -> dict[str, torch.Tensor]:
    """The checkpoint's tensors: memory-mapped from safetensors (one file or shards), else a
    PyTorch ``.bin`` (weights only)."""
    single = folder / "model.safetensors"
    if single.is_file():
        return _read_safetensors(single)
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = sorted(set(read_json(index)["weight_map"].values()))
        except (KeyError, AttributeError, TypeError):
            raise ValueError(f"its {index.name} has no weight_map of shard files") from None
        tensors: dict[str, torch.Tensor] = {}
        for shard in shards:
            tensors.update(_read_safetensors(folder / shard))
        return tensors
    binary = folder / "pytorch_model.bin"
    if binary.is_file():
        try:
            return torch.load(binary, map_location="cpu", weights_only=True)
        except (OSError, MemoryError):
            raise
        except Exception:  # pickle and torch raise several kinds for a damaged file
            raise ValueError(f"its {binary.name} is damaged (not a PyTorch checkpoint, or cut short)") from None
    raise FileNotFoundError(f"no model.safetensors or pytorch_model.bin in {folder}")


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """A safetensors file's tensors (memory-mapped); ValueError when it is damaged (the
    safetensors package raises its own SafetensorError, an Exception of no common kind)."""
    from safetensors.torch import load_file

    if not path.is_file():
        raise FileNotFoundError(f"{path.name} is missing")
    try:
        return load_file(path)
    except (OSError, MemoryError):
        raise
    except Exception:
        raise ValueError(f"its {path.name} is damaged (not a safetensors file, or cut short)") from None


def _weight_files(folder: Path) -> list[Path]:
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        return [folder / shard for shard in sorted(set(json.loads(index.read_text())["weight_map"].values()))]
    return [path for path in (folder / "model.safetensors", folder / "pytorch_model.bin") if path.is_file()][:1]


def checkpoint_identity(folder: Path) -> list[str]:
    """The weights' identity: the folder, and each weight file's name, size and time, so
    that what is derived from them and cached (prepared weights, the ONNX export) is made
    again when the checkpoint is updated."""
    identity = [str(folder.resolve())]
    for path in _weight_files(folder):
        stat = path.stat()
        identity.append(f"{path.name}:{stat.st_size}:{stat.st_mtime_ns}")
    return identity


def _prepared_path(folder: Path, dtype: torch.dtype) -> Path:
    """Where the checkpoint's tensors converted to ``dtype`` are kept, named by the weights'
    identity (path, size, time), so an updated checkpoint is converted again."""
    identity = checkpoint_identity(folder)
    identity.insert(1, str(dtype))
    digest = hashlib.sha256("\n".join(identity).encode()).hexdigest()[:16]
    return cache_dir() / "prepared" / f"{folder.name}-{str(dtype).removeprefix('torch.')}-{digest}.safetensors"


def _tensors_in(folder: Path, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """The checkpoint's tensors in ``dtype``, converted once and kept on disk in that form: a
    float16 checkpoint (the offline model, distil-large-v3) run in float32 on a CPU is then
    memory-mapped as it is computed with, instead of converted on every start."""
    from safetensors.torch import load_file, save_file

    prepared = _prepared_path(folder, dtype)
    if prepared.is_file():
        try:
            return load_file(prepared)
        except Exception:  # damaged by a crash or a full disk: convert again below
            pass
    tensors = _state_dict(folder)
    if all(tensor.dtype == dtype for tensor in tensors.values() if tensor.is_floating_point()):
        return tensors
    converted = {name: tensor.to(dtype) if tensor.is_floating_point() else tensor for name, tensor in tensors.items()}
    try:
        prepared.parent.mkdir(parents=True, exist_ok=True)
        temporary = prepared.with_name(f".{prepared.name}.{os.getpid()}")
        save_file({name: tensor.contiguous() for name, tensor in converted.items()}, temporary)
        temporary.replace(prepared)
        # An older copy of the same checkpoint (since updated) is not read again.
        family = prepared.name.rsplit("-", 1)[0] + "-"
        for stale in prepared.parent.glob(f"{glob.escape(family)}*.safetensors"):
            if stale != prepared:
                stale.unlink(missing_ok=True)
    except OSError:
        pass  # a read-only or full cache costs the next start another conversion, nothing more
    return converted


@contextlib.contextmanager
def _without_initialisation():
    """Build modules without drawing their initial weights: the checkpoint's replace them,
    and drawing on the meta device goes through torch's compiler stack (2 s to import)."""
    layers = (nn.Linear, nn.Embedding, nn.LayerNorm, nn.Conv1d)
    saved = [layer.reset_parameters for layer in layers]
    for layer in layers:
        layer.reset_parameters = lambda self: None
    try:
        yield
    finally:
        for layer, method in zip(layers, saved):
            layer.reset_parameters = method


def load(folder: Path, dtype: torch.dtype = torch.float32, device: str = "cpu") -> Whisper:
    """The network of a transformers Whisper checkpoint folder, in ``dtype`` on ``device``.

    Raises ValueError (not Whisper, tensors missing or misshapen) or OSError (files)."""
    config = WhisperConfig.from_file(folder / "config.json")
    generation_path = folder / "generation_config.json"
    generation = GenerationConfig.from_file(generation_path) if generation_path.is_file() else GenerationConfig({})
    with torch.device("meta"), _without_initialisation():
        network = Whisper(config, generation)
    tensors = _tensors_in(folder, dtype)
    if "model.decoder.embed_tokens.weight" in tensors:  # the output projection is tied to it
        tensors["proj_out.weight"] = tensors["model.decoder.embed_tokens.weight"]
    expected = network.state_dict()
    missing = sorted(set(expected) - set(tensors))
    if missing:
        raise ValueError(f"the checkpoint lacks {', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}")
    for name, value in expected.items():
        if tensors[name].shape != value.shape:
            raise ValueError(f"{name} has shape {tuple(tensors[name].shape)}, the config implies {tuple(value.shape)}")
    network.load_state_dict({name: tensors[name].to(device=device, dtype=dtype) for name in expected}, assign=True)
    network.proj_out.weight = network.model.decoder.embed_tokens.weight  # tied, as in Whisper
    return network.eval().requires_grad_(False)
