#!/usr/bin/env python
"""Make the embedded demo's data (SPEC section 9), seeded and deterministic.

    python demo_data.py --output_dir data/demo [--seed 42] [--corpus_mb 2] [--num_train 3000] [--task_level 1] ...

Writes into --output_dir:
  corpus/doc_00000.txt ...   synthetic pre-training text, one file per document (BookCorpus convention)
  MNLI/train.tsv, MNLI/dev_matched.tsv, MNLI/dev_mismatched.tsv
                             a synthetic NLI task in the GLUE MNLI layout (header, 12 / 16 columns)
  vocab/vocab.txt            lower-case WordPiece vocab trained on corpus/ with `tokenizers`
                             ([PAD] [UNK] [CLS] [SEP] [MASK] at ids 0..4)
  demo_manifest.json         the parameters (written last: its presence means the data are complete)

Re-running with the same parameters does nothing; other parameters are refused unless --overwrite.
See docs/demo.md for the task's design and the sizes the demo uses.
"""

from __future__ import annotations

import argparse

from demo import DemoDataParams, build_demo_data
from utils import run_cli

DEFAULTS = DemoDataParams()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", required=True, help="directory for corpus/, MNLI/, vocab/ and the manifest")
    parser.add_argument("--seed", type=int, default=DEFAULTS.seed, help="random seed (default %(default)s)")
    parser.add_argument("--corpus_mb", type=float, default=DEFAULTS.corpus_mb,
                        help="corpus size in MB (default %(default)s)")
    parser.add_argument("--num_train", type=int, default=DEFAULTS.num_train,
                        help="examples in MNLI/train.tsv (default %(default)s)")
    parser.add_argument("--num_dev", type=int, default=DEFAULTS.num_dev,
                        help="examples in each of dev_matched.tsv and dev_mismatched.tsv (default %(default)s)")
    parser.add_argument("--num_dev_mismatched", type=int, default=DEFAULTS.num_dev_mismatched,
                        help="examples in dev_mismatched.tsv (default: --num_dev)")
    parser.add_argument("--task_level", type=int, default=DEFAULTS.task_level,
                        help="NLI difficulty: 1 one fact, 2 two people, 3 three people with distractors "
                             "(default %(default)s; the demo's short fine-tune learns only level 1)")
    parser.add_argument("--vocab_size", type=int, default=DEFAULTS.vocab_size,
                        help="WordPiece vocab size cap; training stops earlier when the corpus has no more "
                             "merges (default %(default)s)")
    parser.add_argument("--min_frequency", type=int, default=DEFAULTS.min_frequency,
                        help="minimum pair frequency for a WordPiece merge (default %(default)s)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace demo data made with other parameters")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    params = DemoDataParams(seed=args.seed, corpus_mb=args.corpus_mb, num_train=args.num_train,
                            num_dev=args.num_dev, num_dev_mismatched=args.num_dev_mismatched, task_level=args.task_level, vocab_size=args.vocab_size,
                            min_frequency=args.min_frequency)
    build_demo_data(args.output_dir, params, overwrite=args.overwrite)
    return 0


if __name__ == "__main__":
    run_cli(main)
