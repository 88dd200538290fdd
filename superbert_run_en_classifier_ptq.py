#!/usr/bin/env python
"""Candidate evaluation with post-training int8 quantization (Bigger&Faster).

    python superbert_run_en_classifier_ptq.py --model SUPERNET_DIR --data_dir GLUE/RTE --task_name rte \\
        --arches_file cands/1st_generation_kd_ptq_10.cands --output_dir output/kd_ptq_10 --do_lower_case

As the fp evaluator, and then the best fine-tuned sub-model is quantized with the latency
tables' scheme (PyTorch dynamic int8 on every Linear; --quant_scheme fakequant reproduces the
original's whole-supernet min-max fake-quant) and evaluated again, for every task. Both fp32
and int8 metrics go to subbert.results.jsonl; best_acc in subbert.results is the int8 metric.
"""

from evaluation.runner import main
from utils import run_cli

if __name__ == "__main__":
    run_cli(lambda argv=None: main(argv, default_scheme="torch_dynamic_int8", description=__doc__))
