"""Greedy decoding (and sampling, for the temperature fallback), batched across windows.

Each step every window still decoding takes its most likely token under Whisper's rules
(or, above temperature 0, a token drawn from the tempered distribution); a window that ends
its text leaves the batch, so the batch shrinks as windows finish.
"""

from __future__ import annotations

import torch

from .options import DecodedWindow, DecodingOptions, WindowContext
from .runtime import DecoderRuntime, RowShrink, token_logprobs


class GreedySearch:
    """Greedy decoding on a ``DecoderRuntime``."""

    def __init__(self, runtime: DecoderRuntime):
        self.runtime = runtime

    def encode(self, features: torch.Tensor) -> torch.Tensor:
        return self.runtime.encode(features)

    @torch.inference_mode()
    def decode(self, encoder_states: torch.Tensor, options: DecodingOptions,
               contexts: list[WindowContext] | None = None, temperature: float = 0.0) -> list[DecodedWindow]:
        """Decode encoded windows: greedy at temperature 0, else sampling (seeded, so a
        rerun gives the same transcript)."""
        runtime, special = self.runtime, self.runtime.special
        start = runtime.begin(encoder_states, options, contexts)
        batch, device = encoder_states.shape[0], encoder_states.device
        sampler = torch.Generator(device=device).manual_seed(0) if temperature > 0 else None
        limit = int(start.max_new.max()) if batch else 0
        generated = torch.full((batch, max(limit, 1)), special.end_of_text, dtype=torch.long, device=device)
        sum_logprob = torch.zeros(batch, device=device)
        last_timestamp = torch.full((batch,), -1, dtype=torch.long, device=device)
        lengths = start.max_new.tolist()
        ended = [False] * batch
        active = torch.arange(batch, device=device)  # original row of each row still decoding
        self_kv, cross_kv, offsets, speech_end = start.self_kv, start.cross_kv, start.offsets, start.speech_end
        logits = start.logits
        for step in range(limit):
            logits = runtime.rules.apply(logits, generated[active], step, options, last_timestamp[active],
                                         None if speech_end is None else speech_end[active])
            if sampler is None:
                next_tokens = logits.argmax(dim=-1)
            else:
                next_tokens = torch.multinomial((logits / temperature).softmax(dim=-1), 1, generator=sampler)[:, 0]
            sum_logprob[active] += token_logprobs(logits, next_tokens)
            generated[active, step] = next_tokens
            is_timestamp = next_tokens >= special.timestamp_begin
            last_timestamp[active] = torch.where(is_timestamp, next_tokens, last_timestamp[active])
            finished = next_tokens == special.end_of_text
            out_of_room = start.max_new[active] <= step + 1  # its positions are used up: truncated
            leaving = finished | out_of_room
            if bool(leaving.any()):
                for row, done in zip(active[leaving].tolist(), finished[leaving].tolist()):
                    lengths[row], ended[row] = (step, True) if done else (step + 1, False)
                rows = RowShrink(~leaving)
                if rows.count == 0:
                    break
                active, next_tokens = rows.apply(active), rows.apply(next_tokens)
                self_kv = (rows.apply(self_kv[0], dim=1), rows.apply(self_kv[1], dim=1))
                cross_kv = [(rows.apply(keys), rows.apply(values)) for keys, values in cross_kv]
                offsets = None if offsets is None else rows.apply(offsets)
            hidden = runtime.forward(next_tokens[:, None], start.prompt_length + step, self_kv, cross_kv,
                                     offsets=offsets)
            logits = runtime.logits(hidden[:, -1])
        rows = generated.tolist()
        return runtime.finish(start, [rows[row][: lengths[row]] for row in range(batch)], sum_logprob.tolist(),
                              ended, temperature)
