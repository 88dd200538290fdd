"""Pre-training's checks before anything is read or written: every flag (one line each), the
vocabulary and the shards' agreement with it, and the space of the subnet-quality ladder."""

from __future__ import annotations

import json
import os

import torch

from pretraining.shard_index import MANIFEST_NAME, VOCAB_NAME
from pretraining.tokenizing import resolve_vocab
from transformer.checkpoint import vocab_path
from utils import SearchSpace, UserError, get_logger, get_space, load_vocab, recorded_roles

logger = get_logger("pre_training")


def validate_args(args) -> None:
    """Every flag checked before anything is read or written (one line each)."""
    if not args.mlm and not args.teacher_model:
        raise UserError("nothing to train: pass --mlm and/or --teacher_model DIR (knowledge distillation)")
    for flag, value, low in (("--train_batch_size", args.train_batch_size, 1),
                             ("--gradient_accumulation_steps", args.gradient_accumulation_steps, 1),
                             ("--num_train_epochs", args.num_train_epochs, 1),
                             ("--sample_times_per_batch", args.sample_times_per_batch, 1),
                             ("--max_seq_length", args.max_seq_length, 5), ("--num_workers", args.num_workers, 0),
                             ("--logging_steps", args.logging_steps, 1), ("--save_steps", args.save_steps, 0),
                             ("--save_total_limit", args.save_total_limit, 0),
                             ("--stop_after_steps", args.stop_after_steps, 0),
                             ("--quality_ladder", args.quality_ladder, 0),
                             ("--quality_sequences", args.quality_sequences, 1)):
        if value < low:
            raise UserError(f"{flag} must be at least {low}, got {value}")
    if args.max_steps == 0 or args.max_steps < -1:
        raise UserError(f"--max_steps must be positive, or -1 to let --num_train_epochs decide; got {args.max_steps}")
    if args.quality_ladder == 1:
        raise UserError("--quality_ladder must be 0 (no report) or at least 2 (smallest and largest)")
    for flag, value in (("--learning_rate", args.learning_rate), ("--adam_epsilon", args.adam_epsilon),
                        ("--max_grad_norm", args.max_grad_norm)):
        if not value > 0:
            raise UserError(f"{flag} must be positive, got {value}")
    if not args.weight_decay >= 0:
        raise UserError(f"--weight_decay must be >= 0, got {args.weight_decay}")
    if not 0.0 <= args.warmup_proportion <= 1.0:
        raise UserError(f"--warmup_proportion must be in [0, 1], got {args.warmup_proportion}")
    if args.warmup_steps is not None and args.warmup_steps < 0:
        raise UserError(f"--warmup_steps must be >= 0, got {args.warmup_steps}")
    if args.heldout_fraction is not None and not 0.0 <= args.heldout_fraction < 0.5:
        raise UserError(f"--heldout_fraction must be in [0, 0.5), got {args.heldout_fraction}")
    if args.masked_lm_prob is not None and not 0.0 <= args.masked_lm_prob <= 1.0:
        raise UserError(f"--masked_lm_prob must be in [0, 1], got {args.masked_lm_prob}")
    if args.precision == "fp16" and (args.device == "cpu" or (args.device == "auto" and not torch.cuda.is_available())):
        raise UserError("--precision fp16 needs a GPU; use bf16 or fp32 on CPU")
    if args.mlm and args.masked_lm_prob == 0:
        raise UserError("--mlm with --masked_lm_prob 0 has nothing to predict")
    if os.path.exists(args.output_dir) and not os.path.isdir(args.output_dir):
        raise UserError(f"--output_dir {args.output_dir}: exists and is not a directory")
    if not os.path.isdir(args.pregenerated_data):
        raise UserError(f"--pregenerated_data {args.pregenerated_data}: no such shards directory "
                        "(run generate_data.py first)")
    if args.quality_space:
        get_space(args.quality_space)  # one line for an unknown name


def choose_vocab(args, resume_dir: str | None) -> str:
    """--vocab, else the model's vocab.txt, else the shards' vocab.txt."""
    if args.vocab:
        return resolve_vocab(args.vocab, "--vocab")
    for directory in (resume_dir, args.student_model):
        if directory and vocab_path(directory):
            return vocab_path(directory)
    shard_vocab = os.path.join(args.pregenerated_data, VOCAB_NAME)
    if os.path.isfile(shard_vocab):
        return shard_vocab
    raise UserError("no vocabulary: pass --vocab (vocab.txt or a BERT dir); neither the model nor the shards "
                    f"({args.pregenerated_data}) hold one")


def shard_manifest(args) -> dict:
    manifest = os.path.join(args.pregenerated_data, MANIFEST_NAME)
    if not os.path.isfile(manifest):
        return {}
    try:
        with open(manifest, encoding="utf-8") as handle:
            return json.load(handle)
    except json.JSONDecodeError as err:
        raise UserError(f"{manifest}: not valid JSON ({err.msg})") from None


def check_shard_vocab(args, vocab_tokens) -> None:
    shard_vocab = os.path.join(args.pregenerated_data, VOCAB_NAME)
    if os.path.isfile(shard_vocab) and tuple(load_vocab(shard_vocab)) != tuple(vocab_tokens):
        raise UserError(f"--pregenerated_data: the shards were tokenised with {shard_vocab}, which differs from "
                        "the model's vocab; token ids would not match")
    longest = shard_manifest(args).get("max_tokens_per_sequence", 0)
    if longest > args.max_seq_length - 2:
        logger.warning("the shards hold sequences of up to %d tokens; --max_seq_length %d truncates them to %d",
                       longest, args.max_seq_length, args.max_seq_length - 2)


def quality_space(args, space: SearchSpace) -> SearchSpace:
    """The space of the quality ladder: --quality_space, else the search space matching the sampler
    space, else (custom spaces) the sampler space itself."""
    if args.quality_space:
        return get_space(args.quality_space)
    search = recorded_roles(args.space, "supernet", space).get("search")
    return search if search is not None else space
