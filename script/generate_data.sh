#!/usr/bin/env bash
# Stage 1: raw text (a directory of text files, or one text file) -> training shards
# train_doc_tokens_ngrams_{i}.json. Each file of a directory is one document; a single file is split
# into documents at blank lines (SPLIT_AT_BLANK_LINES, MAX_DOCUMENT_CHARS: docs/data-and-pretraining.md).
#
#   bash script/generate_data.sh
#   RAW_DIR=data/raw/books1/epubtxt BERT_MODEL=model/bert-base-uncased bash script/generate_data.sh
#
# Environment (defaults relative to the repository root):
#   PYTHON (.venv/bin/python when it exists, else python3), RAW_DIR (data/raw/books1/epubtxt: a directory of
#   text files or one text file), GENERATED_DIR (data/generated),
#   BERT_MODEL (model/bert-base-uncased: a vocab.txt file or a directory holding one),
#   MAX_SEQ_LEN (512; pre-training's --max_seq_length), DO_LOWER_CASE (1), NUM_SHARDS (28),
#   NUM_WORKERS (the CPU count), OVERWRITE (0; 1 replaces shards made from other inputs/settings),
#   SPLIT_AT_BLANK_LINES (empty: 1 for a single file, 0 for a directory; K: a run of K or more blank lines
#   ends a document, 0: never), MAX_DOCUMENT_CHARS (0; N: also end a document before it passes N characters),
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
SPLIT_AT_BLANK_LINES="${SPLIT_AT_BLANK_LINES:-}"
MAX_DOCUMENT_CHARS="${MAX_DOCUMENT_CHARS:-0}"
read -r -a EXTRA <<< "${EXTRA_ARGS:-}"

# Preflight: one line naming the variable, before any work.
if [[ ! -d "$RAW_DIR" && ! -f "$RAW_DIR" ]]; then
    baf_die "RAW_DIR=$RAW_DIR: no such corpus directory or text file"
fi
if [[ ! -e "$BERT_MODEL" ]]; then
    baf_die "BERT_MODEL=$BERT_MODEL: no such vocab.txt or BERT directory (models are never downloaded)"
fi
baf_require_outdir GENERATED_DIR "shards directory"
baf_require_choice DO_LOWER_CASE 0 1
baf_require_choice OVERWRITE 0 1
baf_require_int MAX_SEQ_LEN 5
baf_require_int NUM_SHARDS 1
baf_require_int NUM_WORKERS 1
baf_require_int MAX_DOCUMENT_CHARS 0
if [[ -n "$SPLIT_AT_BLANK_LINES" ]]; then baf_require_int SPLIT_AT_BLANK_LINES 0; fi

FLAGS=()
if [[ "$DO_LOWER_CASE" == "1" ]]; then FLAGS+=(--do_lower_case); fi
if [[ "$OVERWRITE" == "1" ]]; then FLAGS+=(--overwrite); fi
if [[ -n "$SPLIT_AT_BLANK_LINES" ]]; then FLAGS+=(--split_at_blank_lines "$SPLIT_AT_BLANK_LINES"); fi

exec "$PYTHON" "$ROOT/generate_data.py" \
    --train_corpus "$RAW_DIR" \
    --output_dir "$GENERATED_DIR" \
    --bert_model "$BERT_MODEL" \
    --max_seq_len "$MAX_SEQ_LEN" \
    --num_shards "$NUM_SHARDS" \
    --num_workers "$NUM_WORKERS" \
    --max_document_chars "$MAX_DOCUMENT_CHARS" \
    ${FLAGS[@]+"${FLAGS[@]}"} ${EXTRA[@]+"${EXTRA[@]}"}
