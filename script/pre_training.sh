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
#   checkpoint; 1 always; 0 never), EXTRA_ARGS (more pre_training.py flags, split on spaces).
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
read -r -a EXTRA <<< "${EXTRA_ARGS:-}"

FLAGS=()
if [[ -n "$STUDENT_MODEL" ]]; then FLAGS+=(--student_model "$STUDENT_MODEL"); fi
if [[ -n "$TEACHER_MODEL" ]]; then FLAGS+=(--teacher_model "$TEACHER_MODEL"); fi
if [[ -n "$SUPERNET_CONFIG" ]]; then FLAGS+=(--supernet_config "$SUPERNET_CONFIG"); fi
if [[ "$MLM" == "1" ]]; then FLAGS+=(--mlm); fi
if [[ "$SANDWICH" == "1" ]]; then FLAGS+=(--sandwich); fi
has_checkpoint() {
    compgen -G "$OUTPUT_DIR/step_*/training_state.pt" > /dev/null \
        || compgen -G "$OUTPUT_DIR/epoch_*/training_state.pt" > /dev/null
}
case "$RESUME" in
    1) FLAGS+=(--resume) ;;
    auto) if has_checkpoint; then FLAGS+=(--resume); fi ;;
    0) ;;
    *) echo "pre_training.sh: error: RESUME must be auto, 1 or 0, got '$RESUME'" >&2; exit 2 ;;
esac

if [[ "$NPROC" -gt 1 ]]; then
    LAUNCH=("$PYTHON" -m torch.distributed.run --standalone --nproc_per_node "$NPROC")
else
    LAUNCH=("$PYTHON")
fi

"${LAUNCH[@]}" "$ROOT/pre_training.py" \
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
