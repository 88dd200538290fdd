#!/usr/bin/env bash
# The evolution loop: GENERATIONS x (Evolved search, then evaluate the new archs).
#
#   bash script/search_and_eval.sh [TYPE] [LATENCY_CONSTRAINT] [DATA_DIR] [TASK_NAME] [GENERATIONS]
#
# Needs the first generation evaluated (script/search.sh eval). Generation i is written to
# cands/1st_generation_kd_<TYPE>_<LAT>.gen<i>.evo.cands (and copied to .evo.cands), then
# evaluated into output/kd_<TYPE>_<LAT>/subbert.results. The original evaluated .evo.cands
# *before* searching, so its first iteration re-evaluated a stale or missing file; here each
# generation is searched first. A re-run resumes: existing generation files are kept and
# evaluated archs are skipped. With STRATEGY=random each generation is drawn at random from the
# unevaluated candidates instead (the random-search baseline). Environment: GENERATIONS (3),
# FIRST_GENERATION_INDEX (1), STRATEGY (evolution | random), and everything script/search.sh reads
# (see bash script/search.sh --help).
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
baf_init "$@"

if [[ -n "${5:-}" ]]; then export GENERATIONS="$5"; fi
exec "$PYTHON" "$ROOT/run_search.py" generations "${@:1:4}"
