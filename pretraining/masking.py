"""Turning a shard sequence into a training example, and examples into a batch.

* [CLS] and [SEP] are added here (the shards keep two slots free for them);
* masked-LM masking follows BERT: ``n = min(max_predictions, max(1, round(len * prob)))`` of the
  sequence's real tokens (never [CLS]/[SEP]/padding) are chosen; 80 % become [MASK], 10 % a
  random non-special token, 10 % stay unchanged; labels hold the original id there, -100
  elsewhere. With ``prob == 0`` nothing is masked (the original still masked one token);
* masks are *fresh every epoch* and reproducible: the random stream of an example is seeded
  by ``(seed, epoch, index)``, so it is the same on any rank, DataLoader worker or resumed run;
* batches are padded to their longest example, with ``attention_mask`` 1 on real tokens and
  ``token_type_ids`` 0 (one segment).
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

IGNORE_INDEX = -100  # label of unmasked positions (the model's MLM loss uses labels >= 0)


@dataclasses.dataclass(frozen=True)
class Vocabulary:
    """Token <-> id for the model's vocab, with the special ids masking needs."""

    tokens: tuple[str, ...]
    token_to_id: dict
    pad_id: int
    unk_id: int
    cls_id: int
    sep_id: int
    mask_id: int
    random_ids: np.ndarray  # ids a "random token" replacement draws from (no special tokens)

    @classmethod
    def from_tokens(cls, tokens: Sequence[str]) -> "Vocabulary":
        token_to_id = {}
        for index, token in enumerate(tokens):
            token_to_id.setdefault(token, index)
        special = {token_to_id[name] for name in ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")}
        random_ids = np.array([i for i in range(len(tokens)) if i not in special], dtype=np.int64)
        return cls(tuple(tokens), token_to_id, token_to_id["[PAD]"], token_to_id["[UNK]"], token_to_id["[CLS]"],
                   token_to_id["[SEP]"], token_to_id["[MASK]"], random_ids)

    def __len__(self) -> int:
        return len(self.tokens)

    def encode(self, tokens: Sequence[str]) -> np.ndarray:
        lookup, unk = self.token_to_id, self.unk_id
        return np.fromiter((lookup.get(token, unk) for token in tokens), dtype=np.int64, count=len(tokens))


@dataclasses.dataclass(frozen=True)
class MaskingConfig:
    prob: float = 0.15
    max_predictions: int | None = None  # cap per sequence (the original's --max_predictions_per_seq)
    mask_fraction: float = 0.8
    random_fraction: float = 0.1


def example_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The random stream of one example in one epoch (independent of rank, worker and resume)."""
    return np.random.default_rng([seed, epoch, index])


def frame(token_ids: np.ndarray, max_seq_length: int, vocab: Vocabulary) -> np.ndarray:
    """``[CLS] tokens [SEP]``, tokens truncated so that the whole fits ``max_seq_length``."""
    body = token_ids[: max_seq_length - 2]
    return np.concatenate(([vocab.cls_id], body, [vocab.sep_id])).astype(np.int64)


def mask_tokens(input_ids: np.ndarray, rng: np.random.Generator, vocab: Vocabulary,
                config: MaskingConfig) -> tuple[np.ndarray, np.ndarray]:
    """80/10/10 masking of a framed sequence; returns ``(masked_ids, labels)``."""
    labels = np.full_like(input_ids, IGNORE_INDEX)
    real = input_ids.shape[0] - 2  # positions 1 .. len-2 hold the text
    if config.prob <= 0 or real <= 0:
        return input_ids.copy(), labels
    count = max(1, int(round(real * config.prob)))
    if config.max_predictions is not None:
        count = min(count, config.max_predictions)
    positions = 1 + rng.choice(real, size=count, replace=False)
    labels[positions] = input_ids[positions]
    masked = input_ids.copy()
    roll = rng.random(count)
    to_mask = roll < config.mask_fraction
    to_random = (roll >= config.mask_fraction) & (roll < config.mask_fraction + config.random_fraction)
    masked[positions[to_mask]] = vocab.mask_id
    masked[positions[to_random]] = rng.choice(vocab.random_ids, size=int(to_random.sum()))
    return masked, labels


def collate(examples: Sequence[tuple[np.ndarray, np.ndarray]], pad_id: int) -> dict:
    """Pad ``(input_ids, labels)`` pairs to the longest; returns int64 torch tensors."""
    import torch

    longest = max(len(ids) for ids, _ in examples)
    batch = len(examples)
    input_ids = np.full((batch, longest), pad_id, dtype=np.int64)
    labels = np.full((batch, longest), IGNORE_INDEX, dtype=np.int64)
    attention_mask = np.zeros((batch, longest), dtype=np.int64)
    for row, (ids, lab) in enumerate(examples):
        input_ids[row, : len(ids)] = ids
        labels[row, : len(lab)] = lab
        attention_mask[row, : len(ids)] = 1
    return {
        "input_ids": torch.from_numpy(input_ids),
        "attention_mask": torch.from_numpy(attention_mask),
        "token_type_ids": torch.zeros((batch, longest), dtype=torch.long),
        "labels": torch.from_numpy(labels),
    }
