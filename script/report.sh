#!/usr/bin/env bash
# The report, in one command after the searches: collect every evaluated arch, re-measure its
# latency with the protocol of the predictors' own tables (nothing else timed meanwhile), and write
# REPORT_DIR/{summary.json,report.md,report.csv,*.png} (report.py).
#
#   bash script/report.sh
#   CANDS_DIR=run/cands OUTPUT_ROOT=run/output PREDICTORS="run/conf_datasets/lat_predictor.pt run/conf_datasets/lat_predictor_quant.pt" \
#       REPORT_DIR=run/report bash script/report.sh
#
# Environment (defaults relative to the repository root; the same variables as the other scripts):
#   PYTHON (.venv/bin/python when it exists, else python3), CANDS_DIR (cands), OUTPUT_ROOT (output),
#   PREDICTOR_DIR (conf_datasets), PREDICTORS (the predictors that exist in PREDICTOR_DIR of lat_predictor.pt,
#   lat_predictor_quant.pt, lat_predictor_ort.pt: the schemes' files, quantize_utils.SCHEMES), LATENCY_DIR
#   (latency_evaluated: the re-measured tables, resumed), INFER_CNT (empty: the tables' runs), SEEDS (empty: the
#   seeds each search's final step recorded; else every finalist must have these), TASK (empty: the one
#   task of the searches), ALLOW_PARTIAL (0; 1 reports unfinished searches, flagged), TICKETS (BERT-Tickets
#   run directories to add), REPORT_DIR (report), TITLE (empty: report.py's; the report's heading, spaces
#   allowed), EXTRA_ARGS (more report.py flags, split on spaces).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
baf_init "$@"
baf_supervise

CANDS_DIR="${CANDS_DIR:-$ROOT/cands}"
OUTPUT_ROOT="${OUTPUT_ROOT:-$ROOT/output}"
PREDICTOR_DIR="${PREDICTOR_DIR:-$ROOT/conf_datasets}"
if [[ -z "${PREDICTORS:-}" ]]; then
    PREDICTORS=""
    for name in $(baf_py -m quantize_utils predictor_file); do  # every deployed scheme's (quantize_utils.SCHEMES)
        [[ -f "$PREDICTOR_DIR/$name" ]] && PREDICTORS="$PREDICTORS $PREDICTOR_DIR/$name"
    done
fi
LATENCY_DIR="${LATENCY_DIR:-$ROOT/latency_evaluated}"
INFER_CNT="${INFER_CNT:-}"
SEEDS="${SEEDS:-}"
TASK="${TASK:-}"
ALLOW_PARTIAL="${ALLOW_PARTIAL:-0}"
TICKETS="${TICKETS:-}"
REPORT_DIR="${REPORT_DIR:-$ROOT/report}"
TITLE="${TITLE:-}"
read -r -a PREDICTOR_LIST <<< "$PREDICTORS"
read -r -a SEED_LIST <<< "$SEEDS"
read -r -a TICKET_LIST <<< "$TICKETS"
read -r -a EXTRA <<< "${EXTRA_ARGS:-}"

# ---- preflight
baf_require_dir CANDS_DIR "directory of the searches' .cands files"
baf_require_dir OUTPUT_ROOT "directory of the searches' results"
[[ "${#PREDICTOR_LIST[@]}" -ge 1 ]] || baf_die "PREDICTORS is empty and PREDICTOR_DIR=$PREDICTOR_DIR holds no lat_predictor*.pt; set PREDICTORS"
for path in "${PREDICTOR_LIST[@]}"; do
    [[ -f "$path" ]] || baf_die "PREDICTORS: $path: no such predictor checkpoint"
done
baf_require_choice ALLOW_PARTIAL 0 1
for directory in ${TICKET_LIST[@]+"${TICKET_LIST[@]}"}; do
    [[ -d "$directory" ]] || baf_die "TICKETS: $directory: no such BERT-Tickets run directory"
done
if [[ -n "$SEEDS" ]]; then baf_require_ints SEEDS 0; fi  # empty: what each search recorded
if [[ -n "$INFER_CNT" ]]; then baf_require_int INFER_CNT 1; fi
baf_require_outdir LATENCY_DIR "directory of the re-measured latency tables"
baf_require_outdir REPORT_DIR "report directory"

mkdir -p "$LATENCY_DIR"
EVALUATED="$LATENCY_DIR/evaluated_archs.cands"
baf_run_py -m evaluation.results "$OUTPUT_ROOT" "$EVALUATED"
COUNT=()
[[ -n "$INFER_CNT" ]] && COUNT=(--infer_cnt "$INFER_CNT")
baf_run_py -m reporting.remeasure --predictors "${PREDICTOR_LIST[@]}" --arch_file "$EVALUATED" \
    --save_dir "$LATENCY_DIR" ${COUNT[@]+"${COUNT[@]}"}
MEASURED=()
for table in "$LATENCY_DIR"/lat_*.jsonl; do
    [[ -f "$table" ]] && MEASURED+=("$table")
done
FLAGS=()
[[ "${#SEED_LIST[@]}" -gt 0 ]] && FLAGS+=(--seeds "${SEED_LIST[@]}")
[[ -n "$TASK" ]] && FLAGS+=(--task "$TASK")
[[ "$ALLOW_PARTIAL" == "1" ]] && FLAGS+=(--allow_partial)
[[ "${#TICKET_LIST[@]}" -gt 0 ]] && FLAGS+=(--tickets "${TICKET_LIST[@]}")
[[ -n "$TITLE" ]] && FLAGS+=(--title "$TITLE")
baf_run_py "$ROOT/report.py" --cands_dir "$CANDS_DIR" --output_root "$OUTPUT_ROOT" \
    --predictors "${PREDICTOR_LIST[@]}" --measured ${MEASURED[@]+"${MEASURED[@]}"} --report_dir "$REPORT_DIR" \
    ${FLAGS[@]+"${FLAGS[@]}"} ${EXTRA[@]+"${EXTRA[@]}"}
