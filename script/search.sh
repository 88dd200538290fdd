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
#         final the TOP_K fittest evaluated archs (cands/<SEARCH_NAME>.final.cands), evaluated with every seed
#               of SEEDS: the report's winner is the best mean over those seeds
#   TYPE  the scheme (quantize_utils.SCHEMES): ptq (PyTorch dynamic int8, Bigger&Faster), fp (fp32, the
#         AutoTinyBERT baseline), ort (ONNX Runtime dynamic int8), or a scheme's full name
#
# Positional arguments override the environment; every other setting comes from the
# environment with a default relative to the repository root:
#   PYTHON (.venv/bin/python when it exists, else python3), MODEL_DIR (model/SUPER-KD-S1/epoch_3, or
#   its final/ when there is no epoch_3/), PREDICTOR (conf_datasets/lat_predictor_quant.pt for ptq,
#   lat_predictor.pt for fp, lat_predictor_ort.pt for ort), SPACE (empty: the space the supernet records;
#   a name, family or JSON space file), GEN_SIZE (10), POPULATION (25), SEED (42), SEEDS (final step: "42 43 44"),
#   TOP_K (3), STRATEGY (evolution | random: recorded in the search identity), NUM_TRAIN_EPOCHS (1),
#   DO_LOWER_CASE (1), NUM_THREADS (0 = torch's default; 1 is much faster for small sub-models on a
#   shared CPU), EXTRA_SCHEMES (int8 schemes also scored on the same weights; default for fp:
#   torch_dynamic_int8, the "AutoTinyBERT + int8 PTQ" row), CANDS_DIR (cands), OUTPUT_ROOT (output),
#   SEARCH_NAME (kd_<TYPE>_<LAT>, with _random for STRATEGY=random), ARCHES_FILE (eval input; default the
#   first generation, or the GENERATION's file), GENERATION (generation number), SEARCH_ARGS / EVAL_ARGS
#   (extra flags for searcher.py / the evaluator, split on spaces), FORCE (1: redo a step whose output exists),
#   SAVE_MODELS (1: the final step keeps the fine-tuned and int8 models of one new seed under
#   output/<SEARCH_NAME>/models/, an ONNX file for ort).
# Steps that write a .cands file skip when it exists (re-runs resume); eval skips evaluated archs.
# Every input is checked before the step writes anything; a step of another task, scheme, budget,
# space or predictor than the search was started with is refused (cands/<SEARCH_NAME>.search.json).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
baf_init "$@"

OP="${1:-${OP:-}}"
case "$OP" in
    cand|rand|fast|eval|evol|final) ;;
    *) baf_die "OP must be cand, rand, fast, eval, evol or final, got '${OP}' (see --help)" ;;
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
    fp|fp32|torch_fp32) TYPE=fp; EVALUATOR=fp; DEFAULT_PREDICTOR="$ROOT/conf_datasets/lat_predictor.pt"
        DEFAULT_EXTRA="torch_dynamic_int8" ;;
    ptq|int8|torch_dynamic|torch_dynamic_int8) TYPE=ptq; EVALUATOR=ptq
        DEFAULT_PREDICTOR="$ROOT/conf_datasets/lat_predictor_quant.pt"; DEFAULT_EXTRA="" ;;
    ort|ort_dynamic|ort_dynamic_int8) TYPE=ort; EVALUATOR=ptq
        DEFAULT_PREDICTOR="$ROOT/conf_datasets/lat_predictor_ort.pt"; DEFAULT_EXTRA="" ;;
    fakequant) EVALUATOR=ptq; DEFAULT_PREDICTOR="$ROOT/conf_datasets/lat_predictor_quant.pt"; DEFAULT_EXTRA="" ;;
    *) baf_die "TYPE must be fp, ptq, ort or fakequant (a scheme of quantize_utils.SCHEMES), got '$TYPE'" ;;
esac
PREDICTOR="${PREDICTOR:-$DEFAULT_PREDICTOR}"
DEFAULT_MODEL_DIR="$ROOT/model/SUPER-KD-S1/epoch_3"
if [[ ! -d "$DEFAULT_MODEL_DIR" && -d "$ROOT/model/SUPER-KD-S1/final" ]]; then
    DEFAULT_MODEL_DIR="$ROOT/model/SUPER-KD-S1/final"  # a step-limited pre-training writes final/ only
fi
MODEL_DIR="${MODEL_DIR:-$DEFAULT_MODEL_DIR}"
SPACE="${SPACE:-}"
GEN_SIZE="${GEN_SIZE:-10}"
POPULATION="${POPULATION:-25}"
SEED="${SEED:-42}"
SEEDS="${SEEDS:-42 43 44}"
TOP_K="${TOP_K:-3}"
STRATEGY="${STRATEGY:-evolution}"
NUM_TRAIN_EPOCHS="${NUM_TRAIN_EPOCHS:-1}"
NUM_THREADS="${NUM_THREADS:-0}"
DO_LOWER_CASE="${DO_LOWER_CASE:-1}"
EXTRA_SCHEMES="${EXTRA_SCHEMES-$DEFAULT_EXTRA}"
CANDS_DIR="${CANDS_DIR:-$ROOT/cands}"
OUTPUT_ROOT="${OUTPUT_ROOT:-$ROOT/output}"
DEFAULT_NAME="kd_${TYPE}_${LATENCY_CONSTRAINT}"
[[ "$STRATEGY" == "random" ]] && DEFAULT_NAME="${DEFAULT_NAME}_random"
SEARCH_NAME="${SEARCH_NAME:-$DEFAULT_NAME}"
GENERATION="${GENERATION:-}"
FORCE="${FORCE:-0}"
SAVE_MODELS="${SAVE_MODELS:-1}"
read -r -a SEARCH_EXTRA <<< "${SEARCH_ARGS:-}"
read -r -a EVAL_EXTRA <<< "${EVAL_ARGS:-}"
read -r -a SEED_LIST <<< "$SEEDS"
read -r -a EXTRA_LIST <<< "$EXTRA_SCHEMES"

# ---- preflight: every input, before anything is written
baf_require_choice STRATEGY evolution random
baf_require_int GEN_SIZE 1
baf_require_int POPULATION 1
baf_require_int TOP_K 1
baf_require_int SEED 0
[[ "$LATENCY_CONSTRAINT" =~ ^[0-9]+([.][0-9]+)?$ ]] || baf_die "LATENCY_CONSTRAINT must be a number of ms, got '$LATENCY_CONSTRAINT'"
[[ "${#SEED_LIST[@]}" -ge 1 ]] || baf_die "SEEDS is empty; give the final step's seeds, e.g. SEEDS=\"42 43 44\""
[[ -z "$GENERATION" || "$GENERATION" =~ ^[0-9]+$ ]] || baf_die "GENERATION must be a generation number, got '$GENERATION'"
baf_require_file PREDICTOR "latency predictor checkpoint (script/train_lat_predictor.sh writes it)"
[[ -f "$MODEL_DIR/config.json" ]] || baf_die "MODEL_DIR=$MODEL_DIR: no supernet directory (config.json) there; set MODEL_DIR to the supernet (pre-training writes <OUTPUT_DIR>/final/ and epoch_<e>/)"
if [[ -n "$SPACE" && ! -f "$SPACE" && "$SPACE" == *.json ]]; then
    baf_die "SPACE=$SPACE: no such space file"
fi
baf_require_task TASK_NAME
case "$OP" in eval|final) baf_require_dir DATA_DIR "GLUE task directory of TASK_NAME=$TASK_NAME" ;; esac

CAND_FILE="$CANDS_DIR/$SEARCH_NAME.cands"
FIRST_GEN_FILE="$CANDS_DIR/1st_generation_$SEARCH_NAME.cands"
EVO_FILE="$CANDS_DIR/1st_generation_$SEARCH_NAME.evo.cands"
FINAL_FILE="$CANDS_DIR/$SEARCH_NAME.final.cands"
if [[ -n "$GENERATION" ]]; then
    GEN_EVO_FILE="$CANDS_DIR/1st_generation_$SEARCH_NAME.gen$GENERATION.evo.cands"
    DEFAULT_ARCHES="$GEN_EVO_FILE"
else
    GEN_EVO_FILE="$EVO_FILE"
    DEFAULT_ARCHES="$FIRST_GEN_FILE"
fi
[[ "$OP" == "final" ]] && DEFAULT_ARCHES="$FINAL_FILE"
ARCHES_FILE="${ARCHES_FILE:-$DEFAULT_ARCHES}"
OUTPUT_DIR="$OUTPUT_ROOT/$SEARCH_NAME"
RESULTS="$OUTPUT_DIR/subbert.results"
if [[ "$OP" == "eval" && ! -f "$ARCHES_FILE" ]]; then
    baf_die "ARCHES_FILE=$ARCHES_FILE: no such file (run the step that writes it first)"
fi
if [[ "$OP" == "evol" || "$OP" == "final" || ( "$OP" == "rand" && -n "$GENERATION" ) ]]; then
    [[ -f "$RESULTS" ]] || baf_die "$RESULTS: no results yet; evaluate the first generation first (OP=eval)"
fi
mkdir -p "$CANDS_DIR" "$OUTPUT_DIR"

searcher() {
    local space=()
    [[ -n "$SPACE" ]] && space=(--space "$SPACE")
    "$PYTHON" "$ROOT/searcher.py" --ckpt_path "$PREDICTOR" --latency_constraint "$LATENCY_CONSTRAINT" \
        --candidate_file "$CAND_FILE" --model KD --supernet "$MODEL_DIR" --scheme "$TYPE" --task_name "$TASK_NAME" \
        --strategy "$STRATEGY" --results_dir "$OUTPUT_DIR" --seed "$SEED" ${space[@]+"${space[@]}"} "$@" \
        ${SEARCH_EXTRA[@]+"${SEARCH_EXTRA[@]}"}
}

evaluate() {  # evaluate ARCHES SEED...
    local arches="$1" lower=() space=() extra=()
    shift
    [[ "$DO_LOWER_CASE" == "1" ]] && lower=(--do_lower_case)
    [[ -n "$SPACE" ]] && space=(--space "$SPACE")
    [[ "${#EXTRA_LIST[@]}" -gt 0 ]] && extra=(--extra_schemes "${EXTRA_LIST[@]}")
    local scheme=()
    [[ "$EVALUATOR" == "ptq" ]] && scheme=(--scheme "$TYPE")
    "$PYTHON" "$ROOT/superbert_run_en_classifier_$EVALUATOR.py" --model "$MODEL_DIR" --data_dir "$DATA_DIR" \
        --task_name "$TASK_NAME" --arches_file "$arches" --output_dir "$OUTPUT_DIR" \
        --num_train_epochs "$NUM_TRAIN_EPOCHS" --seed "$@" --num_threads "$NUM_THREADS" \
        ${scheme[@]+"${scheme[@]}"} ${extra[@]+"${extra[@]}"} ${space[@]+"${space[@]}"} ${lower[@]+"${lower[@]}"} \
        ${EVAL_EXTRA[@]+"${EVAL_EXTRA[@]}"}
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
        exists "$CAND_FILE" || searcher --method Candidate --gen_size "$GEN_SIZE"
        ;;
    rand|fast)
        method=$([[ "$OP" == rand ]] && echo Random || echo Fast)
        if [[ -n "$GENERATION" ]]; then  # a later random generation: as many new archs as evolution proposes
            [[ "$OP" == "rand" ]] || baf_die "GENERATION is set: only OP=rand draws later generations (OP=evol evolves)"
            exists "$GEN_EVO_FILE" || searcher --method Random --gen_size "$POPULATION" --arch_perfs_file "$RESULTS" \
                --output_file "$GEN_EVO_FILE" --generation "$GENERATION"
            cp -f "$GEN_EVO_FILE" "$EVO_FILE"
        else
            exists "$FIRST_GEN_FILE" || searcher --method "$method" --gen_size "$GEN_SIZE" --output_file "$FIRST_GEN_FILE"
        fi
        ;;
    eval)
        evaluate "$ARCHES_FILE" "$SEED"
        ;;
    evol)
        generation=()
        [[ -n "$GENERATION" ]] && generation=(--generation "$GENERATION")
        exists "$GEN_EVO_FILE" || searcher --method Evolved --population "$POPULATION" \
            --arch_perfs_file "$RESULTS" --output_file "$GEN_EVO_FILE" ${generation[@]+"${generation[@]}"}
        if [[ "$GEN_EVO_FILE" != "$EVO_FILE" ]]; then
            cp -f "$GEN_EVO_FILE" "$EVO_FILE"  # the original's artefact name holds the latest generation
        fi
        ;;
    final)
        exists "$FINAL_FILE" || searcher --method TopK --top_k "$TOP_K" --arch_perfs_file "$RESULTS" \
            --output_file "$FINAL_FILE"
        save=()
        if [[ "$SAVE_MODELS" == "1" ]]; then  # keep the models of one newly trained seed (the search seed's exist)
            for seed in "${SEED_LIST[@]}"; do
                if [[ "$seed" != "$SEED" ]]; then save=(--save_model_flag 1 --save_seeds "$seed"); break; fi
            done
        fi
        EVAL_EXTRA+=(${save[@]+"${save[@]}"})
        evaluate "$FINAL_FILE" "${SEED_LIST[@]}"
        ;;
esac
