"""Beam search over Whisper windows (``--beam-size N``), batched across windows.

Distil-Whisper is meant to be decoded greedily, and that is dw's default.  Beam search (what
openai-whisper, faster-whisper and the transformers pipeline do by default, with 5 beams)
keeps the N most likely partial transcripts of each window instead of one, which buys a
little accuracy on hard audio for N times the decoder work.

It follows openai-whisper's search: each step pools the beams' candidates, a candidate that
ends the text becomes a finished transcript and the best others carry on, until a window has
N finished transcripts; the one with the best mean log-probability per token wins.  Whisper's
timestamp rules and dw's speech-end rule are the runtime's, applied to every beam.

Why it stays cheap: a window's beams share its encoder output, so cross-attention keys and
values are kept once per window and the beams of a window are attended as a group of queries
(``DecoderRuntime.forward(beams=N)``), not copied N times (for tiny at batch 16, 5 beams would
copy 1.5 GB).  Only the small self-attention cache is reordered as beams are chosen.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .options import DecodedWindow, DecodingOptions, WindowContext
from .runtime import DecoderRuntime


@dataclass(frozen=True)
class _Candidate:
    """A transcript a beam produced: its tokens (no end of text) and summed log-probability."""

    tokens: tuple[int, ...]
    sum_logprob: float
    finished: bool

    @property
    def score(self) -> float:
        # openai-whisper's ranking without a length penalty: mean log-probability per token.
        return self.sum_logprob / max(len(self.tokens), 1)


class BeamSearch:
    """Beam search on a ``DecoderRuntime`` (its forward pass and Whisper's rules)."""

    def __init__(self, runtime: DecoderRuntime):
        self.runtime = runtime

    @torch.inference_mode()
    def decode(self, encoder_states: torch.Tensor, options: DecodingOptions,
               contexts: list[WindowContext] | None = None) -> list[DecodedWindow]:
        """The best of ``options.beam_size`` beams for each encoded window."""
        runtime, special, beams = self.runtime, self.runtime.special, options.beam_size
        device = encoder_states.device
        windows = encoder_states.shape[0]
        start = runtime.begin(encoder_states, options, contexts, beams=beams)
        self_kv, cross_kv, offsets, speech_end = start.self_kv, start.cross_kv, start.offsets, start.speech_end
        limits = start.max_new  # per row
        logits = start.logits
        max_new = int(limits.max())

        rows = windows * beams
        generated = torch.full((rows, max_new), special.end_of_text, dtype=torch.long, device=device)
        last_timestamp = torch.full((rows,), -1, dtype=torch.long, device=device)
        # Identical beams at the start: only the first one is expanded, or the first step
        # would fill the beams with N copies of the same token.
        scores = torch.full((windows, beams), -float("inf"), device=device)
        scores[:, 0] = 0.0
        live = list(range(windows))  # original index of each window still searching
        finished: list[list[_Candidate]] = [[] for _ in range(windows)]
        for step in range(max_new):
            logits = runtime.rules.apply(logits, generated[:, :step], step, options, last_timestamp, speech_end)
            logprobs = F.log_softmax(logits, dim=-1)
            vocab = logprobs.shape[-1]
            pooled = (scores.view(-1, 1) + logprobs).view(len(live), beams * vocab)
            # Each beam has one end of text, so 2N candidates always hold N that go on.
            top_scores, top_index = pooled.topk(2 * beams, dim=-1)
            sources, next_tokens, next_scores, done = self._choose(
                top_scores.tolist(), top_index.tolist(), vocab, live, generated, step, finished, beams)
            source_rows = torch.tensor(sources, device=device)
            chosen = torch.tensor(next_tokens, device=device)
            generated = generated[source_rows]
            generated[:, step] = chosen
            last_timestamp = torch.where(chosen >= special.timestamp_begin, chosen, last_timestamp[source_rows])
            scores = torch.tensor(next_scores, device=device).view(len(live), beams)
            # A window whose positions are used up ends with its beams unfinished.
            out_of_room = [index for slot, index in enumerate(live)
                           if index not in done and int(limits[slot * beams]) <= step + 1]
            if out_of_room:
                rows_left = generated.tolist()
                for index in out_of_room:
                    slot = live.index(index)
                    for beam in range(beams):
                        finished[index].append(_Candidate(
                            tuple(rows_left[slot * beams + beam][: step + 1]), float(scores[slot, beam]), finished=False))
                done = done | set(out_of_room)
            if step + 1 == max_new:
                break
            # The chosen beams' own histories: the self-attention cache follows its rows.
            position = start.prompt_length + step
            for cache in self_kv:
                cache[:, :, :, :position] = cache[:, source_rows, :, :position]
            if done:
                keep_windows = torch.tensor([index not in done for index in live], device=device)
                keep_rows = keep_windows.repeat_interleave(beams)
                live = [index for index in live if index not in done]
                if not live:
                    break
                generated, last_timestamp, chosen = generated[keep_rows], last_timestamp[keep_rows], chosen[keep_rows]
                scores = scores[keep_windows]
                limits = limits[keep_rows]
                self_kv = (self_kv[0][:, keep_rows], self_kv[1][:, keep_rows])
                cross_kv = [(keys[keep_windows], values[keep_windows]) for keys, values in cross_kv]
                offsets = None if offsets is None else offsets[keep_rows]
                speech_end = None if speech_end is None else speech_end[keep_rows]
            hidden = runtime.forward(chosen[:, None], position, self_kv, cross_kv, beams=beams, offsets=offsets)
            logits = runtime.logits(hidden[:, -1])

        best = [max(candidates, key=lambda candidate: candidate.score) for candidates in finished]
        return runtime.finish(start, [candidate.tokens for candidate in best],
                              [candidate.sum_logprob for candidate in best],
                              [candidate.finished for candidate in best])

    def _choose(self, top_scores, top_index, vocab, live, generated, step, finished, beams):
        """Pick each live window's next beams from its best candidates.

        Returns the source row and token of every next beam, their scores, and the windows
        that now have ``beams`` finished transcripts (their search is over).
        """
        end_of_text = self.runtime.special.end_of_text
        sources, tokens, scores, done = [], [], [], set()
        history = None
        for slot, index in enumerate(live):
            picked = 0
            for score, flat in zip(top_scores[slot], top_index[slot]):
                if picked == beams:  # (openai-whisper's rule: ends ranked below the last beam are not kept)
                    break
                beam, token = divmod(flat, vocab)
                row = slot * beams + beam
                if token == end_of_text:
                    if len(finished[index]) < beams:
                        if history is None:
                            history = generated[:, :step].tolist()
                        finished[index].append(_Candidate(tuple(history[row]), score, finished=True))
                    continue
                sources.append(row)
                tokens.append(token)
                scores.append(score)
                picked += 1
            if len(finished[index]) >= beams:
                done.add(index)
        return sources, tokens, scores, done
