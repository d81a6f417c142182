"""The float32 CPU encoder through ONNX Runtime: the same states and tokens as PyTorch's,
exported once and reused, rebuilt when damaged, and PyTorch with one note when it fails."""

from __future__ import annotations

import pytest
import torch

from dwcli.audio import load_audio
from dwcli.chunking import split_windows
from dwcli.decoding import DecodingOptions
from dwcli.engine import Engine
from dwcli.features import log_mel_batch
from dwcli.onnx_encoder import OnnxEncoder

from conftest import SPEECH


@pytest.fixture
def own_cache(tmp_path, monkeypatch):
    """A model cache of this test's own (the offline model's conversion is copied in by
    resolve_model's cache, the export is not)."""
    monkeypatch.setenv("DW_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def speech_features():
    """Every recording of tests/data/speech, as 30 s windows (the long one cut in several)."""
    windows = []
    for path in sorted(SPEECH.glob("*")):
        if path.suffix in (".wav", ".flac"):
            windows += [window.samples for window in split_windows([load_audio(path)])]
    return log_mel_batch(windows, 80)


@pytest.fixture(scope="module")
def engines(offline_model):
    """The same model with the encoder in PyTorch and through ONNX Runtime (session cache)."""
    return (Engine.load(offline_model, "cpu", dtype="float32", runtime="torch"),
            Engine.load(offline_model, "cpu", dtype="float32", runtime="onnxruntime"))


def test_the_default_cpu_plan_runs_the_encoder_through_onnxruntime_without_avx512(engines, offline_model):
    from dwcli.precision import cpu_has_avx512

    in_torch, through_ort = engines
    assert not isinstance(in_torch.runtime.encoder, OnnxEncoder)
    assert isinstance(through_ort.runtime.encoder, OnnxEncoder) and through_ort.notes == []
    default = Engine.load(offline_model, "cpu", dtype="float32").runtime.encoder
    assert isinstance(default, OnnxEncoder) != cpu_has_avx512()


def test_encoder_states_agree_to_float_noise_and_greedy_tokens_are_identical(engines, speech_features):
    """Float noise, measured: PyTorch's own encoder on AVX2 kernels differs from its AVX-512
    kernels on these windows by up to 1.5e-3 (101 values of 4.6 million above 1e-4, all in
    the long windows); ONNX Runtime differs from PyTorch by up to 2.9e-3 (196 values)."""
    in_torch, through_ort = engines
    expected, states = in_torch.encode(speech_features), through_ort.encode(speech_features)
    difference = (states - expected).abs()
    assert float((difference > 1e-4).float().mean()) < 1e-4  # all but 0.01% of values within 1e-4
    assert float(difference.max()) < 1e-2 and float(difference.mean()) < 1e-5
    for timestamps in (False, True):
        options = DecodingOptions(timestamps=timestamps)
        ours = through_ort.greedy.decode(states, options)
        reference = in_torch.greedy.decode(expected, options)
        assert [window.tokens for window in ours] == [window.tokens for window in reference]
        assert all(len(window.tokens) > 3 for window in ours)  # real speech, real transcripts
        assert max(abs(a.avg_logprob - b.avg_logprob) for a, b in zip(ours, reference)) < 1e-3


def _export_files(cache):
    return sorted((cache / "onnx").glob("*.onnx"))


def test_the_export_is_built_once_then_reused_without_writing(offline_model, own_cache, monkeypatch):
    first = Engine.load(offline_model, "cpu", dtype="float32", runtime="onnxruntime")
    (export,) = _export_files(own_cache)
    assert first.runtime.encoder.path == export
    before = {path.name: path.stat().st_mtime_ns for path in (own_cache / "onnx").iterdir()}

    def no_export(*args, **kwargs):
        raise AssertionError("exported again")

    monkeypatch.setattr(torch.onnx, "export", no_export)
    again = Engine.load(offline_model, "cpu", dtype="float32", runtime="onnxruntime")
    assert isinstance(again.runtime.encoder, OnnxEncoder) and again.notes == []
    assert {path.name: path.stat().st_mtime_ns for path in (own_cache / "onnx").iterdir()} == before


def test_a_damaged_export_is_rebuilt(offline_model, own_cache, jfk):
    Engine.load(offline_model, "cpu", dtype="float32", runtime="onnxruntime")
    (export,) = _export_files(own_cache)
    export.write_bytes(export.read_bytes()[: 1000])  # cut short, as by a full disk
    engine = Engine.load(offline_model, "cpu", dtype="float32", runtime="onnxruntime")
    assert isinstance(engine.runtime.encoder, OnnxEncoder) and engine.notes == []
    assert _export_files(own_cache) == [export] and export.stat().st_size > 1_000_000
    features = log_mel_batch([load_audio(jfk["path"])], 80)
    (decoded,) = engine.greedy.decode(engine.encode(features), DecodingOptions(timestamps=False))
    assert "ask not what your country" in engine.decode_text(decoded.tokens).lower()


@pytest.mark.parametrize(("failure", "note"), [
    (RuntimeError("Exporting the operator 'aten::stft' to ONNX opset version 17 is not supported"),
     "the encoder runs in PyTorch: its ONNX export failed (RuntimeError: Exporting the operator 'aten::stft' to "
     "ONNX opset version 17 is not supported)"),
    (ModuleNotFoundError("No module named 'onnx'", name="onnx"),
     "the encoder runs in PyTorch: its ONNX export needs the onnx package (onnx)"),
], ids=["exporter-refuses", "no-onnx-package"])
def test_a_failed_export_leaves_the_pytorch_encoder_and_one_note(offline_model, own_cache, monkeypatch, jfk,
                                                                 failure, note):
    def refuse(*args, **kwargs):
        raise failure

    monkeypatch.setattr(torch.onnx, "export", refuse)
    engine = Engine.load(offline_model, "cpu", dtype="float32", runtime="onnxruntime")
    assert engine.notes == [note]
    assert engine.runtime.encoder is engine.model.model.encoder
    assert _export_files(own_cache) == [] and list((own_cache / "onnx").iterdir()) == []  # no half-written file
    features = log_mel_batch([load_audio(jfk["path"])], 80)
    (decoded,) = engine.greedy.decode(engine.encode(features), DecodingOptions(timestamps=False))
    assert "ask not what your country" in engine.decode_text(decoded.tokens).lower()


def test_an_export_that_disagrees_with_pytorch_is_not_kept(offline_model, own_cache, monkeypatch):
    from dwcli import onnx_encoder

    monkeypatch.setattr(onnx_encoder, "_CHECK_TOLERANCE", -1.0)  # nothing agrees
    engine = Engine.load(offline_model, "cpu", dtype="float32", runtime="onnxruntime")
    assert len(engine.notes) == 1 and engine.notes[0].startswith(
        "the encoder runs in PyTorch: its ONNX export failed (ValueError: its output differs from PyTorch's by ")
    assert list((own_cache / "onnx").iterdir()) == []


def test_the_cli_says_the_fallback_once_and_transcribes(offline_model, own_cache, monkeypatch, jfk, tmp_path):
    from typer.testing import CliRunner

    from dwcli.cli import app

    def refuse(*args, **kwargs):
        raise RuntimeError("no symbolic function for aten::unfold")

    monkeypatch.setattr(torch.onnx, "export", refuse)
    result = CliRunner().invoke(app, ["transcribe", str(jfk["path"]), "--model", str(offline_model.path),
                                      "--runtime", "onnxruntime", "-o", str(tmp_path / "out")], env={"DW_CACHE_DIR": str(own_cache)})
    assert result.exit_code == 0, result.output
    notes = [line for line in result.stderr.splitlines() if "encoder" in line]
    assert notes == ["dw: note: the encoder runs in PyTorch: its ONNX export failed "
                     "(RuntimeError: no symbolic function for aten::unfold)"]
    assert "Traceback" not in result.stderr
    assert "ask not what your country" in (tmp_path / "out" / "jfk.txt").read_text().lower()
