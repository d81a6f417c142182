"""The model on its device: loading, precision, attention kernel, and one batch at a time.

``Engine.transcribe`` takes a batch of windows (from any files) and returns, per window, its
segments in window-local seconds and, where Whisper stopped before the end of the window,
the point from which the rest must be decoded again.
"""

from __future__ import annotations

import importlib.util
import warnings
import zlib
from dataclasses import dataclass, field

import numpy as np

from .beam import BeamSearchDecoder
from .chunking import Window
from .decoding import DecodedWindow, DecodingOptions, GreedyDecoder, SpecialTokens
from .errors import ModelLoadError, UsageError
from .models import ResolvedModel
from .speculative import DraftDecoder, SpeculativeDecoder, load_assistant, teacher_states
from .segments import Segment, segments_from_tokens
from . import refine
from .timing import AlignmentRequest, WordAligner

_DTYPES = {"float32": "float32", "fp32": "float32", "float16": "float16", "fp16": "float16",
           "bfloat16": "bfloat16", "bf16": "bfloat16"}
# Whisper often stops a window early when its last phrase runs on past the window; when it
# stops this long before the end of the window, the rest is decoded again from there.
_RESUME_MIN_REMAINDER_S = 1.0
# The CPU encoder runs this many windows at a time: its self-attention over 1500 positions
# costs ~54 MB per window and head group, and larger groups are no faster.
_CPU_ENCODER_MICRO_BATCH = 4
# A window quieter than this (RMS, -90 dBFS: about one step of 16-bit audio) is digital
# silence; Whisper would still "hear" something in it ("you", "Thank you."), so it is not
# decoded at all.  Anything louder goes to the model, whose log-mel is normalised to the
# window's own peak: real recordings of speech at -65 dBFS RMS (FLEURS) transcribe
# perfectly, and quiet hiss is left to the no-speech rule.
SILENCE_RMS = 10 ** (-90 / 20)


def pick_device(requested: str) -> str:
    """``auto`` -> ``cuda`` when a GPU is visible, else ``cpu``; validates explicit names."""
    import torch

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"--device {requested}: no CUDA device is available")
    if not (requested == "cpu" or requested.startswith("cuda") or requested == "mps"):
        raise UsageError(f"--device {requested}: expected auto, cpu, cuda or cuda:N")
    return requested


def cpu_has_bfloat16() -> bool:
    """Whether this CPU multiplies bfloat16 natively (AVX512-BF16 or AMX), via oneDNN."""
    import torch

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def pick_dtype(requested: str, device: str) -> str:
    """``auto`` -> bfloat16 on CUDA where supported (else float16); on CPU bfloat16 where
    the CPU has native bfloat16 (measured: same WER, about twice the speed), else float32."""
    import torch

    if requested == "auto":
        if device.startswith("cuda"):
            return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
        return "bfloat16" if device == "cpu" and cpu_has_bfloat16() else "float32"
    if requested not in _DTYPES:
        raise UsageError(f"--dtype {requested}: expected auto, float32, float16 or bfloat16")
    return _DTYPES[requested]


def pick_quantize(requested: str, device: str) -> str | None:
    """``auto`` -> int8 on CPU (measured ~1.7x faster at the same WER on long-form
    LibriSpeech/LJ Speech), none on GPU; ``none`` -> None."""
    if requested == "auto":
        return "int8" if device == "cpu" else None
    if requested == "int8" and device != "cpu":
        raise UsageError("--quantize int8 runs on the CPU only")
    return None if requested == "none" else requested


def default_batch_size(device: str) -> int:
    """Windows per batch: on CPU 16 (larger gains little and holds more audio in memory);
    on a GPU 32."""
    return 32 if device.startswith("cuda") else 16


def pick_attention(requested: str, device: str) -> str:
    """``auto`` -> flash_attention_2 when flash-attn is importable on a GPU, else sdpa."""
    if requested == "auto":
        if device.startswith("cuda") and importlib.util.find_spec("flash_attn") is not None:
            return "flash_attention_2"
        return "sdpa"
    if requested not in ("sdpa", "eager", "flash_attention_2"):
        raise UsageError(f"--attention {requested}: expected auto, sdpa, eager or flash_attention_2")
    if requested == "flash_attention_2" and importlib.util.find_spec("flash_attn") is None:
        raise UsageError("--attention flash_attention_2 needs the flash-attn package (pip install 'dw[gpu]')")
    return requested


@dataclass(frozen=True)
class WindowResult:
    """Segments of one window in window-local seconds."""

    segments: list[Segment]
    language: str | None
    resume_at_s: float | None  # decode the window again from here (Whisper stopped early)
    tokens: list[int] = field(default_factory=list)  # what the decoder emitted


def is_silent(samples: np.ndarray) -> bool:
    """True for a window of digital silence (below -90 dBFS RMS)."""
    return len(samples) == 0 or float(np.sqrt(np.mean(np.square(samples, dtype=np.float64)))) < SILENCE_RMS


class Engine:
    """A loaded Whisper model ready to transcribe batches of windows."""

    def __init__(self, resolved: ResolvedModel, device: str = "cpu", dtype: str = "float32",
                 attention: str = "sdpa", quantize: str | None = None, assistant: ResolvedModel | None = None):
        import torch
        from tokenizers import Tokenizer
        from transformers import WhisperForConditionalGeneration
        from transformers.utils import logging as transformers_logging

        self.model_id = resolved.model_id
        self.device = device
        self.dtype = dtype
        on_cpu = device == "cpu"
        # bfloat16 on a CPU: weights stay float32; the encoder runs under bfloat16 autocast and
        # the vocabulary projection uses a bfloat16 copy.  The decoder's small matmuls are
        # slower in bfloat16 on CPUs, so they stay float32.
        self.compute_dtype = "float32" if on_cpu and dtype == "bfloat16" else dtype
        transformers_logging.set_verbosity_error()
        transformers_logging.disable_progress_bar()
        try:
            model = WhisperForConditionalGeneration.from_pretrained(
                resolved.path, dtype=getattr(torch, self.compute_dtype), attn_implementation=attention
            )
            self.tokenizer = Tokenizer.from_file(str(resolved.path / "tokenizer.json"))
        except Exception as error:  # transformers raises many types; all mean "cannot load"
            raise ModelLoadError(f"cannot load model {resolved.model_id}: {error}") from None
        model = model.to(device).eval()
        assistant_model = None
        if assistant is not None:
            # Before quantizing: a Distil-Whisper student keeps its teacher's encoder, and then
            # shares this model's (the audio is encoded once).
            assistant_model = load_assistant(assistant, model, device, getattr(torch, self.compute_dtype), attention)
        if pick_quantize(quantize or "none", device) == "int8":
            # The encoder's and decoder layers' Linear modules; the output projection stays a
            # plain weight (the decoder reads it directly, in bfloat16 where the CPU can).
            # torch marks eager quantization deprecated (in favour of torchao) and warns on
            # every use; the warning is noise in a user's log, so it is silenced here.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                # With an assistant the decoder stays float32: it checks several drafted tokens in
                # one pass, and int8's per-input scales would make that differ from one at a time.
                quantized = model.model.encoder if assistant_model is not None else model.model
                torch.ao.quantization.quantize_dynamic(quantized, {torch.nn.Linear}, dtype=torch.qint8, inplace=True)
        self.model = model
        self.n_mels = model.config.num_mel_bins
        generation = model.generation_config
        self.special = SpecialTokens.from_generation_config(generation)
        self.alignment_heads = getattr(generation, "alignment_heads", None)
        # (Not with an assistant: bfloat16 logits tie often enough that a several-token pass
        # would pick another token than the model alone now and then.)
        fast_bfloat16 = (on_cpu and cpu_has_bfloat16() and (dtype == "bfloat16" or quantize == "int8")
                         and assistant_model is None)
        self.decoder = GreedyDecoder(
            model, self.special, generation.suppress_tokens, generation.begin_suppress_tokens,
            encoder_autocast=torch.bfloat16 if on_cpu and dtype == "bfloat16" and quantize is None else None,
            projection_dtype=torch.bfloat16 if fast_bfloat16 else None,
            encoder_micro_batch=_CPU_ENCODER_MICRO_BATCH if on_cpu else 0,
        )
        teacher = self.decoder
        if assistant_model is not None:
            # The assistant drafts, the model checks: the model's own greedy tokens, sooner.
            self.decoder = SpeculativeDecoder(teacher, DraftDecoder(
                assistant_model, self.special, generation.suppress_tokens, generation.begin_suppress_tokens,
                int8=on_cpu, shared_encoder=model.model.encoder,
                encoder_micro_batch=_CPU_ENCODER_MICRO_BATCH if on_cpu else 0,
            ))
        self.aligner = WordAligner(teacher, self.alignment_heads, self.decode_text)
        # (With an assistant, decoding is greedy: the CLI refuses --beam-size with --assistant.)
        self.beam_search = BeamSearchDecoder(teacher)

    @property
    def english_only(self) -> bool:
        return not self.special.multilingual

    def decode_text(self, tokens: list[int]) -> str:
        text_tokens = [token for token in tokens if token < self.special.end_of_text]
        return self.tokenizer.decode(text_tokens)

    def transcribe(self, features, windows: list[Window], options: DecodingOptions) -> list[WindowResult]:
        """Decode a batch: ``features`` (batch, n_mels, 3000) of ``windows``.

        Silent windows are skipped; windows that fail the fallback checks are decoded again
        at the next temperature; words are aligned afterwards where they are asked for or
        needed to split a segment at a pause.  Segments are in window time (``refine``
        puts them on the file's timeline).
        """
        import torch

        audible = [row for row, window in enumerate(windows) if not is_silent(window.samples)]
        results = [WindowResult([], None, None) for _ in windows]
        if not audible:
            return results
        batch = features[audible] if len(audible) < len(windows) else features
        encoded = self.decoder.encode(batch.to(self.device, getattr(torch, self.compute_dtype)))
        # Where each window's detected speech ends: the decoder may not end the text before it.
        speech_end = [windows[row].speech_end_s for row in audible]
        if options.beam_size > 1:  # at temperature 0 only; the fallback samples as usual
            decoded = self.beam_search.decode_encoded(encoded, options, speech_end_s=speech_end)
        else:
            decoded = self.decoder.decode_encoded(encoded, options, speech_end_s=speech_end)
        for temperature in options.temperatures[1:]:
            retry = [index for index, result in enumerate(decoded) if self._needs_fallback(result, options)]
            if not retry:
                break
            again = self.decoder.decode_encoded(encoded[retry], options, temperature,
                                                speech_end_s=[speech_end[index] for index in retry])
            for index, result in zip(retry, again):
                decoded[index] = result
        for row, result in zip(audible, decoded):
            results[row] = self._result(windows[row], result, options)
        # Words are needed when asked for, and to split a segment Whisper ran across a pause.
        needs_words = [
            index for index, row in enumerate(audible)
            if results[row].segments and (
                options.word_timestamps or refine.needs_words(windows[row], results[row].segments))
        ]
        if needs_words:
            requests = [
                AlignmentRequest(results[row].segments, windows[row].duration_s, results[row].language, options.task)
                for row in (audible[index] for index in needs_words)
            ]
            self.aligner.align(teacher_states(encoded[needs_words]), requests)
        return results

    def _needs_fallback(self, decoded: DecodedWindow, options: DecodingOptions) -> bool:
        if _is_no_speech(decoded, options):
            return False
        too_repetitive = (
            options.compression_ratio_threshold is not None
            and compression_ratio(self.decode_text(decoded.tokens)) > options.compression_ratio_threshold
        )
        too_unlikely = options.logprob_threshold is not None and decoded.avg_logprob < options.logprob_threshold
        return too_repetitive or too_unlikely or decoded.truncated

    def _result(self, window: Window, decoded: DecodedWindow, options: DecodingOptions) -> WindowResult:
        if _is_no_speech(decoded, options):
            return WindowResult([], decoded.language, None)
        segments, last_timestamp_s, ended_in_pair = segments_from_tokens(
            decoded.tokens, self.special, self.decode_text, window.duration_s
        )
        resume_at = None
        if (
            ended_in_pair
            and not decoded.truncated
            and last_timestamp_s > 0
            and window.duration_s - last_timestamp_s >= _RESUME_MIN_REMAINDER_S
        ):
            resume_at = last_timestamp_s
        return WindowResult(segments, decoded.language, resume_at, decoded.tokens)


def _is_no_speech(decoded: DecodedWindow, options: DecodingOptions) -> bool:
    """Whisper's silence rule: <|nospeech|> likely and the text itself unlikely."""
    if options.no_speech_threshold is None or decoded.no_speech_prob <= options.no_speech_threshold:
        return False
    return options.logprob_threshold is None or decoded.avg_logprob < options.logprob_threshold


def compression_ratio(text: str) -> float:
    """Bytes of text per byte of its zlib compression: high for looping output."""
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data)) if data else 0.0
