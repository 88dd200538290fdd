#!/usr/bin/env python
"""Benchmark: pre-training tokens per second at the demo's largest arch, in the supernet, vs a plain
Hugging Face ``BertForMaskedLM`` MLM step of the same size, in one run.

    python benchmarks/bench_pretraining.py [--space demo_supernet] [--batch 16] [--seq 128] [--vocab_size 8000]

* ours: ``pretraining.loop.Trainer.train_step`` (the real step: sliced supernet forward with the
  MLM head on masked positions only, backward, global clip, AdamW, scheduler) on the space's
  largest arch, and on freshly sampled archs (what pre-training actually runs);
* baseline: ``transformers.BertForMaskedLM`` built by ``arch_to_bert_config`` for the same arch,
  the same batch (same masked labels), the same optimizer settings;
* the update rule: the sampled step with masked updates (``SlicedAdamW``, the default) against the
  same step with plain AdamW (``--no_masked_updates``, the code before issue 13), same archs, same
  batch -- ``masked_vs_dense_sampled`` is the step-cost ratio (goal <= 1.10).
  ``--sample_times 2`` (two archs per step: unions that need a mask) and ``--sandwich`` measure the
  other update paths.

All run in the same process, interleaved round by round, after warm-up; the ratios are what to read.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

import pre_training  # noqa: E402
from pretraining.distributed import DistContext  # noqa: E402
from pretraining.loop import Trainer  # noqa: E402
from pretraining.step import make_optimizer  # noqa: E402
from pretraining.models import archs_for_step  # noqa: E402
from transformer.hf_converter import arch_to_bert_config  # noqa: E402
from utils import arch_summary  # noqa: E402


def synthetic_shards(directory: str, vocab_size: int, sequences: int, length: int, seed: int = 0) -> None:
    """A vocab of ``vocab_size`` tokens and one shard of random ``length``-token sequences."""
    os.makedirs(directory, exist_ok=True)
    words = [f"w{i}" for i in range(vocab_size - 5)]
    with open(os.path.join(directory, "vocab.txt"), "w", encoding="utf-8") as handle:
        handle.write("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + words) + "\n")
    rng = random.Random(seed)
    with open(os.path.join(directory, "train_doc_tokens_ngrams_0.json"), "w", encoding="utf-8") as handle:
        for _ in range(sequences):
            handle.write(json.dumps({"tokens": [rng.choice(words) for _ in range(length)]}) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--space", default="demo_supernet")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--vocab_size", type=int, default=8000)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--sample_times", type=int, default=1, help="archs per sampled step")
    parser.add_argument("--sandwich", action="store_true", help="sampled steps also train the largest and smallest")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        synthetic_shards(os.path.join(tmp, "shards"), args.vocab_size, args.batch * 2, args.seq - 2)

        def make_trainer(name: str, masked: bool) -> Trainer:
            train_args = pre_training.build_parser().parse_args([
                "--pregenerated_data", os.path.join(tmp, "shards"), "--output_dir", os.path.join(tmp, name), "--mlm",
                "--space", args.space, "--max_seq_length", str(args.seq), "--train_batch_size", str(args.batch),
                "--max_steps", "1000", "--warmup_steps", "0", "--device", args.device, "--precision", "fp32",
                "--no_progress", "--heldout_fraction", "0",
                "--masked_updates" if masked else "--no_masked_updates"])
            made = Trainer(train_args, DistContext(device=torch.device(args.device)))
            made.model.train()
            return made

        trainer = make_trainer("out", masked=True)
        dense = make_trainer("dense", masked=False)
        train_args = trainer.args
        dataset = trainer.dataset
        batch = dataset.collate([dataset[(0, i)] for i in range(args.batch)])
        tokens = int(batch["attention_mask"].sum())
        largest = trainer.space.largest()

        bert_config = arch_to_bert_config(largest, trainer.model.config)
        from transformers import BertForMaskedLM

        torch.manual_seed(0)
        hf = BertForMaskedLM(bert_config).train()
        hf_optimizer = make_optimizer(hf, train_args)

        def hf_step() -> None:
            out = hf(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                     token_type_ids=batch["token_type_ids"], labels=batch["labels"])
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(hf.parameters(), 1.0)
            hf_optimizer.step()
            hf_optimizer.zero_grad(set_to_none=True)

        steps = {"masked": 0, "dense": 0}

        def sampled_step(which: str, runner: Trainer):
            def run() -> None:
                steps[which] += 1  # both see the same arch sequence
                runner.train_step([batch], archs_for_step(runner.space, 0, steps[which], args.sample_times,
                                                          args.sandwich))
            return run

        def synchronized(function):
            def run() -> None:
                function()
                if args.device.startswith("cuda"):
                    torch.cuda.synchronize()
            return run

        runs = {"ours_largest": lambda: trainer.train_step([batch], [largest]), "hf_bert_mlm": hf_step,
                "ours_sampled": sampled_step("masked", trainer), "ours_sampled_dense": sampled_step("dense", dense)}
        runs = {name: synchronized(run) for name, run in runs.items()}
        for _ in range(args.warmup):
            for run in runs.values():
                run()
        seconds = {name: 0.0 for name in runs}
        per_round = {name: [] for name in runs}
        for _ in range(args.rounds):  # interleaved: machine noise hits all alike
            for name, run in runs.items():
                started = time.perf_counter()
                run()
                elapsed = time.perf_counter() - started
                seconds[name] += elapsed
                per_round[name].append(elapsed)

    result = {"arch": arch_summary(largest), "space": args.space, "batch": args.batch, "seq": args.seq,
              "vocab_size": args.vocab_size, "tokens_per_step": tokens, "threads": torch.get_num_threads(),
              "rounds": args.rounds}
    for name, total in seconds.items():
        result[f"{name}_tokens_per_s"] = round(tokens * args.rounds / total)
    result["ours_largest_vs_hf"] = round(seconds["hf_bert_mlm"] / seconds["ours_largest"], 2)
    # Step cost of the masked update against plain AdamW, with the spread of the per-round ratios.
    ratios = [a / b for a, b in zip(per_round["ours_sampled"], per_round["ours_sampled_dense"])]
    result.update(sample_times=args.sample_times, sandwich=args.sandwich, device=args.device,
                  masked_vs_dense_sampled=round(seconds["ours_sampled"] / seconds["ours_sampled_dense"], 3),
                  masked_vs_dense_round_ratio_min_max=[round(min(ratios), 3), round(max(ratios), 3)],
                  masked_vs_dense_goal="<= 1.10")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
