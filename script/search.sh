#!/usr/bin/env bash
# One step of the search chain (the original's search.sh).
#
#   bash script/search.sh OP [TYPE] [LATENCY_CONSTRAINT] [DATA_DIR] [TASK_NAME]
#
#   OP    cand  searcher.py --method Candidate  -> cands/<SEARCH_NAME>.cands
#         rand  searcher.py --method Random     -> cands/1st_generation_<SEARCH_NAME>.cands (with GENERATION=i:
#               a later generation of unevaluated candidates, the random-search baseline)
#         fast  searcher.py --method Fast       -> cands/1st_generation_<SEARCH_NAME>.cands
#         eval  superbert_run_en_classifier_<fp|ptq>.py on ARCHES_FILE -> output/<SEARCH_NAME>/subbert.results
#         evol  searcher.py --method Evolved from that subbert.results
#               -> cands/1st_generation_<SEARCH_NAME>.evo.cands (with GENERATION=i: .gen<i>.evo.cands,
#                  copied to .evo.cands)
#         rescore  with RESCORE_TOP=n (0: off), the n fittest evaluated archs (cands/<SEARCH_NAME>.rescore.cands)
#               fine-tuned again with the candidates' recipe until each has RESCORE_SEEDS (2) seeds, SEED first:
#               final then ranks them before every other arch, by their mean (successive halving)
#         final the TOP_K fittest evaluated archs (cands/<SEARCH_NAME>.final.cands), evaluated with every seed
#               of SEEDS: the report's winner is the best mean over those seeds
#   TYPE  the scheme (quantize_utils.SCHEMES): ptq (PyTorch dynamic int8, Bigger&Faster), fp (fp32, the
#         AutoTinyBERT baseline), ort (ONNX Runtime dynamic int8), or any other name of a scheme
#
# Positional arguments override the environment; every other setting comes from the
# environment with a default relative to the repository root:
#   PYTHON (.venv/bin/python when it exists, else python3), MODEL_DIR (model/SUPER-KD-S1/epoch_3, or
#   its final/ when there is no epoch_3/), PREDICTOR (the scheme's predictor in PREDICTOR_DIR:
#   lat_predictor_quant.pt for ptq, lat_predictor.pt for fp, lat_predictor_ort.pt for ort; quantize_utils.SCHEMES),
#   PREDICTOR_DIR (conf_datasets), SPACE (empty: the space the supernet records;
#   a name, family or JSON space file), GEN_SIZE (10), POPULATION (25), SEED (42), SEEDS (final step: "42 43 44"),
#   TOP_K (3), RESCORE_TOP (0) and RESCORE_SEEDS (2) (the rescore step), STRATEGY (evolution | random:
#   recorded in the search identity), NUM_TRAIN_EPOCHS (1),
#   DO_LOWER_CASE (1), NUM_THREADS (0 = torch's default; 1 is much faster for small sub-models on a
#   shared CPU), EXTRA_SCHEMES (int8 schemes also scored on the same weights; default for fp:
#   torch_dynamic_int8, the "AutoTinyBERT + int8 PTQ" row), CANDS_DIR (cands), OUTPUT_ROOT (output),
#   SEARCH_NAME (kd_<TYPE>_<LAT>, with _random for STRATEGY=random), ARCHES_FILE (eval input; default the
#   first generation, or the GENERATION's file), GENERATION (generation number), SEARCH_ARGS / EVAL_ARGS
#   (extra flags for searcher.py / the evaluator, split as the shell does; read once, before any step; a flag
#   the search sets itself, e.g. --output_dir, is refused naming its variable), FINAL_EVAL_ARGS (empty: the
#   finalists are fine-tuned like the candidates, the paper's; else recipe flags over EVAL_ARGS for the final
#   step only, e.g. "--max_train_examples 8000": the report's accuracies are those fine-tunes'), EVAL_CACHE
#   (OUTPUT_ROOT/evaluation_cache: one fine-tune per (task, arch, seed, recipe) for every search writing
#   there; "off" to fine-tune every time), FORCE (1: redo a step whose output exists),
#   SAVE_MODELS (0; opt-in: 1 makes the final step keep the fine-tuned and int8 models of one new seed under
#   output/<SEARCH_NAME>/models/, an ONNX file for ort). SEARCH_NAME and the other names stay inside their
#   directories (no '/' or '..'); every number is checked (type, range, finite) before anything is written.
#   The latency window is [0.85c, 1.0c] (SEARCH_ARGS="--latency_window_high 1.1" for the original's).
# Steps that write a .cands file skip when it exists (re-runs resume); eval skips evaluated archs.
# Every input is checked before the step writes anything; a step of another task, scheme, budget,
# space or predictor than the search was started with is refused (cands/<SEARCH_NAME>.search.json).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
baf_init "$@"

# The settings, their checks and the steps live in run_search.py (search/plan.py): one owner for the
# three search scripts, and one process per step.
OP="${1:-${OP:-}}"
[[ -n "$OP" ]] || baf_die "OP must be cand, rand, fast, eval, evol, rescore or final (see --help)"
exec "$PYTHON" "$ROOT/run_search.py" "$OP" "${@:2}"
