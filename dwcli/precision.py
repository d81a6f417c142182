"""One precision plan per device: which dtype each part of the model computes in.

``plan_precision`` is the one place that decides, from the user's ``--dtype``,
``--quantize`` and ``--attention`` and from what the device can do (an ``Accelerator``,
read once per device, or made up by a test), the dtype the weights load in, whether the
encoder runs under autocast, the width of the copies the decoder reads at every step (the
output projection and cross-attention keys and values), which Linear layers run in dynamic
int8, and the encoder's attention kernel.  The engine builds itself from the plan, the
``--skip-existing`` record stores its ``recipe``, and each ``--devices`` replica gets the
plan of its own device.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, replace

from .errors import UsageError

DTYPES = {"float32": "float32", "fp32": "float32", "float16": "float16", "fp16": "float16",
          "bfloat16": "bfloat16", "bf16": "bfloat16"}
AMPERE = (8, 0)  # the first CUDA generation with native bfloat16 and flash-attention 2


@dataclass(frozen=True)
class Accelerator:
    """What the precision of a device depends on."""

    device: str  # "cpu", "cuda:0", "mps"
    cpu_bfloat16: bool = False  # the CPU multiplies bfloat16 natively (AVX512-BF16 or AMX)
    cpu_avx512: bool = False  # the CPU has AVX-512 (PyTorch's float32 kernels are then as fast as ONNX Runtime's)
    cuda_capability: tuple[int, int] | None = None  # (major, minor) of this very GPU
    flash_attn: bool = False  # the flash-attn package imports

    @property
    def cuda(self) -> bool:
        return self.device.startswith("cuda")


def _flash_attn_imports() -> bool:
    """Whether flash-attn is installed and loads: a broken build (CUDA mismatch) must fall
    back to SDPA, not end the run."""
    if importlib.util.find_spec("flash_attn") is None:
        return False
    try:
        import flash_attn  # noqa: F401
    except Exception:  # ImportError, OSError from its CUDA extension, ...
        return False
    return True


_NATIVE_BFLOAT16_FLAGS = ("avx512_bf16", "amx_bf16")  # /proc/cpuinfo's names of the instructions


def _cpu_flags(cpuinfo: str | None) -> set[str] | None:
    """The CPU's feature flags from /proc/cpuinfo (``cpuinfo``: its text, for tests); None
    where there is no such file."""
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as stream:
                cpuinfo = stream.read()
        except OSError:
            return None
    flags = set()
    for line in cpuinfo.splitlines():
        if line.startswith(("flags", "Features")):
            flags.update(line.split(":", 1)[-1].split())
    return flags


def cpu_has_avx512(cpuinfo: str | None = None) -> bool:
    """Whether this CPU has AVX-512 (avx512f)."""
    flags = _cpu_flags(cpuinfo)
    if flags is not None:
        return "avx512f" in flags
    import torch

    return bool(getattr(torch.backends.cpu, "get_cpu_capability", lambda: "")().startswith("AVX512"))


def cpu_multiplies_bfloat16(cpuinfo: str | None = None) -> bool:
    """Whether this CPU has bfloat16 instructions (AVX512-BF16 or AMX; Arm's BF16).

    Not oneDNN's ``_is_mkldnn_bf16_supported``: that is true on every AVX-512 CPU, where
    oneDNN emulates bfloat16, and emulated it is slower than float32 (measured on an
    AVX-512 Xeon without AVX512-BF16: the tiny.en encoder 2.3x slower under bfloat16
    autocast).  ``cpuinfo``: /proc/cpuinfo's text (tests); elsewhere torch's CPU probes."""
    flags = _cpu_flags(cpuinfo)
    if flags is not None:
        return any(flag in flags for flag in _NATIVE_BFLOAT16_FLAGS) or "bf16" in flags
    import torch

    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, probe, lambda: False)()) for probe in probes)


def describe(device: str) -> Accelerator:
    """Read what ``device`` can do (imports torch)."""
    import torch

    if device == "cpu":
        return Accelerator("cpu", cpu_bfloat16=cpu_multiplies_bfloat16(), cpu_avx512=cpu_has_avx512())
    if device.startswith("cuda"):
        index = int(device.split(":", 1)[1]) if ":" in device else torch.cuda.current_device()
        return Accelerator(f"cuda:{index}", cuda_capability=tuple(torch.cuda.get_device_capability(index)),
                           flash_attn=_flash_attn_imports())
    return Accelerator(device)


@dataclass(frozen=True)
class PrecisionPlan:
    """How one device runs the model."""

    device: str
    weights: str  # the dtype the weights are loaded in
    encoder_autocast: str | None = None  # the encoder's matmuls under autocast to this dtype
    projection: str | None = None  # the copies the decoder reads every step; None: the weights' dtype
    decoder: str | None = None  # the decoder's own dtype where it differs from the weights'
    int8: tuple[str, ...] = ()  # "encoder", "decoder": their Linear layers in dynamic int8
    draft_int8: bool = False  # an assistant's decoder and projection in int8 (drafts need not be exact)
    attention: str = "sdpa"  # the encoder's attention kernel: sdpa, eager or flash_attention_2
    encoder_runtime: str = "torch"  # or "onnxruntime": the float32 CPU encoder through ONNX Runtime

    @property
    def compute_dtype(self) -> str:
        """The dtype the encoder's output (and the decoder's input) has."""
        return self.decoder or self.weights

    def recipe(self) -> dict:
        """What of the plan changes a transcript (``--skip-existing`` compares it; the attention
        kernel and the encoder's runtime compute the same function, so they do not count)."""
        return {"weights": self.weights, "encoder_autocast": self.encoder_autocast, "projection": self.projection,
                "decoder": self.decoder, "int8": list(self.int8)}


def _dtype(requested: str) -> str:
    if requested not in DTYPES:
        raise UsageError(f"--dtype {requested}: expected auto, float32, float16 or bfloat16")
    return DTYPES[requested]


RUNTIMES = ("auto", "torch", "onnxruntime")


def check_requests(dtype: str, quantize: str, attention: str, runtime: str = "auto") -> None:
    """UsageError for a ``--dtype``, ``--quantize``, ``--attention`` or ``--runtime`` dw does
    not know (what a device can do is checked by ``plan_precision``)."""
    if runtime not in RUNTIMES:
        raise UsageError(f"--runtime {runtime}: expected auto, torch or onnxruntime")
    if dtype != "auto":
        _dtype(dtype)
    if quantize not in ("auto", "none", "int8"):
        raise UsageError(f"--quantize {quantize}: expected auto, none or int8")
    if attention not in ("auto", "sdpa", "eager", "flash_attention_2"):
        raise UsageError(f"--attention {attention}: expected auto, sdpa, eager or flash_attention_2")


def plan_precision(accelerator: Accelerator, dtype: str = "auto", quantize: str = "auto",
                   attention: str = "auto", assistant: bool = False, runtime: str = "auto") -> PrecisionPlan:
    """The plan for one device.  Raises UsageError for what the device cannot do.

    CPU, ``auto``: float32 throughout.  Measured on real speech (RESULTS.md): int8 Linear
    layers lost 0.3 to 1.4 WER points and made a transcript depend on the other windows of
    its batch (one activation scale per batch), for little speed; bfloat16 autocast is kept
    to CPUs that multiply bfloat16 natively and to an explicit ``--dtype bfloat16``.
    CUDA, ``auto``: bfloat16 on GPUs that have it natively (Ampere and newer), else float16;
    flash-attention 2 for the encoder when flash-attn loads, the GPU is Ampere or newer and
    the dtype is 16-bit, else PyTorch's SDPA.  With an ``assistant``, the decoder stays
    float32, so that checking several drafted tokens at once gives exactly the tokens the
    model alone would emit.  ``runtime``: the CPU encoder in float32 runs through ONNX Runtime
    (``onnxruntime``; see onnx_encoder.py) or PyTorch (``torch``); ``auto`` picks ONNX Runtime
    where the CPU lacks AVX-512 (measured: PyTorch's AVX2 kernels 1.33-1.49x slower than ONNX
    Runtime's for tiny.en's encoder) and PyTorch where it has it (level, 0.9-1.1x, without the
    session's 0.3 s and half a GB).  Every other encoder (autocast, int8, any GPU) runs in PyTorch.
    """
    check_requests(dtype, quantize, attention, runtime)
    plan = _plan_dtypes(accelerator, dtype, quantize, attention, assistant)
    float32_cpu_encoder = plan.device == "cpu" and plan.encoder_autocast is None and "encoder" not in plan.int8
    if runtime == "onnxruntime" and not float32_cpu_encoder:
        raise UsageError(f"--runtime onnxruntime runs the float32 encoder on a CPU only ({plan.device}: "
                         f"{plan.encoder_autocast or ('int8' if plan.int8 else plan.weights)})")
    if float32_cpu_encoder and (runtime == "onnxruntime" or (runtime == "auto" and not accelerator.cpu_avx512)):
        return replace(plan, encoder_runtime="onnxruntime")
    return plan


def _plan_dtypes(accelerator: Accelerator, dtype: str, quantize: str, attention: str, assistant: bool) -> PrecisionPlan:
    device = accelerator.device
    if accelerator.cuda:
        if quantize == "int8":
            raise UsageError("--quantize int8 runs on the CPU only")
        native_bfloat16 = (accelerator.cuda_capability or (0, 0)) >= AMPERE
        weights = ("bfloat16" if native_bfloat16 else "float16") if dtype == "auto" else _dtype(dtype)
        if weights == "bfloat16" and not native_bfloat16:
            raise UsageError(f"--dtype bfloat16: {device} has no native bfloat16 (before Ampere); use float16")
        flash_possible = native_bfloat16 and weights != "float32"
        if attention == "flash_attention_2":
            if not accelerator.flash_attn:
                raise UsageError("--attention flash_attention_2 needs the flash-attn package (pip install 'dw[gpu]')")
            if not flash_possible:
                raise UsageError(f"--attention flash_attention_2 needs float16 or bfloat16 on an Ampere or newer GPU "
                                 f"({device}: {weights}, compute capability {accelerator.cuda_capability})")
        elif attention == "auto":
            attention = "flash_attention_2" if accelerator.flash_attn and flash_possible else "sdpa"
        return PrecisionPlan(device, weights, decoder="float32" if assistant and weights != "float32" else None,
                             attention=attention)
    if attention == "flash_attention_2":
        raise UsageError("--attention flash_attention_2 runs on CUDA GPUs only")
    attention = "sdpa" if attention == "auto" else attention
    if device != "cpu":  # mps: its own dtype, no int8
        if quantize == "int8":
            raise UsageError("--quantize int8 runs on the CPU only")
        return PrecisionPlan(device, "float32" if dtype == "auto" else _dtype(dtype), attention=attention)
    requested = "float32" if dtype == "auto" and not accelerator.cpu_bfloat16 else (
        "bfloat16" if dtype == "auto" else _dtype(dtype))
    int8 = ("encoder",) if assistant else ("encoder", "decoder")
    int8 = int8 if quantize == "int8" else ()
    # Every CPU plan: float32 weights; an assistant drafts in int8 (the model checks each draft).
    cpu = dict(int8=int8, attention=attention, draft_int8=assistant)
    if requested == "float16":
        # CPUs have no fast float16 matmuls; weights stay float32, the encoder under autocast.
        return PrecisionPlan(device, "float32", encoder_autocast="float16" if not int8 else None, **cpu)
    if requested == "bfloat16":
        # Weights stay float32 (the decoder's small matmuls are slower in bfloat16 on CPUs);
        # the encoder runs under bfloat16 autocast, and the step's big reads (projection,
        # cross-attention) use bfloat16 copies: only the argmax of the logits matters.
        return PrecisionPlan(device, "float32", encoder_autocast=None if int8 else "bfloat16",
                             projection=None if assistant else "bfloat16", **cpu)
    return PrecisionPlan(device, "float32", **cpu)

def quantize_linears(module, inplace: bool = True):
    """``module``'s Linear layers in dynamic int8 (the one place dw quantizes).  torch marks
    its eager quantization deprecated and warns on every use: noise in a user's log, so
    silenced."""
    import warnings

    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.ao.quantization.quantize_dynamic(module, {torch.nn.Linear}, dtype=torch.qint8, inplace=inplace)
