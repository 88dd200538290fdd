#!/usr/bin/env bash
# The paper's reproduction in one command: corpus -> shards -> KD supernet of AutoTinyBERT KD-S1's shape
# (L5/H564/F1024/Q528, 12 heads, SPACE=paper) -> fp32 and int8 latency tables of the paper grid on this
# CPU (or the authors' own tables) -> predictors -> at each budget, the fp32 search (AutoTinyBERT) and
# the int8 search (Bigger&Faster) on MNLI with a final seed re-evaluation -> report.
#
#   SMOKE=1 bash script/reproduce_paper.sh          # step 0: the same chain at paper geometry, tiny counts,
#                                                   # on ../shared/data, in minutes on a CPU (paper_smoke_run/)
#   bash script/reproduce_paper.sh                  # the full run with the paper's settings (paper_run/)
#   PLAN_ONLY=1 bash script/reproduce_paper.sh      # checks, probe and plan, then stop
#   LATENCY_TABLES=authors NPROC=8 bash script/reproduce_paper.sh
#
# Before any stage: every input is checked (one line naming the variable), a short timing probe runs a
# few units of each stage on this machine (PROBE=0 skips it), and the plan is printed: every stage, what
# it reads and writes, its steps / archs / candidates and an estimate extrapolated from the probe.
# Re-running resumes: a finished stage is skipped (RUN_DIR/stages/<stage>.done holds its settings; other
# settings redo it, where the stage script resumes or refuses), an unfinished one continues.
# Each stage's wall time and peak memory go to RUN_DIR/stage_costs.tsv (+ unit_costs.json).
#
# Environment (defaults relative to the repository root; SMOKE=1 changes the defaults marked *):
#   PYTHON (.venv/bin/python when it exists, else python3), SMOKE (0), RUN_DIR* (paper_run | paper_smoke_run),
#   STAGES (all = inputs* shards pretrain paper_step* latency predictors searches report; or a subset),
#   PLAN_ONLY (0), PROBE (1), PROBE_STEPS* (3 | 2), PROBE_FINETUNE_EXAMPLES* (128 | 64), PROBE_EVAL_EXAMPLES (64),
#   inputs: RAW_DIR* (data/raw/books1/epubtxt), BERT_MODEL* (model/bert-base-uncased: vocab.txt or its dir),
#     TEACHER_MODEL* (model/bert-base-uncased), STUDENT_MODEL (empty: from scratch; e.g. model/KD-S1),
#     GLUE_DIR* (data/glue/MNLI), SHARED_DATA (../shared/data: the smoke run's samples),
#     SMOKE_TRAIN / SMOKE_DEV (800 / 200: the stand-in MNLI's lines), TEACHER_SEED (0)
#   shards: NUM_SHARDS* (28 | 4), NUM_WORKERS (the CPU count)
#   pre-training: EPOCHS (4), MAX_STEPS* (-1: epochs decide | 4), BATCH_SIZE (12), ACC_STEPS (1), LR (1e-4),
#     MAX_SEQ_LENGTH* (512 | 128), WARMUP_PROPORTION (0.1), PRECISION (auto), SAVE_STEPS (1000), NPROC (1;
#     >1: torchrun on NPROC GPUs), THREADS* (0 = torch's default | 2), PAPER_STEPS (3: SMOKE's steps at 12 x 512),
#     PRETRAIN_ARGS* (more pre_training.py flags | "--quality_sequences 12")
#   latency: LATENCY_TABLES (measure | authors: AUTHORS_TABLES/lat_.tmp, lat_quant_.tmp unchanged),
#     AUTHORS_TABLES (../shared/data/original_latency), SAMPLE* (empty = the 14,250-arch grid | 36),
#     INFER_CNT* (20 | 10), WARMUP* (5 | 3), LAT_THREADS (1), LATENCY_ARGS* (more latency flags |
#     none)
#   search: BUDGETS* ("5 10 15 20" ms | auto: BUDGET_PERCENTILES of the int8 table, kept in RUN_DIR/budgets.txt),
#     BUDGET_PERCENTILES (50), TYPES ("fp ptq"), RANDOM_BASELINE* (0 | 1: also the int8 random search),
#     GEN_SIZE* (10 | 2), POPULATION* (25 | 2), GENERATIONS* (3 | 1), TOP_K* (3 | 1), SEEDS* ("42 43 44" | "42 43"),
#     NUM_TRAIN_EPOCHS (1), JOBS* (NPROC: searches at a time, one GPU each | 2), NUM_THREADS* (0 | 1),
#     EVAL_ARGS* (empty | "--max_train_examples 256 --eval_step 8"), SEARCH_ARGS, SEED (42)
#   report: REPORT_TITLE (a title naming the run; SMOKE: says the task is a stand-in)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
baf_init "$@"
baf_supervise

cd "$ROOT"  # every relative path is relative to the repository root
SMOKE="${SMOKE:-0}"
baf_require_choice SMOKE 0 1
abspath() { if [[ -z "$1" || "$1" == /* ]]; then echo "$1"; else echo "$ROOT/$1"; fi; }

if [[ "$SMOKE" == "1" ]]; then
    RUN_DIR="$(abspath "${RUN_DIR:-paper_smoke_run}")"
    SMOKE_INPUTS="$RUN_DIR/smoke_inputs"
    SHARED_DATA="${SHARED_DATA:-../shared/data}"
    RAW_DIR="${RAW_DIR:-$SMOKE_INPUTS/corpus}"
    BERT_MODEL="${BERT_MODEL:-$SHARED_DATA/vocab/bert-base-uncased-vocab.txt}"
    TEACHER_MODEL="${TEACHER_MODEL:-$SMOKE_INPUTS/teacher}"
    GLUE_DIR="${GLUE_DIR:-$SMOKE_INPUTS/MNLI}"
    NUM_SHARDS="${NUM_SHARDS:-4}"; MAX_STEPS="${MAX_STEPS:-4}"; MAX_SEQ_LENGTH="${MAX_SEQ_LENGTH:-128}"
    THREADS="${THREADS:-2}"; SAMPLE="${SAMPLE-36}"; INFER_CNT="${INFER_CNT:-10}"; WARMUP="${WARMUP:-3}"
    BUDGETS="${BUDGETS:-auto}"; RANDOM_BASELINE="${RANDOM_BASELINE:-1}"
    GEN_SIZE="${GEN_SIZE:-2}"; POPULATION="${POPULATION:-2}"; GENERATIONS="${GENERATIONS:-1}"; TOP_K="${TOP_K:-1}"
    SEEDS="${SEEDS:-42 43}"; JOBS="${JOBS:-2}"; NUM_THREADS="${NUM_THREADS:-1}"
    EVAL_ARGS="${EVAL_ARGS-"--max_train_examples 256 --eval_step 8"}"
    PROBE_STEPS="${PROBE_STEPS:-2}"; PROBE_FINETUNE_EXAMPLES="${PROBE_FINETUNE_EXAMPLES:-64}"
    PRETRAIN_ARGS="${PRETRAIN_ARGS-"--quality_sequences 12"}"; LATENCY_ARGS="${LATENCY_ARGS-}"
    DEFAULT_TITLE="Smoke run at paper geometry (random bert-base-shaped teacher, ${MAX_STEPS} pre-training steps; stand-in task: the 1k MNLI dev samples of shared/data, not GLUE MNLI) -- accuracies are not meaningful"
else
    RUN_DIR="$(abspath "${RUN_DIR:-paper_run}")"
    SHARED_DATA="${SHARED_DATA:-../shared/data}"
    RAW_DIR="${RAW_DIR:-data/raw/books1/epubtxt}"
    BERT_MODEL="${BERT_MODEL:-model/bert-base-uncased}"
    TEACHER_MODEL="${TEACHER_MODEL:-model/bert-base-uncased}"
    GLUE_DIR="${GLUE_DIR:-data/glue/MNLI}"
    NUM_SHARDS="${NUM_SHARDS:-28}"; MAX_STEPS="${MAX_STEPS:--1}"; MAX_SEQ_LENGTH="${MAX_SEQ_LENGTH:-512}"
    THREADS="${THREADS:-0}"; SAMPLE="${SAMPLE:-}"; INFER_CNT="${INFER_CNT:-20}"; WARMUP="${WARMUP:-5}"
    BUDGETS="${BUDGETS:-5 10 15 20}"; RANDOM_BASELINE="${RANDOM_BASELINE:-0}"
    GEN_SIZE="${GEN_SIZE:-10}"; POPULATION="${POPULATION:-25}"; GENERATIONS="${GENERATIONS:-3}"; TOP_K="${TOP_K:-3}"
    SEEDS="${SEEDS:-42 43 44}"; NUM_THREADS="${NUM_THREADS:-0}"
    EVAL_ARGS="${EVAL_ARGS:-}"
    PROBE_STEPS="${PROBE_STEPS:-3}"; PROBE_FINETUNE_EXAMPLES="${PROBE_FINETUNE_EXAMPLES:-128}"
    DEFAULT_TITLE="Bigger&Faster vs AutoTinyBERT (fp32 search) on MNLI, KD supernet of KD-S1's shape"
fi
STAGES="${STAGES:-all}"; PLAN_ONLY="${PLAN_ONLY:-0}"; PROBE="${PROBE:-1}"; PROBE_EVAL_EXAMPLES="${PROBE_EVAL_EXAMPLES:-64}"
STUDENT_MODEL="${STUDENT_MODEL:-}"; SMOKE_TRAIN="${SMOKE_TRAIN:-800}"; SMOKE_DEV="${SMOKE_DEV:-200}"
TEACHER_SEED="${TEACHER_SEED:-0}"; NUM_WORKERS="${NUM_WORKERS:-$(nproc 2>/dev/null || echo 1)}"
EPOCHS="${EPOCHS:-4}"; BATCH_SIZE="${BATCH_SIZE:-12}"; ACC_STEPS="${ACC_STEPS:-1}"; LR="${LR:-1e-4}"
WARMUP_PROPORTION="${WARMUP_PROPORTION:-0.1}"; PRECISION="${PRECISION:-auto}"; SAVE_STEPS="${SAVE_STEPS:-1000}"
NPROC="${NPROC:-1}"; PAPER_STEPS="${PAPER_STEPS:-3}"; PRETRAIN_ARGS="${PRETRAIN_ARGS:-}"
LATENCY_TABLES="${LATENCY_TABLES:-measure}"; AUTHORS_TABLES="${AUTHORS_TABLES:-../shared/data/original_latency}"
LAT_THREADS="${LAT_THREADS:-1}"; LATENCY_ARGS="${LATENCY_ARGS:-}"
BUDGET_PERCENTILES="${BUDGET_PERCENTILES:-50}"; TYPES="${TYPES:-fp ptq}"; NUM_TRAIN_EPOCHS="${NUM_TRAIN_EPOCHS:-1}"
JOBS="${JOBS:-$NPROC}"; SEARCH_ARGS="${SEARCH_ARGS:-}"; SEED="${SEED:-42}"
REPORT_TITLE="${REPORT_TITLE:-$DEFAULT_TITLE}"
# Both latency backends are timed in one process, arch by arch (the same conditions for fp32 and int8).
LATENCY_BACKENDS="fp32 int8"

for var in PLAN_ONLY PROBE RANDOM_BASELINE; do baf_require_choice "$var" 0 1; done
for var in NPROC JOBS BATCH_SIZE ACC_STEPS EPOCHS GEN_SIZE POPULATION TOP_K PAPER_STEPS PROBE_STEPS INFER_CNT \
        NUM_SHARDS NUM_WORKERS SMOKE_TRAIN SMOKE_DEV LAT_THREADS PROBE_FINETUNE_EXAMPLES PROBE_EVAL_EXAMPLES; do
    baf_require_int "$var" 1
done
for var in GENERATIONS WARMUP THREADS NUM_THREADS SAVE_STEPS SEED TEACHER_SEED; do baf_require_int "$var" 0; done
baf_require_int MAX_STEPS -1
baf_require_int MAX_SEQ_LENGTH 5
[[ -z "$SAMPLE" ]] || baf_require_int SAMPLE 1
(( PROBE_STEPS >= 2 )) || baf_die "PROBE_STEPS must be >= 2 (the first step is warm-up and is not timed), got $PROBE_STEPS"
read -r -a SEED_LIST <<< "$SEEDS"
[[ "${#SEED_LIST[@]}" -ge 1 ]] || baf_die "SEEDS is empty; give the final re-evaluation's seeds, e.g. SEEDS=\"42 43 44\""
# SMOKE's shards serve both its seq-128 pre-training and the paper_step stage at seq 512
SHARD_SEQ_LEN="$MAX_SEQ_LENGTH"
if [[ "$SMOKE" == "1" && "$MAX_SEQ_LENGTH" -lt 512 ]]; then SHARD_SEQ_LEN=512; fi

SHARDS_DIR="$RUN_DIR/shards"
SUPERNET_DIR="$RUN_DIR/supernet"
LATENCY_DIR="$RUN_DIR/latency"
PREDICTOR_DIR="$RUN_DIR/conf_datasets"
CANDS_DIR="$RUN_DIR/cands"
OUTPUT_ROOT="$RUN_DIR/output"
STAGE_DIR="$RUN_DIR/stages"
if [[ "$LATENCY_TABLES" == "authors" ]]; then  # the tables' file names: the registry's (quantize_utils.SCHEMES)
    read -r FP32_TABLE INT8_TABLE <<< "$(baf_py -m quantize_utils legacy_table fp ptq)"
    FP32_TABLE="$AUTHORS_TABLES/$FP32_TABLE"; INT8_TABLE="$AUTHORS_TABLES/$INT8_TABLE"
else
    read -r FP32_TABLE INT8_TABLE <<< "$(baf_py -m quantize_utils table_name fp ptq)"
    FP32_TABLE="$LATENCY_DIR/$FP32_TABLE"; INT8_TABLE="$LATENCY_DIR/$INT8_TABLE"
fi

settings() {  # the resolved variables, for the Python helpers (reproduce/)
    local name
    for name in SMOKE RUN_DIR SHARED_DATA RAW_DIR BERT_MODEL TEACHER_MODEL STUDENT_MODEL GLUE_DIR STAGES PROBE \
            PROBE_STEPS PROBE_FINETUNE_EXAMPLES PROBE_EVAL_EXAMPLES NUM_SHARDS NUM_WORKERS EPOCHS MAX_STEPS BATCH_SIZE \
            ACC_STEPS LR MAX_SEQ_LENGTH PRECISION NPROC THREADS PAPER_STEPS LATENCY_TABLES AUTHORS_TABLES SAMPLE \
            INFER_CNT WARMUP LAT_THREADS BUDGETS BUDGET_PERCENTILES TYPES RANDOM_BASELINE GEN_SIZE POPULATION \
            GENERATIONS TOP_K SEEDS NUM_TRAIN_EPOCHS JOBS NUM_THREADS EVAL_ARGS SEED; do
        printf '%s=%s\0' "$name" "${!name}"
    done
    printf 'SPACE=paper\0'
}
helper() {  # helper MODULE [NAME=VALUE...]: a reproduce/ helper with the settings
    local module="$1"
    shift
    local args=()
    while IFS= read -r -d '' pair; do args+=("$pair"); done < <(settings)
    baf_run_py -m "reproduce.$module" "${args[@]}" "$@"
}
in_stages() {  # in_stages NAME: the stage is selected (STAGES; inputs and paper_step exist with SMOKE=1 only)
    local name
    if [[ "$SMOKE" != "1" && ( "$1" == inputs || "$1" == paper_step ) ]]; then return 1; fi
    [[ "$STAGES" == "all" ]] && return 0
    for name in $STAGES; do [[ "$name" == "$1" ]] && return 0; done
    return 1
}

# ---- 1. every input, before any work (a failure is one line naming the variable)
helper checks || exit 2
if [[ "$PLAN_ONLY" != "1" || "$PROBE" == "1" ]]; then  # about to write more than the plan: one run per RUN_DIR
    mkdir -p "$RUN_DIR"
    baf_hold_lock "$RUN_DIR/.pipeline.lock" "run directory RUN_DIR=$RUN_DIR"
fi

SECONDS=0
run_stage() {  # run_stage NAME "SIGNATURE" CMD...: run a selected, unfinished stage, timed and measured
    local name="$1" signature="$2" marker="$STAGE_DIR/$1.done" rc=0
    shift 2
    in_stages "$name" || return 0
    if [[ -f "$marker" && "$(cat "$marker")" == "$signature" ]]; then
        printf '\n=== [%5ds] %s: done before (%s); skipped\n' "$SECONDS" "$name" "$marker"
        return 0
    fi
    printf '\n=== [%5ds] %s\n' "$SECONDS" "$name"
    mkdir -p "$STAGE_DIR"
    baf_run_py -m reproduce.costs run --record "$STAGE_DIR/$name.cost.jsonl" --stage "$name" -- "$@" || rc=$?
    if (( rc != 0 )); then  # the costs so far (a finished run writes them at its end)
        baf_py -m reproduce.costs summary --run_dir "$RUN_DIR" || true
        exit "$rc"
    fi
    printf '%s\n' "$signature" > "$marker.tmp"
    mv -f "$marker.tmp" "$marker"
}

stage_inputs() {
    run_stage inputs "seed=$TEACHER_SEED train=$SMOKE_TRAIN dev=$SMOKE_DEV shared=$SHARED_DATA" \
        "$PYTHON" -m reproduce.smoke all --shared_data "$SHARED_DATA" --teacher_dir "$TEACHER_MODEL" \
        --task_dir "$GLUE_DIR" --corpus_dir "$RAW_DIR" --train "$SMOKE_TRAIN" --dev "$SMOKE_DEV" --seed "$TEACHER_SEED"
    helper checks INPUTS_READY=1 || exit 2  # the teacher, task and corpus the smoke run just made
}

# ---- 2. the timing probe and the plan
INPUTS_DONE=0
if [[ "$PROBE" == "1" ]]; then
    if [[ "$SMOKE" == "1" ]] && in_stages inputs; then stage_inputs; INPUTS_DONE=1; fi
    printf '\n=== [%5ds] timing probe (a few units of each stage on this machine: %s/probe)\n' "$SECONDS" "$RUN_DIR"
    helper probe
fi
echo
helper plan
if [[ "$PLAN_ONLY" == "1" ]]; then
    echo "PLAN_ONLY=1: stopping before the first stage"
    exit 0
fi

# ---- 3. the stages
if [[ "$SMOKE" == "1" && "$INPUTS_DONE" == "0" ]] && in_stages inputs; then stage_inputs; fi

run_stage shards "raw=$RAW_DIR vocab=$BERT_MODEL seq=$SHARD_SEQ_LEN shards=$NUM_SHARDS" \
    env RAW_DIR="$RAW_DIR" GENERATED_DIR="$SHARDS_DIR" BERT_MODEL="$BERT_MODEL" MAX_SEQ_LEN="$SHARD_SEQ_LEN" \
    DO_LOWER_CASE=1 NUM_SHARDS="$NUM_SHARDS" NUM_WORKERS="$NUM_WORKERS" OVERWRITE=0 EXTRA_ARGS="" \
    bash "$ROOT/script/generate_data.sh"

pretrain_env() {  # pretrain_env OUTPUT_DIR BATCH SEQ MAX_STEPS SAVE_STEPS: pre_training.sh's variables in PENV
    PENV=(GENERATED_DIR="$SHARDS_DIR" OUTPUT_DIR="$1" TEACHER_MODEL="$TEACHER_MODEL" STUDENT_MODEL="$STUDENT_MODEL" MLM=0
        SPACE=paper SUPERNET_CONFIG= EPOCHS="$EPOCHS" MAX_STEPS="$4" BATCH_SIZE="$2" ACC_STEPS="$ACC_STEPS" LR="$LR"
        MAX_SEQ_LENGTH="$3" WARMUP_PROPORTION="$WARMUP_PROPORTION" PRECISION="$PRECISION" SEED="$SEED"
        SAVE_STEPS="$5" LOGGING_STEPS=50 THREADS="$THREADS" NPROC="$NPROC" RESUME=auto MASKED_UPDATES=auto)
}
pretrain_env "$SUPERNET_DIR" "$BATCH_SIZE" "$MAX_SEQ_LENGTH" "$MAX_STEPS" "$SAVE_STEPS"
run_stage pretrain "teacher=$TEACHER_MODEL student=$STUDENT_MODEL epochs=$EPOCHS steps=$MAX_STEPS batch=$BATCH_SIZE acc=$ACC_STEPS lr=$LR seq=$MAX_SEQ_LENGTH seed=$SEED nproc=$NPROC" \
    env "${PENV[@]}" EXTRA_ARGS="$PRETRAIN_ARGS" bash "$ROOT/script/pre_training.sh"
MODEL_DIR="$SUPERNET_DIR/final"

pretrain_env "$RUN_DIR/paper_step" 12 512 "$PAPER_STEPS" 0
run_stage paper_step "teacher=$TEACHER_MODEL steps=$PAPER_STEPS" \
    env "${PENV[@]}" NPROC=1 \
    EXTRA_ARGS="--quality_ladder 0" bash "$ROOT/script/pre_training.sh"

if [[ "$LATENCY_TABLES" == "authors" ]]; then
    if in_stages latency; then
        printf '\n=== [%5ds] latency: LATENCY_TABLES=authors: %s and %s, unchanged\n' "$SECONDS" "$FP32_TABLE" "$INT8_TABLE"
    fi
else
    run_stage latency "backends=$LATENCY_BACKENDS sample=$SAMPLE runs=$INFER_CNT warmup=$WARMUP threads=$LAT_THREADS" \
        env BACKEND="$LATENCY_BACKENDS" SAVE_DIR="$LATENCY_DIR" SPACE=paper SAMPLE="$SAMPLE" ARCH_FILE= \
        REFERENCES=auto SEED=0 THREADS="$LAT_THREADS" INFER_CNT="$INFER_CNT" WARMUP="$WARMUP" \
        VOCAB_SIZE="$(wc -l < "$(if [[ -d "$BERT_MODEL" ]]; then echo "$BERT_MODEL/vocab.txt"; else echo "$BERT_MODEL"; fi)" | tr -d ' ')" \
        SHARD= LEGACY=1 EXTRA_ARGS="$LATENCY_ARGS" bash "$ROOT/script/lat_dataset_gen.sh"
fi

run_stage predictors "fp32=$FP32_TABLE int8=$INT8_TABLE" \
    env FP32_TABLE="$FP32_TABLE" INT8_TABLE="$INT8_TABLE" OUT_DIR="$PREDICTOR_DIR" WHICH=both RECIPE=default SEED=0 \
    SPACE= EXTRA_ARGS="" bash "$ROOT/script/train_lat_predictor.sh"

if [[ "$BUDGETS" == "auto" ]] && { in_stages searches || in_stages report; }; then
    # the paper's 5/10/15/20 ms need not fit this CPU's table: percentiles of the measured int8 table, kept
    if [[ ! -s "$RUN_DIR/budgets.txt" ]]; then
        read -r -a PERCENTILES <<< "$BUDGET_PERCENTILES"
        baf_py -m demo.budgets "$INT8_TABLE" --percentiles "${PERCENTILES[@]}" > "$RUN_DIR/budgets.txt.tmp"
        mv -f "$RUN_DIR/budgets.txt.tmp" "$RUN_DIR/budgets.txt"
    fi
    BUDGETS="$(cat "$RUN_DIR/budgets.txt")"
    echo "latency budgets (ms; the int8 table's percentiles $BUDGET_PERCENTILES, RUN_DIR/budgets.txt): $BUDGETS"
fi

COMMANDS=()
SEARCH_NUMBER=0
for LAT in $BUDGETS; do
    for KIND in $TYPES ptq_random; do
        STRATEGY=evolution TYPE="$KIND"
        if [[ "$KIND" == ptq_random ]]; then
            [[ "$RANDOM_BASELINE" == "1" ]] || continue
            STRATEGY=random TYPE=ptq
        fi
        GPU=""
        (( NPROC > 1 )) && GPU="CUDA_VISIBLE_DEVICES=$((SEARCH_NUMBER % NPROC)) "
        SEARCH_NUMBER=$((SEARCH_NUMBER + 1))
        COMMANDS+=("${GPU}TYPE=$TYPE STRATEGY=$STRATEGY LATENCY_CONSTRAINT=$LAT TASK_NAME=mnli DATA_DIR='$GLUE_DIR' \
MODEL_DIR='$MODEL_DIR' PREDICTOR_DIR='$PREDICTOR_DIR' PREDICTOR= SPACE= CANDS_DIR='$CANDS_DIR' OUTPUT_ROOT='$OUTPUT_ROOT' \
GEN_SIZE=$GEN_SIZE POPULATION=$POPULATION GENERATIONS=$GENERATIONS TOP_K=$TOP_K SEEDS='$SEEDS' SEED=$SEED \
NUM_TRAIN_EPOCHS=$NUM_TRAIN_EPOCHS NUM_THREADS=$NUM_THREADS SEARCH_ARGS='$SEARCH_ARGS' EVAL_ARGS='$EVAL_ARGS' \
FORCE=0 bash '$ROOT/script/run_search.sh'")
    done
done
# the queue of common.sh in a child shell, so that the stage is one timed command
QUEUE='source "$1/script/lib/common.sh"; width="$2"; shift 2; baf_supervise; baf_run_queue "$width" "$@"'
if [[ "${#COMMANDS[@]}" -gt 0 ]]; then
    run_stage searches "budgets=$BUDGETS types=$TYPES random=$RANDOM_BASELINE gen=$GEN_SIZE pop=$POPULATION generations=$GENERATIONS topk=$TOP_K seeds=$SEEDS epochs=$NUM_TRAIN_EPOCHS eval=$EVAL_ARGS search=$SEARCH_ARGS" \
        bash -c "$QUEUE" queue "$ROOT" "$JOBS" "${COMMANDS[@]}"
fi

run_stage report "seeds=$SEEDS title=$REPORT_TITLE budgets=$BUDGETS" \
    env CANDS_DIR="$CANDS_DIR" OUTPUT_ROOT="$OUTPUT_ROOT" PREDICTOR_DIR="$PREDICTOR_DIR" PREDICTORS= \
    LATENCY_DIR="$RUN_DIR/latency_evaluated" REPORT_DIR="$RUN_DIR/report" SEEDS="$SEEDS" INFER_CNT= TASK= \
    ALLOW_PARTIAL=0 TICKETS= TITLE="$REPORT_TITLE" EXTRA_ARGS="" bash "$ROOT/script/report.sh"

printf '\n=== [%5ds] done: %s\n' "$SECONDS" "$RUN_DIR/report/report.md"
baf_py -m reproduce.costs summary --run_dir "$RUN_DIR" --print
