"""Whisper's decoding rules, applied to a whole batch of logits with tensor operations.

The rules of openai-whisper's ``SuppressTokens``, ``SuppressBlank`` and
``ApplyTimestampRules``: suppressed tokens; timestamps in pairs, never going back; the first
timestamp within the first second; a timestamp whenever the timestamps together outweigh
every single text token.  Plus dw's one addition, for windows that end in a pause: while
detected speech remains after the last timestamp, the text may not end.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..segments import SECONDS_PER_TIMESTAMP  # one timestamp token = 20 ms
from .options import DecodingOptions, SpecialTokens

MAX_INITIAL_TIMESTAMP_S = 1.0  # the first segment must start within the first second
_MIN_UNREAD_SPEECH_S = 0.5  # speech left after the last timestamp that keeps decoding going
NO_RULE = -1  # a window's speech-end token when the rule does not apply to it


class WhisperRules:
    """The rules for one checkpoint's vocabulary."""

    def __init__(self, special: SpecialTokens, suppress_tokens, begin_suppress_tokens, vocab_size: int, device):
        self.special = special
        self.vocab_size = vocab_size
        self._suppress = torch.tensor(sorted(set(suppress_tokens or [])), dtype=torch.long, device=device)
        self._begin_suppress = torch.tensor(sorted(set(begin_suppress_tokens or [])), dtype=torch.long, device=device)

    def speech_end_tokens(self, speech_end_s: list[float | None], options: DecodingOptions, device):
        """Per window, as a timestamp token, the latest last timestamp that still leaves
        speech unread (the end of text is barred before it); NO_RULE where a window has no
        such rule; None when no window has."""
        if not options.timestamps or all(end is None for end in speech_end_s):
            return None
        begin = self.special.timestamp_begin
        return torch.tensor(
            [NO_RULE if end is None else begin + round((end - _MIN_UNREAD_SPEECH_S) / SECONDS_PER_TIMESTAMP)
             for end in speech_end_s], device=device)

    def apply(self, logits, generated, step, options, last_timestamp, speech_end=None):
        """Mask ``logits`` (batch, vocab) in place for generation step ``step``; ``generated``
        holds each row's tokens so far, ``last_timestamp`` its last timestamp token (-1:
        none yet), ``speech_end`` the rows' speech-end tokens (or None)."""
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
