#!/usr/bin/env python
"""Benchmark: generate_data.py tokens per second vs the original approach, on the same text, in one run.

    python benchmarks/bench_generate_data.py [--corpus DIR] [--vocab VOCAB] [--num_workers 2] [--max_seq_len 128]

* ours: ``pretraining.shards.generate_shards`` (fast Rust WordPiece, worker processes, streaming);
* original approach: the slow Python ``BertTokenizer`` (``BertTokenizerLegacy`` in transformers 5),
  one line at a time, in one process, then the same packing and JSON-lines writing.

Both write shards of the same text; the benchmark checks that the shards are byte-identical and
prints tokens/s of each and their ratio (goal >= 10x). The default corpus is ../shared/data/corpus
(every file, flattened into one document directory with symlinks).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pretraining.shards import (  # noqa: E402
    SHARD_TEMPLATE,
    GenerateSettings,
    Packer,
    ShardWriter,
    generate_shards,
    list_documents,
)

SHARED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data")


def flatten_corpus(source: str, target: str) -> int:
    """Symlink every file under ``source`` into ``target`` (one document per file)."""
    count = 0
    for path in sorted(glob.glob(os.path.join(source, "**", "*"), recursive=True)):
        if os.path.isfile(path):
            os.symlink(os.path.abspath(path), os.path.join(target, f"{count:04d}_{os.path.basename(path)}"))
            count += 1
    return count


def original_approach(corpus: str, output_dir: str, vocab_file: str, settings: GenerateSettings) -> int:
    """Slow Python tokenizer, line by line, one process; same packing and output as ours."""
    from transformers.models.bert.tokenization_bert_legacy import BertTokenizerLegacy

    tokenizer = BertTokenizerLegacy(vocab_file, do_lower_case=settings.do_lower_case)
    os.makedirs(output_dir, exist_ok=True)
    writer = ShardWriter(output_dir, settings.num_shards)
    packer = Packer(settings.max_seq_len - 2, writer.write)
    for path in list_documents(corpus):
        with open(path, encoding="utf-8", errors="replace") as handle:
            for line in handle:
                line = line.strip()
                if line:
                    tokens = tokenizer.tokenize(line)
                    if tokens:
                        packer.add_line(", ".join(json.dumps(token) for token in tokens), len(tokens))
        packer.end_document()
    writer.close()
    return writer.tokens


def read_all(directory: str, num_shards: int) -> list[bytes]:
    return [open(os.path.join(directory, SHARD_TEMPLATE.format(i)), "rb").read() for i in range(num_shards)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", default=os.path.join(SHARED, "corpus"),
                        help="directory of text files (searched recursively)")
    parser.add_argument("--vocab", default=os.path.join(SHARED, "vocab", "bert-base-uncased-vocab.txt"))
    parser.add_argument("--num_workers", type=int, default=os.cpu_count() or 1,
                        help="also time this many worker processes (1 is always timed)")
    parser.add_argument("--max_seq_len", type=int, default=128)
    parser.add_argument("--num_shards", type=int, default=28)
    args = parser.parse_args()
    if not os.path.isdir(args.corpus) or not os.path.isfile(args.vocab):
        sys.exit(f"bench_generate_data: corpus {args.corpus} or vocab {args.vocab} not found")
    with tempfile.TemporaryDirectory() as tmp:
        corpus = os.path.join(tmp, "corpus")
        os.makedirs(corpus)
        documents = flatten_corpus(args.corpus, corpus)
        size = sum(os.path.getsize(p) for p in list_documents(corpus))
        runs = {}
        for workers in sorted({1, args.num_workers}):
            settings = GenerateSettings(max_seq_len=args.max_seq_len, do_lower_case=True, num_shards=args.num_shards,
                                        num_workers=workers)
            out = os.path.join(tmp, f"ours_{workers}")
            started = time.perf_counter()
            stats = generate_shards(corpus, out, args.vocab, settings, progress=False)
            runs[workers] = (time.perf_counter() - started, read_all(out, args.num_shards))
        started = time.perf_counter()
        tokens = original_approach(corpus, os.path.join(tmp, "original"), args.vocab, settings)
        original_s = time.perf_counter() - started
        original = read_all(os.path.join(tmp, "original"), args.num_shards)
        identical = all(shards == original for _, shards in runs.values())
    result = {"documents": documents, "mbytes": round(size / 2**20, 2), "tokens": stats["tokens"],
              "cpus": os.cpu_count(), "original_s": round(original_s, 2),
              "original_tokens_per_s": round(tokens / original_s)}
    for workers, (seconds, _) in runs.items():
        result[f"ours_{workers}_workers_s"] = round(seconds, 2)
        result[f"ours_{workers}_workers_tokens_per_s"] = round(stats["tokens"] / seconds)
        result[f"speedup_{workers}_workers"] = round(original_s / seconds, 1)
    result["identical_shards"] = identical
    print(json.dumps(result, indent=2))
    if not identical or tokens != stats["tokens"]:
        sys.exit("bench_generate_data: the two paths wrote different shards")


if __name__ == "__main__":
    main()
