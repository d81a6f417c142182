"""The systems a benchmark runs, each in its own process: what it is and how it transcribes.

dw runs as users run it, the ``dw transcribe`` command (its ``--log-json`` summary gives the
run-only time); the others run as a short script of their library's documented API, in a
child process of this module (``python benchmarks/systems.py CONFIG``).

  dw            ``dw transcribe``, one row per ``--dw-variants`` entry
  hf            transformers ``pipeline("automatic-speech-recognition")``, chunk_length_s 30, greedy
  hf-beam5      the same with the pipeline's own default, beam search with 5 beams
  hf-seq        transformers ``generate()`` on the whole file: sequential long form, float32,
                conditioned on previous text, temperature fallback and its thresholds
  fw            faster-whisper ``WhisperModel.transcribe``: sequential, greedy
  fw-beam5      the same with faster-whisper's default beam search (5)
  fw-vad        ``fw`` with ``vad_filter=True`` (Silero VAD)
  fw-batched    faster-whisper ``BatchedInferencePipeline`` (Silero VAD segmentation), greedy
  fw-batched-fp32  the same in float32 (dw's own precision on CPUs without native bfloat16)

A dw variant is a dash-separated list of tokens, each a ``dw transcribe`` option: ``bs<N>``
batch size, ``w<N>`` workers, ``fp32``/``fp16``/``bf16`` dtype, ``int8``/``noquant``,
``ts`` (JSON output: timestamps decoded) or ``txt`` (plain text: none), ``beam<N>``, ``nofb``
(no temperature fallback), ``words``, ``seq`` (sequential long form), ``cond``/``nocond``
(condition on previous text), ``novad``, ``sil<N>`` (``--vad-min-silence-ms N``),
``sdpa``/``eager``/``fa2``, ``torchenc``/``ort`` (``--runtime torch``/``onnxruntime``: what runs the
float32 CPU encoder); ``default`` is dw as it comes.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

KINDS = ("dw", "hf", "hf-beam5", "hf-seq", "fw", "fw-beam5", "fw-vad", "fw-batched", "fw-batched-fp32")

_FLAGS = {
    "int8": ["--quantize", "int8"], "noquant": ["--quantize", "none"], "fp32": ["--dtype", "float32"],
    "fp16": ["--dtype", "float16"], "bf16": ["--dtype", "bfloat16"], "nofb": ["--temperature", "0"],
    "words": ["--word-timestamps"], "seq": ["--long-form", "sequential"], "novad": ["--no-vad"],
    "cond": ["--condition-on-previous-text"], "nocond": ["--no-condition-on-previous-text"],
    "sdpa": ["--attention", "sdpa"], "eager": ["--attention", "eager"], "fa2": ["--attention", "flash_attention_2"],
    "torchenc": ["--runtime", "torch"], "ort": ["--runtime", "onnxruntime"],
}


@dataclass
class SystemSpec:
    name: str  # row label: dw:default, fw, hf-seq, ...
    kind: str
    settings: dict = field(default_factory=dict)
    description: str = ""


def dw_arguments(variant: str) -> tuple[list[str], str]:
    """``dw transcribe`` options of a variant, and the output format to read back."""
    arguments, fmt = [], "txt"
    for token in filter(None, variant.split("-")):
        if token == "default":
            continue
        if token.startswith("bs") and token[2:].isdigit():
            arguments += ["--batch-size", token[2:]]
        elif token.startswith("beam") and token[4:].isdigit():
            arguments += ["--beam-size", token[4:]]
        elif token.startswith("w") and token[1:].isdigit():
            arguments += ["--workers", token[1:]]
        elif token.startswith("sil") and token[3:].isdigit():
            arguments += ["--vad-min-silence-ms", token[3:]]
        elif token in ("ts", "txt"):
            fmt = "json" if token == "ts" else "txt"
        elif token in _FLAGS:
            arguments += _FLAGS[token]
        else:
            raise SystemExit(f"bench.py: dw variant {variant!r}: unknown token {token!r} "
                             f"(expected default, bs<N>, beam<N>, w<N>, sil<N>, ts, txt, {', '.join(_FLAGS)})")
    return arguments, fmt


def build_specs(args) -> list[SystemSpec]:
    specs = []
    kinds = [name.strip() for name in args.systems.split(",") if name.strip()]
    for kind in kinds:
        if kind not in KINDS:
            raise SystemExit(f"bench.py: --systems: unknown system {kind!r} (expected {', '.join(KINDS)})")
    variants = [variant.strip() for variant in args.dw_variants.split(",") if variant.strip()]
    for kind in kinds:
        if kind == "dw":
            baseline_variants = [variant.strip() for variant in (args.dw_baseline_variants or args.dw_variants).split(",")
                                 if variant.strip()]
            for baseline in [None] + ([args.dw_baseline] if args.dw_baseline else []):
                for variant in variants if baseline is None else baseline_variants:
                    arguments, fmt = dw_arguments(variant)
                    name = f"dw:{variant}" if baseline is None else f"dw@base:{variant}"
                    where = "this checkout" if baseline is None else f"the dw in {baseline}"
                    specs.append(SystemSpec(name, "dw", {"arguments": arguments, "format": fmt, "code": baseline},
                                            f"`dw transcribe {' '.join(arguments) or '(defaults)'}` ({where})"))
        elif kind in ("hf", "hf-beam5"):
            beam = 5 if kind == "hf-beam5" else 1
            specs.append(SystemSpec(kind, "hf", {"batch_size": args.hf_batch_size, "dtype": args.hf_dtype,
                                                 "beam_size": beam},
                                    f"transformers pipeline: chunk_length_s 30, batch {args.hf_batch_size}, "
                                    f"dtype {args.hf_dtype}, num_beams {beam}"))
        elif kind == "hf-seq":
            specs.append(SystemSpec(kind, "hf-seq", {"dtype": args.hf_dtype},
                                    f"transformers generate() sequential long form: dtype {args.hf_dtype}, greedy, "
                                    "condition_on_prev_tokens, temperature fallback 0-1 step 0.2, compression ratio "
                                    "1.35 (zlib, its scale), log-prob -1, no-speech 0.6"))
        else:
            beam = 5 if kind == "fw-beam5" else 1
            batched, vad = kind.startswith("fw-batched"), kind in ("fw-vad", "fw-batched", "fw-batched-fp32")
            compute_type = "float32" if kind == "fw-batched-fp32" else args.fw_compute_type
            what = (f"BatchedInferencePipeline batch {args.fw_batch_size} (Silero VAD segmentation)" if batched
                    else "WhisperModel.transcribe sequential (condition on previous text, temperature fallback"
                         + (", vad_filter" if vad else "") + ")")
            specs.append(SystemSpec(kind, "fw", {"beam_size": beam, "batched": batched, "vad": vad,
                                                 "batch_size": args.fw_batch_size, "compute_type": compute_type},
                                    f"faster-whisper {what}: beam {beam}, compute {compute_type}"))
    return specs


# -- the children (not dw) ----------------------------------------------------------------
class HfRunner:
    """The transformers ASR pipeline, chunked (the pipeline's own long-form algorithm)."""

    def __init__(self, cfg):
        import torch
        from transformers import pipeline
        from transformers.utils import logging as transformers_logging

        transformers_logging.set_verbosity_error()
        s = cfg["settings"]
        dtype = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[s["dtype"]]
        self.batch_size, self.beam_size = s["batch_size"], s["beam_size"]
        self.pipe = pipeline("automatic-speech-recognition", model=cfg["model_path"], chunk_length_s=30,
                             batch_size=self.batch_size, device=cfg["device"], dtype=dtype)
        if self.pipe.tokenizer.pad_token_id is None:
            # dw's converted checkpoint names no pad token; batching needs one (Whisper's is <|endoftext|>).
            self.pipe.tokenizer.pad_token_id = self.pipe.model.config.eos_token_id

    def run(self, items: list[dict]) -> dict[str, str]:
        from dwcli.audio import SAMPLE_RATE, load_audio

        inputs = [{"raw": load_audio(item["audio"]), "sampling_rate": SAMPLE_RATE} for item in items]
        # The pipeline's own default is num_beams 5 (its _default_generation_config), so say it.
        outputs = self.pipe(inputs, batch_size=self.batch_size, generate_kwargs={"num_beams": self.beam_size})
        return {item["id"]: output["text"].strip() for item, output in zip(items, outputs)}


class HfSequentialRunner:
    """transformers ``generate()`` on whole files: its sequential long-form algorithm, as
    its documentation sets it up for openai-whisper's behaviour."""

    def __init__(self, cfg):
        import torch
        from transformers import WhisperForConditionalGeneration, WhisperProcessor
        from transformers.utils import logging as transformers_logging

        transformers_logging.set_verbosity_error()
        dtype = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[cfg["settings"]["dtype"]]
        self.processor = WhisperProcessor.from_pretrained(cfg["model_path"])
        self.model = WhisperForConditionalGeneration.from_pretrained(cfg["model_path"], dtype=dtype).to(cfg["device"]).eval()
        self.dtype, self.device = dtype, cfg["device"]

    def run(self, items: list[dict]) -> dict[str, str]:
        import torch

        from dwcli.audio import SAMPLE_RATE, load_audio

        texts = {}
        for item in items:
            audio = load_audio(item["audio"])
            inputs = self.processor(audio, sampling_rate=SAMPLE_RATE, return_tensors="pt", truncation=False,
                                    padding="longest", return_attention_mask=True)
            if inputs.input_features.shape[-1] < 3000:  # short-form: one padded window
                inputs = self.processor(audio, sampling_rate=SAMPLE_RATE, return_tensors="pt", return_attention_mask=True)
            with torch.inference_mode():
                ids = self.model.generate(
                    inputs.input_features.to(self.device, self.dtype), attention_mask=inputs.attention_mask.to(self.device),
                    return_timestamps=True, condition_on_prev_tokens=True, temperature=(0.0, 0.2, 0.4, 0.6, 0.8, 1.0),
                    compression_ratio_threshold=1.35, logprob_threshold=-1.0, no_speech_threshold=0.6,
                )
            texts[item["id"]] = self.processor.batch_decode(ids, skip_special_tokens=True)[0].strip()
        return texts


class FwRunner:
    def __init__(self, cfg):
        from faster_whisper import BatchedInferencePipeline, WhisperModel

        s = cfg["settings"]
        device = "cuda" if cfg["device"].startswith("cuda") else "cpu"
        self.model = WhisperModel(cfg["fw_model"], device=device, compute_type=s["compute_type"],
                                  cpu_threads=cfg["threads"] if device == "cpu" else 0)
        self.batched = BatchedInferencePipeline(self.model) if s["batched"] else None
        self.settings = s

    def run(self, items: list[dict]) -> dict[str, str]:
        s = self.settings
        texts = {}
        for item in items:
            if self.batched is not None:
                segments, _ = self.batched.transcribe(item["audio"], batch_size=s["batch_size"], beam_size=s["beam_size"])
            else:
                segments, _ = self.model.transcribe(item["audio"], beam_size=s["beam_size"], vad_filter=s["vad"])
            texts[item["id"]] = " ".join(segment.text.strip() for segment in segments)  # a generator: runs here
        return texts


RUNNERS = {"hf": HfRunner, "hf-seq": HfSequentialRunner, "fw": FwRunner}


def child_main(config_path: str) -> int:
    """Load one system, transcribe the items, write texts and load/run seconds."""
    started = time.perf_counter()
    cfg = json.loads(Path(config_path).read_text())
    if cfg["kind"] in ("hf", "hf-seq"):
        import torch

        torch.set_num_threads(cfg["threads"])
    runner = RUNNERS[cfg["kind"]](cfg)
    load_s = time.perf_counter() - started
    if cfg["warmup_items"]:
        runner.run(cfg["warmup_items"])
    tick = time.perf_counter()
    texts = runner.run(cfg["items"])
    Path(cfg["result_path"]).write_text(json.dumps({"load_s": load_s, "run_s": time.perf_counter() - tick,
                                                    "texts": texts}))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    sys.exit(child_main(sys.argv[1]))
