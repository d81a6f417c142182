# Development tasks. `make demo` and `make test` are the README's quick start: each creates
# .venv when needed, with the CPU build of torch, so a fresh machine needs only python3.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build of torch for development and CI (this pin resolves to a local CPU wheel on
# our machines). Users installing dw with pip keep whatever torch (CUDA or not) they have.
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.dw-installed

.PHONY: demo test venv bench docs clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[dev]"
	# The tests build Whisper's real tokenizers (large-v3's, distil-*.en's) from the two
	# vocabulary files openai-whisper ships; its own dependencies (numba, triton, an
	# unpinned torch) are not needed for that, so it comes without them.
	$(BIN)/python -m pip install -q --no-deps "openai-whisper==20250625"
	touch $(STAMP)

venv: $(STAMP)

## Transcribe the bundled JFK sample to SRT with the offline default model and print it.
demo: $(STAMP)
	$(BIN)/dw transcribe tests/data/speech/jfk.flac --format srt --output-dir demo-out
	cat demo-out/jfk.srt

## Run the test suite (offline: no model hub, no network).
test: $(STAMP)
	$(BIN)/python -m pytest -q

## Throughput, memory and WER against the transformers pipeline and faster-whisper.
bench: $(STAMP)
	$(BIN)/python benchmarks/bench.py

## Regenerate the man page and shell completions from the app.
docs: $(STAMP)
	$(BIN)/python -m dwcli.docs

clean:
	rm -rf $(VENV) demo-out .pytest_cache
