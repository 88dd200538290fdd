#!/usr/bin/env bash
# Stage 3: latency tables of the search space, one JSONL file per backend (resumable).
#
#   bash script/lat_dataset_gen.sh                      # PyTorch fp32 over the paper's 14,250-arch grid
#   BACKEND=int8 bash script/lat_dataset_gen.sh         # PyTorch dynamic int8 (= script/lat_dataset_gen_quant.sh)
#   BACKEND=ort bash script/lat_dataset_gen.sh          # ONNX Runtime int8 (= script/lat_dataset_gen_onnx.sh)
#   BACKEND="fp32 int8" bash script/lat_dataset_gen.sh  # both in ONE process, arch by arch (same conditions)
#   SPACE=demo_latency VOCAB_SIZE=4000 INFER_CNT=10 bash script/lat_dataset_gen.sh
#   ARCH_FILE=chosen.cands REFERENCES=conf_datasets/lat_torch_fp32.jsonl SAVE_DIR=remeasured \
#       bash script/lat_dataset_gen.sh                  # re-measure chosen archs, comparable with that table
#   SHARD=0/4 bash script/lat_dataset_gen.sh            # machine 0 of 4 (identical machines) splits the grid
#
# Protocol baf-latency-2: each arch's runs are spread over 4 rounds, timed next to an anchor arch, the
# headline is the median over rounds of arch/anchor, reference archs are measured at the start,
# every 50 archs and at the end (drift), and suspect archs are re-measured (see README).
# Two latency jobs never time at once on one machine (the second waits), and one directory has one
# writer: time several backends together with BACKEND="fp32 int8", not as two jobs.
#
# Environment (defaults relative to the repository root):
#   PYTHON (.venv/bin/python when it exists, else python3), BACKEND (fp32 | int8 | ort, or several
#   separated by spaces), SAVE_DIR (conf_datasets), SPACE (paper_latency; with ARCH_FILE the archs are
#   checked against its ranges only when SPACE is set), SAMPLE (empty = the whole grid; N = a seeded
#   random sample), ARCH_FILE (empty; archs to measure, on the grid or not), REFERENCES (auto | none |
#   a latency table to be comparable with | an arch file), SEED (0), THREADS (1), INFER_CNT (20 timed
#   runs), WARMUP (5), TIMER (wall | cpu: thread CPU time, for single-thread runs on a shared machine),
#   VOCAB_SIZE (30522), SHARD (empty or I/N), CPU_AFFINITY (empty or e.g. 0), LEGACY (1: also write
#   lat_.tmp / lat_quant_.tmp lines), EXTRA_ARGS (more flags, split on spaces, e.g. "--remeasure_cap 0").
# Output: $SAVE_DIR/lat_torch_fp32.jsonl | lat_torch_dynamic_int8.jsonl | lat_ort_dynamic_int8.jsonl.
# A re-run resumes; a table measured with another machine/protocol is refused (use another SAVE_DIR).
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
baf_init "$@"

BACKEND="${BACKEND:-fp32}"
SAVE_DIR="${SAVE_DIR:-$ROOT/conf_datasets}"
SPACE="${SPACE:-}"
SAMPLE="${SAMPLE:-}"
ARCH_FILE="${ARCH_FILE:-}"
REFERENCES="${REFERENCES:-auto}"
SEED="${SEED:-0}"
THREADS="${THREADS:-1}"
INFER_CNT="${INFER_CNT:-20}"
WARMUP="${WARMUP:-5}"
TIMER="${TIMER:-wall}"
VOCAB_SIZE="${VOCAB_SIZE:-30522}"
SHARD="${SHARD:-}"
CPU_AFFINITY="${CPU_AFFINITY:-}"
LEGACY="${LEGACY:-1}"
read -r -a EXTRA <<< "${EXTRA_ARGS:-}"
read -r -a BACKENDS <<< "$BACKEND"

if [[ "${#BACKENDS[@]}" -eq 0 ]]; then baf_die "BACKEND is empty; set it to fp32, int8, ort or several of them"; fi
SCRIPT=inference_time_evaluation_quant.py
FLAGS=()
for NAME in "${BACKENDS[@]}"; do
    case "$NAME" in
        fp32|int8|ort) ;;
        *) baf_die "BACKEND must be fp32, int8, ort or several of them separated by spaces, got '$BACKEND'" ;;
    esac
done
if [[ "${BACKENDS[*]}" == "ort" ]]; then
    SCRIPT=inference_time_evaluation_quant_onnx.py
else
    FLAGS+=(--backends "${BACKENDS[@]}")
fi
if [[ -n "$SPACE" ]]; then FLAGS+=(--space "$SPACE"); fi
if [[ -n "$SAMPLE" ]]; then FLAGS+=(--sample "$SAMPLE"); fi
if [[ -n "$ARCH_FILE" ]]; then FLAGS+=(--arch_file "$ARCH_FILE"); fi
if [[ -n "$SHARD" ]]; then FLAGS+=(--shard "$SHARD"); fi
if [[ -n "$CPU_AFFINITY" ]]; then FLAGS+=(--cpu_affinity "$CPU_AFFINITY"); fi
if [[ "$LEGACY" == "1" ]]; then FLAGS+=(--legacy_format); fi

exec "$PYTHON" "$ROOT/$SCRIPT" \
    --save_dir "$SAVE_DIR" \
    --references "$REFERENCES" \
    --seed "$SEED" \
    --threads "$THREADS" \
    --infer_cnt "$INFER_CNT" \
    --warmup "$WARMUP" \
    --timer "$TIMER" \
    --vocab_size "$VOCAB_SIZE" \
    "${FLAGS[@]}" "${EXTRA[@]}"
