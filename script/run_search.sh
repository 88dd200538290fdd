#!/usr/bin/env bash
# The whole search for one budget and task (the original's run_search.sh, without SLURM):
# candidates -> fast (or random) first generation -> evaluate -> GENERATIONS x (evolve, evaluate)
# [-> rescore: with RESCORE_TOP=n, the n fittest fine-tuned again until each has RESCORE_SEEDS seeds]
# -> final: the TOP_K fittest archs (re-scored ones first, by their mean) re-evaluated with every seed of SEEDS.
# STRATEGY=random is the random-search baseline: every generation is drawn at random from the
# unevaluated candidates, with the same sizes (GEN_SIZE, then POPULATION per generation) and seeds.
#
#   TYPE=ptq LATENCY_CONSTRAINT=10 TASK_NAME=rte DATA_DIR=data/glue/RTE bash script/run_search.sh
#   TYPE=ptq STRATEGY=random LATENCY_CONSTRAINT=10 TASK_NAME=rte DATA_DIR=data/glue/RTE bash script/run_search.sh
#
# Environment (defaults relative to the repository root):
#   TYPE (ptq | fp | ort, or any other name of a scheme of quantize_utils.SCHEMES), LATENCY_CONSTRAINT (10, ms;
#   the paper uses 5/10/15/20), TASK_NAME (rte),
#   DATA_DIR (data/glue/<TASK>), GENERATIONS (3), FIRST_GENERATION (fast | rand; rand for STRATEGY=random),
#   STRATEGY (evolution | random), GEN_SIZE (10), POPULATION (25), TOP_K (3), SEEDS ("42 43 44"),
#   RESCORE_TOP (0: off), RESCORE_SEEDS (2), FINAL (1: run the final seed re-evaluation), SPACE (empty: the
#   supernet's), MODEL_DIR (model/SUPER-KD-S1/epoch_3, or final/), PREDICTOR, PREDICTOR_DIR, SEED (42),
#   NUM_TRAIN_EPOCHS (1), PYTHON,
#   SEARCH_ARGS / EVAL_ARGS (extra flags), FINAL_EVAL_ARGS (the finalists' recipe flags over EVAL_ARGS), EVAL_CACHE
#   (OUTPUT_ROOT/evaluation_cache, or off), CANDS_DIR, OUTPUT_ROOT, SEARCH_NAME; see script/search.sh --help.
# Outputs: cands/<SEARCH_NAME>{.cands,.search.json,.search_log.jsonl,.final.cands},
# cands/1st_generation_<SEARCH_NAME>{,.gen<i>.evo,.evo}.cands, output/<SEARCH_NAME>/subbert.results(.jsonl).
# A re-run resumes where it stopped.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
baf_init "$@"

# Every step in one process (run_search.py): starting Python with torch and transformers for each
# of a search's dozen steps cost as much as the fine-tunes of a small search.
exec "$PYTHON" "$ROOT/run_search.py" all
