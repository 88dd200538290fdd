#!/usr/bin/env bash
# Stage 2: pre-train the supernet on the shards (knowledge distillation and/or masked LM).
#
#   bash script/pre_training.sh                                   # KD from TEACHER_MODEL, as the original
#   TEACHER_MODEL= MLM=1 SPACE=demo_supernet MAX_SEQ_LENGTH=128 bash script/pre_training.sh
#   NPROC=4 bash script/pre_training.sh                           # torchrun, DistributedDataParallel
#
# Environment (defaults relative to the repository root):
#   PYTHON (.venv/bin/python when it exists, else python3), GENERATED_DIR (data/generated), OUTPUT_DIR (model/SUPER-KD-S1; epoch_{e}/ and
#   step_{n}/ checkpoints, final/, loss_log.jsonl, loss_curve.png), STUDENT_MODEL (empty: from scratch;
#   else a local BERT dir, e.g. model/KD-S1), TEACHER_MODEL (model/bert-base-uncased; empty: no KD),
#   MLM (0; 1 adds the masked-LM loss), SPACE (paper_supernet), SUPERNET_CONFIG (JSON or file; shape
#   of a fresh supernet, default the space's largest arch), EPOCHS (4), MAX_STEPS (-1: epochs decide),
#   BATCH_SIZE (12), ACC_STEPS (1), LR (1e-4), MAX_SEQ_LENGTH (512), WARMUP_PROPORTION (0.1),
#   SAMPLE_TIMES (1 arch per step), SANDWICH (0), PRECISION (auto), SEED (42), SAVE_STEPS (1000),
#   SAVE_TOTAL_LIMIT (2), LOGGING_STEPS (50), NUM_WORKERS (0), THREADS (0 = torch's default),
#   NPROC (1; >1 runs torchrun --nproc_per_node NPROC), RESUME (auto: continue when OUTPUT_DIR holds a
#   run -- a checkpoint, a loss log or final/ -- which also covers a run interrupted before its first
#   checkpoint (it restarts from step 0) and a finished one (nothing to do); 1 always; 0 never),
#   MASKED_UPDATES (auto: pre_training.py's default, masked, or the checkpoint's when resuming;
#   1: only the slices a step's archs read move; 0: plain AdamW), EXTRA_ARGS (more pre_training.py
#   flags, split on spaces).
# Every path is checked before any work, naming its variable.
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
baf_init "$@"

GENERATED_DIR="${GENERATED_DIR:-$ROOT/data/generated}"
OUTPUT_DIR="${OUTPUT_DIR:-$ROOT/model/SUPER-KD-S1}"
STUDENT_MODEL="${STUDENT_MODEL:-}"
TEACHER_MODEL="${TEACHER_MODEL-$ROOT/model/bert-base-uncased}"
MLM="${MLM:-0}"
SPACE="${SPACE:-paper_supernet}"
SUPERNET_CONFIG="${SUPERNET_CONFIG:-}"
EPOCHS="${EPOCHS:-4}"
MAX_STEPS="${MAX_STEPS:--1}"
BATCH_SIZE="${BATCH_SIZE:-12}"
ACC_STEPS="${ACC_STEPS:-1}"
LR="${LR:-1e-4}"
MAX_SEQ_LENGTH="${MAX_SEQ_LENGTH:-512}"
WARMUP_PROPORTION="${WARMUP_PROPORTION:-0.1}"
SAMPLE_TIMES="${SAMPLE_TIMES:-1}"
SANDWICH="${SANDWICH:-0}"
PRECISION="${PRECISION:-auto}"
SEED="${SEED:-42}"
SAVE_STEPS="${SAVE_STEPS:-1000}"
SAVE_TOTAL_LIMIT="${SAVE_TOTAL_LIMIT:-2}"
LOGGING_STEPS="${LOGGING_STEPS:-50}"
NUM_WORKERS="${NUM_WORKERS:-0}"
THREADS="${THREADS:-0}"
NPROC="${NPROC:-1}"
RESUME="${RESUME:-auto}"
MASKED_UPDATES="${MASKED_UPDATES:-auto}"
read -r -a EXTRA <<< "${EXTRA_ARGS:-}"

# Preflight: one line naming the variable, before any work.
baf_require_dir GENERATED_DIR "shards directory (run script/generate_data.sh first)"
if [[ -n "$TEACHER_MODEL" ]]; then
    baf_require_dir TEACHER_MODEL "teacher model directory (a local BERT dir; TEACHER_MODEL= trains without KD)"
fi
if [[ -n "$STUDENT_MODEL" ]]; then
    baf_require_dir STUDENT_MODEL "student model directory (a local BERT or supernet dir)"
fi
baf_require_outdir OUTPUT_DIR "pre-training output directory"
baf_require_choice MLM 0 1
baf_require_choice SANDWICH 0 1
baf_require_choice RESUME auto 1 0
baf_require_choice MASKED_UPDATES auto 1 0
if [[ "$MLM" != "1" && -z "$TEACHER_MODEL" ]]; then
    baf_die "nothing to train: set MLM=1 and/or TEACHER_MODEL to a teacher directory"
fi
for var in EPOCHS BATCH_SIZE ACC_STEPS SAMPLE_TIMES LOGGING_STEPS NPROC; do baf_require_int "$var" 1; done
for var in SAVE_STEPS SAVE_TOTAL_LIMIT NUM_WORKERS THREADS SEED; do baf_require_int "$var" 0; done
baf_require_int MAX_STEPS -1
baf_require_int MAX_SEQ_LENGTH 5
baf_require_number LR 0 '' strict
baf_require_number WARMUP_PROPORTION 0 1
baf_require_choice PRECISION auto fp32 bf16 fp16

FLAGS=()
if [[ -n "$STUDENT_MODEL" ]]; then FLAGS+=(--student_model "$STUDENT_MODEL"); fi
if [[ -n "$TEACHER_MODEL" ]]; then FLAGS+=(--teacher_model "$TEACHER_MODEL"); fi
if [[ -n "$SUPERNET_CONFIG" ]]; then FLAGS+=(--supernet_config "$SUPERNET_CONFIG"); fi
if [[ "$MLM" == "1" ]]; then FLAGS+=(--mlm); fi
if [[ "$SANDWICH" == "1" ]]; then FLAGS+=(--sandwich); fi
if [[ "$MASKED_UPDATES" == "1" ]]; then FLAGS+=(--masked_updates); fi
if [[ "$MASKED_UPDATES" == "0" ]]; then FLAGS+=(--no_masked_updates); fi
has_run() {  # what pre_training.py counts as a run (checkpoints, the loss log, final/)
    compgen -G "$OUTPUT_DIR/step_*" > /dev/null || compgen -G "$OUTPUT_DIR/epoch_*" > /dev/null \
        || [[ -e "$OUTPUT_DIR/loss_log.jsonl" || -e "$OUTPUT_DIR/final" ]]
}
case "$RESUME" in
    1) FLAGS+=(--resume) ;;
    auto) if has_run; then FLAGS+=(--resume); fi ;;
    0) ;;
esac

if [[ "$NPROC" -gt 1 ]]; then
    LAUNCH=("$PYTHON" -m torch.distributed.run --standalone --nproc_per_node "$NPROC")
else
    LAUNCH=("$PYTHON")
fi

exec "${LAUNCH[@]}" "$ROOT/pre_training.py" \
    --pregenerated_data "$GENERATED_DIR" \
    --output_dir "$OUTPUT_DIR" \
    --space "$SPACE" \
    --num_train_epochs "$EPOCHS" \
    --max_steps "$MAX_STEPS" \
    --train_batch_size "$BATCH_SIZE" \
    --gradient_accumulation_steps "$ACC_STEPS" \
    --learning_rate "$LR" \
    --max_seq_length "$MAX_SEQ_LENGTH" \
    --warmup_proportion "$WARMUP_PROPORTION" \
    --sample_times_per_batch "$SAMPLE_TIMES" \
    --precision "$PRECISION" \
    --seed "$SEED" \
    --save_steps "$SAVE_STEPS" \
    --save_total_limit "$SAVE_TOTAL_LIMIT" \
    --logging_steps "$LOGGING_STEPS" \
    --num_workers "$NUM_WORKERS" \
    --threads "$THREADS" \
    ${FLAGS[@]+"${FLAGS[@]}"} ${EXTRA[@]+"${EXTRA[@]}"}
