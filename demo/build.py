"""Build the whole demo data set into one directory, atomically and only once per parameter set.

Layout of ``output_dir``::

    corpus/doc_00000.txt ...          pre-training text, one file per document
    MNLI/train.tsv dev_matched.tsv dev_mismatched.tsv   the NLI task, GLUE MNLI layout
    vocab/vocab.txt                   WordPiece vocab trained on corpus/
    demo_manifest.json                parameters + seed (+ statistics), written last

Everything is generated into a staging directory inside ``output_dir`` and renamed into place;
the manifest is written last, so its presence means the data are complete. Re-running with
the same parameters does nothing; other parameters are refused unless ``overwrite``.
"""

from __future__ import annotations

import collections
import dataclasses
import glob
import json
import os
import random
import shutil
import tempfile
import time

from demo.corpus import write_corpus
from demo.nli import TASK_LEVELS, make_splits, write_mnli_tsv
from demo.vocab import train_wordpiece_vocab
from utils import UserError, atomic_write, get_logger

logger = get_logger(__name__)

# Bump when the generator's output for the same parameters changes: old data then no longer match.
DEMO_DATA_VERSION = 3  # 2: level 1 in plain sentences (demo.nli.TaskShape.plain); 3: nine slots (demo.world)
MANIFEST_NAME = "demo_manifest.json"
ENTRIES = ("corpus", "MNLI", "vocab")
STAGING_PREFIX = ".demo_staging."


@dataclasses.dataclass(frozen=True)
class DemoDataParams:
    seed: int = 42
    corpus_mb: float = 2.0       # target corpus size in MB (10**6 bytes)
    num_train: int = 3000        # train.tsv examples
    num_dev: int = 500           # examples in dev_matched.tsv (and dev_mismatched.tsv unless set below)
    task_level: int = 1          # NLI difficulty (demo.nli.TASK_LEVELS)
    num_dev_mismatched: int | None = None  # examples in dev_mismatched.tsv (None: num_dev)
    vocab_size: int = 1000       # WordPiece size cap (the demo world needs ~600; training stops there)
    min_frequency: int = 2

    def check(self) -> None:
        for name in ("corpus_mb", "num_train", "num_dev", "vocab_size", "min_frequency"):
            if getattr(self, name) <= 0:
                raise UserError(f"--{name} must be positive, got {getattr(self, name)}")
        if self.num_dev_mismatched is not None and self.num_dev_mismatched <= 0:
            raise UserError(f"--num_dev_mismatched must be positive, got {self.num_dev_mismatched}")
        if self.task_level not in TASK_LEVELS:
            raise UserError(f"--task_level must be one of {', '.join(map(str, TASK_LEVELS))}, got {self.task_level}")
        if self.vocab_size < 100:
            raise UserError(f"--vocab_size must be at least 100 (alphabet + special tokens), got {self.vocab_size}")

    def as_dict(self) -> dict:
        values = dataclasses.asdict(self)
        if values["num_dev_mismatched"] is None:  # (absent: data made before the field keep their manifest)
            del values["num_dev_mismatched"]
        return {"version": DEMO_DATA_VERSION, **values}


def read_manifest(output_dir: str) -> dict | None:
    path = os.path.join(output_dir, MANIFEST_NAME)
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as handle:
            manifest = json.load(handle)
    except json.JSONDecodeError as err:
        raise UserError(f"{path}: not valid JSON ({err.msg}); pass --overwrite to regenerate") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("params"), dict):
        raise UserError(f"{path}: not a demo manifest (no 'params'); pass --overwrite to regenerate")
    return manifest


def _describe_difference(old: dict, new: dict) -> str:
    keys = sorted(set(old) | set(new))
    return ", ".join(f"{k}={old.get(k)!r} -> {new.get(k)!r}" for k in keys if old.get(k) != new.get(k))


def build_demo_data(output_dir: str, params: DemoDataParams = DemoDataParams(), overwrite: bool = False) -> dict:
    """Make the demo data in ``output_dir`` (or find them already there); returns the manifest."""
    params.check()
    wanted = params.as_dict()
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise UserError(f"--output_dir {output_dir}: exists and is not a directory")
    os.makedirs(output_dir, exist_ok=True)
    for stale in glob.glob(os.path.join(output_dir, STAGING_PREFIX + "*")):
        shutil.rmtree(stale, ignore_errors=True)  # left by a killed run; never read

    manifest = None if overwrite else read_manifest(output_dir)
    if manifest is not None:
        if manifest["params"] == wanted:
            logger.info("%s: demo data already made with these parameters; nothing to do", output_dir)
            return manifest
        raise UserError(f"{output_dir}: holds demo data made with other parameters "
                        f"({_describe_difference(manifest['params'], wanted)}); pass --overwrite to regenerate")
    present = [name for name in ENTRIES if os.path.exists(os.path.join(output_dir, name))]
    if present and not overwrite:
        raise UserError(f"{output_dir}: {', '.join(present)} exist(s) but there is no {MANIFEST_NAME}; "
                        "pass --overwrite to regenerate")

    staging = tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=output_dir)
    try:
        stats = _generate(staging, params)
        manifest = {"params": wanted, "outputs": {"corpus": "corpus", "mnli": "MNLI", "vocab": "vocab/vocab.txt"},
                    "stats": stats}
        # Swap in: drop the old manifest first, so a crash mid-swap never leaves a manifest
        # that describes mixed data.
        old_manifest = os.path.join(output_dir, MANIFEST_NAME)
        if os.path.exists(old_manifest):
            os.unlink(old_manifest)
        trash = os.path.join(staging, ".old")
        os.makedirs(trash)
        for name in ENTRIES:
            target = os.path.join(output_dir, name)
            if os.path.exists(target):
                os.replace(target, os.path.join(trash, name))
            os.replace(os.path.join(staging, name), target)
        with atomic_write(old_manifest) as handle:
            json.dump(manifest, handle, indent=2, sort_keys=True)
            handle.write("\n")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info("%s: demo data written (%s)", output_dir, json.dumps(stats, sort_keys=True))
    return manifest


def _generate(root: str, params: DemoDataParams) -> dict:
    """Write corpus/, MNLI/ and vocab/ under ``root``; returns statistics for the manifest."""
    started = time.perf_counter()
    # Independent streams: changing the NLI sizes does not change the corpus, and vice versa.
    corpus_rng = random.Random(f"demo-corpus-{params.seed}")
    nli_rng = random.Random(f"demo-nli-{params.seed}")

    corpus_dir = os.path.join(root, "corpus")
    docs, corpus_bytes = write_corpus(corpus_dir, corpus_rng, int(params.corpus_mb * 1e6))
    logger.info("corpus: %d documents, %.2f MB", docs, corpus_bytes / 1e6)

    splits = make_splits(nli_rng, params.num_train, params.num_dev, TASK_LEVELS[params.task_level],
                         params.num_dev_mismatched)
    mnli_dir = os.path.join(root, "MNLI")
    os.makedirs(mnli_dir)
    offset = 0
    label_counts = {}
    for name, examples in splits.items():
        write_mnli_tsv(os.path.join(mnli_dir, f"{name}.tsv"), examples, dev=name != "train", prompt_offset=offset)
        offset += len(examples)
        label_counts[name] = dict(sorted(collections.Counter(e.label for e in examples).items()))
    logger.info("MNLI: %s", ", ".join(f"{k} {sum(v.values())}" for k, v in label_counts.items()))

    files = sorted(glob.glob(os.path.join(corpus_dir, "*.txt")))
    vocab_file = train_wordpiece_vocab(files, os.path.join(root, "vocab"), params.vocab_size, params.min_frequency)
    with open(vocab_file, encoding="utf-8") as handle:
        vocab_entries = sum(1 for _ in handle)
    logger.info("vocab: %d entries (cap %d); generated in %.1f s", vocab_entries, params.vocab_size,
                time.perf_counter() - started)
    # only reproducible figures here: the manifest is part of the byte-identical output
    return {"documents": docs, "corpus_bytes": corpus_bytes, "labels": label_counts, "vocab_entries": vocab_entries}
