"""The decoder runtime: a Whisper model's decoder driven step by step with dw's own caches.

Why not ``model.generate``: for a 2-to-4-layer decoder the per-step work is tiny, and
generate's general machinery (cache objects, mask building, a logits-processor loop per row)
costs more than the matrix products.  The runtime drives the same transformers modules
directly: the encoder runs once per batch, cross-attention keys/values are projected once,
self-attention keys/values live in one preallocated tensor, Whisper's rules are applied to
the whole batch with tensor ops (``rules``), and finished rows leave the batch.

Every search strategy (``greedy``, ``beam``, ``speculative``) and word alignment run on it,
and share its prologue (``begin``: languages, prompts with their context, the caches, the
prompt's forward pass, the no-speech probability, the first logits) and its epilogue
(``finish``: each window's ``DecodedWindow``), the way openai-whisper's one decoding loop
takes pluggable token decoders.  The tests check it emits token for token what
``generate`` does.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .options import DecodedWindow, DecodingOptions, SpecialTokens, WindowContext
from .rules import WhisperRules

# A prompt's context (previous text) is at most this many tokens: openai-whisper keeps the
# last n_text_ctx // 2 - 1, so prompt and transcript share the 448 positions.
MAX_CONTEXT_TOKENS = 223


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


def _column_major_weights(model) -> None:
    """The decoder's Linear weights (the tied output projection included) stored
    transposed, as (in, out) row-major memory seen as the usual (out, in) tensor: for the
    few rows of a decoding step, MKL's matrix product is up to 2x faster reading them this
    way (measured with tiny.en's shapes at 8 and 16 rows, one thread: the projection
    26 -> 13 ms, fc1 307 -> 138 us).  Same values, same module structure; CPU only."""
    from torch import nn

    decoder = model.model.decoder
    for module in decoder.modules():
        if type(module) is nn.Linear and module.weight.stride(-1) == 1:
            module.weight = nn.Parameter(module.weight.detach().t().contiguous().t(), requires_grad=False)
    embedding = decoder.embed_tokens.weight
    if embedding.stride(-1) == 1:
        # One copy serves both: token lookups read a few rows, strided, which costs nothing.
        decoder.embed_tokens.weight = nn.Parameter(embedding.detach().t().contiguous().t(), requires_grad=False)
    if model.proj_out.weight.data_ptr() == embedding.data_ptr():
        model.proj_out.weight = decoder.embed_tokens.weight


def token_logprobs(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Each row's log-probability of its token: the token's logit less the row's logsumexp
    (one pass over the vocabulary, where log_softmax then gather writes a second one)."""
    return logits.gather(1, tokens[:, None])[:, 0] - logits.logsumexp(dim=-1)


class RowShrink:
    """Rows leave a batch: the last surviving rows move into the places of those that left,
    and every tensor is cut to the survivors (a view).  Only the moved rows are copied; the
    plain ``tensor[keep]`` copied all survivors' caches whenever one row left (at batch 16
    with tiny.en, 300 MB of cross-attention keys and values each time), which cost more
    than the decoding steps between leavings.  Survivors change order, so every per-row
    tensor of the batch must go through ``apply``."""

    def __init__(self, keep: torch.Tensor):
        self.count = int(keep.sum())
        self.into = (~keep[: self.count]).nonzero()[:, 0]  # places of leaving rows among the first survivors
        self.source = keep[self.count :].nonzero()[:, 0] + self.count  # survivors beyond them

    def apply(self, tensor: torch.Tensor, dim: int = 0) -> torch.Tensor:
        if len(self.into):
            tensor.index_copy_(dim, self.into, tensor.index_select(dim, self.source))
        return tensor.narrow(dim, 0, self.count)


@dataclass
class DecodingStart:
    """The state every strategy starts from: ``DecoderRuntime.begin``'s result.

    Rows are windows (times ``beams``, each window's beams side by side).  Prompts of
    different lengths are left-padded to one length; ``offsets`` (per row: padding before
    its prompt) shifts each row's positions and hides the padding from attention.
    """

    cross_kv: list[tuple[torch.Tensor, torch.Tensor]]  # per layer, one entry per window
    languages: list[str | None]  # per window
    prompt_lengths: list[int]  # per window, context included, padding not
    prompt_length: int  # the padded prompt: where generation starts in the cache
    offsets: torch.Tensor | None  # per row; None when every prompt has the same length
    max_new: torch.Tensor  # per row: tokens it may generate before the 448 positions run out
    self_kv: tuple[torch.Tensor, torch.Tensor]  # (layers, rows, heads, positions, head_dim)
    no_speech_probs: list[float]  # per window
    logits: torch.Tensor  # (rows, vocab): the logits of the first generated token
    speech_end: torch.Tensor | None  # per row: the speech-end rule's token (rules.NO_RULE: none)


class DecoderRuntime:
    """A transformers ``WhisperForConditionalGeneration``'s encoder and decoder, run by dw."""

    def __init__(self, model, special: SpecialTokens, suppress_tokens, begin_suppress_tokens,
                 encoder_autocast=None, projection_dtype=None, encoder_micro_batch: int = 0):
        self.model = model
        self.encoder = model.model.encoder
        self.decoder = model.model.decoder
        if model.proj_out.weight.device.type == "cpu":
            _column_major_weights(model)
        # The vocabulary projection reads the whole embedding matrix (80 MB for tiny in
        # float32) at every step; where a narrower copy is as exact (see precision.py) it
        # is read instead, and only the argmax of the result matters.
        self.output_embedding = model.proj_out.weight.detach().to(projection_dtype or model.proj_out.weight.dtype)
        self.encoder_autocast = encoder_autocast  # e.g. torch.bfloat16: the encoder's matmuls
        # Cross-attention keys/values are read at every step: narrow them like the projection.
        self.attention_dtype = projection_dtype or model.proj_out.weight.dtype
        self.encoder_micro_batch = encoder_micro_batch  # 0: whole batch; else bounds attention memory
        self.special = special
        self.vocab_size = self.output_embedding.shape[0]
        self.rules = WhisperRules(special, suppress_tokens, begin_suppress_tokens, self.vocab_size,
                                  self.output_embedding.device)
        self.heads = self.decoder.layers[0].self_attn.num_heads
        self.head_dim = self.decoder.layers[0].self_attn.head_dim
        self.max_positions = self.decoder.embed_positions.weight.shape[0]

    # -- the encoder ---------------------------------------------------------------------
    @torch.inference_mode()
    def encode(self, features: torch.Tensor) -> torch.Tensor:
        """Encoder states (batch, 1500, d_model) in the decoder's dtype."""
        step = self.encoder_micro_batch or len(features)
        dtype = self.decoder.embed_tokens.weight.dtype
        parts = []
        for start in range(0, len(features), step):
            chunk = features[start : start + step]
            if self.encoder_autocast is not None:
                with torch.autocast(chunk.device.type, dtype=self.encoder_autocast):
                    parts.append(self.encoder(chunk).to(dtype))
            else:
                parts.append(self.encoder(chunk).to(dtype))
        return parts[0] if len(parts) == 1 else torch.cat(parts)

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

    def _self_attention_mask(self, start: int, length: int, offsets, device):
        """The mask (True: attend) for ``length`` new tokens after ``start`` cached ones, or
        None where SDPA's own causal flag suffices.

        Several new tokens after cached ones (speculative verification): token i sees the
        cache and new tokens 0..i; SDPA's is_causal aligns its mask top-left, which is right
        only when nothing is cached.  With ``offsets``, each row's padding is hidden, except
        from the padding itself (a row of queries that sees nothing would turn to NaN).
        """
        if offsets is None:
            if length > 1 and start > 0:
                return torch.ones(length, start + length, dtype=torch.bool, device=device).tril(start)
            return None
        keys = torch.arange(start + length, device=device)
        queries = torch.arange(start, start + length, device=device)
        visible = (keys[None, None, :] >= offsets[:, None, None]) | (keys[None, None, :] == queries[None, :, None])
        visible &= keys[None, None, :] <= queries[None, :, None]
        return visible[:, None]  # (batch, 1 head group, length, keys)

    def forward(self, tokens, start, self_kv, cross_kv, cross_weights_of=None, beams: int = 1, offsets=None):
        """Run the decoder on ``tokens`` (batch, n) at cache positions start..start+n-1.

        ``self_kv`` is a pair of (layers, batch, heads, positions, head_dim) tensors updated
        in place.  Returns hidden states (batch, n, d_model).  With ``cross_weights_of`` (a
        set of layer indices), also returns those layers' cross-attention weights.  With
        ``beams`` > 1, each ``beams`` consecutive rows are beams of one window and share
        that window's single ``cross_kv`` entry.  With ``offsets`` (per row), a row's
        token at cache position p sits at position p - offset (its left padding).
        """
        length = tokens.shape[1]
        if offsets is None:
            positions = self.decoder.embed_positions.weight[start : start + length]
        else:
            index = torch.arange(start, start + length, device=tokens.device)
            positions = self.decoder.embed_positions.weight[(index[None, :] - offsets[:, None]).clamp(min=0)]
        hidden = self.decoder.embed_tokens(tokens) + positions
        keys, values = self_kv
        weights = {}
        mask = self._self_attention_mask(start, length, offsets, tokens.device)
        for index, layer in enumerate(self.decoder.layers):
            attn = layer.self_attn
            normed = layer.self_attn_layer_norm(hidden)
            keys[index, :, :, start : start + length] = self._split_heads(attn.k_proj(normed))
            values[index, :, :, start : start + length] = self._split_heads(attn.v_proj(normed))
            context = F.scaled_dot_product_attention(
                self._split_heads(attn.q_proj(normed)),
                keys[index, :, :, : start + length],
                values[index, :, :, : start + length],
                attn_mask=mask,
                is_causal=length > 1 and mask is None,
            )
            hidden = hidden + attn.out_proj(self._merge_heads(context))

            cross = layer.encoder_attn
            normed = layer.encoder_attn_layer_norm(hidden)
            # Scaled before the product, as transformers and openai-whisper do: in float16
            # the unscaled product of query and key can overflow.
            query = (self._split_heads(cross.q_proj(normed)) * self.head_dim**-0.5).to(self.attention_dtype)
            if beams > 1:  # a window's beams become one group of queries: (windows, heads, beams*n, dim)
                query = _group_beams(query, beams)
            keys_t, cross_values = cross_kv[index]
            # Plain matmul-softmax-matmul: for one query token it beats the fused kernels on
            # CPU, and it yields the weights that word alignment reads.
            probabilities = (query @ keys_t).float().softmax(dim=-1)
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

    def prompt_tokens(self, language: str | None, options: DecodingOptions, previous: tuple[int, ...] = ()) -> list[int]:
        """``[<|startofprev|> previous...] <|startoftranscript|> [language task] [<|notimestamps|>]``."""
        prompt = []
        if previous:
            prompt = [self.special.start_of_previous, *previous[-MAX_CONTEXT_TOKENS:]]
        prompt.append(self.special.start_of_transcript)
        if self.special.multilingual:
            prompt.append(self.special.languages.get(language or "en", self.special.languages.get("en")))
            task = self.special.translate if options.task == "translate" else self.special.transcribe
            prompt.append(task)
        if not options.timestamps:
            prompt.append(self.special.no_timestamps)
        return prompt

    # -- what every strategy shares ------------------------------------------------------
    def begin(self, encoder_states: torch.Tensor, options: DecodingOptions,
              contexts: list[WindowContext] | None = None, beams: int = 1) -> DecodingStart:
        """The prologue: languages, prompts, caches, the prompt's forward pass."""
        windows, device = encoder_states.shape[0], encoder_states.device
        contexts = contexts or [WindowContext()] * windows
        cross_kv = self.cross_attention_kv(encoder_states)
        languages = self.window_languages(cross_kv, options, windows, encoder_states)
        prompts = [self.prompt_tokens(language, options, context.previous)
                   for language, context in zip(languages, contexts)]
        lengths = [len(prompt) for prompt in prompts]
        padded = max(lengths)
        pads = [padded - length for length in lengths]
        # Each row may go on until the decoder's positions run out, at most max_new_tokens.
        max_new = [max(0, min(options.max_new_tokens, self.max_positions - length)) for length in lengths]
        tokens = torch.tensor([[self.special.end_of_text] * pad + prompt for pad, prompt in zip(pads, prompts)],
                              device=device)
        offsets = torch.tensor(pads, device=device) if any(pads) else None
        if beams > 1:
            tokens = tokens.repeat_interleave(beams, dim=0)
            offsets = None if offsets is None else offsets.repeat_interleave(beams)
        self_kv = self.new_self_kv(windows * beams, padded + max(max_new), encoder_states)
        hidden = self.forward(tokens, 0, self_kv, cross_kv, beams=beams, offsets=offsets)
        # <|nospeech|> is read where <|startoftranscript|> is, after any context.
        at_start = hidden[::beams][torch.arange(windows, device=device),
                                   torch.tensor([pad + len(context.previous[-MAX_CONTEXT_TOKENS:]) + bool(context.previous)
                                                 for pad, context in zip(pads, contexts)], device=device)]
        no_speech_probs = self.logits(at_start).softmax(dim=-1)[:, self.special.no_speech].tolist()
        speech_end = self.rules.speech_end_tokens([context.speech_end_s for context in contexts], options, device)
        limits = torch.tensor(max_new, device=device)
        if beams > 1:
            limits = limits.repeat_interleave(beams)
            speech_end = None if speech_end is None else speech_end.repeat_interleave(beams)
        return DecodingStart(cross_kv, languages, lengths, padded, offsets, limits, self_kv, no_speech_probs,
                             self.logits(hidden[:, -1]), speech_end)

    @staticmethod
    def finish(start: DecodingStart, tokens: list[list[int]], sum_logprobs: list[float], finished: list[bool],
               temperature: float = 0.0) -> list[DecodedWindow]:
        """The epilogue: one ``DecodedWindow`` per window from its tokens (without the end
        of text), their summed log-probability, and whether it ended before its limit."""
        return [
            DecodedWindow(
                tokens=list(row_tokens),
                avg_logprob=logprob / (len(row_tokens) + 1),  # the end of text counts, as in openai-whisper
                no_speech_prob=float(start.no_speech_probs[row]),
                language=start.languages[row],
                truncated=not done,
                prompt_length=start.prompt_lengths[row],
                temperature=temperature,
            )
            for row, (row_tokens, logprob, done) in enumerate(zip(tokens, sum_logprobs, finished))
        ]
