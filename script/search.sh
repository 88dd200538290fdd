#!/usr/bin/env bash
# One step of the search chain (the original's search.sh).
#
#   bash script/search.sh OP [TYPE] [LATENCY_CONSTRAINT] [DATA_DIR] [TASK_NAME]
#
#   OP    cand  searcher.py --method Candidate  -> cands/kd_<TYPE>_<LAT>.cands
#         rand  searcher.py --method Random     -> cands/1st_generation_kd_<TYPE>_<LAT>.cands
#         fast  searcher.py --method Fast       -> cands/1st_generation_kd_<TYPE>_<LAT>.cands
#         eval  superbert_run_en_classifier_<TYPE>.py on ARCHES_FILE -> output/kd_<TYPE>_<LAT>/subbert.results
#         evol  searcher.py --method Evolved from that subbert.results
#               -> cands/1st_generation_kd_<TYPE>_<LAT>.evo.cands (with GENERATION=i: .gen<i>.evo.cands,
#                  copied to .evo.cands)
#   TYPE  ptq (int8 latency predictor and int8 evaluation) or fp (the fp32 AutoTinyBERT baseline)
#
# Positional arguments override the environment; every other setting comes from the
# environment with a default relative to the repository root:
#   PYTHON (.venv/bin/python when it exists, else python3), MODEL_DIR (model/SUPER-KD-S1/epoch_3), PREDICTOR (conf_datasets/lat_predictor_quant.pt,
#   or lat_predictor.pt for fp), SPACE (paper_search), GEN_SIZE (10), POPULATION (25), SEED (42),
#   NUM_TRAIN_EPOCHS (1), DO_LOWER_CASE (1), NUM_THREADS (0 = torch's default; 1 is much faster for
#   small sub-models on a shared CPU), CANDS_DIR (cands), OUTPUT_ROOT (output),
#   SEARCH_NAME (kd_<TYPE>_<LAT>), ARCHES_FILE (eval input; default the first generation, or the
#   GENERATION's .evo.cands), GENERATION (evolved generation number), SEARCH_ARGS / EVAL_ARGS (extra
#   flags for searcher.py / the evaluator, split on spaces), FORCE (1: redo a step whose output exists).
# Steps that write a .cands file skip when it exists (re-runs resume); eval skips evaluated archs.
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
baf_init "$@"

OP="${1:-${OP:-}}"
case "$OP" in
    cand|rand|fast|eval|evol) ;;
    *) echo "search.sh: error: OP must be cand, rand, fast, eval or evol, got '${OP}' (see --help)" >&2; exit 2 ;;
esac
TYPE="${2:-${TYPE:-ptq}}"
LATENCY_CONSTRAINT="${3:-${LATENCY_CONSTRAINT:-10}}"
TASK_NAME="${5:-${TASK_NAME:-rte}}"

glue_dir() {  # GLUE's directory name of a task
    case "$1" in
        cola) echo CoLA ;; sst-2) echo SST-2 ;; mrpc) echo MRPC ;; sts-b) echo STS-B ;; qqp) echo QQP ;;
        mnli|mnli-mm) echo MNLI ;; qnli) echo QNLI ;; rte) echo RTE ;; wnli) echo WNLI ;; *) echo "$1" ;;
    esac
}
DATA_DIR="${4:-${DATA_DIR:-$ROOT/data/glue/$(glue_dir "$TASK_NAME")}}"

case "$TYPE" in
    ptq) DEFAULT_PREDICTOR="$ROOT/conf_datasets/lat_predictor_quant.pt" ;;
    fp) DEFAULT_PREDICTOR="$ROOT/conf_datasets/lat_predictor.pt" ;;
    *) echo "search.sh: error: TYPE must be ptq or fp, got '$TYPE'" >&2; exit 2 ;;
esac
PREDICTOR="${PREDICTOR:-$DEFAULT_PREDICTOR}"
MODEL_DIR="${MODEL_DIR:-$ROOT/model/SUPER-KD-S1/epoch_3}"
SPACE="${SPACE:-paper_search}"
GEN_SIZE="${GEN_SIZE:-10}"
POPULATION="${POPULATION:-25}"
SEED="${SEED:-42}"
NUM_TRAIN_EPOCHS="${NUM_TRAIN_EPOCHS:-1}"
NUM_THREADS="${NUM_THREADS:-0}"
DO_LOWER_CASE="${DO_LOWER_CASE:-1}"
CANDS_DIR="${CANDS_DIR:-$ROOT/cands}"
OUTPUT_ROOT="${OUTPUT_ROOT:-$ROOT/output}"
SEARCH_NAME="${SEARCH_NAME:-kd_${TYPE}_${LATENCY_CONSTRAINT}}"
GENERATION="${GENERATION:-}"
FORCE="${FORCE:-0}"
read -r -a SEARCH_EXTRA <<< "${SEARCH_ARGS:-}"
read -r -a EVAL_EXTRA <<< "${EVAL_ARGS:-}"

CAND_FILE="$CANDS_DIR/$SEARCH_NAME.cands"
FIRST_GEN_FILE="$CANDS_DIR/1st_generation_$SEARCH_NAME.cands"
EVO_FILE="$CANDS_DIR/1st_generation_$SEARCH_NAME.evo.cands"
if [[ -n "$GENERATION" ]]; then
    GEN_EVO_FILE="$CANDS_DIR/1st_generation_$SEARCH_NAME.gen$GENERATION.evo.cands"
    DEFAULT_ARCHES="$GEN_EVO_FILE"
else
    GEN_EVO_FILE="$EVO_FILE"
    DEFAULT_ARCHES="$FIRST_GEN_FILE"
fi
ARCHES_FILE="${ARCHES_FILE:-$DEFAULT_ARCHES}"
OUTPUT_DIR="$OUTPUT_ROOT/$SEARCH_NAME"
mkdir -p "$CANDS_DIR" "$OUTPUT_DIR"

searcher() {
    "$PYTHON" "$ROOT/searcher.py" --ckpt_path "$PREDICTOR" --latency_constraint "$LATENCY_CONSTRAINT" \
        --candidate_file "$CAND_FILE" --model KD --space "$SPACE" --seed "$SEED" "$@" \
        ${SEARCH_EXTRA[@]+"${SEARCH_EXTRA[@]}"}
}

exists() {  # a step's output is there and FORCE is not set: skip it
    if [[ -s "$1" && "$FORCE" != "1" ]]; then
        echo "search.sh: $1 exists; skipping (FORCE=1 to redo)"
        return 0
    fi
    return 1
}

case "$OP" in
    cand)
        exists "$CAND_FILE" || searcher --method Candidate
        ;;
    rand|fast)
        method=$([[ "$OP" == rand ]] && echo Random || echo Fast)
        exists "$FIRST_GEN_FILE" || searcher --method "$method" --gen_size "$GEN_SIZE" --output_file "$FIRST_GEN_FILE"
        ;;
    eval)
        lower=()
        [[ "$DO_LOWER_CASE" == "1" ]] && lower=(--do_lower_case)
        "$PYTHON" "$ROOT/superbert_run_en_classifier_$TYPE.py" --model "$MODEL_DIR" --data_dir "$DATA_DIR" \
            --task_name "$TASK_NAME" --arches_file "$ARCHES_FILE" --output_dir "$OUTPUT_DIR" \
            --num_train_epochs "$NUM_TRAIN_EPOCHS" --seed "$SEED" --num_threads "$NUM_THREADS" ${lower[@]+"${lower[@]}"} \
            ${EVAL_EXTRA[@]+"${EVAL_EXTRA[@]}"}
        ;;
    evol)
        generation=()
        [[ -n "$GENERATION" ]] && generation=(--generation "$GENERATION")
        exists "$GEN_EVO_FILE" || searcher --method Evolved --population "$POPULATION" \
            --arch_perfs_file "$OUTPUT_DIR/subbert.results" --output_file "$GEN_EVO_FILE" \
            ${generation[@]+"${generation[@]}"}
        if [[ "$GEN_EVO_FILE" != "$EVO_FILE" ]]; then
            cp -f "$GEN_EVO_FILE" "$EVO_FILE"  # the original's artefact name holds the latest generation
        fi
        ;;
esac
