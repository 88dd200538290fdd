"""The pre-training data pipeline: which examples a rank sees, in which order, and how.

* ``epoch_order`` is the DistributedSampler rule done right: one permutation of all sequences
  per epoch, seeded by ``(seed, epoch)`` (a different shuffle every epoch, the same on every
  rank), padded by wrapping to a multiple of the world size, and rank ``r`` takes every
  ``world``-th entry starting at ``r``. Ranks never read each other's examples.
* ``RankBatches`` yields this rank's batches of ``(epoch, index)`` keys, skipping the batches a
  resumed run already trained on without reading them.
* ``PretrainingDataset`` reads a key's sequence from the shards only when asked (lazy), frames
  it with [CLS]/[SEP] and masks it with the example's own seeded random stream.
* ``heldout_split`` sets a fixed fraction of the shard lines aside that training never sees (the
  held-out data of ``pretraining.quality``): line ``j`` of shard file ``i`` is held out when draw
  ``j`` of ``numpy.random.default_rng([HELDOUT_SALT, i])`` is below the fraction. The rule
  depends only on the shard files -- not on the training seed, world size or batch size -- so
  every run on the same shards, and the quality measurement afterwards, agree on it.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from pretraining.masking import MaskingConfig, Vocabulary, collate, example_rng, frame, mask_tokens
from pretraining.shard_index import ShardIndex


def epoch_order(num_examples: int, world_size: int, rank: int, seed: int, epoch: int) -> np.ndarray:
    """Indices of this rank's examples for ``epoch``, in training order."""
    rng = np.random.default_rng([seed, epoch, 0x5EED])
    order = rng.permutation(num_examples)
    total = math.ceil(num_examples / world_size) * world_size
    if total > num_examples:  # every rank gets the same count (DDP steps stay in lock-step)
        order = np.concatenate([order, np.resize(order, total - num_examples)])
    return order[rank::world_size]


class RankBatches:
    """Batches of ``(epoch, index)`` keys for one rank and one epoch, from ``skip_batches`` on."""

    def __init__(self, num_examples: int, batch_size: int, world_size: int, rank: int, seed: int, epoch: int,
                 skip_batches: int = 0):
        self.order = epoch_order(num_examples, world_size, rank, seed, epoch)
        self.batch_size, self.epoch, self.skip = batch_size, epoch, skip_batches

    def __len__(self) -> int:
        return max(0, batches_per_epoch(len(self.order), self.batch_size) - self.skip)

    def __iter__(self):
        for start in range(self.skip * self.batch_size, len(self.order), self.batch_size):
            yield [(self.epoch, int(index)) for index in self.order[start: start + self.batch_size]]


HELDOUT_SALT = 0x4E1D  # fixed: the split must not depend on the training seed


def heldout_split(shards: ShardIndex, fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """``(training indices, held-out indices)`` of the shards' sequences (global order)."""
    held = [np.random.default_rng([HELDOUT_SALT, shard]).random(len(starts)) < fraction
            for shard, starts in enumerate(shards.starts)]
    held_out = np.concatenate(held) if held else np.zeros(0, dtype=bool)
    return np.flatnonzero(~held_out), np.flatnonzero(held_out)


def batches_per_epoch(examples_per_rank: int, batch_size: int) -> int:
    return math.ceil(examples_per_rank / batch_size)


def examples_per_rank(num_examples: int, world_size: int) -> int:
    return math.ceil(num_examples / world_size)


class PretrainingDataset(torch.utils.data.Dataset):
    """``dataset[(epoch, position)] -> (input_ids, labels)``: read lazily, framed, freshly masked.

    ``indices`` are the shard sequences the dataset holds (default: all); position ``p`` is
    sequence ``indices[p]``, whose masks are seeded by its shard index (not by ``p``)."""

    def __init__(self, shards: ShardIndex, vocab: Vocabulary, max_seq_length: int, masking: MaskingConfig,
                 seed: int, indices: np.ndarray | None = None):
        self.shards, self.vocab, self.max_seq_length = shards, vocab, max_seq_length
        self.masking, self.seed = masking, seed
        self.indices = np.arange(len(shards)) if indices is None else np.asarray(indices, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, key: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        epoch, position = key
        index = int(self.indices[position])
        ids = frame(self.vocab.encode(self.shards.tokens(index)), self.max_seq_length, self.vocab)
        return mask_tokens(ids, example_rng(self.seed, epoch, index), self.vocab, self.masking)

    def collate(self, examples):
        return collate(examples, self.vocab.pad_id)


def make_loader(dataset: PretrainingDataset, batches: RankBatches, num_workers: int) -> torch.utils.data.DataLoader:
    # A private generator: creating the iterator must not draw from the global torch RNG, or a
    # resumed run (which creates it mid-epoch) would get different dropout masks afterwards.
    generator = torch.Generator().manual_seed(dataset.seed * 1_000_003 + batches.epoch)
    return torch.utils.data.DataLoader(dataset, batch_sampler=batches, collate_fn=dataset.collate,
                                       num_workers=num_workers, persistent_workers=False, generator=generator)
