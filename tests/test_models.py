"""Model resolution: the default model falls back to the offline one, and a hub that was found
unreachable is not probed again on every run."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from dwcli import models

DATA = Path(__file__).parent / "data"


@pytest.fixture
def probes(monkeypatch, tmp_path, offline_model):
    """Count the network probes ``_from_hub`` would make (none is made: they all fail)."""
    monkeypatch.setenv("DW_CACHE_DIR", str(tmp_path))
    calls: list[tuple[str, bool]] = []

    def from_hub(repo_id: str, probe: bool = True):
        calls.append((repo_id, probe))
        raise models.ModelLoadError(f"cannot load model {repo_id}: not cached")

    monkeypatch.setattr(models, "_from_hub", from_hub)
    monkeypatch.setattr(models, "convert_cached", lambda source: offline_model.path)
    return calls


def test_an_unreachable_default_is_remembered_for_a_day(probes):
    first = models.resolve_model(None, "cpu")
    assert first.model_id == models.OFFLINE_MODEL
    assert first.note == (f"{models.DEFAULT_CPU_MODEL} is not cached and cannot be downloaded; "
                          f"using the offline model {models.OFFLINE_MODEL}")
    second = models.resolve_model(None, "cpu")
    assert probes == [(models.DEFAULT_CPU_MODEL, True), (models.DEFAULT_CPU_MODEL, False)]
    assert "could not be downloaded last time (not tried again before " in second.note
    assert f"--model {models.DEFAULT_CPU_MODEL} tries now" in second.note


def test_the_memory_expires_and_is_per_model(probes, monkeypatch):
    models.resolve_model(None, "cpu")
    real_time = time.time
    monkeypatch.setattr(models.time, "time", lambda: real_time() + models.UNREACHABLE_FOR_S + 1)
    models.resolve_model(None, "cpu")
    models.resolve_model(None, "cuda")
    assert probes == [(models.DEFAULT_CPU_MODEL, True), (models.DEFAULT_CPU_MODEL, True),
                      (models.DEFAULT_GPU_MODEL, True)]


def test_a_damaged_memory_is_ignored(probes, tmp_path):
    (tmp_path / "hub-unreachable.json").write_text("{not json")
    models.resolve_model(None, "cpu")
    assert probes == [(models.DEFAULT_CPU_MODEL, True)]


def _hub_snapshot(cache, repo_id: str, files=("config.json", "tokenizer.json", "model.safetensors")):
    """A hub cache entry in huggingface_hub's documented layout."""
    folder = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = folder / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text("0123abcd")
    for name in files:
        (snapshot / name).write_text("{}")
    return snapshot


def test_a_cached_hub_model_is_found_without_the_hub_client(monkeypatch, tmp_path):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    snapshot = _hub_snapshot(tmp_path, "org/whole")
    _hub_snapshot(tmp_path, "org/partial", files=("config.json", "model.safetensors"))
    assert models._from_hub("org/whole", probe=False) == snapshot
    for repo_id in ("org/partial", "org/absent"):
        with pytest.raises(models.ModelLoadError, match=f"^cannot load model {repo_id}: not cached$"):
            models._from_hub(repo_id, probe=False)


def test_a_remembered_unreachable_default_does_not_import_the_hub_client(dw_env, tmp_path):
    """The start-up path of a run on the offline model stays off huggingface_hub's client
    (0.1-0.2 s to import)."""
    import subprocess
    import sys

    memory = tmp_path / "hub-unreachable.json"  # not the session cache's: other tests probe
    script = (f"import sys, pathlib; from dwcli import models; models._unreachable_path = lambda: pathlib.Path({str(memory)!r}); "
              "models._remember_unreachable(models.DEFAULT_CPU_MODEL); "
              "resolved = models.resolve_model(None, 'cpu'); "
              "print(resolved.model_id, 'huggingface_hub.hf_api' in sys.modules)")
    env = {**dw_env, "HF_HUB_CACHE": str(tmp_path / "hub")}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [models.OFFLINE_MODEL, "False"]


def _hub_listing(name: str) -> dict[str, str]:
    """A repository's file list (path -> size as the hub shows it), from tests/data/models."""
    rows = (DATA / "models" / name).read_text().splitlines()
    return dict(row.split("\t") for row in rows if row and not row.startswith("#"))


def test_a_hub_download_fetches_one_weight_format():
    """distil-large-v3's repository (its real file list) holds the weights four times over:
    float16 safetensors, float32 safetensors, Flax and ONNX; dw fetches the configs, the
    tokenizer and the float16 safetensors it loads: 1.51 GB of the 12.5 GB (the patterns before
    this fetched both safetensors copies, 4.54 GB)."""
    from huggingface_hub.utils import filter_repo_objects

    listing = _hub_listing("distil-large-v3.hub-files.tsv")
    fetched = sorted(filter_repo_objects(list(listing), allow_patterns=models.hub_patterns(list(listing))))
    assert fetched == ["config.json", "generation_config.json", "model.safetensors", "preprocessor_config.json",
                       "tokenizer.json"]
    assert {name: listing[name] for name in fetched if name.endswith(".safetensors")} == {"model.safetensors": "1.51 GB"}
    other_weights = [name for name in listing if name.endswith((".msgpack", ".onnx", ".onnx_data", ".bin"))
                     or name == "model.fp32.safetensors"]
    assert len(other_weights) == 11 and not set(other_weights) & set(fetched)


@pytest.mark.parametrize("weights, expected", [
    # openai/whisper-large-v3's layout: a single file, and float32 shards beside it.
    (["model.safetensors", "model.safetensors.index.fp32.json", "model.fp32-00001-of-00002.safetensors",
      "model.fp32-00002-of-00002.safetensors", "pytorch_model.bin"], ["model.safetensors"]),
    (["model.safetensors.index.json", "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors",
      "pytorch_model.bin", "onnx/model-00001-of-00002.safetensors"],
     ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors", "model.safetensors.index.json"]),
    (["pytorch_model.bin", "tf_model.h5", "flax_model.msgpack"], ["pytorch_model.bin"]),
])
def test_the_weights_fetched_are_the_first_format_dw_loads(weights, expected):
    """One format: a single safetensors file, else safetensors shards, else a PyTorch file
    (what network reads, in its order)."""
    from huggingface_hub.utils import filter_repo_objects

    listing = ["config.json", "generation_config.json", "preprocessor_config.json", "tokenizer.json", *weights]
    fetched = sorted(set(filter_repo_objects(listing, allow_patterns=models.hub_patterns(listing))) - set(listing[:4]))
    assert fetched == expected
