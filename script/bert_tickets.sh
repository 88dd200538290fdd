#!/usr/bin/env bash
# BERT-Tickets: lottery-ticket subnetworks of a BERT by iterative magnitude pruning (IMP) with rewinding
# to the pre-trained weights (Chen et al., NeurIPS 2020) -> bert_tickets.py.
#
#   MODEL_DIR=model/bert-base-uncased DATA_DIR=data/glue/MNLI TASK_NAME=mnli TARGET_SPARSITY=0.7 ROUNDS= \
#       bash script/bert_tickets.sh                                   # the paper's schedule up to 70 %
#   MODEL_DIR=demo_run/supernet/final ARCH=largest DATA_DIR=demo_run/data/MNLI ROUNDS=3 NUM_TRAIN_EPOCHS=1 \
#       MAX_TRAIN_EXAMPLES=1000 bash script/bert_tickets.sh           # a short run on the demo's largest arch
#
# Round 0 fine-tunes the dense model; each further round prunes PRUNE_FRACTION of the encoder weights still
# alive (globally by magnitude), rewinds the survivors to their pre-trained values and fine-tunes again,
# until ROUNDS pruning rounds or TARGET_SPARSITY. A re-run resumes at the next round.
#
# Environment (defaults relative to the repository root):
#   PYTHON (.venv/bin/python when it exists, else python3), MODEL_DIR (model/bert-base-uncased: a plain HF
#   BERT directory, or a supernet directory with ARCH), ARCH (empty; supernet only: JSON arch, a file, or
#   largest), DATA_DIR (data/glue/MNLI), TASK_NAME (mnli), OUTPUT_DIR (output/bert_tickets/<TASK_NAME>),
#   ROUNDS (3; empty = until TARGET_SPARSITY), PRUNE_FRACTION (0.1), TARGET_SPARSITY (empty; in (0, 1)),
#   SCHEDULE (remaining: PRUNE_FRACTION of the weights still alive per round | original: of all weights,
#   10, 20, ... %, the authors' code), PRUNE_POOLER (0; 1 also prunes the pooler's dense weight),
#   SEEDS (42; several, e.g. "42 43 44", give the dense model's spread), NUM_TRAIN_EPOCHS (3),
#   LEARNING_RATE, TRAIN_BATCH_SIZE, MAX_SEQ_LENGTH, EVAL_STEP (empty = the task's table),
#   MAX_TRAIN_EXAMPLES, MAX_EVAL_EXAMPLES (empty = all), DO_LOWER_CASE (1), NUM_THREADS (0 = torch's default),
#   LATENCY (1; 0 skips timing), LATENCY_RUNS (20), LATENCY_WARMUP (5), LATENCY_THREADS (1),
#   LATENCY_SEQ_LEN (128), LATENCY_TIMER (wall | cpu), EXTRA_ARGS (more flags, split on spaces).
# Output: $OUTPUT_DIR/tickets.jsonl, masks/round_RR.safetensors, subnetworks/round_RR/ (Hugging Face dirs).
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
baf_init "$@"

MODEL_DIR="${MODEL_DIR:-$ROOT/model/bert-base-uncased}"
ARCH="${ARCH:-}"
DATA_DIR="${DATA_DIR:-$ROOT/data/glue/MNLI}"
TASK_NAME="${TASK_NAME:-mnli}"
OUTPUT_DIR="${OUTPUT_DIR:-$ROOT/output/bert_tickets/$TASK_NAME}"
ROUNDS="${ROUNDS-3}"
PRUNE_FRACTION="${PRUNE_FRACTION:-0.1}"
TARGET_SPARSITY="${TARGET_SPARSITY:-}"
SCHEDULE="${SCHEDULE:-remaining}"
PRUNE_POOLER="${PRUNE_POOLER:-0}"
SEEDS="${SEEDS:-42}"
NUM_TRAIN_EPOCHS="${NUM_TRAIN_EPOCHS:-3}"
LEARNING_RATE="${LEARNING_RATE:-}"
TRAIN_BATCH_SIZE="${TRAIN_BATCH_SIZE:-}"
MAX_SEQ_LENGTH="${MAX_SEQ_LENGTH:-}"
EVAL_STEP="${EVAL_STEP:-}"
MAX_TRAIN_EXAMPLES="${MAX_TRAIN_EXAMPLES:-}"
MAX_EVAL_EXAMPLES="${MAX_EVAL_EXAMPLES:-}"
DO_LOWER_CASE="${DO_LOWER_CASE:-1}"
NUM_THREADS="${NUM_THREADS:-0}"
LATENCY="${LATENCY:-1}"
LATENCY_RUNS="${LATENCY_RUNS:-20}"
LATENCY_WARMUP="${LATENCY_WARMUP:-5}"
LATENCY_THREADS="${LATENCY_THREADS:-1}"
LATENCY_SEQ_LEN="${LATENCY_SEQ_LEN:-128}"
LATENCY_TIMER="${LATENCY_TIMER:-wall}"
read -r -a EXTRA <<< "${EXTRA_ARGS:-}"

baf_require_dir MODEL_DIR "model directory (a Hugging Face BERT or a supernet)"
baf_require_dir DATA_DIR "GLUE task directory"
baf_require_choice SCHEDULE remaining original
baf_require_choice PRUNE_POOLER 0 1
baf_require_choice DO_LOWER_CASE 0 1
baf_require_choice LATENCY 0 1
baf_require_choice LATENCY_TIMER wall cpu
baf_require_int NUM_THREADS 0
[[ -n "$ROUNDS" || -n "$TARGET_SPARSITY" ]] || baf_die "ROUNDS and TARGET_SPARSITY are both empty; set one (where pruning stops)"
if [[ -n "$ROUNDS" ]]; then baf_require_int ROUNDS 0; fi
if [[ -n "$TARGET_SPARSITY" ]]; then baf_require_number TARGET_SPARSITY 0 1; fi
baf_require_number PRUNE_FRACTION 0 1 strict
baf_require_number NUM_TRAIN_EPOCHS 0 '' strict
if [[ -n "$LEARNING_RATE" ]]; then baf_require_number LEARNING_RATE 0 '' strict; fi
for var in TRAIN_BATCH_SIZE MAX_SEQ_LENGTH EVAL_STEP MAX_TRAIN_EXAMPLES MAX_EVAL_EXAMPLES; do
    if [[ -n "${!var}" ]]; then baf_require_int "$var" 1; fi
done
baf_require_ints SEEDS 0
for var in LATENCY_RUNS LATENCY_THREADS LATENCY_SEQ_LEN; do baf_require_int "$var" 1; done
baf_require_int LATENCY_WARMUP 0
baf_require_outdir OUTPUT_DIR "BERT-Tickets output directory"

FLAGS=()
add() { if [[ -n "$2" ]]; then FLAGS+=("$1" "$2"); fi; }  # a flag only when its variable is set
add --arch "$ARCH"
add --rounds "$ROUNDS"
add --target_sparsity "$TARGET_SPARSITY"
add --learning_rate "$LEARNING_RATE"
add --train_batch_size "$TRAIN_BATCH_SIZE"
add --max_seq_length "$MAX_SEQ_LENGTH"
add --eval_step "$EVAL_STEP"
add --max_train_examples "$MAX_TRAIN_EXAMPLES"
add --max_eval_examples "$MAX_EVAL_EXAMPLES"
if [[ "$PRUNE_POOLER" == "1" ]]; then FLAGS+=(--prune_pooler); fi
if [[ "$DO_LOWER_CASE" == "1" ]]; then FLAGS+=(--do_lower_case); fi
if [[ "$LATENCY" == "0" ]]; then FLAGS+=(--no_latency); fi

exec "$PYTHON" "$ROOT/bert_tickets.py" \
    --model "$MODEL_DIR" \
    --data_dir "$DATA_DIR" \
    --task_name "$TASK_NAME" \
    --output_dir "$OUTPUT_DIR" \
    --prune_fraction "$PRUNE_FRACTION" \
    --schedule "$SCHEDULE" \
    --seeds "$SEEDS" \
    --num_train_epochs "$NUM_TRAIN_EPOCHS" \
    --num_threads "$NUM_THREADS" \
    --latency_runs "$LATENCY_RUNS" \
    --latency_warmup "$LATENCY_WARMUP" \
    --latency_threads "$LATENCY_THREADS" \
    --latency_seq_len "$LATENCY_SEQ_LEN" \
    --latency_timer "$LATENCY_TIMER" \
    "${FLAGS[@]}" "${EXTRA[@]}"
