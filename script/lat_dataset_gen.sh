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
# Protocol baf-latency-3 (the default): every timed run of an arch is paired with a run of a reference
# arch of the same backend (order alternating), and its latency is the median per-pair ratio times the
# reference's latency at the table's start: the table's unit, written in every record next to the raw
# ms (docs/latency.md). PROTOCOL=baf-latency-2 measures with the previous protocol (rounds, anchor,
# reference checkpoints, re-measurement; its settings through EXTRA_ARGS, e.g. "--remeasure_cap 0").
# Two latency jobs never time at once on one machine (the second waits), and one directory has one
# writer: time several backends together with BACKEND="fp32 int8", not as two jobs.
#
# Environment (defaults relative to the repository root; a protocol setting left empty keeps the
# protocol's own default, listed by `python inference_time_evaluation_quant.py --help`):
#   PYTHON (.venv/bin/python when it exists, else python3), BACKEND (fp32 | int8 | ort, or several
#   separated by spaces), SAVE_DIR (conf_datasets), SPACE (paper_latency; with ARCH_FILE the archs are
#   checked against its ranges only when SPACE is set), SAMPLE (empty = the whole grid; N = a seeded
#   random sample), ARCH_FILE (empty; archs to measure, on the grid or not), REFERENCES (auto | a latency
#   table to be comparable with | an arch file; none only with PROTOCOL=baf-latency-2), PROTOCOL
#   (baf-latency-3), INFER_CNT (timed runs per arch, each paired with a reference run), WARMUP, TIMER
#   (cpu: thread CPU time, the default with one thread | wall), THREADS, SEED, VOCAB_SIZE (empty: the
#   protocol's defaults), SHARD (empty or I/N), CPU_AFFINITY (empty or e.g. 0), LEGACY (0; 1 also writes
#   the original's lat_.tmp / lat_quant_.tmp lines), EXTRA_ARGS (more flags, split on spaces).
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
PROTOCOL="${PROTOCOL:-}"
SHARD="${SHARD:-}"
CPU_AFFINITY="${CPU_AFFINITY:-}"
LEGACY="${LEGACY:-0}"
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
baf_require_choice LEGACY 0 1
if [[ "$LEGACY" == "1" ]]; then FLAGS+=(--legacy_format); fi
# protocol settings: passed only when set, so their defaults stay the protocol's (latency/protocol.py)
for pair in PROTOCOL:--protocol INFER_CNT:--infer_cnt WARMUP:--warmup TIMER:--timer THREADS:--threads SEED:--seed \
        VOCAB_SIZE:--vocab_size; do
    var="${pair%%:*}"
    if [[ -n "${!var:-}" ]]; then FLAGS+=("${pair#*:}" "${!var}"); fi
done

exec "$PYTHON" "$ROOT/$SCRIPT" \
    --save_dir "$SAVE_DIR" \
    --references "$REFERENCES" \
    "${FLAGS[@]}" ${EXTRA[@]+"${EXTRA[@]}"}
