"""The smoke mode's inputs, made from the real samples in ``../shared/data`` (never copied into the
repository; everything goes under the run directory):

* ``teacher``: a randomly initialised ``BertForMaskedLM`` of bert-base shape (12 layers, 768 hidden,
  12 heads, 3072 FFN, the shared bert-base vocab's 30522 tokens, 512 positions), seeded, written with
  ``save_pretrained`` plus ``vocab.txt``; made once (a re-run with the same seed and vocab keeps it).
* ``task``: a stand-in MNLI directory from the header-less 1k MNLI dev samples
  (``label<TAB>premise<TAB>hypothesis``; ``glue.tasks`` reads that layout): ``train.tsv`` = the first
  ``--train`` lines of the matched sample, ``dev_matched.tsv`` = its last ``--dev`` lines (disjoint
  from train), ``dev_mismatched.tsv`` = the first ``--dev`` lines of the mismatched sample.
* ``corpus``: a directory of symbolic links, one per text file of the shared corpus (one file per
  document, as generate_data.py expects), so nothing is copied.

    python -m reproduce.smoke teacher --vocab ../shared/data/vocab/bert-base-uncased-vocab.txt --output_dir RUN/teacher
    python -m reproduce.smoke task --mnli_dir ../shared/data/glue/MNLI --output_dir RUN/MNLI --train 800 --dev 200
    python -m reproduce.smoke corpus --corpus_dir ../shared/data/corpus --output_dir RUN/corpus
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile

from utils import UserError, atomic_write, get_logger, run_cli

logger = get_logger("reproduce.smoke")

MATCHED = "textfooler_mnli_matched_1k.tsv"
MISMATCHED = "textfooler_mnli_mismatched_1k.tsv"
TEACHER_MARKER = "smoke_teacher.json"
BERT_BASE = {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072,
             "max_position_embeddings": 512}


def make_teacher(vocab_file: str, output_dir: str, seed: int = 0) -> bool:
    """Write the random bert-base-shaped teacher; False when an identical one is already there."""
    import hashlib

    import torch
    from transformers import BertConfig, BertForMaskedLM

    from pretraining.tokenizing import resolve_vocab
    from utils import load_vocab

    vocab_file = resolve_vocab(vocab_file, "--vocab")
    tokens = load_vocab(vocab_file)
    with open(vocab_file, "rb") as handle:
        vocab_sha = hashlib.sha256(handle.read()).hexdigest()
    identity = {"seed": seed, "vocab_sha256": vocab_sha, "vocab_size": len(tokens), **BERT_BASE}
    marker = os.path.join(output_dir, TEACHER_MARKER)
    if os.path.isfile(marker):
        with open(marker, encoding="utf-8") as handle:
            if json.load(handle) == identity:
                logger.info("%s already holds the smoke teacher (seed %d); kept", output_dir, seed)
                return False
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise UserError(f"--output_dir {output_dir}: exists and is not a directory")
    parent = os.path.dirname(os.path.abspath(output_dir))
    os.makedirs(parent, exist_ok=True)
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(tokens), **BERT_BASE)
    model = BertForMaskedLM(config)
    staging = tempfile.mkdtemp(prefix="." + os.path.basename(output_dir) + ".", dir=parent)
    os.chmod(staging, 0o755)  # mkdtemp's 0700 would follow the directory into place
    try:
        model.save_pretrained(staging, safe_serialization=True)
        shutil.copyfile(vocab_file, os.path.join(staging, "vocab.txt"))
        with open(os.path.join(staging, TEACHER_MARKER), "w", encoding="utf-8") as handle:
            json.dump(identity, handle, indent=2, sort_keys=True)
        if os.path.isdir(output_dir):
            shutil.rmtree(output_dir)
        os.replace(staging, output_dir)  # the marker arrives with the weights: all or nothing
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    logger.info("wrote the random bert-base-shaped teacher (seed %d, vocab %d) to %s", seed, len(tokens), output_dir)
    return True


def _lines(path: str) -> list[str]:
    if not os.path.isfile(path):
        raise UserError(f"--mnli_dir: {path}: no such file (the 1k MNLI samples of ../shared/data/glue/MNLI)")
    with open(path, encoding="utf-8") as handle:
        return [line for line in handle.read().split("\n") if line.strip()]


def make_task(mnli_dir: str, output_dir: str, train: int = 800, dev: int = 200) -> dict:
    """Write the stand-in MNLI directory; returns what each file holds (also in ``standin.json``)."""
    matched = _lines(os.path.join(mnli_dir, MATCHED))
    mismatched = _lines(os.path.join(mnli_dir, MISMATCHED))
    if train < 1 or dev < 1:
        raise UserError(f"--train and --dev must be at least 1, got {train} and {dev}")
    if train + dev > len(matched):
        raise UserError(f"--train {train} + --dev {dev} exceed the {len(matched)} lines of {MATCHED}")
    if dev > len(mismatched):
        raise UserError(f"--dev {dev} exceeds the {len(mismatched)} lines of {MISMATCHED}")
    files = {"train.tsv": matched[:train], "dev_matched.tsv": matched[-dev:], "dev_mismatched.tsv": mismatched[:dev]}
    description = {
        "what": "stand-in MNLI task for the smoke run (not GLUE MNLI; accuracy is not comparable)",
        "source": os.path.abspath(mnli_dir),
        "train.tsv": f"lines 1-{train} of {MATCHED}",
        "dev_matched.tsv": f"lines {len(matched) - dev + 1}-{len(matched)} of {MATCHED}",
        "dev_mismatched.tsv": f"lines 1-{dev} of {MISMATCHED}",
    }
    os.makedirs(output_dir, exist_ok=True)
    for name, lines in files.items():
        path = os.path.join(output_dir, name)
        text = "\n".join(lines) + "\n"
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as handle:
                if handle.read() == text:
                    continue
        with atomic_write(path) as handle:
            handle.write(text)
    with atomic_write(os.path.join(output_dir, "standin.json")) as handle:
        json.dump(description, handle, indent=2, sort_keys=True)
        handle.write("\n")
    return description


def make_corpus(corpus_dir: str, output_dir: str) -> list[str]:
    """One symbolic link per text file under ``corpus_dir`` (any depth), named after its path."""
    if not os.path.isdir(corpus_dir):
        raise UserError(f"--corpus_dir {corpus_dir}: no such directory")
    sources = []
    for base, dirs, names in os.walk(corpus_dir):
        dirs.sort()
        sources += [os.path.join(base, name) for name in sorted(names) if name.endswith(".txt")]
    if not sources:
        raise UserError(f"--corpus_dir {corpus_dir}: holds no .txt files")
    os.makedirs(output_dir, exist_ok=True)
    links = []
    for source in sources:
        name = os.path.relpath(source, corpus_dir).replace(os.sep, "_")
        link = os.path.join(output_dir, name)
        target = os.path.abspath(source)
        if os.path.islink(link) and os.readlink(link) == target:
            links.append(link)
            continue
        if os.path.lexists(link):
            os.unlink(link)
        os.symlink(target, link)
        links.append(link)
    return links


def main_task(args) -> None:
    description = make_task(args.mnli_dir, args.output_dir, args.train, args.dev)
    logger.info("stand-in MNLI in %s: train = %s; dev_matched = %s; dev_mismatched = %s", args.output_dir,
                description["train.tsv"], description["dev_matched.tsv"], description["dev_mismatched.tsv"])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    teacher = commands.add_parser("teacher", help="the random bert-base-shaped teacher")
    teacher.add_argument("--vocab", required=True, help="vocab.txt (its line count is the vocab size)")
    teacher.add_argument("--output_dir", required=True)
    teacher.add_argument("--seed", type=int, default=0)
    task = commands.add_parser("task", help="the stand-in MNLI directory")
    task.add_argument("--mnli_dir", required=True, help="directory of the two 1k MNLI sample files")
    task.add_argument("--output_dir", required=True)
    task.add_argument("--train", type=int, default=800)
    task.add_argument("--dev", type=int, default=200)
    corpus = commands.add_parser("corpus", help="a one-file-per-document view of the shared corpus")
    corpus.add_argument("--corpus_dir", required=True)
    corpus.add_argument("--output_dir", required=True)
    every = commands.add_parser("all", help="all three from SHARED_DATA's layout (what the smoke run does)")
    every.add_argument("--shared_data", required=True, help="../shared/data")
    every.add_argument("--teacher_dir", required=True)
    every.add_argument("--task_dir", required=True)
    every.add_argument("--corpus_dir", required=True)
    every.add_argument("--train", type=int, default=800)
    every.add_argument("--dev", type=int, default=200)
    every.add_argument("--seed", type=int, default=0)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "all":
        make_teacher(os.path.join(args.shared_data, "vocab", "bert-base-uncased-vocab.txt"), args.teacher_dir,
                     args.seed)
        args.mnli_dir, args.output_dir = os.path.join(args.shared_data, "glue", "MNLI"), args.task_dir
        main_task(args)
        links = make_corpus(os.path.join(args.shared_data, "corpus"), args.corpus_dir)
        logger.info("%d corpus documents linked in %s", len(links), args.corpus_dir)
    elif args.command == "teacher":
        make_teacher(args.vocab, args.output_dir, args.seed)
    elif args.command == "task":
        main_task(args)
    else:
        links = make_corpus(args.corpus_dir, args.output_dir)
        logger.info("%d corpus documents linked in %s", len(links), args.output_dir)
    return 0


if __name__ == "__main__":
    run_cli(main)
