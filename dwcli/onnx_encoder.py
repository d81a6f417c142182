"""The Whisper encoder through ONNX Runtime, for CPUs that run it in float32.

Why: on CPUs without native bfloat16, dw's plan runs the encoder in float32, and there
ONNX Runtime's kernels (MLAS) beat PyTorch eager: measured on a 2-core AVX2-only AMD EPYC,
about 300 ms per 30 s window of tiny.en against 400 ms (issue 27); on an AVX-512 Xeon,
where PyTorch's MKL path is strong, the two are level (0.99-1.1x), and PyTorch limited to
AVX2 there (``ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2``) was 1.5x slower
than ONNX Runtime.  Outputs agree to 2e-5; greedy tokens on real speech are identical
(``tests/test_onnx_encoder.py``).

The graph is exported once per checkpoint and library versions, optimised by ONNX Runtime
(its portable ``EXTENDED`` level: fusions, no CPU-specific layouts), checked against the
PyTorch encoder, and kept in dw's cache beside the prepared weights, written through a
temporary name and a rename, so a reader never sees half a file; a damaged copy is built
again, and a read-only cache that holds one is used as it is.  Whatever fails (no ``onnx``
package for the exporter, an operator ONNX Runtime lacks, a full disk, a check that does
not agree) leaves the PyTorch encoder in place, with one note saying why.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import os
import warnings
from pathlib import Path

from .models import cache_dir

EXPORT_FORMAT = 1  # bump when the exported graph changes: older exports are then rebuilt
_OPSET = 17  # LayerNormalization as one operator
_CHECK_TOLERANCE = 1e-3  # the largest difference from PyTorch's encoder states accepted at build time
# (relative where the states exceed 1; measured on random input: 2e-5)
_CHECK_FRAMES = 3000  # the encoder always sees 30 s: 3000 mel frames


class OnnxEncoder:
    """Callable like the PyTorch encoder: (batch, n_mels, 3000) float32 -> (batch, 1500, d_model)."""

    def __init__(self, session, path: Path):
        self.session = session
        self.path = path

    def __call__(self, features):
        import torch

        (states,) = self.session.run(None, {"features": features.detach().float().contiguous().numpy()})
        return torch.from_numpy(states)


def export_path(checkpoint: Path, identity: list[str]) -> Path:
    """Where the export of ``checkpoint`` (named by the weights' ``identity``) is kept, for
    these versions of torch, ONNX Runtime and dw's export."""
    import onnxruntime
    import torch

    family = hashlib.sha256(str(checkpoint.resolve()).encode()).hexdigest()[:8]
    key = [*identity, f"torch {torch.__version__}", f"onnxruntime {onnxruntime.__version__}",
           f"format {EXPORT_FORMAT}", f"opset {_OPSET}"]
    digest = hashlib.sha256("\n".join(key).encode()).hexdigest()[:16]
    return cache_dir() / "onnx" / f"{checkpoint.name}-{family}-encoder-{digest}.onnx"


def _session_options(threads: int, level):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = level
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only: its warnings are not the user's business
    # Its memory pattern (one block planned for every intermediate of a run) held 1.3 GB at
    # 4 windows, against 0.8 GB without it, for the same speed (measured with tiny.en).
    options.enable_mem_pattern = False
    if os.environ.get("OMP_WAIT_POLICY", "").upper() == "PASSIVE":
        # As dw asks of OpenMP (cli._prepare_process): on a shared CPU, idle threads sleep.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


def _session(path: Path, threads: int):
    import onnxruntime

    return onnxruntime.InferenceSession(str(path), _session_options(threads, onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL),
                                        providers=["CPUExecutionProvider"])


def _build(encoder, n_mels: int, target: Path, threads: int) -> None:
    """Export ``encoder``, optimise it, check it against PyTorch, then rename it into place."""
    import numpy as np
    import onnxruntime
    import torch

    target.parent.mkdir(parents=True, exist_ok=True)
    raw = target.with_name(f".{target.name}.{os.getpid()}.raw")
    optimised = target.with_name(f".{target.name}.{os.getpid()}.part")
    try:
        example = torch.randn(1, n_mels, _CHECK_FRAMES, generator=torch.Generator().manual_seed(0))
        with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer warnings
            torch.onnx.export(encoder, (example,), str(raw), input_names=["features"], output_names=["states"],
                              dynamic_axes={"features": {0: "batch"}, "states": {0: "batch"}},
                              opset_version=_OPSET, dynamo=False)
        options = _session_options(threads, onnxruntime.GraphOptimizationLevel.ORT_ENABLE_EXTENDED)
        options.optimized_model_filepath = str(optimised)
        session = onnxruntime.InferenceSession(str(raw), options, providers=["CPUExecutionProvider"])
        with torch.inference_mode():
            expected = encoder(example).numpy()
        (states,) = session.run(None, {"features": example.numpy()})
        difference = float(np.abs(states - expected).max())
        if not difference <= _CHECK_TOLERANCE * max(1.0, float(np.abs(expected).max())):  # relative to large states
            raise ValueError(f"its output differs from PyTorch's by {difference:.2g}")
        optimised.replace(target)
        # Exports of this checkpoint for other versions are not read again.
        family = target.name.rsplit("-", 1)[0] + "-"
        for stale in target.parent.glob(f"{glob.escape(family)}*.onnx"):
            if stale != target:
                stale.unlink(missing_ok=True)
    finally:
        raw.unlink(missing_ok=True)
        optimised.unlink(missing_ok=True)


def load_onnx_encoder(encoder, n_mels: int, checkpoint: Path, identity: list[str],
                      threads: int) -> tuple[OnnxEncoder | None, str | None]:
    """``encoder`` (float32, on the CPU) through ONNX Runtime: (the encoder, None), or
    (None, a note saying why the PyTorch encoder stays)."""
    try:
        path = export_path(checkpoint, identity)
    except ImportError as error:
        return None, f"the encoder runs in PyTorch: ONNX Runtime is unavailable ({error})"
    if path.is_file():
        try:
            return OnnxEncoder(_session(path, threads), path), None
        except Exception:  # damaged (a crash mid-copy, a full disk): build it again below
            with contextlib.suppress(OSError):
                path.unlink()
    try:
        _build(encoder, n_mels, path, threads)
        return OnnxEncoder(_session(path, threads), path), None
    except ImportError as error:
        reason = f"its ONNX export needs the onnx package ({error.name or error})"
    except OSError as error:
        reason = f"its ONNX export could not be kept in {path.parent} ({error.strerror or error})"
    except Exception as error:  # the exporter or ONNX Runtime refused the graph
        reason = f"its ONNX export failed ({type(error).__name__}: {str(error).splitlines()[0][:200] if str(error) else ''})"
    return None, f"the encoder runs in PyTorch: {reason}"
