"""Model resolution: the default model falls back to the offline one, and a hub that was found
unreachable is not probed again on every run."""

from __future__ import annotations

import time

import pytest

from dwcli import models


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
