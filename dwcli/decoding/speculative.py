"""Speculative decoding: a small assistant drafts tokens, the teacher checks them in one pass.

``--assistant MODEL`` pairs the model (the *teacher*) with a smaller Whisper that shares its
vocabulary, typically its Distil-Whisper student (``distil-large-v3`` for ``large-v3``).
Per round the assistant proposes up to ``k`` tokens greedily, under Whisper's decoding rules;
the teacher then runs once over those ``k`` positions (after the token it has not seen yet)
and yields its own next-token logits at every one of them.  The longest prefix of the
proposal that equals the teacher's own rule-masked argmax is kept, plus the teacher's token
at the first difference (or after the last proposal when all were right), so each round emits
at least one token and the transcript is, token for token, what the teacher alone emits
greedily.  Both KV caches are preallocated tensors indexed by position: rolling back a
rejected proposal is only a matter of which length counts as written.

"Token for token" holds up to rounding: a pass over several positions multiplies matrices of
another shape than a pass over one, so logits differ in their last bits.  In float32 that
never changed a token in our tests; int8 activations (one scale per input) and bfloat16
logits round coarsely enough that near-ties flip now and then, so the engine keeps the
teacher's decoder in float32 when it has an assistant, and an int8 teacher's Linear layers
read the verified tokens one at a time (``_token_by_token``).

A student distilled from its teacher keeps the teacher's encoder unchanged; ``load_assistant``
notices that (identical weights) and lets the assistant read the teacher's encoder output,
so the audio is encoded once.  Otherwise both encoders run (``SpeculativeEncoded``).

Speculation pays at batch 1, where each teacher step reads all of the teacher's weights for
one token: ``decode_encoded`` decodes the windows of a batch one after another.  Sampling
(temperature > 0, the fallback) is the teacher's own.
"""

from __future__ import annotations

import functools
import warnings
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import ModelLoadError
from ..precision import quantize_linears
from .greedy import GreedySearch
from .. import network
from .options import DecodedWindow, DecodingOptions, SpecialTokens, WindowContext
from .runtime import DecoderRuntime

INITIAL_DRAFT_TOKENS = 5  # tokens the assistant proposes per round at first
MAX_DRAFT_TOKENS = 7  # ... and at most (+2 while all are accepted, -1 otherwise); the teacher
# then reads 8 positions, past which CPU BLAS gets slower per row


@dataclass(frozen=True)
class SpeculativeEncoded:
    """Encoder output of a batch for both models; rows are selected with ``encoded[rows]``.

    ``assistant`` is None when the assistant shares the teacher's encoder.
    """

    teacher: torch.Tensor  # (batch, frames, d_model) of the teacher
    assistant: torch.Tensor | None = None

    def __getitem__(self, rows) -> SpeculativeEncoded:
        if isinstance(rows, int):
            rows = slice(rows, rows + 1)
        return SpeculativeEncoded(self.teacher[rows], None if self.assistant is None else self.assistant[rows])

    def __len__(self) -> int:
        return len(self.teacher)

    @property
    def shape(self) -> torch.Size:
        return self.teacher.shape

    @property
    def device(self) -> torch.device:
        return self.teacher.device


def teacher_states(encoded) -> torch.Tensor:
    """The teacher's encoder states of what ``encode`` returned (for word alignment)."""
    return encoded.teacher if isinstance(encoded, SpeculativeEncoded) else encoded


@dataclass
class SpeculationStats:
    """Counters over every speculative round since the decoder was made (or reset)."""

    rounds: int = 0
    drafted: int = 0  # tokens the assistant proposed
    accepted: int = 0  # proposed tokens the teacher agreed with
    emitted: int = 0  # tokens emitted (accepted + one teacher token per round, EOT included)

    @property
    def acceptance_rate(self) -> float:
        return self.accepted / self.drafted if self.drafted else 0.0

    @property
    def tokens_per_round(self) -> float:
        """Tokens emitted per teacher forward pass (greedy decoding alone: 1)."""
        return self.emitted / self.rounds if self.rounds else 0.0


def shares_encoder(teacher_model, assistant_model) -> bool:
    """Whether two Whisper models have the same encoder (same shapes, equal weights), as a
    Distil-Whisper student has its teacher's.  Compare before quantizing either."""
    teacher_params = dict(teacher_model.model.encoder.state_dict())
    assistant_params = dict(assistant_model.model.encoder.state_dict())
    if teacher_params.keys() != assistant_params.keys():
        return False
    return all(
        teacher_params[name].shape == assistant_params[name].shape
        and torch.equal(teacher_params[name], assistant_params[name].to(teacher_params[name].device,
                                                                        teacher_params[name].dtype))
        for name in teacher_params
    )


def load_assistant(resolved, teacher_model, device: str, dtype):
    """Load the assistant checkpoint (a ``ResolvedModel``) on the teacher's device, in
    ``dtype`` (a torch dtype).  When its encoder equals the teacher's, the assistant is
    given the teacher's encoder module (call this before quantizing the teacher), so the
    audio is encoded once.  Raises ModelLoadError when the two do not share a vocabulary."""
    try:
        model = network.load(resolved.path, dtype, device)
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as error:
        raise ModelLoadError(f"cannot load assistant model {resolved.model_id}: {error}") from None
    same_vocabulary = model.config.vocab_size == teacher_model.config.vocab_size
    if same_vocabulary:
        try:
            assistant_special = SpecialTokens.from_generation_config(model.generation_config)
        except (AttributeError, TypeError):  # no Whisper generation config
            assistant_special = None
        same_vocabulary = assistant_special == SpecialTokens.from_generation_config(teacher_model.generation_config)
    if not same_vocabulary:
        raise ModelLoadError(
            f"assistant model {resolved.model_id} does not share the model's vocabulary "
            f"({model.config.vocab_size} tokens vs {teacher_model.config.vocab_size})")
    if shares_encoder(teacher_model, model):
        model.model.encoder = teacher_model.model.encoder
    return model


class DraftRuntime(DecoderRuntime):
    """The assistant's ``DecoderRuntime``.  With ``int8`` (CPU), its decoder's Linear layers and
    its output projection run in int8: the projection (vocabulary x d_model) dominates a
    small decoder's step, and int8 reads a quarter of float32's bytes.  Drafts only need to
    be likely, not exact: the teacher checks each one, so this never changes the output."""

    def __init__(self, model, special: SpecialTokens, suppress_tokens, begin_suppress_tokens,
                 int8: bool = False, shared_encoder=None, **kwargs):
        self._projection = None
        if int8:
            quantize_linears(model.model.decoder)
            if model.model.encoder is not shared_encoder:
                quantize_linears(model.model.encoder)
            weight = model.proj_out.weight.detach().float()
            projection = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=False)
            projection.weight = torch.nn.Parameter(weight.clone(), requires_grad=False)
            self._projection = quantize_linears(torch.nn.Sequential(projection), inplace=False)
        super().__init__(model, special, suppress_tokens, begin_suppress_tokens, **kwargs)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        if self._projection is None:
            return super().logits(hidden)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return self._projection(hidden.float()).float()


def _dynamic_int8_linears(module) -> list:
    """The dynamically quantized (int8) Linear modules under ``module``."""
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

    return [child for child in module.modules() if isinstance(child, DynamicLinear)]


@contextmanager
def _token_by_token(linears):
    """Run each of ``linears`` on one token at a time.

    A dynamically quantized Linear scales its whole input with one int8 scale (min/max over
    every row), so a token's result depends on the tokens beside it.  The teacher alone reads
    one token per step; for its verification pass to give exactly those results, each token
    must be quantized on its own.  (Attention and the projection still run on all at once.)
    """
    def rows(forward, x):
        if x.shape[-2] <= 1:
            return forward(x)
        return torch.cat([forward(x[..., index : index + 1, :]) for index in range(x.shape[-2])], dim=-2)

    for linear in linears:
        linear.forward = functools.partial(rows, type(linear).forward.__get__(linear))
    try:
        yield
    finally:
        for linear in linears:
            del linear.forward


class SpeculativeSearch:
    """Greedy decoding of a teacher ``DecoderRuntime`` sped up by an assistant's drafts.

    The engine's greedy strategy when there is an assistant: ``encode`` and ``decode`` as
    ``GreedySearch``; ``teacher`` is the teacher's own runtime (for word alignment).  The
    assistant's decoding rules are the teacher's (its suppressed tokens included), so every
    proposal is a token the teacher could legally emit.
    """

    def __init__(self, teacher: DecoderRuntime, assistant: DecoderRuntime, draft_tokens: int = INITIAL_DRAFT_TOKENS,
                 max_draft_tokens: int = MAX_DRAFT_TOKENS, adaptive: bool = True):
        if teacher.vocab_size != assistant.vocab_size:
            raise ModelLoadError(
                f"the assistant's vocabulary ({assistant.vocab_size}) is not the model's ({teacher.vocab_size})")
        self.teacher = teacher
        self.assistant = assistant
        self.special = teacher.special
        self.draft_tokens = draft_tokens
        self.max_draft_tokens = max_draft_tokens
        self.adaptive = adaptive
        self.stats = SpeculationStats()
        # An int8 teacher's Linear layers verify token by token (the engine avoids them).
        self._teacher_int8 = _dynamic_int8_linears(teacher.decoder)

    def _teacher_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """The teacher's logits for each row of ``hidden`` (rows, d_model).  One row is the
        teacher's own call; for several, (vocab x d) @ (d x rows) is 2-4x faster than
        F.linear's (rows x d) @ (d x vocab) on CPU BLAS for 2-8 rows."""
        if len(hidden) == 1:
            return self.teacher.logits(hidden)
        weight = self.teacher.output_embedding
        return (weight @ hidden.to(weight.dtype).T).T.float()

    @property
    def shares_encoder(self) -> bool:
        return self.assistant.encoder is self.teacher.encoder

    # -- encoding ------------------------------------------------------------------------
    @torch.inference_mode()
    def encode(self, features: torch.Tensor) -> SpeculativeEncoded:
        states = self.teacher.encode(features)
        if self.shares_encoder:
            return SpeculativeEncoded(states)
        return SpeculativeEncoded(states, self.assistant.encode(features.to(self.assistant.output_embedding.device)))

    def _split(self, encoded) -> tuple[torch.Tensor, torch.Tensor]:
        if isinstance(encoded, SpeculativeEncoded):
            assistant_states = encoded.assistant
            if assistant_states is None:
                assistant_states = encoded.teacher
            return encoded.teacher, assistant_states
        if not self.shares_encoder:
            raise TypeError("the assistant has its own encoder: pass what SpeculativeSearch.encode returned")
        return encoded, encoded

    # -- decoding ------------------------------------------------------------------------
    @torch.inference_mode()
    def decode(self, encoded, options: DecodingOptions, contexts: list[WindowContext] | None = None,
               temperature: float = 0.0) -> list[DecodedWindow]:
        """What ``GreedySearch.decode`` returns for the teacher, window by window."""
        teacher_states, assistant_states = self._split(encoded)
        contexts = contexts or [WindowContext()] * len(teacher_states)
        if temperature > 0:
            return GreedySearch(self.teacher).decode(teacher_states, options, contexts, temperature)
        return [
            self._decode_window(teacher_states[row : row + 1], assistant_states[row : row + 1], options, contexts[row])
            for row in range(len(teacher_states))
        ]

    def _decode_window(self, teacher_states, assistant_states, options, context: WindowContext) -> DecodedWindow:
        teacher, assistant, special = self.teacher, self.assistant, self.special
        device = teacher_states.device
        end_of_text, timestamp_begin = special.end_of_text, special.timestamp_begin
        start = teacher.begin(teacher_states, options, [context])
        speech_end = start.speech_end
        (language,) = start.languages
        prompt = teacher.prompt_tokens(language, options, context.previous)
        prompt_length = start.prompt_length
        max_new = int(start.max_new[0])
        # The assistant drafts only where its own positions reach.
        draft_limit = min(max_new, assistant.max_positions - prompt_length)
        teacher_cross, teacher_kv = start.cross_kv, start.self_kv
        teacher_logits = start.logits  # the teacher's logits for step 0
        teacher_length = prompt_length  # positions written in the teacher's cache
        teacher_pending: list[int] = []  # emitted tokens not yet in the teacher's cache

        assistant_cross = assistant.cross_attention_kv(assistant_states) if draft_limit > 0 else None
        assistant_kv = assistant_logits = None
        assistant_length = 0
        assistant_pending = list(prompt)

        generated = torch.full((1, max_new), end_of_text, dtype=torch.long, device=device)  # read by the rules
        tokens: list[int] = []
        sum_logprob = torch.zeros(1, device=device)
        last_timestamp = -1
        finished = False
        while not finished and len(tokens) < max_new:
            step = len(tokens)
            # 1. The assistant proposes up to k tokens, greedily, under the teacher's rules.
            drafts: list[int] = []
            k = min(self.draft_tokens, draft_limit - step)
            if k > 0:
                if assistant_kv is None:
                    assistant_kv = assistant.new_self_kv(1, prompt_length + draft_limit, assistant_states)
                hidden = assistant.forward(torch.tensor([assistant_pending], device=device), assistant_length,
                                           assistant_kv, assistant_cross)
                assistant_length += len(assistant_pending)
                assistant_pending = []
                assistant_logits = assistant.logits(hidden[:, -1])
                draft_timestamp = last_timestamp
                for index in range(k):
                    masked = teacher.rules.apply(assistant_logits, generated, step + index, options,
                                                  torch.tensor([draft_timestamp], device=device), speech_end)
                    token = int(masked.argmax(dim=-1))
                    drafts.append(token)
                    generated[0, step + index] = token
                    if token >= timestamp_begin:
                        draft_timestamp = token
                    if token == end_of_text or index == k - 1:
                        break
                    hidden = assistant.forward(torch.tensor([[token]], device=device),
                                               assistant_length + index, assistant_kv, assistant_cross)
                    assistant_logits = assistant.logits(hidden[:, -1])
            # The assistant's cache now holds every proposal but the last, from assistant_length.
            assistant_fed = max(len(drafts) - 1, 0)

            # 2. The teacher reads its unseen token and the proposals in one pass: its logits
            # at step + i for every i in 0..len(drafts) (no need to read a final end of text).
            fed_drafts = drafts[:-1] if drafts and drafts[-1] == end_of_text else drafts
            feed = teacher_pending + fed_drafts
            if feed:
                with _token_by_token(self._teacher_int8) if self._teacher_int8 and len(feed) > 1 else nullcontext():
                    hidden = teacher.forward(torch.tensor([feed], device=device), teacher_length, teacher_kv,
                                             teacher_cross)
                rows = hidden[0, len(teacher_pending) - 1 :] if teacher_pending else hidden[0]
                fresh = self._teacher_logits(rows)
                candidates = fresh if teacher_pending else torch.cat([teacher_logits, fresh])
            else:
                candidates = teacher_logits
            teacher_base = teacher_length + len(teacher_pending)

            # 3. Keep the proposals the teacher agrees with, and the teacher's next token.
            emitted: list[int] = []
            for index in range(len(candidates)):
                if step + index >= max_new:
                    break
                masked = teacher.rules.apply(candidates[index : index + 1], generated, step + index, options,
                                              torch.tensor([last_timestamp], device=device), speech_end)
                token = int(masked.argmax(dim=-1))
                sum_logprob += F.log_softmax(masked, dim=-1)[:, token]
                generated[0, step + index] = token
                if token >= timestamp_begin:
                    last_timestamp = token
                emitted.append(token)
                if token == end_of_text:
                    finished = True
                    break
                if index >= len(drafts) or token != drafts[index]:
                    break
            tokens.extend(emitted)
            agreed = next((index for index, token in enumerate(emitted)
                           if index >= len(drafts) or token != drafts[index]), len(emitted))

            # 4. Roll back: cache entries past the agreed proposals are overwritten later.
            teacher_valid = min(agreed, len(fed_drafts))
            teacher_length = teacher_base + teacher_valid
            teacher_pending = emitted[teacher_valid:]
            assistant_valid = min(agreed, assistant_fed)
            assistant_length += assistant_valid
            assistant_pending += emitted[assistant_valid:]

            self.stats.rounds += 1
            self.stats.drafted += len(drafts)
            self.stats.accepted += agreed
            self.stats.emitted += len(emitted)
            if self.adaptive and drafts:
                if agreed == len(drafts):
                    self.draft_tokens = min(self.draft_tokens + 2, self.max_draft_tokens)
                else:
                    self.draft_tokens = max(self.draft_tokens - 1, 1)

        if finished:
            tokens.pop()  # the end of text
        return teacher.finish(start, [tokens], [float(sum_logprob[0])], [finished])[0]
