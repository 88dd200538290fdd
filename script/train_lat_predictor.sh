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
#   INT8_TABLE ($TABLE_DIR/lat_torch_dynamic_int8.jsonl), ORT_TABLE ($TABLE_DIR/lat_ort_dynamic_int8.jsonl),
#   OUT_DIR (conf_datasets), WHICH (both = fp32 and int8 | fp32 | int8 | ort | all = the three),
#   RECIPE (default | original), SEED (0), SPACE (empty = the space recorded in the table),
#   EXTRA_ARGS (more flags, split on spaces).
# Output: $OUT_DIR/lat_predictor.pt (fp32), lat_predictor_quant.pt (PyTorch int8), lat_predictor_ort.pt (ORT int8).
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
baf_init "$@"

# file names of the fp32, PyTorch int8 and ORT int8 schemes, from the registry (quantize_utils.SCHEMES)
read -r FP32_NAME INT8_NAME ORT_NAME <<< "$(baf_py -m quantize_utils table_name fp ptq ort)"
read -r FP32_PREDICTOR INT8_PREDICTOR ORT_PREDICTOR <<< "$(baf_py -m quantize_utils predictor_file fp ptq ort)"
TABLE_DIR="${TABLE_DIR:-$ROOT/conf_datasets}"
FP32_TABLE="${FP32_TABLE:-$TABLE_DIR/$FP32_NAME}"
INT8_TABLE="${INT8_TABLE:-$TABLE_DIR/$INT8_NAME}"
ORT_TABLE="${ORT_TABLE:-$TABLE_DIR/$ORT_NAME}"
OUT_DIR="${OUT_DIR:-$ROOT/conf_datasets}"
WHICH="${WHICH:-both}"
RECIPE="${RECIPE:-default}"
SEED="${SEED:-0}"
SPACE="${SPACE:-}"
read -r -a EXTRA <<< "${EXTRA_ARGS:-}"

FLAGS=(--recipe "$RECIPE" --seed "$SEED")
if [[ -n "$SPACE" ]]; then FLAGS+=(--space "$SPACE"); fi

baf_require_choice WHICH both fp32 int8 ort all
baf_require_choice RECIPE default original
case "$WHICH" in
    both) PLAN=("FP32_TABLE:$FP32_PREDICTOR" "INT8_TABLE:$INT8_PREDICTOR") ;;
    fp32) PLAN=("FP32_TABLE:$FP32_PREDICTOR") ;;
    int8) PLAN=("INT8_TABLE:$INT8_PREDICTOR") ;;
    ort) PLAN=("ORT_TABLE:$ORT_PREDICTOR") ;;
    all) PLAN=("FP32_TABLE:$FP32_PREDICTOR" "INT8_TABLE:$INT8_PREDICTOR" "ORT_TABLE:$ORT_PREDICTOR") ;;
esac
for item in "${PLAN[@]}"; do  # every table before the first training
    baf_require_file "${item%%:*}" "latency table (script/lat_dataset_gen.sh writes it)"
done
[[ ! -e "$OUT_DIR" || -d "$OUT_DIR" ]] || baf_die "OUT_DIR=$OUT_DIR exists and is not a directory"

for item in "${PLAN[@]}"; do
    var="${item%%:*}"
    baf_run "$PYTHON" "$ROOT/latency_predictor.py" --lat_dataset_path "${!var}" --ckpt_path "$OUT_DIR/${item#*:}" \
        "${FLAGS[@]}" ${EXTRA[@]+"${EXTRA[@]}"}
done
