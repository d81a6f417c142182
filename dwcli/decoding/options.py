"""What decoding takes and gives: options, a window's context, the decoded window."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..errors import InvalidOption

MAX_NEW_TOKENS = 224  # openai-whisper's sample_len: half the decoder's 448 positions


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
    start_of_previous: int  # <|startofprev|>: previous text follows, as context
    timestamp_begin: int  # <|0.00|>; every later id is a timestamp, 20 ms apart

    @property
    def multilingual(self) -> bool:
        return bool(self.languages)

    @classmethod
    def from_generation_config(cls, generation_config, token_to_id=None) -> SpecialTokens:
        """The ids named by the checkpoint: its ``generation_config.json`` and, given
        ``token_to_id`` (its tokenizer's lookup), its tokenizer.

        Vocabularies differ: large-v3's added <|yue|> moves every token after the languages
        one id later than large-v2's, and English-only ones start a token earlier.  So no id is
        computed from another where the checkpoint names it.  Older tokenizers do not list
        <|nospeech|> (some call it <|nocaptions|>) or the timestamps; only then are they taken
        from Whisper's layout, which every Whisper vocabulary shares: <|nospeech|> just before
        <|notimestamps|>, <|0.00|> just after it.  ValueError when the tokenizer and the
        generation config give one token two ids (a tokenizer of another vocabulary)."""
        lookup = token_to_id or (lambda token: None)
        lang_to_id = getattr(generation_config, "lang_to_id", None) or {}
        task_to_id = getattr(generation_config, "task_to_id", None) or {}
        multilingual = bool(getattr(generation_config, "is_multilingual", False) and lang_to_id)

        def named(token: str, configured):
            known = lookup(token)
            if known is not None and configured is not None and known != configured:
                raise ValueError(f"its tokenizer has {token} at {known}, its generation_config.json at {configured}")
            return configured if configured is not None else known

        no_timestamps = named("<|notimestamps|>", generation_config.no_timestamps_token_id)
        end_of_text = named("<|endoftext|>", generation_config.eos_token_id)
        start_of_transcript = named("<|startoftranscript|>", generation_config.decoder_start_token_id)
        if None in (no_timestamps, end_of_text, start_of_transcript):
            raise ValueError("its generation_config.json does not name <|endoftext|>, <|startoftranscript|> "
                             "and <|notimestamps|>")
        no_speech = lookup("<|nospeech|>")
        if no_speech is None:
            no_speech = lookup("<|nocaptions|>")
        start_of_previous = named("<|startofprev|>", getattr(generation_config, "prev_sot_token_id", None))
        timestamp_begin = lookup("<|0.00|>")
        return cls(
            end_of_text=end_of_text,
            start_of_transcript=start_of_transcript,
            no_timestamps=no_timestamps,
            no_speech=no_timestamps - 1 if no_speech is None else no_speech,
            transcribe=named("<|transcribe|>", task_to_id.get("transcribe")),
            translate=named("<|translate|>", task_to_id.get("translate")),
            languages={token.strip("<|>"): named(token, token_id) for token, token_id in lang_to_id.items()}
            if multilingual else {},
            start_of_previous=no_timestamps - 2 if start_of_previous is None else start_of_previous,
            timestamp_begin=no_timestamps + 1 if timestamp_begin is None else timestamp_begin,
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
    # Text the model reads before each window as if said just before it: names and jargon
    # (openai-whisper's initial_prompt).  Sequential long form also conditions each window
    # on the file's text so far, when condition_on_previous_text (chosen by measurement: see
    # the README; the chunked mode has no previous text and records False).
    initial_prompt: str | None = None
    condition_on_previous_text: bool = True

    def __post_init__(self) -> None:
        def check(name: str, valid: bool, reason: str) -> None:
            if not valid:
                raise InvalidOption("DecodingOptions", name, getattr(self, name), reason)

        check("task", self.task in ("transcribe", "translate"), "expected transcribe or translate")
        check("beam_size", self.beam_size >= 1, "expected 1 or more")
        check("max_new_tokens", self.max_new_tokens >= 1, "expected 1 or more")
        temperatures = self.temperatures
        check("temperatures", bool(temperatures) and all(math.isfinite(t) and t >= 0 for t in temperatures)
              and list(temperatures) == sorted(temperatures), "expected rising non-negative numbers, e.g. 0,0.2,0.4")
        for name in ("compression_ratio_threshold", "logprob_threshold", "no_speech_threshold"):
            value = getattr(self, name)
            check(name, value is None or math.isfinite(value), "expected a finite number")


@dataclass(frozen=True)
class WindowContext:
    """What a window's decoding starts from besides its audio."""

    # Tokens read before <|startoftranscript|> (after <|startofprev|>): the initial prompt,
    # the text before the window (sequential long form), or nothing.
    previous: tuple[int, ...] = ()
    # Where the window's detected speech ends, when the window ends in a pause: the end of
    # text is barred before it.  None: no such rule.
    speech_end_s: float | None = None


@dataclass
class DecodedWindow:
    """What the decoder produced for one window."""

    tokens: list[int]  # generated tokens, without the prompt and the end-of-text token
    avg_logprob: float  # mean log-probability of the generated tokens
    no_speech_prob: float  # probability of <|nospeech|> at the start of transcript
    language: str | None
    truncated: bool = False  # stopped at the token limit (a runaway repetition, usually)
    prompt_length: int = field(default=1, repr=False)  # the prompt's tokens (context included)
    temperature: float = 0.0  # what it was decoded at (the fallback samples at > 0)
