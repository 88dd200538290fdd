#!/usr/bin/env python
"""Per-candidate cost of the evaluation core, against the original's way of doing it, in one run.

ours      the supernet is loaded and the task tokenised once per process; batches are cut to
          their longest member (dynamic padding); per arch: extract -> fine-tune -> fp32 and
          int8 dev evaluation (``evaluation.candidate.evaluate_candidate``).
baseline  the original's per-candidate overhead: reload the supernet and re-tokenise the task
          for every arch, and pad every batch to --max_seq_length. Same fine-tune otherwise.

Both run the same archs (interleaved ours/baseline per arch, so machine noise hits both alike)
on a synthetic MNLI-layout task of short sentences, sized like the demo.

    .venv/bin/python benchmarks/bench_candidate_eval.py
    .venv/bin/python benchmarks/bench_candidate_eval.py --num_threads 0   # torch's default threads
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [REPO, os.path.join(REPO, "tests")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n_train", type=int, default=2000)
    parser.add_argument("--n_dev", type=int, default=500)
    parser.add_argument("--max_seq_length", type=int, default=64)
    parser.add_argument("--archs", default="1/64/128,2/128/256,3/192/512,4/256/768", help="L/H/F list (4 heads)")
    parser.add_argument("--num_threads", type=int, default=1, help="torch threads (0 = torch's default)")
    args = parser.parse_args()

    import torch

    from evaluation.candidate import TaskData, evaluate_candidate
    from evaluation.data import EncodedSplit, encode_examples, load_tokenizer
    from evaluation.finetune import FinetuneConfig
    from evaluation_fixtures import make_supernet_dir, write_mnli
    from glue.tasks import get_task, read_split
    from transformer.checkpoint import load_supernet
    from transformer.modeling_super import SuperBertForSequenceClassification
    from utils import make_arch

    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    archs = [make_arch(*(int(v) for v in item.split("/")), 4) for item in args.archs.split(",")]
    work = tempfile.mkdtemp(prefix="bench_candidate_eval_")
    model_dir = make_supernet_dir(os.path.join(work, "supernet"), hidden=256, layers=4, ffn=768, heads=4)
    data_dir = write_mnli(os.path.join(work, "MNLI"), n_train=args.n_train, n_dev=args.n_dev)
    task = get_task("mnli")
    config = FinetuneConfig(learning_rate=1e-3, num_train_epochs=1, train_batch_size=32, eval_batch_size=32,
                            eval_step=10**9)

    @dataclasses.dataclass
    class StaticSplit(EncodedSplit):
        """Every batch padded to the full --max_seq_length (the original's fixed-length tensors)."""

        def batch(self, index):
            full = dataclasses.replace(self, lengths=torch.full_like(self.lengths, self.input_ids.shape[1]))
            out = EncodedSplit.batch(full, index)
            width = self.input_ids.shape[1]
            out["attention_mask"] = (torch.arange(width)[None, :] < self.lengths[index][:, None]).long()
            return out

    def load_data(split_class):
        tokenizer = load_tokenizer(model_dir, True)

        def encode(name):
            encoded = encode_examples(tokenizer, read_split(task, data_dir, name), task, args.max_seq_length)
            return split_class(**{f.name: getattr(encoded, f.name) for f in dataclasses.fields(EncodedSplit)})

        return TaskData(task, encode("train"), {name: encode(name) for name in task.dev_files})

    start = time.perf_counter()
    shared_supernet = load_supernet(model_dir, SuperBertForSequenceClassification, num_labels=3).eval()
    shared_data = load_data(EncodedSplit)
    once = time.perf_counter() - start

    def ours(arch):
        return evaluate_candidate(shared_supernet, arch, shared_data, config, "cpu", "torch_dynamic_int8")

    def baseline(arch):
        supernet = load_supernet(model_dir, SuperBertForSequenceClassification, num_labels=3).eval()
        return evaluate_candidate(supernet, arch, load_data(StaticSplit), config, "cpu", "torch_dynamic_int8")

    ours(archs[0])  # warm-up: first-call imports and allocator growth
    times = {"ours": [], "baseline": []}
    for arch in archs:
        for name, function in (("ours", ours), ("baseline", baseline)):
            t0 = time.perf_counter()
            record = function(arch)
            times[name].append(time.perf_counter() - t0)
            print(f"{name:8s} {record['arch_summary']:22s} {times[name][-1]:7.2f} s  "
                  f"fp32 {record['best_fp32']:.3f} int8 {record['best_int8']:.3f}", flush=True)
    total_ours, total_base = sum(times["ours"]), sum(times["baseline"])
    print(f"\nthreads {torch.get_num_threads()}; {args.n_train} train / {args.n_dev}+{args.n_dev} dev examples, "
          f"max_seq {args.max_seq_length}; one-off load+tokenise for ours: {once:.2f} s")
    print(f"per arch (median): ours {statistics.median(times['ours']):.2f} s, "
          f"baseline {statistics.median(times['baseline']):.2f} s")
    print(f"total over {len(archs)} archs: ours {total_ours:.2f} s (+{once:.2f} s once), baseline {total_base:.2f} s; "
          f"ratio ours/baseline {(total_ours + once) / total_base:.2f}")


if __name__ == "__main__":
    main()
