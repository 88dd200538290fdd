#!/usr/bin/env python
"""The cost of slicing: a small arch's forward inside the supernet vs the same sub-model extracted
to a plain Hugging Face ``BertModel`` (eval, no grad, batch 1 x seq 128, interleaved in one run).

    .venv/bin/python benchmarks/bench_slicing.py [--arch L H F] [--threads 1]
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
from utils import arch_summary, make_arch  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", type=int, nargs=3, default=[2, 264, 512], metavar=("L", "H", "F"))
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = SuperBertConfig(vocab_size=30522, hidden_size=564, qkv_size=528)  # the paper's KD-S1 supernet
    supernet = SuperBertForPreTraining(config).eval()
    arch = make_arch(args.arch[0], args.arch[1], args.arch[2], 12)
    supernet.set_sample_config(arch)
    extracted = to_hf_model(supernet, arch, head="none")
    ids = torch.randint(5, 30522, (args.batch, args.seq))
    mask = torch.ones_like(ids)

    def sliced():
        with torch.inference_mode():
            supernet.bert(ids, mask, arch=arch)

    def plain():
        with torch.inference_mode():
            extracted(input_ids=ids, attention_mask=mask)

    times = interleaved_medians({"sliced": sliced, "extracted": plain}, repeats=args.repeats, warmup=5)
    print(f"sub-model {arch_summary(arch)} in the L5/H564/F1024/Q528 supernet, batch {args.batch} x seq {args.seq}, "
          f"{args.threads} thread(s)")
    print(f"sliced supernet forward: {times['sliced'] * 1e3:7.2f} ms")
    print(f"extracted HF forward:    {times['extracted'] * 1e3:7.2f} ms")
    print(f"ratio sliced / extracted: {times['sliced'] / times['extracted']:.3f}")


if __name__ == "__main__":
    main()
