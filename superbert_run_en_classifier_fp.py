#!/usr/bin/env python
"""Candidate evaluation in fp32 (the AutoTinyBERT baseline of the paper).

    python superbert_run_en_classifier_fp.py --model SUPERNET_DIR --data_dir GLUE/RTE --task_name rte \\
        --arches_file cands/1st_generation_kd_fp_10.cands --output_dir output/kd_fp_10 --do_lower_case

For each arch: extract the sub-model, fine-tune it on the task (the original per-task max_seq /
lr / eval_step), keep the best dev metric, and append it to <output_dir>/subbert.results (the
original block layout; best_acc = fp32 metric) and subbert.results.jsonl (every metric).
Re-runs skip what is done. The ptq twin is superbert_run_en_classifier_ptq.py.
"""

from evaluation.runner import main
from utils import run_cli

if __name__ == "__main__":
    run_cli(lambda argv=None: main(argv, default_scheme="torch_fp32", description=__doc__))
