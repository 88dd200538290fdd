#!/usr/bin/env bash
# Stage 3, int8: PyTorch dynamic int8 latency table (script/lat_dataset_gen.sh with BACKEND=int8;
# every variable of that script applies, e.g. SAVE_DIR, SPACE, SAMPLE, INFER_CNT, TIMER).
#
#   bash script/lat_dataset_gen_quant.sh
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
baf_init "$@"

BACKEND=int8 exec bash "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lat_dataset_gen.sh" "$@"
