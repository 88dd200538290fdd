#!/usr/bin/env bash
# Stage 3, int8: PyTorch dynamic int8 latency table (script/lat_dataset_gen.sh with BACKEND=int8;
# every variable of that script applies, e.g. SAVE_DIR, SPACE, SAMPLE, INFER_CNT, TIMER).
#
#   bash script/lat_dataset_gen_quant.sh
set -euo pipefail

if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then
    sed -n '2,/^set -euo pipefail/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
    exit 0
fi

BACKEND=int8 exec bash "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lat_dataset_gen.sh" "$@"
