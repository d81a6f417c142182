"""The precision plan, decided from a device's properties: tested with made-up devices, so
the GPU rules are checked on a machine without one."""

from __future__ import annotations

import pytest

from dwcli.errors import UsageError
from dwcli.precision import Accelerator, cpu_multiplies_bfloat16, plan_precision

CPU = Accelerator("cpu")
CPU_AMX = Accelerator("cpu", cpu_bfloat16=True)
CPU_AVX512 = Accelerator("cpu", cpu_avx512=True)
T4 = Accelerator("cuda:1", cuda_capability=(7, 5), flash_attn=True)  # no native bfloat16, no flash-attention 2
A100 = Accelerator("cuda:0", cuda_capability=(8, 0), flash_attn=True)
A100_NO_FLASH = Accelerator("cuda:0", cuda_capability=(8, 0), flash_attn=False)


def test_cpu_default_is_float32_everywhere():
    plan = plan_precision(CPU)
    assert (plan.weights, plan.encoder_autocast, plan.projection, plan.decoder, plan.int8, plan.attention) == \
        ("float32", None, None, None, (), "sdpa")


def test_bfloat16_only_where_the_cpu_has_it_natively():
    assert plan_precision(CPU_AMX).encoder_autocast == "bfloat16"
    assert plan_precision(CPU).encoder_autocast is None
    assert plan_precision(CPU, dtype="bf16").encoder_autocast == "bfloat16"  # asked for: emulated, but given


ICE_LAKE_FLAGS = "flags\t\t: fpu sse2 avx avx2 fma avx512f avx512dq avx512bw avx512vl avx512_vnni avx512_bitalg"
AVX2_ONLY_FLAGS = "flags\t\t: fpu sse2 avx avx2 fma f16c"


@pytest.mark.parametrize(("cpuinfo", "native"), [
    (ICE_LAKE_FLAGS, False),  # AVX-512 without bfloat16 instructions: oneDNN would emulate them
    (AVX2_ONLY_FLAGS, False),
    (ICE_LAKE_FLAGS + " avx512_bf16", True),  # Zen 4, Cooper Lake
    (ICE_LAKE_FLAGS + " amx_bf16 amx_tile", True),  # Sapphire Rapids
    ("Features\t: fp asimd bf16 i8mm", True),  # Arm with BF16
])
def test_bfloat16_is_native_only_with_its_instructions(cpuinfo, native):
    """oneDNN calls bfloat16 supported on every AVX-512 CPU; emulated it made the encoder
    2.3x slower than float32, so only the instructions themselves count."""
    assert cpu_multiplies_bfloat16(f"processor\t: 0\n{cpuinfo}\n") is native


def test_the_float32_cpu_encoder_runs_through_onnxruntime_unless_told_otherwise():
    assert plan_precision(CPU).encoder_runtime == "onnxruntime"  # an AVX2-only CPU
    assert plan_precision(CPU_AVX512).encoder_runtime == "torch"  # as fast, without ONNX Runtime's session
    assert plan_precision(CPU_AVX512, runtime="onnxruntime").encoder_runtime == "onnxruntime"
    assert plan_precision(CPU, runtime="torch").encoder_runtime == "torch"
    assert plan_precision(CPU, assistant=True).encoder_runtime == "onnxruntime"
    # bfloat16 autocast (native), int8 Linear layers and GPUs keep the PyTorch encoder.
    assert plan_precision(CPU_AMX).encoder_runtime == "torch"
    assert plan_precision(CPU, quantize="int8").encoder_runtime == "torch"
    assert plan_precision(A100).encoder_runtime == "torch"
    assert "encoder_runtime" not in plan_precision(CPU).recipe()  # the same transcripts: not a new recipe
    with pytest.raises(UsageError, match=r"^--runtime onnxruntime runs the float32 encoder on a CPU only "
                                         r"\(cuda:0: bfloat16\)$"):
        plan_precision(A100, runtime="onnxruntime")
    with pytest.raises(UsageError, match=r"^--runtime onnxruntime runs the float32 encoder on a CPU only "
                                         r"\(cpu: bfloat16\)$"):
        plan_precision(CPU, dtype="bf16", runtime="onnxruntime")
    with pytest.raises(UsageError, match=r"^--runtime tvm: expected auto, torch or onnxruntime$"):
        plan_precision(CPU, runtime="tvm")


def test_int8_on_request_only_and_the_assistant_keeps_a_float_decoder():
    assert plan_precision(CPU, quantize="int8").int8 == ("encoder", "decoder")
    assisted = plan_precision(CPU, quantize="int8", assistant=True)
    assert assisted.int8 == ("encoder",) and assisted.compute_dtype == "float32"


def test_the_plan_decides_the_drafts_int8_too():
    """An assistant drafts in int8 on a CPU, whatever the model's own precision (the model
    checks every draft); never on a GPU."""
    for kind in (CPU, CPU_AMX):
        for quantize in ("auto", "int8"):
            assert plan_precision(kind, quantize=quantize, assistant=True).draft_int8
        assert not plan_precision(kind).draft_int8
    assert not plan_precision(A100, assistant=True).draft_int8


def test_gpu_dtype_follows_the_generation_of_that_very_gpu():
    assert plan_precision(A100).weights == "bfloat16"
    assert plan_precision(T4).weights == "float16"  # emulated bfloat16 is not bfloat16
    with pytest.raises(UsageError, match=r"^--dtype bfloat16: cuda:1 has no native bfloat16 \(before Ampere\); "
                                         r"use float16$"):
        plan_precision(T4, dtype="bfloat16")


def test_flash_attention_only_where_it_can_run():
    assert plan_precision(A100).attention == "flash_attention_2"
    assert plan_precision(A100, dtype="float32").attention == "sdpa"  # flash-attn has no float32 kernels
    assert plan_precision(T4).attention == "sdpa"  # before Ampere
    assert plan_precision(A100_NO_FLASH).attention == "sdpa"  # missing or broken install: SDPA, no error
    with pytest.raises(UsageError, match=r"^--attention flash_attention_2 needs float16 or bfloat16 on an Ampere"):
        plan_precision(T4, attention="flash_attention_2")
    with pytest.raises(UsageError, match=r"^--attention flash_attention_2 needs the flash-attn package"):
        plan_precision(A100_NO_FLASH, attention="flash_attention_2")
    with pytest.raises(UsageError, match=r"^--attention flash_attention_2 runs on CUDA GPUs only$"):
        plan_precision(CPU, attention="flash_attention_2")


def test_each_device_of_a_mixed_run_gets_its_own_plan():
    cpu, gpu = (plan_precision(device, quantize="auto") for device in (CPU, A100))
    assert (cpu.weights, cpu.int8) == ("float32", ())
    assert (gpu.weights, gpu.int8) == ("bfloat16", ())
    with pytest.raises(UsageError, match=r"^--quantize int8 runs on the CPU only$"):
        plan_precision(A100, quantize="int8")


def test_an_assistant_on_a_gpu_keeps_the_decoder_in_float32():
    plan = plan_precision(A100, assistant=True)
    assert (plan.weights, plan.decoder, plan.compute_dtype) == ("bfloat16", "float32", "float32")
    assert plan.recipe()["decoder"] == "float32"  # --skip-existing tells the two runs apart


def test_the_recipe_ignores_the_attention_kernel():
    assert plan_precision(A100).recipe() == plan_precision(A100_NO_FLASH).recipe()


@pytest.mark.parametrize("flag,value,message", [
    ("dtype", "fp8", "--dtype fp8: expected auto, float32, float16 or bfloat16"),
    ("quantize", "int4", "--quantize int4: expected auto, none or int8"),
    ("attention", "xformers", "--attention xformers: expected auto, sdpa, eager or flash_attention_2"),
])
def test_unknown_requests_are_named(flag, value, message):
    with pytest.raises(UsageError) as error:
        plan_precision(CPU, **{flag: value})
    assert str(error.value) == message


def test_a_gpu_that_does_not_exist_is_a_usage_error(monkeypatch):
    import torch

    from dwcli.devices import pick_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(UsageError) as error:
        pick_device("cuda:7")
    assert str(error.value) == "--device cuda:7: no such GPU (this machine has 2: cuda:0..cuda:1)"


@pytest.mark.gpu
@pytest.mark.parametrize("extra", [[], ["--word-timestamps", "--format", "json"]])
def test_the_real_gpu_transcribes_real_speech_with_its_own_plan(jfk, dw_env, tmp_path, extra):
    """Where a GPU is lent (benchmarks/gpu.sh runs this): its plan (bfloat16 or float16,
    flash-attention where it can) transcribes real speech as well as the CPU does."""
    import json
    import subprocess

    from conftest import word_error_rate

    result = subprocess.run(["dw", "transcribe", str(jfk["path"]), "--device", "cuda:0", "--model", "offline:tiny.en",
                             "-o", str(tmp_path), "-q", *extra], env=dw_env, capture_output=True, timeout=600)
    assert result.returncode == 0, result.stderr.decode()
    if extra:
        text = json.loads((tmp_path / "jfk.json").read_text())["text"]
    else:
        text = (tmp_path / "jfk.txt").read_text()
    assert word_error_rate(jfk["text"], text) < 0.1


def test_gpu_sh_passes_bench_only_options_it_has():
    """benchmarks/gpu.sh runs once, on a lent GPU, with no second try: its bench.py command
    line must parse here."""
    import re
    import shlex
    import sys
    from pathlib import Path

    benchmarks = Path(__file__).resolve().parent.parent / "benchmarks"
    script = (benchmarks / "gpu.sh").read_text()
    command = re.search(r'benchmarks/bench\.py \\\n(.*?)--json', script, re.S).group(1)
    arguments = shlex.split(command.replace("\\\n", " ").replace('"$MODEL"', "offline:tiny.en")
                            .replace('"$THREADS"', "8").replace('"$SYSTEMS"', "dw,hf"))
    sys.path.insert(0, str(benchmarks))
    try:
        from bench import parse_args
        from systems import dw_arguments

        args = parse_args(arguments)
        for variant in args.dw_variants.split(","):
            dw_arguments(variant)
    finally:
        sys.path.remove(str(benchmarks))
