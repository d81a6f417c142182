"""Word timestamps: cross-attention of the alignment heads + dynamic time warping.

Some of Whisper's cross-attention heads track which audio frame each text token is read
from (the checkpoint lists them in ``generation_config.alignment_heads``).  The decoder is
run once more over a window's text tokens, those heads' attention is normalised, smoothed
and averaged into a token x frame cost matrix, and the cheapest monotonic path through it
(DTW) gives each token, and so each word, its start and end frame.  This is the method of
openai-whisper's ``timing.py``, done here for a whole batch of windows in one pass: one
decoder pass and one DTW, on the device.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..segments import Segment, Word
from .options import DecodingOptions

SECONDS_PER_FRAME = 0.02  # one encoder position = 2 mel frames = 20 ms
MEDIAN_FILTER_WIDTH = 7  # encoder positions: smooths single-frame attention spikes
# Words that start a new word when a token begins with them (Whisper's BPE marks word
# starts with a leading space); punctuation stays glued to the word before it.
_WORD_START = " "
_PHRASE_END = (".", "?", "!", ",", ";", ":", "。", "！", "？")
_MAX_MEDIAN_WORD_S = 0.7


@dataclass(frozen=True)
class AlignmentRequest:
    """One window to align: its segments (window-local times, each with its text tokens)."""

    segments: list[Segment]
    duration_s: float
    language: str | None = None
    task: str = "transcribe"


def _median_filter(weights: torch.Tensor, width: int) -> torch.Tensor:
    """Median over ``width`` neighbours along the last axis (reflect-padded)."""
    if weights.shape[-1] <= width // 2:
        return weights
    flat = weights.reshape(-1, weights.shape[-1])
    padded = F.pad(flat, (width // 2, width // 2), mode="reflect")
    return padded.unfold(-1, width, 1).median(dim=-1).values.reshape(weights.shape)


def dtw(costs: list[torch.Tensor]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Monotonic alignment paths through cost matrices (tokens x frames, one per window):
    each path's (token, frame) indices.

    All windows at once, on the device their costs are on: the matrices are padded into one
    batch (padding costs nothing a real cell depends on, since a cell's total depends only on
    the cells above and left of it), and the totals are filled one anti-diagonal at a time,
    each step one tensor operation over every window's diagonal.  Only the step taken into
    each cell (an int8) comes back to the host, where each path is traced back.
    """
    rows = [cost.shape[0] for cost in costs]
    cols = [cost.shape[1] for cost in costs]
    height, width = max(rows), max(cols)
    device = costs[0].device
    dtype = torch.float64 if device.type == "cpu" else torch.float32
    cost = torch.full((len(costs), height, width), torch.inf, dtype=dtype, device=device)
    for index, matrix in enumerate(costs):
        cost[index, : matrix.shape[0], : matrix.shape[1]] = matrix
    total = torch.full((len(costs), height + 1, width + 1), torch.inf, dtype=dtype, device=device)
    total[:, 0, 0] = 0.0
    trace = torch.zeros((len(costs), height + 1, width + 1), dtype=torch.int8, device=device)
    for diagonal in range(2, height + width + 1):
        i = torch.arange(max(1, diagonal - width), min(height, diagonal - 1) + 1, device=device)
        j = diagonal - i
        diagonal_step, down, right = total[:, i - 1, j - 1], total[:, i - 1, j], total[:, i, j - 1]
        # Ties go right (2), then down (1), as openai-whisper's: the same paths.
        choice = torch.where((diagonal_step < down) & (diagonal_step < right), 0,
                             torch.where((down < diagonal_step) & (down < right), 1, 2))
        best = torch.where(choice == 0, diagonal_step, torch.where(choice == 1, down, right))
        total[:, i, j] = cost[:, i - 1, j - 1] + best
        trace[:, i, j] = choice.to(torch.int8)
    steps = trace.cpu().numpy()
    paths = []
    for index, (last_row, last_col) in enumerate(zip(rows, cols)):
        step_into = steps[index]
        step_into[0, :] = 2
        step_into[:, 0] = 1
        i, j = last_row, last_col
        path = []
        while i > 0 or j > 0:
            path.append((i - 1, j - 1))
            step = step_into[i, j]
            if step == 0:
                i, j = i - 1, j - 1
            elif step == 1:
                i -= 1
            else:
                j -= 1
        path.reverse()
        indices = np.array(path)
        paths.append((indices[:, 0], indices[:, 1]))
    return paths


def _split_words(tokens: list[int], decode) -> list[tuple[str, list[int]]]:
    """Group BPE tokens into words: a token that decodes with a leading space starts one.

    Tokens are decoded cumulatively, so multi-byte characters split over tokens stay whole.
    """
    words: list[tuple[str, list[int]]] = []
    pending: list[int] = []
    for token in tokens:
        pending.append(token)
        text = decode(pending)
        if "\ufffd" in text:  # an incomplete UTF-8 sequence: wait for the next token
            continue
        if words and not text.startswith(_WORD_START):
            words[-1] = (words[-1][0] + text, words[-1][1] + pending)
        else:
            words.append((text, pending))
        pending = []
    if pending:
        words.append((decode(pending), pending))
    return words


def alignment_heads_problem(heads, decoder_layers: int, decoder_heads: int) -> str | None:
    """Why a checkpoint's ``alignment_heads`` cannot time words, or None when they can.

    Two ways seen on the hub: none listed (transformers' ``generate`` refuses word times
    then), and heads copied from a teacher with more layers: Distil-Whisper checkpoints were
    published with their teacher's heads (distil-small.en's named layers 6-11 of a 4-layer
    decoder until its generation_config.json was corrected), which would index layers the
    decoder lacks.  dw guesses no heads in either case: it says so (the run plan refuses
    --word-timestamps) and times no words."""
    if not heads:
        return "its generation_config.json lists no alignment heads (the cross-attention heads that time words)"
    for pair in heads:
        if not (isinstance(pair, (list, tuple)) and len(pair) == 2 and all(isinstance(x, int) for x in pair)):
            return f"its generation_config.json lists alignment heads that are not [layer, head] pairs ({pair!r})"
        layer, head = pair
        if not (0 <= layer < decoder_layers and 0 <= head < decoder_heads):
            return (f"its alignment heads (generation_config.json) name decoder layer {layer} head {head}, but its "
                    f"decoder has {decoder_layers} layers of {decoder_heads} heads")
    return None


class WordAligner:
    """Adds ``words`` to segments, using a ``DecoderRuntime``'s model and alignment heads."""

    def __init__(self, runtime, alignment_heads, decode_text):
        """``alignment_heads``: (layer, head) pairs that ``alignment_heads_problem`` accepts."""
        self.runtime = runtime
        self.decode_text = decode_text
        self.heads = [(int(layer), int(head)) for layer, head in alignment_heads]

    @torch.inference_mode()
    def align(self, encoder_states: torch.Tensor, requests: list[AlignmentRequest]) -> None:
        """Fill ``segment.words`` (window-local times) for every segment of every request.

        ``encoder_states`` is (batch, 1500, d_model), one row per request.
        """
        runtime = self.runtime
        special = runtime.special
        rows = [[token for segment in request.segments for token in segment.tokens] for request in requests]
        if not any(rows):
            return
        # The prompt ends in <|notimestamps|>: alignment reads text tokens only, as openai-whisper does.
        prompts = [
            runtime.prompt_tokens(request.language, DecodingOptions(timestamps=False, task=request.task))
            for request in requests
        ]
        prompt_length = len(prompts[0])
        length = prompt_length + max(len(text) for text in rows) + 1
        batch = torch.full((len(rows), length), special.end_of_text, dtype=torch.long, device=encoder_states.device)
        for row, (prompt, text) in enumerate(zip(prompts, rows)):
            sequence = prompt + text + [special.end_of_text]
            batch[row, : len(sequence)] = torch.tensor(sequence)
        cross_kv = runtime.cross_attention_kv(encoder_states)
        self_kv = runtime.new_self_kv(len(rows), length, encoder_states)
        layers = {layer for layer, _ in self.heads}
        hidden, weights = runtime.forward(batch, 0, self_kv, cross_kv, cross_weights_of=layers)
        probabilities = runtime.logits(hidden).softmax(dim=-1)
        stacked = torch.stack([weights[layer][:, head] for layer, head in self.heads], dim=1).float()
        aligned = [row for row, text in enumerate(rows) if text]
        costs = [self._cost(requests[row], rows[row], stacked[row], prompt_length - 1) for row in aligned]
        for row, (token_index, frame_index) in zip(aligned, dtw(costs)):
            self._words(requests[row], rows[row], token_index, frame_index, probabilities[row], prompt_length - 1)

    @staticmethod
    def _cost(request, text, weights, notimestamps_at) -> torch.Tensor:
        """The window's token x frame cost: its alignment heads' attention, normalised per
        frame, median-smoothed and averaged (openai-whisper's recipe)."""
        frames = max(1, min(weights.shape[-1], round(request.duration_s / SECONDS_PER_FRAME)))
        # Rows: <|notimestamps|> and each text token (each row predicts the next token).
        matrix = weights[:, notimestamps_at : notimestamps_at + len(text) + 1, :frames]
        std, mean = torch.std_mean(matrix, dim=-2, keepdim=True, unbiased=False)
        return -_median_filter((matrix - mean) / (std + 1e-8), MEDIAN_FILTER_WIDTH).mean(dim=0)

    def _words(self, request, text, token_index, frame_index, probabilities, notimestamps_at) -> None:
        # The frame at which the path first enters each token row is that token's start.
        jumps = np.pad(np.diff(token_index), (1, 0), constant_values=1).astype(bool)
        token_starts = frame_index[jumps] * SECONDS_PER_FRAME  # len(text) + 1 entries
        token_probs = probabilities[notimestamps_at + np.arange(len(text)), torch.tensor(text)].tolist()
        cursor = 0
        for segment in request.segments:
            words = []
            for word, tokens in _split_words(segment.tokens, self.decode_text):
                first, last = cursor, cursor + len(tokens)
                cursor = last
                if not word.strip():
                    continue
                start, end = float(token_starts[first]), float(token_starts[last])
                probability = float(np.mean(token_probs[first:last]))
                words.append(Word(start, end, word, probability))
            _fit_into(segment, words)


def _trim_pauses(words: list[Word]) -> None:
    """DTW hands the silence before a word to that word (and after a sentence's last word,
    to it).  Cap words that are much longer than usual at phrase edges, openai-whisper's
    heuristic: at most twice the median word duration (itself at most 0.7 s)."""
    durations = [word.end - word.start for word in words if word.end > word.start]
    if not durations:
        return
    longest = 2 * min(float(np.median(durations)), _MAX_MEDIAN_WORD_S)
    for index, word in enumerate(words):
        if word.end - word.start <= longest:
            continue
        after_pause = index == 0 or words[index - 1].word.rstrip().endswith(_PHRASE_END)
        if after_pause:
            word.start = word.end - longest
        elif word.word.rstrip().endswith(_PHRASE_END) or index == len(words) - 1:
            word.end = word.start + longest


def _fit_into(segment: Segment, words: list[Word]) -> None:
    """Clamp words into their segment, keep them monotonic, then tighten the segment's own
    start/end to its first and last word (attention is sharper than timestamp tokens)."""
    if not words:
        segment.words = []
        return
    _trim_pauses(words)
    previous_end = segment.start
    for word in words:
        word.start = min(max(word.start, previous_end), segment.end)
        word.end = min(max(word.end, word.start), segment.end)
        previous_end = word.end
    segment.words = words
    segment.span_words()
