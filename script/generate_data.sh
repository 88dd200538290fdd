#!/usr/bin/env bash
# Stage 1: raw text (one file per document) -> training shards train_doc_tokens_ngrams_{i}.json.
#
#   bash script/generate_data.sh
#   RAW_DIR=data/raw/books1/epubtxt BERT_MODEL=model/bert-base-uncased bash script/generate_data.sh
#
# Environment (defaults relative to the repository root):
#   PYTHON (.venv/bin/python when it exists, else python3), RAW_DIR (data/raw/books1/epubtxt), GENERATED_DIR (data/generated),
#   BERT_MODEL (model/bert-base-uncased: a vocab.txt file or a directory holding one),
#   MAX_SEQ_LEN (512; pre-training's --max_seq_length), DO_LOWER_CASE (1), NUM_SHARDS (28),
#   NUM_WORKERS (the CPU count), OVERWRITE (0; 1 replaces shards made from other inputs/settings),
#   EXTRA_ARGS (more generate_data.py flags, split on spaces).
# Re-running with the same inputs and settings does nothing.
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
baf_init "$@"

RAW_DIR="${RAW_DIR:-$ROOT/data/raw/books1/epubtxt}"
GENERATED_DIR="${GENERATED_DIR:-$ROOT/data/generated}"
BERT_MODEL="${BERT_MODEL:-$ROOT/model/bert-base-uncased}"
MAX_SEQ_LEN="${MAX_SEQ_LEN:-512}"
DO_LOWER_CASE="${DO_LOWER_CASE:-1}"
NUM_SHARDS="${NUM_SHARDS:-28}"
NUM_WORKERS="${NUM_WORKERS:-$(nproc 2>/dev/null || echo 1)}"
OVERWRITE="${OVERWRITE:-0}"
read -r -a EXTRA <<< "${EXTRA_ARGS:-}"

# Preflight: one line naming the variable, before any work.
baf_require_dir RAW_DIR "corpus directory (one text file per document)"
if [[ ! -e "$BERT_MODEL" ]]; then
    baf_die "BERT_MODEL=$BERT_MODEL: no such vocab.txt or BERT directory (models are never downloaded)"
fi
baf_require_outdir GENERATED_DIR "shards directory"
baf_require_choice DO_LOWER_CASE 0 1
baf_require_choice OVERWRITE 0 1
baf_require_int MAX_SEQ_LEN 5
baf_require_int NUM_SHARDS 1
baf_require_int NUM_WORKERS 1

FLAGS=()
if [[ "$DO_LOWER_CASE" == "1" ]]; then FLAGS+=(--do_lower_case); fi
if [[ "$OVERWRITE" == "1" ]]; then FLAGS+=(--overwrite); fi

exec "$PYTHON" "$ROOT/generate_data.py" \
    --train_corpus "$RAW_DIR" \
    --output_dir "$GENERATED_DIR" \
    --bert_model "$BERT_MODEL" \
    --max_seq_len "$MAX_SEQ_LEN" \
    --num_shards "$NUM_SHARDS" \
    --num_workers "$NUM_WORKERS" \
    ${FLAGS[@]+"${FLAGS[@]}"} ${EXTRA[@]+"${EXTRA[@]}"}
