"""Latency table, ONNX Runtime backend: the extracted plain BERT of every arch exported with
``torch.onnx`` (TorchScript exporter by default, opset 17), quantized to ONNX Runtime dynamic int8
(every ``nn.Linear`` a ``MatMulInteger``; checked) and timed in an ``InferenceSession`` with the same
thread settings and the same measurement loop as ``inference_time_evaluation_quant.py``.

    python inference_time_evaluation_quant_onnx.py --save_dir conf_datasets [--space ...]
        [--sample N --seed S | --arch_file F] [--exporter torchscript|dynamo] [--ort_quantizer fast|official]

Writes ``<save_dir>/lat_ort_dynamic_int8.jsonl`` (``--legacy_format``: ``lat_ort_quant_.tmp``).
Compare with the PyTorch tables: ``python -m latency.compare``.
"""

from __future__ import annotations

from latency.dataset import run
from utils import run_cli


def main(argv=None) -> int:
    return run(argv, prog="inference_time_evaluation_quant_onnx.py", onnx=True,
               description="Measure CPU latency of BERT archs in ONNX Runtime dynamic int8.")


if __name__ == "__main__":
    run_cli(main)
