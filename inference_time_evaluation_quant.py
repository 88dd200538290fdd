"""Latency table, PyTorch backend (stage 3): the extracted plain BERT of every arch, timed in fp32
or, with ``--quant``, in PyTorch dynamic int8 on every ``nn.Linear``.

    python inference_time_evaluation_quant.py --save_dir conf_datasets [--quant] [--space paper_latency]
        [--sample N --seed S | --arch_file F] [--infer_cnt 24 --warmup 2 --threads 1] [--legacy_format]

Writes ``<save_dir>/lat_torch_fp32.jsonl`` (``lat_torch_dynamic_int8.jsonl`` with ``--quant``), one
record per arch; a re-run resumes. ``--legacy_format`` also writes ``lat_.tmp`` / ``lat_quant_.tmp``.
The protocol (``baf-latency-3``: paired runs, the table's unit) and the shared code: ``latency/``; see
docs/latency.md.
"""

from __future__ import annotations

from latency.dataset import run
from utils import run_cli


def main(argv=None) -> int:
    return run(argv, prog="inference_time_evaluation_quant.py", onnx=False,
               description="Measure CPU latency of BERT archs in PyTorch fp32 or dynamic int8 (--quant).")


if __name__ == "__main__":
    run_cli(main)
