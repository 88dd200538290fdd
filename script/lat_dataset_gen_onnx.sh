#!/usr/bin/env bash
# Stage 3, ONNX Runtime int8: torch.onnx export + ORT dynamic int8 latency table
# (script/lat_dataset_gen.sh with BACKEND=ort; every variable of that script applies).
#
#   bash script/lat_dataset_gen_onnx.sh
#   EXTRA_ARGS="--exporter dynamo" bash script/lat_dataset_gen_onnx.sh
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
baf_init "$@"

BACKEND=ort exec bash "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lat_dataset_gen.sh" "$@"
