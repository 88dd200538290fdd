#!/usr/bin/env bash
# The whole Bigger&Faster chain on the embedded demo (what `make demo` runs), through the real stage
# scripts: demo data -> shards -> supernet (MLM) -> fp32 and int8 latency tables (one process, arch by
# arch) -> two predictors -> at each budget: the fp32 search (AutoTinyBERT baseline), the int8 search
# (Bigger&Faster) and the int8 random-search baseline, each with a final seed re-evaluation of its
# top-k -> report (script/report.sh: re-measured latency of every evaluated arch, Markdown, CSV, JSON, PNG).
#
#   bash script/run_pipeline.sh                                   # everything under demo_run/
#   RUN_DIR=/tmp/demo DEMO_SCALE=ci bash script/run_pipeline.sh   # the reduced run CI does
#
# Re-running resumes: every stage skips what it already did. The latency tables and the report's
# re-measurement run alone; the fine-tunes of the searches fill both cores, and a search's final step
# measures its finalists next to the table's reference (each pair's ratio cancels a neighbour's load).
# Environment (defaults relative to the repository root):
#   PYTHON (.venv/bin/python when it exists, else python3), RUN_DIR (demo_run), DEMO_SCALE (full | ci: fewer
#   steps, archs and examples), SEED (42), BUDGETS (auto: the 35th and 65th percentile of the int8 table; or
#   e.g. "3 5" in ms), SEEDS (final re-evaluation seeds; default the four [ci: two] integers after SEED: never the
#   seed whose fine-tune chose the finalist), TOP_K, PRETRAIN_STEPS, PRETRAIN_BATCH, LAT_RUNS (timed
#   runs per arch, each paired with a run of the reference),
#   GEN_SIZE, POPULATION, GENERATIONS, RESCORE_TOP (successive halving: the fittest this many of each search get
#   RESCORE_SEEDS (2) seeds of the candidates' recipe before the finalist is chosen by their mean; 0: off), NUM_TRAIN,
#   NUM_DEV, NUM_DEV_MISMATCHED (defaults depend on DEMO_SCALE),
#   FIT_TRAIN and FIT_DEV (the candidates' fine-tune: the first FIT_TRAIN training and FIT_DEV dev examples;
#   default all of them, the finalists' own recipe [ci: half of each]),
#   FIT_LR (5e-4), FINAL_LR (5e-4: the finalists'), FIT_BATCH (16), TRAIN_DTYPE (auto: every fine-tune's training
#   forward in bfloat16 where the CPU has it natively, else fp32; or fp32, bf16), FITNESS (finetune: a fine-tune per candidate;
#   sandwich: the supernet fine-tuned once per run on all NUM_TRAIN examples for SANDWICH_EPOCHS (1) with the
#   sandwich rule, each candidate scored from its slice; the finalists are fine-tuned alone either way), RANDOM_BASELINE
#   (1: also the int8 random search), JOBS (2: searches run this many at a time, one thread each), SPARE_CORES
#   (1: once every search has started, a slot that falls idle runs a worker that fine-tunes what the searches
#   still running wait for, through the run's evaluation cache: evaluation/spare.py; 0: off),
#   TICKETS (0; 1 adds a short BERT-Tickets run on the supernet's largest arch, 3 rounds of 20 %, to the
#   report: a few minutes more), STOP_AFTER (report; or data, shards, pretraining, latency, predictors,
#   searches: stop after that stage, e.g. to inspect its artefacts).
# Stopping the run in any way (Ctrl-C, SIGTERM, SIGKILL of make, of this script or of a stage) stops every
# process it started within seconds (script/lib/supervise.py); one run at a time per RUN_DIR.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
baf_init "$@"
baf_supervise

cd "$ROOT"  # relative paths (RUN_DIR, ...) are relative to the repository root
RUN_DIR="${RUN_DIR:-demo_run}"
DEMO_SCALE="${DEMO_SCALE:-full}"
SEED="${SEED:-42}"
BUDGETS="${BUDGETS:-auto}"
JOBS="${JOBS:-2}"
RANDOM_BASELINE="${RANDOM_BASELINE:-1}"
SPARE_CORES="${SPARE_CORES:-1}"
TICKETS="${TICKETS:-0}"
STOP_AFTER="${STOP_AFTER:-report}"
TASK_NAME=mnli

# Fewer but longer evaluations (docs/demo.md, BENCHMARKS.md "fewer but longer evaluations"): a candidate of a
# search is fine-tuned with the finalists' own recipe (the first FIT_TRAIN training examples, scored on the first
# FIT_DEV of dev_matched: all of them by default) and seed SEED, 2 + 2 candidates a search; its TOP_K finalists
# then with every seed of SEEDS (the report's accuracies). A shorter fine-tune ranked one-layer archs above deeper
# ones the longer one puts higher; this one orders most of the pairs the finalists' recipe tells apart, at the
# same cost per search. Every (arch, seed, recipe) is fine-tuned once for all six searches (the run's evaluation
# cache, output/evaluation_cache).
case "$DEMO_SCALE" in
    full)
        PRETRAIN_STEPS="${PRETRAIN_STEPS:-300}"; NUM_TRAIN="${NUM_TRAIN:-8000}"; NUM_DEV="${NUM_DEV:-2000}"
        NUM_DEV_MISMATCHED="${NUM_DEV_MISMATCHED:-500}"
        LAT_RUNS="${LAT_RUNS:-6}"; GEN_SIZE="${GEN_SIZE:-2}"; POPULATION="${POPULATION:-2}"; FIT_PART=1
        GENERATIONS="${GENERATIONS:-1}"; CORPUS_MB="${CORPUS_MB:-2}"; TOP_K="${TOP_K:-1}"; RESCORE_TOP="${RESCORE_TOP:-0}"
        FINAL_SEED_COUNT=4 ;;
    ci)
        PRETRAIN_STEPS="${PRETRAIN_STEPS:-60}"; NUM_TRAIN="${NUM_TRAIN:-2000}"; NUM_DEV="${NUM_DEV:-500}"
        NUM_DEV_MISMATCHED="${NUM_DEV_MISMATCHED:-200}"
        LAT_RUNS="${LAT_RUNS:-6}"; GEN_SIZE="${GEN_SIZE:-2}"; POPULATION="${POPULATION:-2}"; FIT_PART=2
        GENERATIONS="${GENERATIONS:-1}"; CORPUS_MB="${CORPUS_MB:-0.5}"; TOP_K="${TOP_K:-1}"; RESCORE_TOP="${RESCORE_TOP:-0}"
        FINAL_SEED_COUNT=2 ;;
    *) baf_die "DEMO_SCALE must be full or ci, got '$DEMO_SCALE'" ;;
esac
FIT_LR="${FIT_LR:-5e-4}"; FINAL_LR="${FINAL_LR:-5e-4}"; FIT_BATCH="${FIT_BATCH:-16}"; TRAIN_DTYPE="${TRAIN_DTYPE:-auto}"
baf_require_int NUM_TRAIN 1 100000000
baf_require_int NUM_DEV 1 100000000
# the candidates' share of the examples, 1/FIT_PART of each: all of them (full; ci: half, which keeps CI's time)
FIT_TRAIN="${FIT_TRAIN:-$(( (NUM_TRAIN + FIT_PART - 1) / FIT_PART ))}"
FIT_DEV="${FIT_DEV:-$(( (NUM_DEV + FIT_PART - 1) / FIT_PART ))}"
FITNESS="${FITNESS:-finetune}"; SANDWICH_EPOCHS="${SANDWICH_EPOCHS:-1}"
RESCORE_SEEDS="${RESCORE_SEEDS:-2}"
# The latency protocol is the default (baf-latency-3: each of LAT_RUNS timed runs of an arch paired with a
# run of the reference, cheap model builds); 6 pairs keep the stage near half a minute on 2 idle cores (10: ~20 s
# more for a ratio standard error of ~1.5 % instead of ~2 %, BENCHMARKS.md).
PRETRAIN_BATCH="${PRETRAIN_BATCH:-16}"
PRETRAIN_SEQ="${PRETRAIN_SEQ:-64}"
DEMO_MAX_POSITIONS=128  # the demo supernet's max_position_embeddings (SUPERNET_CONFIG below)

# Every setting checked before the first stage writes anything: one line naming the variable.
baf_require_outdir RUN_DIR "run directory"
baf_require_int JOBS 1 64
baf_require_int SEED 0 4294967295
if [[ -z "${SEEDS:-}" ]]; then  # the integers after the search seed: never the seed whose fine-tune chose the finalist
    if (( SEED + FINAL_SEED_COUNT <= 4294967295 )); then SEEDS="$(seq -s ' ' $((SEED + 1)) $((SEED + FINAL_SEED_COUNT)))"
    else SEEDS="$(seq -s ' ' $((SEED - FINAL_SEED_COUNT)) $((SEED - 1)))"; fi
fi
baf_require_choice RANDOM_BASELINE 0 1
baf_require_choice SPARE_CORES 0 1
baf_require_choice TICKETS 0 1
baf_require_choice STOP_AFTER data shards pretraining latency predictors searches report
baf_require_choice FITNESS finetune sandwich
baf_require_choice TRAIN_DTYPE auto fp32 bf16
baf_require_number SANDWICH_EPOCHS 0 1000 strict
baf_require_int RESCORE_TOP 0 100000000
baf_require_int RESCORE_SEEDS 2 1000
for var in PRETRAIN_STEPS NUM_TRAIN NUM_DEV NUM_DEV_MISMATCHED FIT_TRAIN FIT_DEV FIT_BATCH LAT_RUNS GEN_SIZE \
        POPULATION GENERATIONS TOP_K PRETRAIN_BATCH; do
    baf_require_int "$var" 1 100000000
done
(( FIT_TRAIN <= NUM_TRAIN )) || baf_die "FIT_TRAIN=$FIT_TRAIN is more than NUM_TRAIN=$NUM_TRAIN (the candidates train on the first FIT_TRAIN)"
(( FIT_DEV <= NUM_DEV )) || baf_die "FIT_DEV=$FIT_DEV is more than NUM_DEV=$NUM_DEV (the candidates are scored on the first FIT_DEV)"
baf_require_number FIT_LR 0 1 strict
baf_require_number FINAL_LR 0 1 strict
baf_require_int PRETRAIN_SEQ 5 "$DEMO_MAX_POSITIONS"  # the shards and the supernet both take it
baf_require_number CORPUS_MB 0 1000 strict
baf_require_ints SEEDS 0 4294967295
if [[ "$BUDGETS" != "auto" ]]; then baf_require_numbers BUDGETS 0 100000 strict; fi

mkdir -p "$RUN_DIR"
RUN_DIR="$(cd "$RUN_DIR" && pwd)"
baf_hold_lock "$RUN_DIR/.pipeline.lock" "run directory RUN_DIR=$RUN_DIR"  # one pipeline per run directory

DATA_DIR="$RUN_DIR/data"
SHARDS_DIR="$RUN_DIR/shards"
SUPERNET_DIR="$RUN_DIR/supernet"
LATENCY_DIR="$RUN_DIR/latency"
PREDICTOR_DIR="$RUN_DIR/conf_datasets"
CANDS_DIR="$RUN_DIR/cands"
OUTPUT_ROOT="$RUN_DIR/output"
REPORT_DIR="$RUN_DIR/report"
TIMINGS="$RUN_DIR/stage_seconds.tsv"

SECONDS=0
: > "$TIMINGS.new"
STAGE_NAME=""
STAGE_START=0
stage() {  # close the previous stage's timing, open the next
    if [[ -n "$STAGE_NAME" ]]; then printf '%s\t%d\n' "$STAGE_NAME" "$((SECONDS - STAGE_START))" >> "$TIMINGS.new"; fi
    if [[ -n "$STAGE_NAME" && "$STAGE_NAME" == "$STOP_AFTER" && "$1" != done ]]; then
        printf '\n=== [%4ds] STOP_AFTER=%s: stopping here; a re-run without it goes on from the next stage\n' \
            "$SECONDS" "$STOP_AFTER"
        exit 0
    fi
    STAGE_NAME="$1"
    STAGE_START=$SECONDS
    printf '\n=== [%4ds] %s\n' "$SECONDS" "$2"
}

echo "search seed $SEED; final seeds (SEEDS): $SEEDS"
stage data "1/7 demo data (corpus, GLUE-MNLI-layout NLI task, WordPiece vocab)"
baf_run "$PYTHON" "$ROOT/demo_data.py" --output_dir "$DATA_DIR" --seed "$SEED" --corpus_mb "$CORPUS_MB" \
    --num_train "$NUM_TRAIN" --num_dev "$NUM_DEV" --num_dev_mismatched "$NUM_DEV_MISMATCHED"
VOCAB="$DATA_DIR/vocab/vocab.txt"
VOCAB_SIZE="$(wc -l < "$VOCAB" | tr -d ' ')"

stage shards "2/7 training shards"
RAW_DIR="$DATA_DIR/corpus" GENERATED_DIR="$SHARDS_DIR" BERT_MODEL="$VOCAB" MAX_SEQ_LEN="$PRETRAIN_SEQ" NUM_SHARDS=4 \
    NUM_WORKERS=1 baf_run bash "$ROOT/script/generate_data.sh"

stage pretraining "3/7 supernet pre-training (MLM, one sampled sub-model per step, $PRETRAIN_STEPS steps, 2 threads)"
# The demo supernet is the largest arch of the demo family's supernet space (utils.SPACES).
SUPERNET_CONFIG="{\"vocab_size\": $VOCAB_SIZE, \"hidden_size\": 448, \"num_hidden_layers\": 4, \"intermediate_size\": 1536, \"qkv_size\": 448, \"num_attention_heads\": 4, \"max_position_embeddings\": $DEMO_MAX_POSITIONS}"
GENERATED_DIR="$SHARDS_DIR" OUTPUT_DIR="$SUPERNET_DIR" TEACHER_MODEL="" MLM=1 SPACE=demo \
    SUPERNET_CONFIG="$SUPERNET_CONFIG" MAX_STEPS="$PRETRAIN_STEPS" EPOCHS=100 BATCH_SIZE="$PRETRAIN_BATCH" LR=1e-3 \
    MAX_SEQ_LENGTH="$PRETRAIN_SEQ" WARMUP_PROPORTION=0.06 SAVE_STEPS=50 LOGGING_STEPS=25 THREADS=2 SEED="$SEED" \
    baf_run bash "$ROOT/script/pre_training.sh"
MODEL_DIR="$SUPERNET_DIR/final"

stage latency "4/7 latency tables of the demo grid: fp32 and int8 in one process, arch by arch, nothing else running"
SAVE_DIR="$LATENCY_DIR" SPACE=demo VOCAB_SIZE="$VOCAB_SIZE" INFER_CNT="$LAT_RUNS" BACKEND="fp32 int8" \
    baf_run bash "$ROOT/script/lat_dataset_gen.sh"

stage predictors "5/7 latency predictors (fp32 and int8)"
TABLE_DIR="$LATENCY_DIR" OUT_DIR="$PREDICTOR_DIR" baf_run bash "$ROOT/script/train_lat_predictor.sh"

if [[ "$BUDGETS" == "auto" ]]; then
    BUDGETS="$(baf_py -m demo.budgets "$LATENCY_DIR/$(baf_py -m quantize_utils table_name ptq)" --percentiles 35 65)"
fi
echo "latency budgets (ms): $BUDGETS"

stage searches "6/7 searches at each budget: fp32 (AutoTinyBERT), int8 (Bigger&Faster)$([[ "$RANDOM_BASELINE" == 1 ]] && echo ', int8 random baseline'), $JOBS at a time"
# The window is the search's default [0.85c, 1.0c] (search.evolution.LatencyWindow): the original's
# [0.85c, 1.1c] lets a choice be predicted 10 % over the budget. Evolution and the random baseline
# start from the same random first generation (FIRST_GENERATION=rand), so they differ only where
# their strategies do. One dev evaluation per fine-tune, at its end: keeping the best of several
# evaluations selects on the dev set that then scores the arch. No dropout: on the demo task a
# fine-tune without it reaches its plateau in half the examples (BENCHMARKS.md). bf16 autocast (TRAIN_DTYPE=auto
# on a CPU with native bfloat16) trains the demo's candidates in 0.87x the time, accuracies within their spread.
RECIPE="--max_seq_length 32 --train_batch_size $FIT_BATCH --eval_step 100000 --dropout 0 --train_dtype $TRAIN_DTYPE"
if [[ "$FITNESS" == "sandwich" ]]; then  # no fine-tune per candidate; the finalists' recipe switches it off
    FIT_EPOCHS=0; FIT_DATA="--max_train_examples $NUM_TRAIN --sandwich_epochs $SANDWICH_EPOCHS"
    FINAL_OFF="--num_train_epochs 1 --sandwich_epochs 0"
else
    FIT_EPOCHS=1; FIT_DATA="--max_train_examples $FIT_TRAIN"; FINAL_OFF=""
fi
COMMANDS=()
for LAT in $BUDGETS; do
    SEARCH_ENV="LATENCY_CONSTRAINT=$LAT TASK_NAME=$TASK_NAME DATA_DIR='$DATA_DIR/MNLI' MODEL_DIR='$MODEL_DIR' \
PREDICTOR_DIR='$PREDICTOR_DIR' CANDS_DIR='$CANDS_DIR' OUTPUT_ROOT='$OUTPUT_ROOT' GEN_SIZE=$GEN_SIZE POPULATION=$POPULATION \
GENERATIONS=$GENERATIONS TOP_K=$TOP_K RESCORE_TOP=$RESCORE_TOP RESCORE_SEEDS=$RESCORE_SEEDS SEEDS='$SEEDS' NUM_THREADS=1 SEED=$SEED NUM_TRAIN_EPOCHS=$FIT_EPOCHS \
FIRST_GENERATION=rand EVAL_ARGS='$RECIPE --learning_rate $FIT_LR $FIT_DATA --max_eval_examples $FIT_DEV' \
FINAL_EVAL_ARGS='--learning_rate $FINAL_LR --max_train_examples $NUM_TRAIN --max_eval_examples $NUM_DEV $FINAL_OFF'"
    COMMANDS+=("$SEARCH_ENV TYPE=fp bash '$ROOT/script/run_search.sh'")
    COMMANDS+=("$SEARCH_ENV TYPE=ptq bash '$ROOT/script/run_search.sh'")
    if [[ "$RANDOM_BASELINE" == "1" ]]; then
        COMMANDS+=("$SEARCH_ENV TYPE=ptq STRATEGY=random bash '$ROOT/script/run_search.sh'")
    fi
done
SPARE=()
if [[ "$SPARE_CORES" == "1" ]]; then  # an idle slot helps the searches still running (evaluation/spare.py)
    SPARE=(--spare "PYTHONPATH='$ROOT' '$PYTHON' -m evaluation.spare --cache_dir '$OUTPUT_ROOT/evaluation_cache'")
fi
baf_run_queue "${SPARE[@]}" "$JOBS" "${COMMANDS[@]}"
if [[ "$TICKETS" == "1" ]]; then  # after the searches: its latency is never timed next to their fine-tunes
    MODEL_DIR="$MODEL_DIR" ARCH=largest DATA_DIR="$DATA_DIR/MNLI" TASK_NAME=$TASK_NAME OUTPUT_DIR="$RUN_DIR/tickets" \
        ROUNDS=3 PRUNE_FRACTION=0.2 NUM_TRAIN_EPOCHS=1 LEARNING_RATE=3e-4 TRAIN_BATCH_SIZE=8 MAX_SEQ_LENGTH=32 \
        EVAL_STEP=1000 NUM_THREADS=1 LATENCY=1 LATENCY_TIMER=cpu SEEDS='42' baf_run bash "$ROOT/script/bert_tickets.sh"
fi

TICKET_DIRS=""
if [[ "$TICKETS" == "1" ]]; then TICKET_DIRS="$RUN_DIR/tickets"; fi
stage report "7/7 report: re-measured latency of every evaluated arch (alone), tables, claims, plots"
CANDS_DIR="$CANDS_DIR" OUTPUT_ROOT="$OUTPUT_ROOT" PREDICTOR_DIR="$PREDICTOR_DIR" PREDICTORS= \
    LATENCY_DIR="$RUN_DIR/latency_evaluated" REPORT_DIR="$REPORT_DIR" SEEDS="$SEEDS" \
    TICKETS="$TICKET_DIRS" baf_run bash "$ROOT/script/report.sh"
stage done "done in ${SECONDS}s: $REPORT_DIR/report.md"
mv -f "$TIMINGS.new" "$TIMINGS"
echo "seconds per stage ($TIMINGS):"
sed 's/^/  /' "$TIMINGS"
