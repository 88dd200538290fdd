#!/usr/bin/env python
"""Supernet training step (forward + backward) at its largest arch vs ``transformers.BertForMaskedLM``
of the same config and batch, measured interleaved in one run. Goal: ratio <= 1.15.

Both sides compute the same MLM loss (cross-entropy over 15 % masked positions). The supernet
evaluates the vocabulary projection only at masked positions; HF projects every position.
``--full_logits`` makes the supernet project every position too, isolating the slicing overhead.

    .venv/bin/python benchmarks/bench_supernet_step.py [--layers 5 --hidden 528 --ffn 1024 --heads 12]
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks._timing import interleaved_medians  # noqa: E402
from transformer.config import SuperBertConfig  # noqa: E402
from transformer.hf_converter import to_hf_model  # noqa: E402
from transformer.modeling_super import SuperBertForPreTraining  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=5)
    parser.add_argument("--hidden", type=int, default=528)
    parser.add_argument("--ffn", type=int, default=1024)
    parser.add_argument("--heads", type=int, default=12)
    parser.add_argument("--vocab", type=int, default=30522)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--full_logits", action="store_true")
    args = parser.parse_args()

    torch.manual_seed(0)
    config = SuperBertConfig(vocab_size=args.vocab, hidden_size=args.hidden, num_hidden_layers=args.layers,
                             intermediate_size=args.ffn, qkv_size=args.hidden, num_attention_heads=args.heads,
                             max_position_embeddings=max(512, args.seq), hidden_dropout_prob=0.1)
    supernet = SuperBertForPreTraining(config).train()
    arch = config.largest_arch()
    supernet.set_sample_config(arch)
    reference = to_hf_model(supernet, arch, head="mlm").train()  # same weights, plain HF model
    ids = torch.randint(5, args.vocab, (args.batch, args.seq))
    mask = torch.ones_like(ids)
    labels = torch.full_like(ids, -100)
    chosen = torch.rand(ids.shape) < 0.15
    labels[chosen] = ids[chosen]

    def supernet_step():
        supernet.zero_grad(set_to_none=True)
        if args.full_logits:
            logits = supernet(ids, attention_mask=mask, labels=None).mlm_logits
            loss = torch.nn.functional.cross_entropy(logits.view(-1, args.vocab), labels.view(-1), ignore_index=-100)
        else:
            loss = supernet(ids, attention_mask=mask, labels=labels).loss
        loss.backward()

    def hf_step():
        reference.zero_grad(set_to_none=True)
        reference(input_ids=ids, attention_mask=mask, labels=labels).loss.backward()

    times = interleaved_medians({"supernet": supernet_step, "hf": hf_step}, repeats=args.repeats)
    tokens = args.batch * args.seq
    print(f"config L{args.layers}/H{args.hidden}/F{args.ffn}/A{args.heads} vocab {args.vocab}, batch {args.batch} x seq {args.seq}, "
          f"threads {torch.get_num_threads()}, full_logits={args.full_logits}")
    print(f"supernet step (largest arch): {times['supernet'] * 1e3:8.1f} ms  ({tokens / times['supernet']:8.0f} tokens/s)")
    print(f"BertForMaskedLM step:         {times['hf'] * 1e3:8.1f} ms  ({tokens / times['hf']:8.0f} tokens/s)")
    print(f"ratio supernet / HF: {times['supernet'] / times['hf']:.3f}  (goal <= 1.15)")


if __name__ == "__main__":
    main()
