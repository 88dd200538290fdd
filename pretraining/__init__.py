"""Stages 1-2 of Bigger&Faster: raw text -> training shards -> pre-trained supernet.

* ``shards``        the work plan, packing and writing of shards (``generate_shards``)
* ``tokenizing``    the vocabulary, the fast WordPiece tokenizer and the tokenising worker processes
* ``shard_index``   the shards' file names and their lazy reading (``ShardIndex``)
* ``masking``       [CLS]/[SEP] framing and 80/10/10 masked-LM masking, batching
* ``data``          the per-epoch dataset and the rank-aware (DistributedSampler-style) batch order
* ``losses``        the knowledge-distillation loss
* ``models``        student supernet / teacher creation and their compatibility checks, per-step archs
* ``checkpointing`` checkpoint directories, training state, RNG state, the loss log, resume fallback,
                    stale staging; ``supernet_extra_files`` (files every supernet directory carries)
* ``distributed``   torchrun / DDP set-up
* ``sliced_updates`` masked AdamW updates: only the slices a step's archs read move
* ``quality``       held-out MLM loss per sub-model (a ladder of archs) and its rank agreement with
                    fine-tuned accuracy (``python -m pretraining.quality``)
* ``preflight``     every flag and the vocabulary checked before anything is read or written
* ``setup``         what an invocation does (resume, restart or nothing; data; schedule), resumed positions
* ``step``          one optimizer step and its pieces (loss sums, counts, optimizer, mixed precision)
* ``loop``          the training loop (``Trainer``) and ``train``

This package must not import torch at import time: ``generate_data.py`` spawns worker
processes that import ``pretraining.shards`` (and ``tokenizing``, ``shard_index``) only.
"""
