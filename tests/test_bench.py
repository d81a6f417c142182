"""The benchmark's own pieces that figures depend on: which systems it builds, how it names
a CPU's kind, and that --repeats lets the systems take turns."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.fixture
def bench_modules():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import bench
        import report
        import systems

        yield bench, report, systems
    finally:
        sys.path.remove(str(BENCHMARKS))


def test_faster_whisper_batched_runs_in_float32_beside_int8(bench_modules):
    _, _, systems = bench_modules
    args = argparse.Namespace(systems="fw-batched,fw-batched-fp32", dw_variants="default", dw_baseline=None,
                              dw_baseline_variants=None, fw_batch_size=8, fw_compute_type="int8")
    int8, fp32 = systems.build_specs(args)
    assert (int8.settings["compute_type"], fp32.settings["compute_type"]) == ("int8", "float32")
    assert fp32.settings["batched"] and fp32.settings["vad"]
    assert systems.dw_arguments("torchenc")[0] == ["--runtime", "torch"]


@pytest.mark.parametrize(("flags", "kind"), [
    ({"avx2"}, "AVX2 only"),
    ({"avx2", "avx512f", "avx512_vnni"}, "AVX-512 without bfloat16"),
    ({"avx2", "avx512f", "avx512_bf16"}, "AVX-512 with native bfloat16"),
    ({"avx2", "avx512f", "amx_bf16"}, "AVX-512 with native bfloat16"),
])
def test_the_machine_line_names_the_kind_of_cpu(bench_modules, flags, kind):
    _, report, _ = bench_modules
    assert report.isa_class(flags) == kind


def test_repeats_take_turns_and_keep_each_systems_median(bench_modules, monkeypatch):
    bench, _, systems = bench_modules
    order, times = [], iter([5.0, 1.0, 3.0, 2.0, 4.0, 9.0])

    class Run:
        def __init__(self, name):
            self.ok, self.whole_s, self.name = True, next(times), name

    def run_system(spec, items, args, workdir):
        order.append(spec.name)
        return Run(spec.name)

    monkeypatch.setattr(bench, "run_system", run_system)
    specs = [systems.SystemSpec("a", "dw"), systems.SystemSpec("b", "fw")]
    a, b = bench._median_runs(specs, [], argparse.Namespace(repeats=3), Path("."))
    assert order == ["a", "b", "a", "b", "a", "b"]
    assert (a.whole_s, b.whole_s) == (4.0, 2.0)  # a: 5, 3, 4; b: 1, 2, 9
