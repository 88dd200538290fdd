#!/usr/bin/env python
"""Stage 1: raw text (a directory of text files, or one text file) -> training shards.

    python generate_data.py --train_corpus RAW_DIR_OR_FILE --output_dir SHARD_DIR --bert_model VOCAB_OR_BERT_DIR \\
        [--max_seq_len 512] [--do_lower_case] [--num_shards 28] [--num_workers N] \\
        [--split_at_blank_lines K] [--max_document_chars N]

Documents (sequences never span two): every file of a directory is one document (BookCorpus
convention); a single file is split at blank lines (BERT's convention). --split_at_blank_lines K
ends a document at a run of K or more blank lines (0: never), --max_document_chars N also cuts one
before a line that would take it past N characters (pretraining/documents.py).

Writes ``train_doc_tokens_ngrams_{i}.json`` (one ``{"tokens": [...]}`` per line, the original
format), plus ``vocab.txt`` (the vocab used) and ``data_manifest.json`` (settings and counts).
Sequences hold at most ``max_seq_len - 2`` WordPiece tokens: pre-training adds [CLS] and [SEP].
Re-running with the same inputs and settings does nothing; other existing shards are replaced
only with ``--overwrite``, and only once the new ones are complete.
"""

from __future__ import annotations

import argparse
import os

from pretraining.documents import resolve_rule
from pretraining.shards import GenerateSettings, generate_shards
from pretraining.tokenizing import resolve_vocab
from utils import UserError, get_logger, run_cli

logger = get_logger("generate_data")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train_corpus", required=True,
                        help="a UTF-8 text file, or a directory of them (each file one document by default)")
    parser.add_argument("--output_dir", required=True, help="directory for the shards")
    parser.add_argument("--bert_model", required=True,
                        help="a vocab.txt file, or a directory holding one (e.g. a local BERT checkpoint)")
    parser.add_argument("--max_seq_len", type=int, default=512,
                        help="sequence length pre-training will use; sequences keep 2 slots for [CLS]/[SEP]")
    parser.add_argument("--do_lower_case", action="store_true", help="lower-case and strip accents (uncased vocab)")
    parser.add_argument("--num_shards", type=int, default=28, help="number of shard files (the original's 28)")
    parser.add_argument("--num_workers", type=int, default=max(1, min(8, (os.cpu_count() or 1) - 1)),
                        help="tokenising processes; 1 = in this process (default: CPUs - 1, at most 8)")
    parser.add_argument("--block_mb", type=float, default=0.25,
                        help="text per work unit in MiB; bounds memory (about 2 x workers units in flight)")
    parser.add_argument("--split_at_blank_lines", type=int, default=None, metavar="K",
                        help="a run of K or more blank lines ends a document; 0: never (default: 1 for a single "
                             "file, 0 for a directory: each file is one document)")
    parser.add_argument("--max_document_chars", type=int, default=0, metavar="N",
                        help="also end a document before a line that would take it past N characters (0: no limit)")
    parser.add_argument("--overwrite", action="store_true", help="replace shards already in --output_dir")
    parser.add_argument("--no_progress", action="store_true", help="no progress bar")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.num_workers < 1:
        raise UserError(f"--num_workers must be at least 1, got {args.num_workers}")
    if args.block_mb <= 0:
        raise UserError(f"--block_mb must be positive, got {args.block_mb}")
    rule = resolve_rule(args.train_corpus, args.split_at_blank_lines, args.max_document_chars)
    vocab_file = resolve_vocab(args.bert_model)
    settings = GenerateSettings(max_seq_len=args.max_seq_len, do_lower_case=args.do_lower_case,
                                num_shards=args.num_shards, num_workers=args.num_workers,
                                block_bytes=max(1, int(args.block_mb * (1 << 20))), documents=rule)
    generate_shards(args.train_corpus, args.output_dir, vocab_file, settings, overwrite=args.overwrite,
                    progress=not args.no_progress)
    return 0


if __name__ == "__main__":
    run_cli(main)
