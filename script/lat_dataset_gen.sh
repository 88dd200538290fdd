#!/usr/bin/env bash
# Stage 3: latency table of the search space, one JSONL record per arch (resumable).
#
#   bash script/lat_dataset_gen.sh                      # PyTorch fp32 over the paper's 14,250-arch grid
#   BACKEND=int8 bash script/lat_dataset_gen.sh         # PyTorch dynamic int8 (= script/lat_dataset_gen_quant.sh)
#   BACKEND=ort bash script/lat_dataset_gen.sh          # ONNX Runtime int8 (= script/lat_dataset_gen_onnx.sh)
#   SPACE=demo_latency VOCAB_SIZE=4000 INFER_CNT=10 bash script/lat_dataset_gen.sh
#   SHARD=0/4 bash script/lat_dataset_gen.sh            # machine 0 of 4 (identical machines) splits the grid
#
# Environment (defaults relative to the repository root):
#   PYTHON (.venv/bin/python when it exists, else python3), BACKEND (fp32 | int8 | ort), SAVE_DIR (conf_datasets), SPACE (paper_latency),
#   SAMPLE (empty = the whole grid; N = a seeded random sample), ARCH_FILE (empty; archs to measure),
#   SEED (0), THREADS (1), INFER_CNT (20 timed runs), WARMUP (5), TIMER (wall | cpu: thread CPU time,
#   for single-thread runs on a shared machine), VOCAB_SIZE (30522), SHARD (empty or I/N),
#   CPU_AFFINITY (empty or e.g. 0), LEGACY (1: also write lat_.tmp / lat_quant_.tmp lines),
#   EXTRA_ARGS (more flags, split on spaces).
# Output: $SAVE_DIR/lat_torch_fp32.jsonl | lat_torch_dynamic_int8.jsonl | lat_ort_dynamic_int8.jsonl.
# A re-run resumes; a table measured with another machine/protocol is refused (use another SAVE_DIR).
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
baf_init "$@"

BACKEND="${BACKEND:-fp32}"
SAVE_DIR="${SAVE_DIR:-$ROOT/conf_datasets}"
SPACE="${SPACE:-paper_latency}"
SAMPLE="${SAMPLE:-}"
ARCH_FILE="${ARCH_FILE:-}"
SEED="${SEED:-0}"
THREADS="${THREADS:-1}"
INFER_CNT="${INFER_CNT:-20}"
WARMUP="${WARMUP:-5}"
TIMER="${TIMER:-wall}"
VOCAB_SIZE="${VOCAB_SIZE:-30522}"
SHARD="${SHARD:-}"
CPU_AFFINITY="${CPU_AFFINITY:-}"
LEGACY="${LEGACY:-1}"
read -r -a EXTRA <<< "${EXTRA_ARGS:-}"

case "$BACKEND" in
    fp32) SCRIPT=inference_time_evaluation_quant.py; FLAGS=() ;;
    int8) SCRIPT=inference_time_evaluation_quant.py; FLAGS=(--quant) ;;
    ort) SCRIPT=inference_time_evaluation_quant_onnx.py; FLAGS=() ;;
    *) echo "lat_dataset_gen.sh: error: BACKEND must be fp32, int8 or ort, got '$BACKEND'" >&2; exit 2 ;;
esac
if [[ -n "$SAMPLE" ]]; then FLAGS+=(--sample "$SAMPLE"); fi
if [[ -n "$ARCH_FILE" ]]; then FLAGS+=(--arch_file "$ARCH_FILE"); fi
if [[ -n "$SHARD" ]]; then FLAGS+=(--shard "$SHARD"); fi
if [[ -n "$CPU_AFFINITY" ]]; then FLAGS+=(--cpu_affinity "$CPU_AFFINITY"); fi
if [[ "$LEGACY" == "1" ]]; then FLAGS+=(--legacy_format); fi

"$PYTHON" "$ROOT/$SCRIPT" \
    --save_dir "$SAVE_DIR" \
    --space "$SPACE" \
    --seed "$SEED" \
    --threads "$THREADS" \
    --infer_cnt "$INFER_CNT" \
    --warmup "$WARMUP" \
    --timer "$TIMER" \
    --vocab_size "$VOCAB_SIZE" \
    "${FLAGS[@]}" "${EXTRA[@]}"
