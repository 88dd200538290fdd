"""Tokenise a task once per process and serve padded batches cheaply.

Each split is tokenised once (``BertTokenizerFast`` over the supernet's ``vocab.txt``) into one
``[N, max_seq_length]`` id tensor plus the true lengths; a batch is cut to its longest member
(dynamic padding), which is most of the speed on short GLUE sentences. Evaluation batches are
taken in length order (the metric does not depend on order); training order is a seeded shuffle.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Iterator, Sequence

import torch

from glue.tasks import Example, TaskSpec
from utils import UserError, load_vocab


def load_tokenizer(model_dir: str, do_lower_case: bool):
    from transformers import BertTokenizerFast

    vocab = os.path.join(model_dir, "vocab.txt")
    if not os.path.isfile(vocab):
        raise UserError(f"--model: {model_dir} has no vocab.txt (the tokenizer's vocabulary)")
    # transformers 5 takes the vocabulary as ``vocab=`` and silently ignores ``vocab_file=``
    # (every token becomes [UNK]); the size check guards against such an API change.
    tokenizer = BertTokenizerFast(vocab=vocab, do_lower_case=do_lower_case)
    expected = len(load_vocab(vocab))
    if len(tokenizer) != expected:
        raise RuntimeError(f"tokenizer loaded {len(tokenizer)} tokens from {vocab}, which has {expected}")
    return tokenizer


@dataclasses.dataclass
class EncodedSplit:
    input_ids: torch.Tensor  # [N, max_len] int64, zero-padded
    token_type_ids: torch.Tensor  # [N, max_len]
    lengths: torch.Tensor  # [N]
    labels: torch.Tensor  # [N] int64 (classification) or float32 (regression)

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def batch(self, index: torch.Tensor) -> dict[str, torch.Tensor]:
        width = int(self.lengths[index].max())
        lengths = self.lengths[index]
        return {
            "input_ids": self.input_ids[index, :width],
            "token_type_ids": self.token_type_ids[index, :width],
            "attention_mask": (torch.arange(width)[None, :] < lengths[:, None]).long(),
            "labels": self.labels[index],
        }

    def eval_batches(self, batch_size: int) -> Iterator[dict[str, torch.Tensor]]:
        order = torch.argsort(self.lengths, stable=True)
        for start in range(0, len(self), batch_size):
            yield self.batch(order[start:start + batch_size])

    def train_batches(self, batch_size: int, generator: torch.Generator) -> Iterator[dict[str, torch.Tensor]]:
        order = torch.randperm(len(self), generator=generator)
        for start in range(0, len(self), batch_size):
            yield self.batch(order[start:start + batch_size])

    def num_batches(self, batch_size: int) -> int:
        return -(-len(self) // batch_size)


def encode_examples(tokenizer, examples: Sequence[Example], task: TaskSpec, max_seq_length: int) -> EncodedSplit:
    """[CLS] a [SEP] (b [SEP]), truncated longest-first to ``max_seq_length``."""
    text_a = [example.text_a for example in examples]
    text_b = [example.text_b for example in examples] if examples and examples[0].text_b is not None else None
    encoded = tokenizer(text_a, text_b, truncation=True, max_length=max_seq_length, padding="max_length",
                        return_tensors="pt", return_attention_mask=True, return_token_type_ids=True)
    labels = [task.label_id(example.label) for example in examples]
    dtype = torch.float32 if task.is_regression else torch.long
    return EncodedSplit(encoded["input_ids"], encoded["token_type_ids"], encoded["attention_mask"].sum(dim=1),
                        torch.tensor(labels, dtype=dtype))
