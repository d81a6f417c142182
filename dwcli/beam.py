"""Beam search over Whisper windows (``--beam-size N``), batched across windows.

Distil-Whisper is meant to be decoded greedily, and that is dw's default.  Beam search (what
openai-whisper, faster-whisper and the transformers pipeline do by default, with 5 beams)
keeps the N most likely partial transcripts of each window instead of one, which buys a
little accuracy on hard audio for N times the decoder work.

It follows openai-whisper's search: each step pools the beams' candidates, a candidate that
ends the text becomes a finished transcript and the best others carry on, until a window has
N finished transcripts; the one with the best mean log-probability per token wins.  Whisper's
timestamp rules and dw's speech-end rule are the greedy decoder's, applied to every beam.

Why it stays cheap: a window's beams share its encoder output, so cross-attention keys and
values are kept once per window and the beams of a window are attended as a group of queries
(``GreedyDecoder.forward(beams=N)``), not copied N times (for tiny at batch 16, 5 beams would
copy 1.5 GB).  Only the small self-attention cache is reordered as beams are chosen.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .decoding import DecodedWindow, DecodingOptions, GreedyDecoder


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


class BeamSearchDecoder:
    """Beam search driving a ``GreedyDecoder``'s forward pass and decoding rules."""

    def __init__(self, decoder: GreedyDecoder):
        self.decoder = decoder

    @torch.inference_mode()
    def decode_encoded(self, encoder_states: torch.Tensor, options: DecodingOptions,
                       speech_end_s: list[float] | None = None) -> list[DecodedWindow]:
        """The best of ``options.beam_size`` beams for each encoded window."""
        decoder, special, beams = self.decoder, self.decoder.special, options.beam_size
        device = encoder_states.device
        windows = encoder_states.shape[0]
        cross_kv = decoder.cross_attention_kv(encoder_states)
        languages = decoder.window_languages(cross_kv, options, windows, encoder_states)
        prompts = [decoder.prompt_tokens(language, options) for language in languages]
        prompt_length = len(prompts[0])
        max_new = min(options.max_new_tokens, decoder.max_positions - prompt_length)
        speech_end = decoder.speech_end_tokens(speech_end_s, options, device)

        # Every beam of a window starts from the window's prompt.
        tokens = torch.tensor(prompts, device=device).repeat_interleave(beams, dim=0)
        self_kv = decoder.new_self_kv(windows * beams, prompt_length + max_new, encoder_states)
        hidden = decoder.forward(tokens, 0, self_kv, cross_kv, beams=beams)
        no_speech_probs = decoder.logits(hidden[::beams, 0]).softmax(dim=-1)[:, special.no_speech].tolist()
        logits = decoder.logits(hidden[:, -1])

        rows = windows * beams
        generated = torch.full((rows, max_new), special.end_of_text, dtype=torch.long, device=device)
        last_timestamp = torch.full((rows,), -1, dtype=torch.long, device=device)
        # Identical beams at the start: only the first one is expanded, or the first step
        # would fill the beams with N copies of the same token.
        scores = torch.full((windows, beams), -float("inf"), device=device)
        scores[:, 0] = 0.0
        if speech_end is not None:
            speech_end = speech_end.repeat_interleave(beams)
        live = list(range(windows))  # original index of each window still searching
        finished: list[list[_Candidate]] = [[] for _ in range(windows)]
        for step in range(max_new):
            logits = decoder.apply_rules(logits, generated[:, :step], step, options, last_timestamp, speech_end)
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
            if step + 1 == max_new:
                break
            # The chosen beams' own histories: the self-attention cache follows its rows.
            position = prompt_length + step
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
                self_kv = (self_kv[0][:, keep_rows], self_kv[1][:, keep_rows])
                cross_kv = [(keys[keep_windows], values[keep_windows]) for keys, values in cross_kv]
                if speech_end is not None:
                    speech_end = speech_end[keep_rows]
            hidden = decoder.forward(chosen[:, None], position, self_kv, cross_kv, beams=beams)
            logits = decoder.logits(hidden[:, -1])
        # Windows that reached the token limit: their unfinished beams are candidates too.
        if live:
            rows_left = generated.tolist()
            for slot, index in enumerate(live):
                if index in done:
                    continue
                for beam in range(beams):
                    finished[index].append(_Candidate(
                        tuple(rows_left[slot * beams + beam]), float(scores[slot, beam]), finished=False))

        results = []
        for index in range(windows):
            best = max(finished[index], key=lambda candidate: candidate.score)
            results.append(DecodedWindow(
                tokens=list(best.tokens),
                avg_logprob=best.sum_logprob / (len(best.tokens) + 1),
                no_speech_prob=float(no_speech_probs[index]),
                language=languages[index],
                truncated=not best.finished,
                prompt_length=prompt_length,
            ))
        return results

    def _choose(self, top_scores, top_index, vocab, live, generated, step, finished, beams):
        """Pick each live window's next beams from its best candidates.

        Returns the source row and token of every next beam, their scores, and the windows
        that now have ``beams`` finished transcripts (their search is over).
        """
        end_of_text = self.decoder.special.end_of_text
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
