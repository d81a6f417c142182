"""The model on its device, built from a precision plan, and one batch of windows at a time.

``Engine.transcribe`` takes a batch of windows (from any files) and returns, per window, its
segments in window time and, where Whisper stopped before the end of the window, the point
from which the rest must be decoded again.  What happens to the segments afterwards (the
file's timeline, edges onto the speech, splits at pauses) is ``refine``'s.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import numpy as np

from . import network, refine
from .decoding.alignment import AlignmentRequest, WordAligner, alignment_heads_problem
from .decoding.beam import BeamSearch
from .decoding.greedy import GreedySearch
from .decoding.options import DecodedWindow, DecodingOptions, SpecialTokens, WindowContext
from .decoding.runtime import DecoderRuntime
from .decoding.speculative import DraftRuntime, SpeculativeSearch, load_assistant, teacher_states
from .errors import ModelLoadError
from .models import ResolvedModel
from .onnx_encoder import load_onnx_encoder
from .precision import PrecisionPlan, describe, plan_precision, quantize_linears
from .segments import Segment, segments_from_tokens
from .sources import Window

# Whisper often stops a window early when its last phrase runs on past the window; when it
# stops this long before the end of the window, the rest is decoded again from there.
_RESUME_MIN_REMAINDER_S = 1.0
# The CPU encoder runs this many windows at a time: its self-attention over 1500 positions
# costs ~54 MB per window and head group, and larger groups are no faster.
_CPU_ENCODER_MICRO_BATCH = 4
# A window quieter than this (RMS, -90 dBFS: about one step of 16-bit audio) is digital
# silence; Whisper would still "hear" something in it ("you", "Thank you."), so it is not
# decoded at all.  (Only without speech detection can such a window reach the engine.)
SILENCE_RMS = 10 ** (-90 / 20)


@dataclass(frozen=True)
class WindowResult:
    """Segments of one window in window seconds."""

    segments: list[Segment]
    language: str | None
    resume_at_s: float | None  # decode the window again from here (Whisper stopped early)
    tokens: list[int] = field(default_factory=list)  # what the decoder emitted
    temperature: float = 0.0  # what the kept decoding was sampled at


def is_silent(samples: np.ndarray) -> bool:
    """True for a window of digital silence (below -90 dBFS RMS)."""
    return len(samples) == 0 or float(np.sqrt(np.mean(np.square(samples, dtype=np.float64)))) < SILENCE_RMS


def load_network(resolved: ResolvedModel, plan: PrecisionPlan):
    """The checkpoint's network on the plan's device in the plan's dtypes; ModelLoadError."""
    import torch

    try:
        model = network.load(resolved.path, getattr(torch, plan.weights), plan.device)
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as error:
        raise ModelLoadError(f"cannot load model {resolved.model_id}: {error}") from None
    network.set_attention(model, plan.attention)
    if plan.decoder:
        model.model.decoder.to(getattr(torch, plan.decoder))
        model.proj_out.weight = model.model.decoder.embed_tokens.weight
    return model


def load_tokenizer(resolved: ResolvedModel):
    """The checkpoint's ``tokenizer.json``; ModelLoadError."""
    from tokenizers import Tokenizer

    path = resolved.path / "tokenizer.json"
    if not path.is_file():
        raise ModelLoadError(f"cannot load model {resolved.model_id}: it has no tokenizer.json")
    try:
        return Tokenizer.from_file(str(path))
    except Exception as error:  # tokenizers raises its own Exception type
        raise ModelLoadError(f"cannot load the tokenizer of {resolved.model_id}: {error}") from None


class Engine:
    """A loaded Whisper model ready to transcribe batches of windows."""

    def __init__(self, resolved: ResolvedModel, plan: PrecisionPlan, assistant: ResolvedModel | None = None):
        import torch

        self.model_id = resolved.model_id
        self.plan = plan
        self.device = plan.device
        if plan.device.startswith("cuda"):
            # Under torchrun each rank's GPU is cuda:LOCAL_RANK; kernels that allocate on the
            # current device (flash-attn, cuBLAS workspaces) must see that one, not cuda:0.
            torch.cuda.set_device(plan.device)
        # Cheapest first: a checkpoint that is not Whisper's, or has no tokenizer, fails before
        # its weights are read, with the same message as from the run plan.
        network.model_config(resolved)
        self.tokenizer = load_tokenizer(resolved)
        model = load_network(resolved, plan)
        on_cpu = plan.device == "cpu"
        assistant_model = None
        if assistant is not None:
            # Before quantizing: a Distil-Whisper student keeps its teacher's encoder, and then
            # shares this model's (the audio is encoded once).
            assistant_model = load_assistant(assistant, model, plan.device, getattr(torch, plan.compute_dtype))
        for part in plan.int8:
            quantize_linears(getattr(model.model, part))
        self.model = model
        self.n_mels = model.config.num_mel_bins
        generation = model.generation_config
        try:
            # Every control token's id as the checkpoint names it, its tokenizer's included.
            self.special = SpecialTokens.from_generation_config(generation, self.tokenizer.token_to_id)
        except (ValueError, TypeError, AttributeError) as error:
            raise ModelLoadError(f"cannot load model {resolved.model_id}: {error}") from None
        self.alignment_heads = generation.alignment_heads
        dtype = {None: None, "bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
        self.runtime = DecoderRuntime(
            model, self.special, generation.suppress_tokens, generation.begin_suppress_tokens,
            encoder_autocast=dtype[plan.encoder_autocast], projection_dtype=dtype[plan.projection],
            encoder_micro_batch=_CPU_ENCODER_MICRO_BATCH if on_cpu else 0,
        )
        self.greedy = GreedySearch(self.runtime)
        if assistant_model is not None:
            # The assistant drafts, the model checks: the model's own greedy tokens, sooner.
            self.greedy = SpeculativeSearch(self.runtime, DraftRuntime(
                assistant_model, self.special, generation.suppress_tokens, generation.begin_suppress_tokens,
                int8=plan.draft_int8, shared_encoder=model.model.encoder,
                encoder_micro_batch=_CPU_ENCODER_MICRO_BATCH if on_cpu else 0,
            ))
        # Without heads that fit its decoder a checkpoint times no words (the run plan refuses
        # --word-timestamps for it) and its segments are not split at pauses by word times.
        self.aligner = None
        if alignment_heads_problem(self.alignment_heads, model.config.decoder_layers,
                                   model.config.decoder_attention_heads) is None:
            self.aligner = WordAligner(self.runtime, self.alignment_heads, self.decode_text)
        # (With an assistant, decoding is greedy: the run plan refuses --beam-size with --assistant.)
        self.beam_search = BeamSearch(self.runtime)
        self.notes: list[str] = []  # what the caller should say about how the model runs
        if plan.encoder_runtime == "onnxruntime":
            self._encoder_through_onnxruntime(resolved)

    def _encoder_through_onnxruntime(self, resolved: ResolvedModel) -> None:
        """The float32 CPU encoder through ONNX Runtime (onnx_encoder.py); where that fails,
        the PyTorch encoder stays and a note says why."""
        import torch

        try:
            identity = [*network.checkpoint_identity(resolved.path), self.plan.weights]
        except OSError as error:
            self.notes.append(f"the encoder runs in PyTorch: {error}")
            return
        encoder, note = load_onnx_encoder(self.model.model.encoder, self.n_mels, resolved.path, identity,
                                          torch.get_num_threads())
        if encoder is not None:
            self.runtime.encoder = encoder
        else:
            self.notes.append(note)

    @classmethod
    def load(cls, resolved: ResolvedModel, device: str = "cpu", dtype: str = "auto", quantize: str = "auto",
             attention: str = "auto", assistant: ResolvedModel | None = None, runtime: str = "auto") -> Engine:
        """An engine with the precision ``plan_precision`` gives these settings on ``device``."""
        return cls(resolved, plan_precision(describe(device), dtype, quantize, attention, assistant is not None,
                                            runtime), assistant)

    @property
    def english_only(self) -> bool:
        return not self.special.multilingual

    def decode_text(self, tokens: list[int]) -> str:
        text_tokens = [token for token in tokens if token < self.special.end_of_text]
        return self.tokenizer.decode(text_tokens)

    def encode(self, features):
        """Encoder states of a batch of log-mel windows, for ``greedy``/``beam_search``."""
        import torch

        return self.greedy.encode(features.to(self.device, getattr(torch, self.plan.weights)))

    def prompt_tokens(self, text: str | None) -> tuple[int, ...]:
        """An initial prompt as tokens, spelled as if said before (a leading space)."""
        if not text or not text.strip():
            return ()
        return tuple(self.tokenizer.encode(" " + text.strip(), add_special_tokens=False).ids)

    def transcribe(self, features, windows: list[Window], options: DecodingOptions,
                   previous: list[tuple[int, ...]] | None = None, encoded=None) -> list[WindowResult]:
        """Decode a batch: ``features`` (batch, n_mels, 3000) of ``windows``; ``previous``
        per window the tokens it is conditioned on (sequential long form), else the initial
        prompt's; ``encoded``, the batch's encoder states when the caller already has them
        (``dw distill label`` keeps them).

        Silent windows are skipped; windows that fail the fallback checks are decoded again
        at the next temperature; words are aligned afterwards where they are asked for or
        needed to split a segment at a pause.  Segments are in window time (``refine``
        puts them on the file's timeline).
        """
        audible = [row for row, window in enumerate(windows) if not is_silent(window.samples)]
        results = [WindowResult([], None, None) for _ in windows]
        if not audible:
            return results
        if encoded is None:
            encoded = self.encode(features[audible] if len(audible) < len(windows) else features)
        elif len(audible) < len(windows):
            encoded = encoded[audible]
        initial = self.prompt_tokens(options.initial_prompt)
        contexts = [WindowContext(previous[row] if previous is not None else initial, windows[row].speech_end_s)
                    for row in audible]
        if options.beam_size > 1:  # at temperature 0 only; the fallback samples as usual
            decoded = self.beam_search.decode(encoded, options, contexts)
        else:
            decoded = self.greedy.decode(encoded, options, contexts)
        for temperature in options.temperatures[1:]:
            retry = [index for index, result in enumerate(decoded) if self._needs_fallback(result, options)]
            if not retry:
                break
            again = self.greedy.decode(encoded[retry], options, [contexts[index] for index in retry], temperature)
            for index, result in zip(retry, again):
                decoded[index] = result
        for row, result in zip(audible, decoded):
            results[row] = self._result(windows[row], result, options)
        # Words are needed when asked for, and to split a segment Whisper ran across a pause.
        # Without timestamps (plain text only) nothing shows a segment's times: a window's
        # text is one line, and its windows already break at the pauses between speech
        # regions, so no alignment pass is spent on splitting lines (a second decoder pass:
        # a quarter of a one-clip run).
        needs_words = [
            index for index, row in enumerate(audible)
            if self.aligner is not None and results[row].segments and (options.word_timestamps or (
                options.timestamps and refine.needs_words(windows[row], results[row].segments)))
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
        return WindowResult(segments, decoded.language, resume_at, decoded.tokens, decoded.temperature)


def _is_no_speech(decoded: DecodedWindow, options: DecodingOptions) -> bool:
    """Whisper's silence rule: <|nospeech|> likely and the text itself unlikely."""
    if options.no_speech_threshold is None or decoded.no_speech_prob <= options.no_speech_threshold:
        return False
    return options.logprob_threshold is None or decoded.avg_logprob < options.logprob_threshold


def compression_ratio(text: str) -> float:
    """Bytes of text per byte of its zlib compression: high for looping output."""
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data)) if data else 0.0
