"""Small seeded fixtures shared by the search / GLUE / evaluation tests: a word-level vocab, a tiny
supernet directory, and learnable GLUE-layout tasks written to a temporary directory."""

from __future__ import annotations

import os
import random

import torch

from transformer.checkpoint import save_supernet
from transformer.config import SuperBertConfig
from transformer.modeling_super import SuperBertForPreTraining

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
CUES = {"entailment": "yes", "contradiction": "no", "neutral": "maybe"}
FILLER = ("the cat dog sat ran on a mat house tree red blue green small big old new man woman child "
          "walked saw ate park river city car book day night").split()
WORDS = sorted(set(FILLER) | set(CUES.values()) | {"good", "bad", "."})

MNLI_HEADER = ["index", "promptID", "pairID", "genre", "sentence1_binary_parse", "sentence2_binary_parse",
               "sentence1_parse", "sentence2_parse", "sentence1", "sentence2", "label1", "gold_label"]


def write_vocab(path: str) -> str:
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("\n".join(SPECIALS + WORDS) + "\n")
    return path


def make_supernet_dir(directory: str, hidden: int = 64, layers: int = 2, ffn: int = 128, heads: int = 4,
                      seed: int = 0) -> str:
    """A randomly initialised supernet (L2/H64/F128/Q64/A4 by default) with a word-level vocab."""
    torch.manual_seed(seed)
    config = SuperBertConfig(vocab_size=len(SPECIALS) + len(WORDS), hidden_size=hidden, num_hidden_layers=layers,
                             intermediate_size=ffn, qkv_size=hidden, num_attention_heads=heads,
                             max_position_embeddings=64, kd_hidden_size=hidden)
    model = SuperBertForPreTraining(config)
    vocab = write_vocab(os.path.join(os.path.dirname(directory) or ".", "fixture_vocab.txt"))
    save_supernet(model, directory, vocab_file=vocab)
    return directory


def _sentence(rng: random.Random, length: int) -> str:
    return " ".join(rng.choice(FILLER) for _ in range(length))


def nli_rows(count: int, seed: int) -> list[tuple[str, str, str]]:
    """(label, premise, hypothesis); the hypothesis carries a cue word for its label."""
    rng = random.Random(seed)
    rows = []
    for _ in range(count):
        label = rng.choice(sorted(CUES))
        words = _sentence(rng, rng.randint(3, 6)).split()
        words.insert(rng.randint(0, len(words)), CUES[label])
        rows.append((label, _sentence(rng, rng.randint(4, 8)), " ".join(words)))
    return rows


def write_mnli(directory: str, n_train: int = 300, n_dev: int = 90, seed: int = 0) -> str:
    """GLUE MNLI layout: train.tsv, dev_matched.tsv, dev_mismatched.tsv with the GLUE header."""
    os.makedirs(directory, exist_ok=True)
    for name, count, offset in (("train.tsv", n_train, 0), ("dev_matched.tsv", n_dev, 1),
                                ("dev_mismatched.tsv", n_dev, 2)):
        with open(os.path.join(directory, name), "w", encoding="utf-8") as handle:
            handle.write("\t".join(MNLI_HEADER) + "\n")
            for index, (label, premise, hypothesis) in enumerate(nli_rows(count, seed * 10 + offset)):
                fields = [str(index), str(1000 + index), f"{index}e", "fiction", premise, hypothesis, premise,
                          hypothesis, premise, hypothesis, label, label]
                handle.write("\t".join(fields) + "\n")
    return directory


def sentiment_rows(count: int, seed: int) -> list[tuple[str, str]]:
    """(label, sentence): label 1 iff the sentence says "good"."""
    rng = random.Random(seed)
    rows = []
    for _ in range(count):
        label = rng.choice("01")
        words = _sentence(rng, rng.randint(3, 7)).split()
        words.insert(rng.randint(0, len(words)), "good" if label == "1" else "bad")
        rows.append((label, " ".join(words)))
    return rows


def write_sst2(directory: str, n_train: int = 200, n_dev: int = 60, seed: int = 0) -> str:
    os.makedirs(directory, exist_ok=True)
    for name, count, offset in (("train.tsv", n_train, 0), ("dev.tsv", n_dev, 1)):
        with open(os.path.join(directory, name), "w", encoding="utf-8") as handle:
            handle.write("sentence\tlabel\n")
            for label, sentence in sentiment_rows(count, seed * 10 + offset):
                handle.write(f"{sentence}\t{label}\n")
    return directory


def mnli_task(root: str, n_train: int, n_dev: int):
    """``(supernet, TaskData)`` for fine-tunes in one process: a tiny supernet with an MNLI head and the cue task
    (``write_mnli``), tokenised at max_seq_length 32, both written under ``root``."""
    from evaluation.candidate import TaskData
    from evaluation.data import encode_examples, load_tokenizer
    from glue.tasks import get_task, read_split
    from transformer.checkpoint import load_supernet
    from transformer.modeling_super import SuperBertForSequenceClassification

    os.makedirs(root, exist_ok=True)
    mnli = get_task("mnli")
    model_dir = make_supernet_dir(os.path.join(root, "supernet"))
    data_dir = write_mnli(os.path.join(root, "MNLI"), n_train=n_train, n_dev=n_dev)
    tokenizer = load_tokenizer(model_dir, True)
    data = TaskData(mnli, encode_examples(tokenizer, read_split(mnli, data_dir, "train"), mnli, 32),
                    {name: encode_examples(tokenizer, read_split(mnli, data_dir, name), mnli, 32)
                     for name in mnli.dev_files})
    return load_supernet(model_dir, SuperBertForSequenceClassification, num_labels=3).eval(), data


def write_arches(path: str, archs) -> str:
    from utils import write_arch_file

    write_arch_file(path, archs)
    return path
