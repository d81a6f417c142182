"""Batched greedy decoding of Whisper windows, with timestamp tokens.

Why not ``model.generate``: for a 2-to-4-layer decoder the per-step work is tiny, and
generate's general machinery (cache objects, mask building, a logits-processor loop per row)
costs more than the matrix products.  This loop drives the same transformers modules
directly: the encoder runs once per batch, cross-attention keys/values are projected once,
self-attention keys/values live in one preallocated tensor, Whisper's timestamp rules are
applied to the whole batch with tensor ops, and finished rows leave the batch.  The tests
check that it emits token for token what ``generate`` does.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from .segments import SECONDS_PER_TIMESTAMP  # one timestamp token = 20 ms

MAX_NEW_TOKENS = 224  # openai-whisper's sample_len: half the decoder's 448 positions
MAX_INITIAL_TIMESTAMP_S = 1.0  # the first segment must start within the first second
_MIN_UNREAD_SPEECH_S = 0.5  # speech left after the last timestamp that keeps decoding going


@dataclass(frozen=True)
class SpecialTokens:
    """Token ids of Whisper's control tokens for one checkpoint."""

    end_of_text: int
    start_of_transcript: int
    no_timestamps: int
    no_speech: int
    transcribe: int | None
    translate: int | None
    languages: dict[str, int]  # language code -> token id; empty for English-only models

    @property
    def timestamp_begin(self) -> int:
        return self.no_timestamps + 1  # <|0.00|>

    @property
    def multilingual(self) -> bool:
        return bool(self.languages)

    @classmethod
    def from_generation_config(cls, generation_config) -> SpecialTokens:
        no_timestamps = generation_config.no_timestamps_token_id
        lang_to_id = getattr(generation_config, "lang_to_id", None) or {}
        task_to_id = getattr(generation_config, "task_to_id", None) or {}
        multilingual = bool(getattr(generation_config, "is_multilingual", False) and lang_to_id)
        return cls(
            end_of_text=generation_config.eos_token_id,
            start_of_transcript=generation_config.decoder_start_token_id,
            no_timestamps=no_timestamps,
            no_speech=no_timestamps - 1,
            transcribe=task_to_id.get("transcribe"),
            translate=task_to_id.get("translate"),
            languages={token.strip("<|>"): token_id for token, token_id in lang_to_id.items()} if multilingual else {},
        )


@dataclass(frozen=True)
class DecodingOptions:
    """How to decode a batch of windows."""

    timestamps: bool = True  # emit timestamp tokens (segments); False: one text per window
    language: str | None = None  # language code, or None to detect per window
    task: str = "transcribe"  # or "translate" (multilingual models only)
    max_new_tokens: int = MAX_NEW_TOKENS
    word_timestamps: bool = False  # align words with cross-attention + DTW after decoding
    beam_size: int = 1  # 1: greedy; more: beam search at temperature 0 (beam.py)
    # Temperature fallback (openai-whisper's): a window whose text compresses too well (a
    # loop) or whose tokens are too unlikely is decoded again, sampling at the next
    # temperature; a window that looks like silence is left alone.
    temperatures: tuple[float, ...] = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
    compression_ratio_threshold: float | None = 2.4
    logprob_threshold: float | None = -1.0
    no_speech_threshold: float | None = 0.6


@dataclass
class DecodedWindow:
    """What the decoder produced for one window."""

    tokens: list[int]  # generated tokens, without the prompt and the end-of-text token
    avg_logprob: float  # mean log-probability of the generated tokens
    no_speech_prob: float  # probability of <|nospeech|> at the start of transcript
    language: str | None
    truncated: bool = False  # stopped at max_new_tokens (a runaway repetition, usually)
    prompt_length: int = field(default=1, repr=False)


def _group_beams(x: torch.Tensor, beams: int) -> torch.Tensor:
    """(windows*beams, heads, n, dim) -> (windows, heads, beams*n, dim)."""
    rows, heads, length, dim = x.shape
    return x.view(rows // beams, beams, heads, length, dim).transpose(1, 2).reshape(
        rows // beams, heads, beams * length, dim)


def _ungroup_beams(x: torch.Tensor, beams: int) -> torch.Tensor:
    """The inverse of ``_group_beams``."""
    windows, heads, grouped, dim = x.shape
    length = grouped // beams
    return x.view(windows, heads, beams, length, dim).transpose(1, 2).reshape(windows * beams, heads, length, dim)


class GreedyDecoder:
    """Greedy decoding for a transformers ``WhisperForConditionalGeneration``."""

    def __init__(self, model, special: SpecialTokens, suppress_tokens, begin_suppress_tokens,
                 encoder_autocast=None, projection_dtype=None, encoder_micro_batch: int = 0):
        self.model = model
        self.encoder = model.model.encoder
        self.decoder = model.model.decoder
        # The vocabulary projection reads the whole embedding matrix (80 MB for tiny in
        # float32) at every step; on a CPU with bfloat16 instructions a bfloat16 copy cuts
        # that step to a third, and only the argmax of the result matters.
        self.output_embedding = model.proj_out.weight.detach().to(projection_dtype or model.proj_out.weight.dtype)
        self.encoder_autocast = encoder_autocast  # e.g. torch.bfloat16: the encoder's matmuls on CPU
        # Cross-attention keys/values are read at every step: narrow them like the projection.
        self.attention_dtype = projection_dtype or model.proj_out.weight.dtype
        self.encoder_micro_batch = encoder_micro_batch  # 0: whole batch; else bounds attention memory
        self.special = special
        self.vocab_size = self.output_embedding.shape[0]
        device = self.output_embedding.device
        self._suppress = torch.tensor(sorted(set(suppress_tokens or [])), dtype=torch.long, device=device)
        self._begin_suppress = torch.tensor(sorted(set(begin_suppress_tokens or [])), dtype=torch.long, device=device)
        self.heads = self.decoder.layers[0].self_attn.num_heads
        self.head_dim = self.decoder.layers[0].self_attn.head_dim
        self.max_positions = self.decoder.embed_positions.weight.shape[0]

    # -- the decoder forward pass, with our own caches -------------------------------------
    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, _ = x.shape
        return x.view(batch, length, self.heads, self.head_dim).transpose(1, 2)

    def _merge_heads(self, x: torch.Tensor) -> torch.Tensor:
        batch, _, length, _ = x.shape
        return x.transpose(1, 2).reshape(batch, length, self.heads * self.head_dim)

    def cross_attention_kv(self, encoder_states: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Project the encoder output once per layer into cross-attention keys/values.

        Keys are stored transposed, (batch, heads, head_dim, 1500), and both are contiguous
        in ``attention_dtype``: each decoding step reads all of them (for tiny at batch 16,
        74 MB per layer in float32), so their layout and width set the step's cost.
        """
        return [
            (
                self._split_heads(layer.encoder_attn.k_proj(encoder_states)).transpose(-1, -2)
                .to(self.attention_dtype).contiguous(),
                self._split_heads(layer.encoder_attn.v_proj(encoder_states)).to(self.attention_dtype).contiguous(),
            )
            for layer in self.decoder.layers
        ]

    def forward(self, tokens, start, self_kv, cross_kv, cross_weights_of=None, beams: int = 1):
        """Run the decoder on ``tokens`` (batch, n) at positions start..start+n-1.

        ``self_kv`` is a pair of (layers, batch, heads, positions, head_dim) tensors updated
        in place.  Returns hidden states (batch, n, d_model).  With ``cross_weights_of`` (a
        set of layer indices), also returns those layers' cross-attention weights.  With
        ``beams`` > 1, each ``beams`` consecutive rows are beams of one window and share
        that window's single ``cross_kv`` entry.
        """
        length = tokens.shape[1]
        positions = self.decoder.embed_positions.weight[start : start + length]
        hidden = self.decoder.embed_tokens(tokens) + positions
        keys, values = self_kv
        weights = {}
        # Several new tokens after cached ones (speculative decoding's verification): token i
        # sees the cache and new tokens 0..i.  SDPA's is_causal aligns its mask top-left, which
        # is right only when nothing is cached, so an explicit mask is built then.
        causal_mask = None
        if length > 1 and start > 0:
            causal_mask = torch.ones(length, start + length, dtype=torch.bool, device=tokens.device).tril(start)
        for index, layer in enumerate(self.decoder.layers):
            attn = layer.self_attn
            normed = layer.self_attn_layer_norm(hidden)
            keys[index, :, :, start : start + length] = self._split_heads(attn.k_proj(normed))
            values[index, :, :, start : start + length] = self._split_heads(attn.v_proj(normed))
            context = F.scaled_dot_product_attention(
                self._split_heads(attn.q_proj(normed)),
                keys[index, :, :, : start + length],
                values[index, :, :, : start + length],
                attn_mask=causal_mask,
                is_causal=length > 1 and causal_mask is None,
            )
            hidden = hidden + attn.out_proj(self._merge_heads(context))

            cross = layer.encoder_attn
            normed = layer.encoder_attn_layer_norm(hidden)
            query = self._split_heads(cross.q_proj(normed)).to(self.attention_dtype)
            if beams > 1:  # a window's beams become one group of queries: (windows, heads, beams*n, dim)
                query = _group_beams(query, beams)
            keys_t, cross_values = cross_kv[index]
            # Plain matmul-softmax-matmul: for one query token it beats the fused kernels on
            # CPU, and it yields the weights that word alignment reads.
            probabilities = ((query @ keys_t).float() * self.head_dim**-0.5).softmax(dim=-1)
            if cross_weights_of is not None and index in cross_weights_of:
                weights[index] = probabilities
            context = (probabilities.to(self.attention_dtype) @ cross_values).to(hidden.dtype)
            if beams > 1:
                context = _ungroup_beams(context, beams)
            hidden = hidden + cross.out_proj(self._merge_heads(context))

            normed = layer.final_layer_norm(hidden)
            hidden = hidden + layer.fc2(layer.activation_fn(layer.fc1(normed)))
        hidden = self.decoder.layer_norm(hidden)
        return (hidden, weights) if cross_weights_of is not None else hidden

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return F.linear(hidden.to(self.output_embedding.dtype), self.output_embedding).float()

    def new_self_kv(self, batch: int, length: int, like: torch.Tensor):
        shape = (len(self.decoder.layers), batch, self.heads, length, self.head_dim)
        return (like.new_empty(shape), like.new_empty(shape))

    # -- prompts and language ------------------------------------------------------------
    def detect_language(self, cross_kv, batch: int, like: torch.Tensor) -> list[str]:
        """Most likely language of each window, from one decoder step on <|startoftranscript|>."""
        codes = list(self.special.languages)
        ids = torch.tensor([self.special.languages[code] for code in codes], device=like.device)
        tokens = torch.full((batch, 1), self.special.start_of_transcript, device=like.device)
        hidden = self.forward(tokens, 0, self.new_self_kv(batch, 1, like), cross_kv)
        best = self.logits(hidden[:, -1])[:, ids].argmax(dim=-1)
        return [codes[index] for index in best.tolist()]

    def window_languages(self, cross_kv, options: DecodingOptions, batch: int, like: torch.Tensor) -> list[str | None]:
        """Each window's language: ``options.language``, else detected (multilingual models),
        else None (English-only models)."""
        if self.special.multilingual and options.language is None:
            return self.detect_language(cross_kv, batch, like)
        return [options.language or ("en" if self.special.multilingual else None)] * batch

    def prompt_tokens(self, language: str | None, options: DecodingOptions) -> list[int]:
        prompt = [self.special.start_of_transcript]
        if self.special.multilingual:
            prompt.append(self.special.languages.get(language or "en", self.special.languages.get("en")))
            task = self.special.translate if options.task == "translate" else self.special.transcribe
            prompt.append(task)
        if not options.timestamps:
            prompt.append(self.special.no_timestamps)
        return prompt

    # -- Whisper's decoding rules, for the whole batch at once -----------------------------
    def apply_rules(self, logits, generated, step, options, last_timestamp, speech_end=None):
        """Mask ``logits`` (batch, vocab) in place: suppressed tokens and timestamp rules."""
        special = self.special
        if len(self._suppress):
            logits[:, self._suppress] = -float("inf")
        if step == 0 and len(self._begin_suppress):
            logits[:, self._begin_suppress] = -float("inf")
        if not options.timestamps:
            return logits
        begin = special.timestamp_begin
        logits[:, special.no_timestamps] = -float("inf")
        if step == 0:
            logits[:, :begin] = -float("inf")
            max_initial = begin + round(MAX_INITIAL_TIMESTAMP_S / SECONDS_PER_TIMESTAMP)
            logits[:, max_initial + 1 :] = -float("inf")
        else:
            last_was_timestamp = generated[:, step - 1] >= begin
            if step >= 2:
                penultimate_was_timestamp = generated[:, step - 2] >= begin
            else:
                penultimate_was_timestamp = torch.ones_like(last_was_timestamp)
            # Timestamps come in pairs: after a pair, text; after a lone one, its partner or the end.
            after_pair = last_was_timestamp & penultimate_was_timestamp
            logits[after_pair, begin:] = -float("inf")
            if speech_end is not None:
                # Whisper ends a window after a pair of timestamps when it takes the last
                # phrase for one the window cuts off.  When the window really ends in a
                # pause (the speech detector says so), nothing is cut off: while speech
                # remains after that timestamp, the end of text is not allowed.
                logits[after_pair & (last_timestamp < speech_end), special.end_of_text] = -float("inf")
            logits[last_was_timestamp & ~penultimate_was_timestamp, : special.end_of_text] = -float("inf")
            # Timestamps never go back; only a lone timestamp's partner may repeat it.
            has_timestamp = last_timestamp >= 0
            floor = last_timestamp + (~(last_was_timestamp & ~penultimate_was_timestamp)).long()
            offsets = torch.arange(self.vocab_size - begin, device=logits.device)
            too_early = has_timestamp[:, None] & (offsets[None, :] < (floor - begin)[:, None])
            logits[:, begin:].masked_fill_(too_early, -float("inf"))
        # When the timestamps together outweigh every single text token, emit a timestamp.
        logprobs = F.log_softmax(logits, dim=-1)
        timestamp_logprob = logprobs[:, begin:].logsumexp(dim=-1)
        text_logprob = logprobs[:, :begin].max(dim=-1).values
        logits[timestamp_logprob > text_logprob, :begin] = -float("inf")
        return logits

    def speech_end_tokens(self, speech_end_s: list[float | None] | None, options: DecodingOptions, device):
        """Per window, as a timestamp token, the latest last timestamp that still leaves
        speech unread (the end of text is barred before it); -1 where a window has no such
        rule; None when no window has."""
        if speech_end_s is None or not options.timestamps or all(end is None for end in speech_end_s):
            return None
        return torch.tensor(
            [-1 if end is None else self.special.timestamp_begin + round((end - _MIN_UNREAD_SPEECH_S) / SECONDS_PER_TIMESTAMP)
             for end in speech_end_s], device=device)

    # -- the loop ------------------------------------------------------------------------
    @torch.inference_mode()
    def encode(self, features: torch.Tensor) -> torch.Tensor:
        """Encoder states (batch, 1500, d_model) in the decoder's dtype."""
        step = self.encoder_micro_batch or len(features)
        parts = []
        for start in range(0, len(features), step):
            chunk = features[start : start + step]
            if self.encoder_autocast is not None:
                with torch.autocast(chunk.device.type, dtype=self.encoder_autocast):
                    parts.append(self.encoder(chunk).last_hidden_state.to(chunk.dtype))
            else:
                parts.append(self.encoder(chunk).last_hidden_state)
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    @torch.inference_mode()
    def decode(self, features: torch.Tensor, options: DecodingOptions, temperature: float = 0.0) -> list[DecodedWindow]:
        """Transcribe a batch of log-mel windows (batch, n_mels, 3000): greedy at
        temperature 0, else sampling."""
        encoder_states = self.encode(features)
        return self.decode_encoded(encoder_states, options, temperature)

    @torch.inference_mode()
    def decode_encoded(self, encoder_states: torch.Tensor, options: DecodingOptions,
                       temperature: float = 0.0, speech_end_s: list[float] | None = None) -> list[DecodedWindow]:
        """Decode encoded windows.  ``speech_end_s`` (per window: where its speech ends)
        keeps Whisper from stopping before that point; None decodes exactly as Whisper."""
        batch = encoder_states.shape[0]
        # Sampling is seeded so a rerun gives the same transcript.
        sampler = torch.Generator(device=encoder_states.device).manual_seed(0) if temperature > 0 else None
        speech_end = self.speech_end_tokens(speech_end_s, options, encoder_states.device)
        device = encoder_states.device
        cross_kv = self.cross_attention_kv(encoder_states)
        languages = self.window_languages(cross_kv, options, batch, encoder_states)
        prompts = [self.prompt_tokens(language, options) for language in languages]
        prompt_length = len(prompts[0])
        max_new = min(options.max_new_tokens, self.max_positions - prompt_length)
        tokens = torch.tensor(prompts, device=device)
        self_kv = self.new_self_kv(batch, prompt_length + max_new, encoder_states)

        hidden = self.forward(tokens, 0, self_kv, cross_kv)
        no_speech_probs = self.logits(hidden[:, 0]).softmax(dim=-1)[:, self.special.no_speech].tolist()
        logits = self.logits(hidden[:, -1])

        generated = torch.full((batch, max_new), self.special.end_of_text, dtype=torch.long, device=device)
        sum_logprob = torch.zeros(batch, device=device)
        last_timestamp = torch.full((batch,), -1, dtype=torch.long, device=device)
        lengths = [max_new] * batch
        active = torch.arange(batch, device=device)  # original row of each row still decoding
        for step in range(max_new):
            rows_generated = generated[active]
            logits = self.apply_rules(logits, rows_generated, step, options, last_timestamp[active],
                                       None if speech_end is None else speech_end[active])
            if sampler is None:
                next_tokens = logits.argmax(dim=-1)
            else:
                next_tokens = torch.multinomial((logits / temperature).softmax(dim=-1), 1, generator=sampler)[:, 0]
            sum_logprob[active] += F.log_softmax(logits, dim=-1).gather(1, next_tokens[:, None])[:, 0]
            generated[active, step] = next_tokens
            is_timestamp = next_tokens >= self.special.timestamp_begin
            last_timestamp[active] = torch.where(is_timestamp, next_tokens, last_timestamp[active])
            finished = next_tokens == self.special.end_of_text
            if bool(finished.any()):
                for row in active[finished].tolist():
                    lengths[row] = step
                keep = ~finished
                active = active[keep]
                if len(active) == 0:
                    break
                next_tokens = next_tokens[keep]
                self_kv = (self_kv[0][:, keep], self_kv[1][:, keep])
                cross_kv = [(k[keep], v[keep]) for k, v in cross_kv]
            if step + 1 == max_new:
                break
            hidden = self.forward(next_tokens[:, None], prompt_length + step, self_kv, cross_kv)
            logits = self.logits(hidden[:, -1])

        results = []
        generated_rows = generated.tolist()
        for row in range(batch):
            count = lengths[row]
            results.append(
                DecodedWindow(
                    tokens=generated_rows[row][:count],
                    avg_logprob=float(sum_logprob[row]) / max(count + 1, 1),
                    no_speech_prob=float(no_speech_probs[row]),
                    language=languages[row],
                    truncated=count == max_new,
                    prompt_length=prompt_length,
                )
            )
        return results
