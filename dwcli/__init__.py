"""dw: batch speech-to-text with Distil-Whisper."""

__version__ = "0.1.0"
