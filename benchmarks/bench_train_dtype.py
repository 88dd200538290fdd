#!/usr/bin/env python
"""fp32 against bf16-autocast training (``--train_dtype``) on a finished demo run: seconds and accuracy, paired.

For each arch and seed the same fine-tune (the demo's candidate recipe by default: the first 4000 training
examples, 1 epoch at batch 16, lr 5e-4, dropout 0, max_seq_length 32, scored on the first 1000 of
dev_matched) runs once in fp32 and once in bf16, one right after the other (A B, then B A for the next
seed, so a drift of the machine's speed hits both alike), on one thread, in this one process. Printed: per
arch the training seconds of both and their ratio, the accuracy difference bf16 − fp32 per seed, and over
all pairs the median time ratio and the mean accuracy difference with its 95 % interval (paired t).

    .venv/bin/python benchmarks/bench_train_dtype.py --run_dir demo_run
    .venv/bin/python benchmarks/bench_train_dtype.py --run_dir demo_run --train 8000 --dev 2000   # finalists' recipe

Run it alone on an idle machine. On a CPU without native bfloat16 (no avx512_bf16 / amx_bf16) bf16 is
emulated: the benchmark says so and measures it anyway.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

# a spread of the demo windows' shapes: deep and narrow, two layers, one wide layer, deep and wide
DEFAULT_ARCHS = "L3/H192/F384/Q192/A4,L2/H256/F832/Q256/A4,L1/H448/F1344/Q448/A4,L3/H416/F320/Q416/A4"
SUMMARY = re.compile(r"L(\d+)/H(\d+)/F(\d+)/Q(\d+)/A(\d+)")


def arch_of(summary: str) -> dict:
    """A homogeneous arch from its summary (``L3/H192/F384/Q192/A4``, as the report writes it)."""
    from utils import make_arch

    match = SUMMARY.fullmatch(summary.strip())
    if not match:
        raise SystemExit(f"--archs: {summary!r} is not an arch summary like L3/H192/F384/Q192/A4")
    layers, hidden, ffn, qkv, heads = (int(group) for group in match.groups())
    return make_arch(layers, hidden, ffn, heads, qkv)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run_dir", required=True, help="a finished demo run (its supernet/final and data/MNLI)")
    parser.add_argument("--archs", default=DEFAULT_ARCHS, help="comma-separated arch summaries")
    parser.add_argument("--seeds", default="42,43,44", help="comma-separated seeds")
    parser.add_argument("--train", type=int, default=4000, help="first N training examples")
    parser.add_argument("--dev", type=int, default=1000, help="first N examples of dev_matched")
    parser.add_argument("--learning_rate", type=float, default=5e-4)
    args = parser.parse_args()

    import torch

    from evaluation.candidate import TaskData, evaluate_candidate
    from evaluation.data import encode_examples, load_tokenizer
    from evaluation.finetune import FinetuneConfig
    from glue.tasks import get_task, read_split
    from reporting.stats import paired_difference
    from transformer.checkpoint import load_supernet
    from transformer.modeling_super import SuperBertForSequenceClassification
    from utils import cpu_model, native_bf16

    model_dir, data_dir = os.path.join(args.run_dir, "supernet", "final"), os.path.join(args.run_dir, "data", "MNLI")
    for path in (model_dir, data_dir):
        if not os.path.isdir(path):
            raise SystemExit(f"--run_dir: {path}: no such directory (a finished demo run has it)")
    archs = [arch_of(text) for text in args.archs.split(",")]
    seeds = [int(seed) for seed in args.seeds.split(",")]
    torch.set_num_threads(1)
    print(f"CPU: {cpu_model()}; native bf16: {native_bf16()}; load average {os.getloadavg()[0]:.2f}; torch "
          f"{torch.__version__}; {args.train} training / {args.dev} dev examples, lr {args.learning_rate}")
    mnli = get_task("mnli")
    tokenizer = load_tokenizer(model_dir, True)
    train = encode_examples(tokenizer, read_split(mnli, data_dir, "train", args.train), mnli, 32)
    dev = {"matched": encode_examples(tokenizer, read_split(mnli, data_dir, "matched", args.dev), mnli, 32)}
    data = TaskData(mnli, train, dev)
    supernet = load_supernet(model_dir, SuperBertForSequenceClassification, num_labels=3).eval()
    no_dropout = {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}

    ratios, accuracy = [], {"fp32": {}, "bf16": {}}  # {(arch, seed): points}
    print(f"\n{'arch':<24} {'seed':>4} {'fp32 s':>7} {'bf16 s':>7} {'ratio':>6} {'fp32 acc':>8} {'bf16 acc':>8} "
          f"{'diff':>6}")
    for arch in archs:
        for index, seed in enumerate(seeds):
            result = {}
            for dtype in (("fp32", "bf16") if index % 2 == 0 else ("bf16", "fp32")):
                config = FinetuneConfig(args.learning_rate, 1.0, 16, 32, 100000, seed=seed, train_dtype=dtype)
                record = evaluate_candidate(supernet, arch, data, config, "cpu", "torch_fp32", model_overrides=no_dropout)
                result[dtype] = (record["train_seconds"], 100 * record["best_acc"], record["arch_summary"])
            ratio = result["bf16"][0] / result["fp32"][0]
            diff = result["bf16"][1] - result["fp32"][1]
            ratios.append(ratio)
            for dtype in accuracy:
                accuracy[dtype][result[dtype][2], seed] = result[dtype][1]
            print(f"{result['fp32'][2]:<24} {seed:>4} {result['fp32'][0]:>7.2f} {result['bf16'][0]:>7.2f} {ratio:>6.3f} "
                  f"{result['fp32'][1]:>8.1f} {result['bf16'][1]:>8.1f} {diff:>+6.1f}", flush=True)
    paired = paired_difference(accuracy["bf16"], accuracy["fp32"])  # the report's paired interval, pairs (arch, seed)
    print(f"\n{len(ratios)} pairs: bf16 / fp32 training seconds, median {statistics.median(ratios):.3f} "
          f"(range {min(ratios):.3f}-{max(ratios):.3f}); accuracy bf16 − fp32 {paired.text(scale=1.0)}: "
          f"{paired.verdict}; load average {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
