"""What one pre-training invocation will do, decided before any model is built (``plan_run``): resume
from which checkpoint (or restart, or nothing to do), with which update rule and held-out split, on
which vocabulary and data, for how many steps; and where a resumed run continues (``restore_position``)."""

from __future__ import annotations

import dataclasses
import math
import os

from pretraining.checkpointing import (
    FINAL_DIR,
    Checkpoint,
    has_run,
    newest_intact_checkpoint,
    read_final_info,
    restore_rng,
    truncate_loss_log,
)
from pretraining.data import PretrainingDataset, batches_per_epoch, examples_per_rank, heldout_split
from pretraining.distributed import DistContext
from pretraining.masking import MaskingConfig, Vocabulary
from pretraining.preflight import check_shard_vocab, choose_vocab
from pretraining.quality import DEFAULT_HELDOUT_FRACTION
from pretraining.shard_index import ShardIndex, find_shards
from utils import load_vocab
from utils import UserError, get_logger

logger = get_logger("pre_training")


@dataclasses.dataclass
class RunPlan:
    shards: ShardIndex
    resume: Checkpoint | None  # the checkpoint to continue from
    restart: bool  # --resume before the first checkpoint: start again from step 0
    final_info: dict | None  # what final/ records, when resuming
    masked_updates: bool
    heldout_fraction: float
    vocab_tokens: list[str]
    vocab_bytes: bytes
    vocab: Vocabulary
    train_indices: object
    heldout_indices: object
    masking: MaskingConfig
    dataset: PretrainingDataset
    batches_per_epoch: int
    steps_per_epoch: int
    total_steps: int
    num_epochs: int
    warmup_steps: int
    already_finished: bool  # final/ holds this run's last step: nothing to do


def plan_run(args, ctx: DistContext, output_dir: str, use_mlm: bool) -> RunPlan:
    """The invocation's plan (see the module doc); one-line errors for what cannot be continued."""
    shards = ShardIndex(find_shards(args.pregenerated_data))  # before the vocab: names the shards
    resume, restart = None, False
    final_info = read_final_info(output_dir) if args.resume else None
    if args.resume:
        resume = newest_intact_checkpoint(output_dir, warn=ctx.is_main)
        restart = resume is None
    elif has_run(output_dir) and not args.overwrite_output_dir:
        raise UserError(f"--output_dir: {output_dir} already holds a run; pass --resume to continue it "
                        "or --overwrite_output_dir to start over")
    masked, fraction = resume_settings(args, ctx, resume.info if resume else None)

    vocab_file = choose_vocab(args, resume.path if resume else None)
    vocab_tokens = load_vocab(vocab_file)
    with open(vocab_file, "rb") as handle:
        vocab_bytes = handle.read()
    vocab = Vocabulary.from_tokens(vocab_tokens)
    check_shard_vocab(args, vocab_tokens)
    train_indices, heldout_indices = heldout_split(shards, fraction)
    if len(train_indices) == 0:
        raise UserError(f"--heldout_fraction {fraction} leaves no training sequence (of {len(shards)})")
    prob = args.masked_lm_prob if args.masked_lm_prob is not None else (0.15 if use_mlm else 0.0)
    masking = MaskingConfig(prob=prob, max_predictions=args.max_predictions_per_seq)
    dataset = PretrainingDataset(shards, vocab, args.max_seq_length, masking, args.seed, indices=train_indices)
    per_epoch = batches_per_epoch(examples_per_rank(len(dataset), ctx.world_size), args.train_batch_size)
    steps_per_epoch = math.ceil(per_epoch / args.gradient_accumulation_steps)
    if args.max_steps > 0:
        total_steps, num_epochs = args.max_steps, math.ceil(args.max_steps / steps_per_epoch)
    else:
        total_steps, num_epochs = args.num_train_epochs * steps_per_epoch, args.num_train_epochs
    warmup = args.warmup_steps if args.warmup_steps is not None else int(args.warmup_proportion * total_steps)

    already_finished = bool(final_info and int(final_info.get("global_step", -1)) == total_steps
                            and (resume is None or resume.global_step <= total_steps))
    if restart and not already_finished and os.path.isdir(os.path.join(output_dir, FINAL_DIR)):
        raise UserError(f"--resume: {os.path.join(output_dir, FINAL_DIR)} holds a finished supernet of "
                        f"{(final_info or {}).get('global_step', 'an unknown number of')} steps (this run: "
                        f"{total_steps}) and no checkpoint to continue from; pass --overwrite_output_dir "
                        "to start over")
    return RunPlan(shards, resume, restart, final_info, masked, fraction, vocab_tokens, vocab_bytes, vocab,
                   train_indices, heldout_indices, masking, dataset, per_epoch, steps_per_epoch, total_steps,
                   num_epochs, min(warmup, total_steps), already_finished)


def resume_settings(args, ctx: DistContext, info: dict | None) -> tuple[bool, float]:
    """``(masked updates, held-out fraction)``: the flags, else the checkpoint's, else the defaults."""
    if info is None:
        masked = True if args.masked_updates is None else args.masked_updates
        fraction = DEFAULT_HELDOUT_FRACTION if args.heldout_fraction is None else args.heldout_fraction
        return masked, fraction
    # Checkpoints made before these settings existed: dense AdamW, no held-out lines.
    recorded_masked = bool(info.get("masked_updates", False))
    recorded_fraction = float(info.get("heldout_fraction", 0.0))
    fraction = recorded_fraction if args.heldout_fraction is None else args.heldout_fraction
    if fraction != recorded_fraction:
        raise UserError(f"--heldout_fraction {fraction}: the checkpoint was trained with {recorded_fraction}; "
                        "another split would train on held-out lines (omit the flag to keep the checkpoint's)")
    masked = recorded_masked if args.masked_updates is None else args.masked_updates
    if recorded_masked and not masked:
        raise UserError("--no_masked_updates: the checkpoint was trained with masked updates (per-entry optimizer "
                        "state); continue it with --masked_updates")
    if masked and not recorded_masked and ctx.is_main:
        logger.warning("--masked_updates: the checkpoint was trained with plain AdamW; every entry starts with "
                       "its tensor's step count")
    return masked, fraction


def restore_position(trainer, checkpoint: Checkpoint) -> None:
    """Continue ``trainer`` from ``checkpoint``: optimizer, scheduler, scaler and RNG state, and the
    position (mapped by examples consumed when the layout changed)."""
    info, state = checkpoint.info, checkpoint.state
    trainer.optimizer.load_state_dict(state["optimizer"])
    trainer.scheduler.load_state_dict(state["scheduler"])
    if trainer.scaler is not None and state.get("scaler"):
        trainer.scaler.load_state_dict(state["scaler"])
    rng_states = state.get("rng") or []
    if len(rng_states) == trainer.ctx.world_size:
        restore_rng(rng_states[trainer.ctx.rank])
    else:
        logger.warning("the checkpoint holds RNG state for %d rank(s), this run has %d: dropout is reseeded",
                       len(rng_states), trainer.ctx.world_size)
    trainer.global_step, trainer.epoch, trainer.step_in_epoch = (int(info["global_step"]), int(info["epoch"]),
                                                        int(info["step_in_epoch"]))
    same_layout = all(info.get(key) == value for key, value in (
        ("world_size", trainer.ctx.world_size), ("train_batch_size", trainer.args.train_batch_size),
        ("gradient_accumulation_steps", trainer.args.gradient_accumulation_steps), ("seed", trainer.args.seed),
        ("num_examples", len(trainer.dataset))))
    if not same_layout:
        # Map the position by examples consumed; the batch order is exact only with the same layout.
        consumed = (trainer.step_in_epoch * info.get("gradient_accumulation_steps", 1)
                    * info.get("train_batch_size", 1) * info.get("world_size", 1))
        per_step = trainer.args.gradient_accumulation_steps * trainer.args.train_batch_size * trainer.ctx.world_size
        trainer.step_in_epoch = min(trainer.steps_per_epoch, consumed // per_step)
        logger.warning("resuming with a different world size / batch size / accumulation / seed / data than "
                       "the checkpoint: continuing at step %d of epoch %d, not bit-identical",
                       trainer.step_in_epoch, trainer.epoch)
    if trainer.step_in_epoch >= trainer.steps_per_epoch:
        trainer.epoch, trainer.step_in_epoch = trainer.epoch + 1, 0
    if trainer.ctx.is_main:
        kept = truncate_loss_log(trainer.log_path, trainer.global_step)
        logger.info("resumed from %s at step %d (epoch %d, step %d in it); loss log keeps %d rows",
                    checkpoint.path, trainer.global_step, trainer.epoch, trainer.step_in_epoch, kept)
    trainer.last_checkpoint, trainer.saved_step = checkpoint.path, trainer.global_step
