"""Decoding Whisper windows: one runtime, several search strategies.

| module | what |
| --- | --- |
| ``options`` | ``DecodingOptions``, ``WindowContext``, ``DecodedWindow``, ``SpecialTokens`` |
| ``rules`` | Whisper's token rules (timestamps, suppression) and dw's speech-end rule |
| ``runtime`` | ``DecoderRuntime``: the model's decoder with dw's caches; the prologue and epilogue every strategy shares |
| ``greedy`` | greedy decoding and the temperature fallback's sampling |
| ``beam`` | ``--beam-size``: beam search, beams sharing cross-attention |
| ``speculative`` | ``--assistant``: speculative decoding with a draft model |
| ``alignment`` | word timestamps: alignment heads' cross-attention + DTW |
"""

from .options import MAX_NEW_TOKENS, DecodedWindow, DecodingOptions, SpecialTokens, WindowContext

__all__ = ["MAX_NEW_TOKENS", "DecodedWindow", "DecodingOptions", "SpecialTokens", "WindowContext"]
