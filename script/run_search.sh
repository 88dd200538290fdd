#!/usr/bin/env bash
# The whole search for one budget and task (the original's run_search.sh, without SLURM):
# candidates -> fast (or random) first generation -> evaluate -> GENERATIONS x (evolve, evaluate).
#
#   TYPE=ptq LATENCY_CONSTRAINT=10 TASK_NAME=rte DATA_DIR=data/glue/RTE bash script/run_search.sh
#
# Environment (defaults relative to the repository root):
#   TYPE (ptq | fp), LATENCY_CONSTRAINT (10, ms; the paper uses 5/10/15/20), TASK_NAME (rte),
#   DATA_DIR (data/glue/<TASK>), GENERATIONS (3), FIRST_GENERATION (fast | rand), GEN_SIZE (10),
#   POPULATION (25), SPACE (paper_search), MODEL_DIR (model/SUPER-KD-S1/epoch_3),
#   PREDICTOR (conf_datasets/lat_predictor_quant.pt, or lat_predictor.pt for fp), SEED (42),
#   NUM_TRAIN_EPOCHS (1), PYTHON (.venv/bin/python when it exists, else python3), SEARCH_ARGS / EVAL_ARGS (extra flags), CANDS_DIR, OUTPUT_ROOT.
# Outputs: cands/kd_<TYPE>_<LAT>.cands, cands/1st_generation_kd_<TYPE>_<LAT>{,.gen<i>.evo,.evo}.cands,
# cands/kd_<TYPE>_<LAT>.search_log.jsonl, output/kd_<TYPE>_<LAT>/subbert.results(.jsonl).
# A re-run resumes where it stopped.
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
baf_init "$@"

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
TYPE="${TYPE:-ptq}"
LATENCY_CONSTRAINT="${LATENCY_CONSTRAINT:-10}"
TASK_NAME="${TASK_NAME:-rte}"
DATA_DIR="${DATA_DIR:-}"  # empty: search.sh picks data/glue/<TASK>
GENERATIONS="${GENERATIONS:-3}"
FIRST_GENERATION="${FIRST_GENERATION:-fast}"

bash "$SCRIPT_DIR/search.sh" cand "$TYPE" "$LATENCY_CONSTRAINT" "$DATA_DIR" "$TASK_NAME"
bash "$SCRIPT_DIR/search.sh" "$FIRST_GENERATION" "$TYPE" "$LATENCY_CONSTRAINT" "$DATA_DIR" "$TASK_NAME"
bash "$SCRIPT_DIR/search.sh" eval "$TYPE" "$LATENCY_CONSTRAINT" "$DATA_DIR" "$TASK_NAME"
GENERATIONS="$GENERATIONS" bash "$SCRIPT_DIR/search_and_eval.sh" "$TYPE" "$LATENCY_CONSTRAINT" "$DATA_DIR" "$TASK_NAME"
