#!/usr/bin/env bash
# Stage 4: latency predictors from the latency tables (fp32 and int8), one checkpoint each, with
# <ckpt>.metrics.json (test RMSE ms, MAPD %, Kendall tau) and <ckpt>.png next to it.
#
#   bash script/train_lat_predictor.sh
#   FP32_TABLE=../shared/data/original_latency/lat_.tmp INT8_TABLE=../shared/data/original_latency/lat_quant_.tmp \
#       bash script/train_lat_predictor.sh          # the authors' own tables
#   RECIPE=original bash script/train_lat_predictor.sh
#
# Environment (defaults relative to the repository root):
#   PYTHON (.venv/bin/python when it exists, else python3), TABLE_DIR (conf_datasets), FP32_TABLE ($TABLE_DIR/lat_torch_fp32.jsonl),
#   INT8_TABLE ($TABLE_DIR/lat_torch_dynamic_int8.jsonl), OUT_DIR (conf_datasets),
#   WHICH (both | fp32 | int8), RECIPE (default | original), SEED (0),
#   SPACE (empty = the space recorded in the table), EXTRA_ARGS (more flags, split on spaces).
# Output: $OUT_DIR/lat_predictor.pt (fp32) and $OUT_DIR/lat_predictor_quant.pt (int8).
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
baf_init "$@"

TABLE_DIR="${TABLE_DIR:-$ROOT/conf_datasets}"
FP32_TABLE="${FP32_TABLE:-$TABLE_DIR/lat_torch_fp32.jsonl}"
INT8_TABLE="${INT8_TABLE:-$TABLE_DIR/lat_torch_dynamic_int8.jsonl}"
OUT_DIR="${OUT_DIR:-$ROOT/conf_datasets}"
WHICH="${WHICH:-both}"
RECIPE="${RECIPE:-default}"
SEED="${SEED:-0}"
SPACE="${SPACE:-}"
read -r -a EXTRA <<< "${EXTRA_ARGS:-}"

FLAGS=(--recipe "$RECIPE" --seed "$SEED")
if [[ -n "$SPACE" ]]; then FLAGS+=(--space "$SPACE"); fi

train() {
    local table="$1" ckpt="$2"
    "$PYTHON" "$ROOT/latency_predictor.py" --lat_dataset_path "$table" --ckpt_path "$ckpt" "${FLAGS[@]}" "${EXTRA[@]}"
}

case "$WHICH" in
    both) train "$FP32_TABLE" "$OUT_DIR/lat_predictor.pt"; train "$INT8_TABLE" "$OUT_DIR/lat_predictor_quant.pt" ;;
    fp32) train "$FP32_TABLE" "$OUT_DIR/lat_predictor.pt" ;;
    int8) train "$INT8_TABLE" "$OUT_DIR/lat_predictor_quant.pt" ;;
    *) echo "train_lat_predictor.sh: error: WHICH must be both, fp32 or int8, got '$WHICH'" >&2; exit 2 ;;
esac
