"""The supernet pre-training loop: MLM and/or KD, one or more sampled archs per step, resumable,
single process or DistributedDataParallel under torchrun.

One optimizer step = ``gradient_accumulation_steps`` micro-batches x the step's archs
(``archs_for_step``). The loss is *token-weighted over the whole step*: every part (MLM, KD
attention, KD hidden) is its sum over all masked tokens / real tokens of every micro-batch on every
rank, divided by the step's total count (all-reduced before the first backward), averaged over the
archs. So 2 ranks x batch 4, 1 process x batch 4 x 2 accumulation steps and 1 process x batch 8
compute the same loss and gradient (up to float rounding and dropout, whose masks differ by rank).
DDP averages gradients over ranks, so each rank scales its part by the world size.

Updates (``--masked_updates``, the default): ``pretraining.sliced_updates.SlicedAdamW`` updates only
the entries that the step's archs read; every other entry and its optimizer state stay bit for bit.
``--no_masked_updates`` is plain ``torch.optim.AdamW`` (entries outside the sampled slices get a
zero gradient and still move: stale momentum and weight decay).

DDP and the elastic supernet: a sampled arch leaves layers beyond its depth, the pooler, and the
MLM head or KD projection (whichever objective is off) without gradient. DDP is built with
``find_unused_parameters=True``, which marks those as ready instead of waiting for them; DDP's
reducer remembers which parameters any ``no_sync`` pass used, so gradients from an earlier,
deeper arch of the same step are still averaged. Every rank trains the same archs, so the
unused set is the same everywhere.

Resuming (``--resume``): the newest intact checkpoint (an unreadable one is skipped with a
warning); before the first checkpoint, a clean restart from step 0 (the same run as an
uninterrupted one); a run whose ``final/`` already holds the last step does nothing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import time

import torch
import torch.nn.functional as F
from torch import nn
from transformers import get_linear_schedule_with_warmup

from pretraining.checkpointing import (
    FINAL_DIR,
    LOSS_LOG,
    LOSS_PLOT,
    QUALITY_JSON,
    Checkpoint,
    capture_rng,
    has_run,
    newest_intact_checkpoint,
    plot_loss_curve,
    prune_step_checkpoints,
    read_final_info,
    remove_run,
    remove_stale_staging,
    restore_rng,
    save_checkpoint,
    save_final,
    supernet_extra_files,
    truncate_loss_log,
)
from pretraining.data import (
    PretrainingDataset,
    RankBatches,
    batches_per_epoch,
    examples_per_rank,
    heldout_split,
    make_loader,
)
from pretraining.distributed import DistContext, init_distributed
from pretraining.losses import kd_counts, kd_loss_sums
from pretraining.masking import MaskingConfig, Vocabulary
from pretraining.models import (
    CONFIG_FLAGS,
    archs_for_step,
    build_student,
    check_space_fits,
    load_teacher,
    parse_config_overrides,
    teacher_width,
)
from pretraining.quality import DEFAULT_HELDOUT_FRACTION, heldout_batches, quality_report, write_report
from pretraining.shards import MANIFEST_NAME, VOCAB_NAME, ShardIndex, find_shards, load_vocab, resolve_vocab
from pretraining.sliced_updates import SlicedAdamW, check_known_parameters, step_regions
from transformer.checkpoint import load_supernet, vocab_path
from utils import (
    SearchSpace,
    UserError,
    append_jsonl,
    arch_summary,
    atomic_write,
    get_logger,
    get_space,
    output_lock,
    recorded_roles,
    set_seed,
    space_from_args,
)

logger = get_logger("pre_training")

LOSS_KEYS = ("mlm_loss", "kd_att_loss", "kd_rep_loss")


@dataclasses.dataclass
class TrainResult:
    model: nn.Module
    global_step: int
    finished: bool  # False when --stop_after_steps ended the invocation early
    last_checkpoint: str | None


class PreTrainingStep(nn.Module):
    """The student's loss *sums* for one batch and the active arch (what DDP wraps): the MLM
    cross-entropy summed over masked tokens, the KD squared differences summed over real
    (query, key) pairs / real tokens. The loop divides them by the step's counts."""

    def __init__(self, student: nn.Module, mlm: bool, kd: bool):
        super().__init__()
        self.student, self.mlm, self.kd = student, mlm, kd

    def forward(self, batch: dict, teacher_hidden=None, teacher_scores=None) -> dict:
        labels = batch["labels"]
        out = self.student(batch["input_ids"], attention_mask=batch["attention_mask"],
                           token_type_ids=batch["token_type_ids"], labels=labels if self.mlm else None,
                           mlm=self.mlm, kd=self.kd)
        sums = {}
        if self.mlm:  # mlm_logits are the masked positions' (labels >= 0), in order
            sums["mlm_loss"] = F.cross_entropy(out.mlm_logits.float(), labels[labels >= 0], reduction="sum")
        if self.kd:
            sums["kd_att_loss"], sums["kd_rep_loss"] = kd_loss_sums(
                out.kd_scores, teacher_scores, out.kd_hidden, teacher_hidden, batch["attention_mask"])
        return sums


def part_counts(batch: dict, parts: tuple[str, ...], kd_heads: int = 0, kd_width: int = 0) -> list[float]:
    """The number of terms each loss part of ``PreTrainingStep`` sums over in ``batch``."""
    counts = []
    att, rep = kd_counts(batch["attention_mask"], kd_heads, kd_width) if "kd_att_loss" in parts else (0.0, 0.0)
    for part in parts:
        counts.append({"mlm_loss": lambda: float((batch["labels"] >= 0).sum()), "kd_att_loss": lambda: att,
                       "kd_rep_loss": lambda: rep}[part]())
    return counts


def teacher_outputs(teacher: nn.Module, batch: dict):
    """The teacher's last hidden state and last-layer pre-softmax scores (no gradient)."""
    with torch.no_grad():
        out = teacher.bert(batch["input_ids"], attention_mask=batch["attention_mask"],
                           token_type_ids=batch["token_type_ids"], return_last_scores=True)
    return out.last_hidden_state, out.last_attention_scores


def _decay_split(model: nn.Module) -> tuple[list[str], list[str]]:
    """Names of the trainable parameters with and without weight decay (none on biases and
    LayerNorm parameters: the original's rule), in the optimizer's order."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (no_decay if name.endswith("bias") or "LayerNorm" in name else decay).append(name)
    return decay, no_decay


def optimizer_parameter_names(model: nn.Module) -> list[str]:
    """Parameter name of each index of the optimizer's state dict (``make_optimizer``'s order)."""
    decay, no_decay = _decay_split(model)
    return decay + no_decay


def make_optimizer(model: nn.Module, args, masked: bool = False) -> torch.optim.Optimizer:
    """AdamW with decoupled weight decay except on biases and LayerNorm parameters.
    ``masked``: ``SlicedAdamW`` (only the sampled slices move; see ``pretraining.sliced_updates``)."""
    params = dict(model.named_parameters())
    decay, no_decay = _decay_split(model)
    groups = [{"params": [params[name] for name in decay], "weight_decay": args.weight_decay},
              {"params": [params[name] for name in no_decay], "weight_decay": 0.0}]
    if masked:
        return SlicedAdamW(groups, lr=args.learning_rate, eps=args.adam_epsilon, betas=(0.9, 0.999))
    return torch.optim.AdamW(groups, lr=args.learning_rate, eps=args.adam_epsilon, betas=(0.9, 0.999))


def amp_settings(precision: str, device: torch.device) -> tuple[bool, torch.dtype | None, bool]:
    """``(autocast on, autocast dtype, use a GradScaler)`` for ``--precision``."""
    if precision == "auto":
        precision = "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"
    if precision == "fp32":
        return False, None, False
    if precision == "bf16":
        return True, torch.bfloat16, False
    if precision == "fp16":
        if device.type != "cuda":
            raise UserError("--precision fp16 needs a GPU; use bf16 or fp32 on CPU")
        return True, torch.float16, True
    raise UserError(f"--precision: expected auto, fp32, bf16 or fp16, got {precision!r}")


def _validate(args) -> None:
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


def _choose_vocab(args, resume_dir: str | None) -> str:
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


def _shard_manifest(args) -> dict:
    manifest = os.path.join(args.pregenerated_data, MANIFEST_NAME)
    if not os.path.isfile(manifest):
        return {}
    try:
        with open(manifest, encoding="utf-8") as handle:
            return json.load(handle)
    except json.JSONDecodeError as err:
        raise UserError(f"{manifest}: not valid JSON ({err.msg})") from None


def _check_shard_vocab(args, vocab_tokens) -> None:
    shard_vocab = os.path.join(args.pregenerated_data, VOCAB_NAME)
    if os.path.isfile(shard_vocab) and tuple(load_vocab(shard_vocab)) != tuple(vocab_tokens):
        raise UserError(f"--pregenerated_data: the shards were tokenised with {shard_vocab}, which differs from "
                        "the model's vocab; token ids would not match")
    longest = _shard_manifest(args).get("max_tokens_per_sequence", 0)
    if longest > args.max_seq_length - 2:
        logger.warning("the shards hold sequences of up to %d tokens; --max_seq_length %d truncates them to %d",
                       longest, args.max_seq_length, args.max_seq_length - 2)


def _resolve_quality_space(args, space: SearchSpace) -> SearchSpace:
    """The space of the quality ladder: --quality_space, else the search space matching the sampler
    space, else (custom spaces) the sampler space itself."""
    if args.quality_space:
        return get_space(args.quality_space)
    search = recorded_roles(args.space, "supernet", space).get("search")
    return search if search is not None else space


class Trainer:
    """State and steps of one pre-training invocation (built by ``train``)."""

    def __init__(self, args, ctx: DistContext):
        self.args, self.ctx = args, ctx
        self.space = space_from_args(args)
        self.quality_space = _resolve_quality_space(args, self.space)
        self.output_dir = args.output_dir
        self.log_path = os.path.join(self.output_dir, LOSS_LOG)
        self.use_mlm, self.use_kd = bool(args.mlm), bool(args.teacher_model)
        self.shards = ShardIndex(find_shards(args.pregenerated_data))  # before the vocab: names the shards

        resume: Checkpoint | None = None
        self.restart = False  # --resume before the first checkpoint: start again from step 0
        final_info = read_final_info(self.output_dir) if args.resume else None
        if args.resume:
            resume = newest_intact_checkpoint(self.output_dir, warn=ctx.is_main)
            self.restart = resume is None
        elif has_run(self.output_dir) and not args.overwrite_output_dir:
            raise UserError(f"--output_dir: {self.output_dir} already holds a run; pass --resume to continue it "
                            "or --overwrite_output_dir to start over")
        self.masked_updates, self.heldout_fraction = self._resume_settings(resume.info if resume else None)

        vocab_file = _choose_vocab(args, resume.path if resume else None)
        vocab_tokens = load_vocab(vocab_file)
        with open(vocab_file, "rb") as handle:
            vocab_bytes = handle.read()
        self.vocab = Vocabulary.from_tokens(vocab_tokens)
        _check_shard_vocab(args, vocab_tokens)
        self.train_indices, self.heldout_indices = heldout_split(self.shards, self.heldout_fraction)
        if len(self.train_indices) == 0:
            raise UserError(f"--heldout_fraction {self.heldout_fraction} leaves no training sequence "
                            f"(of {len(self.shards)})")

        prob = args.masked_lm_prob if args.masked_lm_prob is not None else (0.15 if self.use_mlm else 0.0)
        self.masking = MaskingConfig(prob=prob, max_predictions=args.max_predictions_per_seq)
        self.dataset = PretrainingDataset(self.shards, self.vocab, args.max_seq_length, self.masking, args.seed,
                                          indices=self.train_indices)
        per_rank = examples_per_rank(len(self.dataset), ctx.world_size)
        self.batches_per_epoch = batches_per_epoch(per_rank, args.train_batch_size)
        self.steps_per_epoch = math.ceil(self.batches_per_epoch / args.gradient_accumulation_steps)
        if args.max_steps > 0:
            self.total_steps = args.max_steps
            self.num_epochs = math.ceil(args.max_steps / self.steps_per_epoch)
        else:
            self.total_steps = args.num_train_epochs * self.steps_per_epoch
            self.num_epochs = args.num_train_epochs
        warmup = args.warmup_steps if args.warmup_steps is not None else int(args.warmup_proportion * self.total_steps)
        self.warmup_steps = min(warmup, self.total_steps)

        # A finished run (final/ holds this run's last step) has nothing to do.
        self.already_finished = bool(final_info and int(final_info.get("global_step", -1)) == self.total_steps
                                     and (resume is None or resume.global_step <= self.total_steps))
        if self.restart and not self.already_finished and os.path.isdir(os.path.join(self.output_dir, FINAL_DIR)):
            raise UserError(f"--resume: {os.path.join(self.output_dir, FINAL_DIR)} holds a finished supernet of "
                            f"{(final_info or {}).get('global_step', 'an unknown number of')} steps (this run: "
                            f"{self.total_steps}) and no checkpoint to continue from; pass --overwrite_output_dir "
                            "to start over")

        set_seed(args.seed)  # identical initialisation on every rank
        kd_width = teacher_width(args.teacher_model) if self.use_kd else None
        overrides = parse_config_overrides(args.supernet_config, {flag: getattr(args, flag) for flag in CONFIG_FLAGS})
        if self.already_finished:
            self.model = load_supernet(os.path.join(self.output_dir, FINAL_DIR))
        elif resume:
            self.model = resume.model
        else:
            self.model = build_student(self.space, len(self.vocab), args.student_model, overrides,
                                       args.max_seq_length, kd_width)
        check_space_fits(self.space, self.model.config)
        check_space_fits(self.quality_space, self.model.config, flag="--quality_space")
        if kd_width is not None and kd_width != self.model.config.kd_hidden_size:
            raise UserError(f"--teacher_model width {kd_width} does not fit the checkpoint's KD projection "
                            f"({self.model.config.kd_hidden_size})")
        if self.masked_updates:
            check_known_parameters(self.model)
        self.model.to(ctx.device)
        self.teacher = None
        if self.use_kd:
            self.teacher = load_teacher(args.teacher_model, self.model, self.space, args.max_seq_length,
                                        vocab_tokens).to(ctx.device)
        self.kd_heads = self.teacher.config.num_attention_heads if self.teacher is not None else 0
        self.kd_width = self.model.config.kd_hidden_size
        self.fixed_arch = self.model.config.largest_arch() if args.further_train else None
        torch.manual_seed(args.seed + 1000003 * ctx.rank)  # dropout differs across ranks

        self.amp, self.amp_dtype, use_scaler = amp_settings(args.precision, ctx.device)
        self.optimizer = make_optimizer(self.model, args, masked=self.masked_updates)
        self.params_by_name = dict(self.model.named_parameters())
        self.scheduler = get_linear_schedule_with_warmup(self.optimizer, self.warmup_steps, self.total_steps)
        self.scaler = torch.amp.GradScaler("cuda") if use_scaler else None
        step_module = PreTrainingStep(self.model, self.use_mlm, self.use_kd)
        if ctx.enabled:
            from torch.nn.parallel import DistributedDataParallel

            self.step_module = DistributedDataParallel(
                step_module, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None,
                find_unused_parameters=True)
        else:
            self.step_module = step_module

        self.global_step, self.epoch, self.step_in_epoch = 0, 0, 0
        self.last_checkpoint, self.saved_step = None, None
        if self.already_finished:
            self.global_step = self.total_steps
            self.epoch, self.step_in_epoch = int(final_info.get("epoch", 0)), int(final_info.get("step_in_epoch", 0))
        elif resume:
            self._resume(resume)
        elif ctx.is_main:
            if self.restart and has_run(self.output_dir):
                logger.warning("--resume: %s holds no checkpoint yet (interrupted before the first save); "
                               "starting again from step 0", self.output_dir)
            remove_run(self.output_dir)  # --overwrite_output_dir, or the restart (has_run was checked above)
        if ctx.is_main:
            # Checkpoints copy the vocab from OUTPUT_DIR/vocab.txt: the source may be a step
            # checkpoint that pruning deletes later.
            with atomic_write(os.path.join(self.output_dir, VOCAB_NAME), "wb") as handle:
                handle.write(vocab_bytes)
        ctx.barrier()
        self.vocab_file = os.path.join(self.output_dir, VOCAB_NAME)

    # ----- resume
    def _resume_settings(self, info: dict | None) -> tuple[bool, float]:
        """``(masked updates, held-out fraction)``: the flags, else the checkpoint's, else the defaults."""
        args = self.args
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
        if masked and not recorded_masked and self.ctx.is_main:
            logger.warning("--masked_updates: the checkpoint was trained with plain AdamW; every entry starts with "
                           "its tensor's step count")
        return masked, fraction

    def _position_info(self) -> dict:
        return {"global_step": self.global_step, "epoch": self.epoch, "step_in_epoch": self.step_in_epoch,
                "world_size": self.ctx.world_size, "train_batch_size": self.args.train_batch_size,
                "gradient_accumulation_steps": self.args.gradient_accumulation_steps, "seed": self.args.seed,
                "num_examples": len(self.dataset), "total_steps": self.total_steps,
                "masked_updates": self.masked_updates, "heldout_fraction": self.heldout_fraction}

    def _data_split(self) -> dict:
        return {"heldout_fraction": self.heldout_fraction, "rule": "pretraining.data.heldout_split",
                "sequences": len(self.shards), "heldout_sequences": int(len(self.heldout_indices)),
                "shards_fingerprint": _shard_manifest(self.args).get("fingerprint"), "space": self.space.name}

    def _resume(self, checkpoint: Checkpoint) -> None:
        info, state = checkpoint.info, checkpoint.state
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        rng_states = state.get("rng") or []
        if len(rng_states) == self.ctx.world_size:
            restore_rng(rng_states[self.ctx.rank])
        else:
            logger.warning("the checkpoint holds RNG state for %d rank(s), this run has %d: dropout is reseeded",
                           len(rng_states), self.ctx.world_size)
        self.global_step, self.epoch, self.step_in_epoch = (int(info["global_step"]), int(info["epoch"]),
                                                            int(info["step_in_epoch"]))
        same_layout = all(info.get(key) == value for key, value in (
            ("world_size", self.ctx.world_size), ("train_batch_size", self.args.train_batch_size),
            ("gradient_accumulation_steps", self.args.gradient_accumulation_steps), ("seed", self.args.seed),
            ("num_examples", len(self.dataset))))
        if not same_layout:
            # Map the position by examples consumed; the batch order is exact only with the same layout.
            consumed = (self.step_in_epoch * info.get("gradient_accumulation_steps", 1)
                        * info.get("train_batch_size", 1) * info.get("world_size", 1))
            per_step = self.args.gradient_accumulation_steps * self.args.train_batch_size * self.ctx.world_size
            self.step_in_epoch = min(self.steps_per_epoch, consumed // per_step)
            logger.warning("resuming with a different world size / batch size / accumulation / seed / data than "
                           "the checkpoint: continuing at step %d of epoch %d, not bit-identical",
                           self.step_in_epoch, self.epoch)
        if self.step_in_epoch >= self.steps_per_epoch:
            self.epoch, self.step_in_epoch = self.epoch + 1, 0
        if self.ctx.is_main:
            kept = truncate_loss_log(self.log_path, self.global_step)
            logger.info("resumed from %s at step %d (epoch %d, step %d in it); loss log keeps %d rows",
                        checkpoint.path, self.global_step, self.epoch, self.step_in_epoch, kept)
        self.last_checkpoint, self.saved_step = checkpoint.path, self.global_step

    # ----- checkpoints
    def _extra_files(self) -> dict[str, bytes]:
        return supernet_extra_files(recorded_roles(self.args.space, "supernet", self.space), self._data_split())

    def save(self, name: str) -> str:
        """Every rank calls (RNG states are gathered); rank 0 writes."""
        rng_states = self.ctx.gather(capture_rng())
        path = os.path.join(self.output_dir, name)
        if self.ctx.is_main:
            state = {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                     "scaler": self.scaler.state_dict() if self.scaler is not None else {}, "rng": rng_states}
            save_checkpoint(path, self.model, self.vocab_file, state, self._trainer_info(), self._extra_files())
            prune_step_checkpoints(self.output_dir, self.args.save_total_limit)
            logger.info("saved %s", path)
        self.ctx.barrier()
        self.last_checkpoint, self.saved_step = path, self.global_step
        return path

    def _trainer_info(self) -> dict:
        info = self._position_info()
        info["args"] = {key: value for key, value in vars(self.args).items()
                        if isinstance(value, (str, int, float, bool, type(None), list))}
        return info

    # ----- one optimizer step
    def _autocast(self):
        return torch.autocast(self.ctx.device.type, dtype=self.amp_dtype, enabled=self.amp)

    def train_step(self, micro_batches: list[dict], archs: list[dict]) -> dict:
        """Forward/backward every (micro-batch, arch) pair, then one optimizer step.

        Each loss part is divided by its count over the whole step (all micro-batches, all ranks),
        so the gradient is the token-weighted mean however the step's examples are split."""
        device = self.ctx.device
        parts = self._active_parts()
        local = torch.tensor([part_counts(batch, parts, self.kd_heads, self.kd_width) + [float(batch["attention_mask"].sum())]
                              for batch in micro_batches], dtype=torch.float64).sum(dim=0)
        counts = self.ctx.sum(local)  # one all-reduce: the step's totals over every rank
        normalisers = [max(float(count), 1.0) for count in counts[:-1]]
        scale = self.ctx.world_size / len(archs)  # DDP averages the ranks' gradients
        pairs = len(micro_batches) * len(archs)
        totals = torch.zeros(len(parts), dtype=torch.float64, device=device)
        done = 0
        for batch in micro_batches:
            batch = {key: value.to(device, non_blocking=True) for key, value in batch.items()}
            teacher_hidden = teacher_scores = None
            if self.teacher is not None:
                with self._autocast():
                    teacher_hidden, teacher_scores = teacher_outputs(self.teacher, batch)
            for arch in archs:
                self.model.set_sample_config(arch)
                done += 1
                sync = done == pairs or not self.ctx.enabled
                context = contextlib.nullcontext() if sync else self.step_module.no_sync()
                with context:
                    with self._autocast():
                        sums = self.step_module(batch, teacher_hidden, teacher_scores)
                    weighted = [sums[part].float() / normaliser for part, normaliser in zip(parts, normalisers)]
                    loss = sum(weighted) * scale
                    (self.scaler.scale(loss) if self.scaler is not None else loss).backward()
                totals += torch.stack([value.detach().double() for value in weighted]) / len(archs)
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.args.max_grad_norm)
        lr = self.scheduler.get_last_lr()[0]
        if self.masked_updates:
            regions = step_regions(self.model, archs, self.use_mlm, self.use_kd)
            self.optimizer.set_regions({self.params_by_name[name]: region for name, region in regions.items()})
        if self.scaler is not None:
            self.scaler.step(self.optimizer)  # skips the step itself on inf/nan gradients
            self.scaler.update()
        elif torch.isfinite(grad_norm):
            self.optimizer.step()
        else:
            logger.warning("step %d: non-finite gradient norm; update skipped", self.global_step)
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        step_loss = self.ctx.sum(totals)  # the token-weighted loss of the whole step
        record = {part: float(step_loss[i]) for i, part in enumerate(parts)}
        record.update(loss=float(step_loss.sum()), lr=lr, grad_norm=float(grad_norm), tokens=int(counts[-1]))
        return record

    def _active_parts(self) -> tuple[str, ...]:
        return (("mlm_loss",) if self.use_mlm else ()) + (("kd_att_loss", "kd_rep_loss") if self.use_kd else ())

    # ----- the loop
    @property
    def done(self) -> bool:
        return self.global_step >= self.total_steps or self.epoch >= self.num_epochs

    def run(self) -> TrainResult:
        args, ctx, config = self.args, self.ctx, self.model.config
        if self.already_finished:
            if ctx.is_main:
                logger.info("%s already finished (%d steps); nothing to do",
                            os.path.join(self.output_dir, FINAL_DIR), self.global_step)
                if not os.path.isfile(os.path.join(self.output_dir, QUALITY_JSON)):
                    self.write_quality_report()  # the run was stopped after saving final/
            ctx.barrier()
            return TrainResult(self.model, self.global_step, True, None)
        logger.info("rank %d/%d on %s; %d sequences (%d held out), %d steps/epoch, %d steps in total (warm-up %d); "
                    "objectives: %s; %s updates; space %s; supernet L%d/H%d/F%d/Q%d/A%d", ctx.rank, ctx.world_size,
                    ctx.device, len(self.dataset), len(self.heldout_indices), self.steps_per_epoch, self.total_steps,
                    self.warmup_steps, "+".join(self._active_parts()),
                    "masked" if self.masked_updates else "dense (plain AdamW)", self.space.name,
                    config.num_hidden_layers, config.hidden_size, config.intermediate_size, config.qkv_size,
                    config.num_attention_heads)
        self.model.train()
        progress = StepLog(self.log_path, ctx.is_main and not args.no_progress, ctx.is_main, args.logging_steps,
                           self.total_steps, self.global_step)
        steps_this_run = 0
        try:
            while not self.done:
                steps_this_run += self._run_epoch(progress, args.stop_after_steps - steps_this_run
                                                  if args.stop_after_steps else None)
                if args.stop_after_steps and steps_this_run >= args.stop_after_steps:
                    break
            # Stopped mid-epoch by --stop_after_steps: the position goes on disk. A finished run
            # saves its last step only with --save_steps (0: epoch checkpoints and final/ only).
            if self.saved_step != self.global_step and (not self.done or args.save_steps > 0):
                self.save(f"step_{self.global_step}")
        finally:
            progress.close()
        if self.done and ctx.is_main:
            final = os.path.join(self.output_dir, FINAL_DIR)
            save_final(final, self.model, self.vocab_file, self._trainer_info(), self._extra_files())
            plot_loss_curve(self.log_path, os.path.join(self.output_dir, LOSS_PLOT))
            logger.info("done: %d steps; final supernet in %s", self.global_step, final)
            self.write_quality_report()
        elif ctx.is_main:
            logger.info("stopped after %d step(s) (--stop_after_steps) at step %d; continue with --resume",
                        steps_this_run, self.global_step)
        ctx.barrier()
        return TrainResult(self.model, self.global_step, self.done, self.last_checkpoint)

    def write_quality_report(self) -> None:
        """OUTPUT_DIR/subnet_quality.{json,png}: the inherited-weight held-out MLM loss of a ladder
        of the search space's archs (``pretraining.quality``)."""
        args = self.args
        if not args.quality_ladder:
            return
        if len(self.heldout_indices) == 0:
            logger.info("no held-out sequences (--heldout_fraction %g): no subnet quality report",
                        self.heldout_fraction)
            return
        batches = heldout_batches(self.shards, self.heldout_indices[: args.quality_sequences], self.vocab,
                                  args.max_seq_length, args.train_batch_size)
        info = {"supernet": os.path.abspath(os.path.join(self.output_dir, FINAL_DIR)),
                "shards": os.path.abspath(args.pregenerated_data), "heldout_fraction": self.heldout_fraction,
                "max_seq_length": args.max_seq_length, "mask_seed": 0, "masked_updates": self.masked_updates,
                "global_step": self.global_step}
        report = quality_report(self.model, self.quality_space, args.quality_ladder, batches, self.ctx.device,
                                info=info)
        write_report(self.output_dir, report)

    def _run_epoch(self, progress: "StepLog", max_steps: int | None) -> int:
        """Train from the current position to the end of the epoch (or the run, or ``max_steps``
        steps); save at ``--save_steps`` and at the epoch's end. Returns the steps taken."""
        args, ctx = self.args, self.ctx
        accumulation = args.gradient_accumulation_steps
        batches = RankBatches(len(self.dataset), args.train_batch_size, ctx.world_size, ctx.rank, args.seed,
                              self.epoch, skip_batches=self.step_in_epoch * accumulation)
        iterator = iter(make_loader(self.dataset, batches, args.num_workers))
        taken = 0
        while self.step_in_epoch < self.steps_per_epoch and self.global_step < self.total_steps:
            remaining = self.batches_per_epoch - self.step_in_epoch * accumulation  # the last step may be short
            micro = [next(iterator) for _ in range(min(accumulation, remaining))]
            archs = archs_for_step(self.space, args.seed, self.global_step, args.sample_times_per_batch,
                                   args.sandwich, self.fixed_arch)
            started = time.perf_counter()
            record = self.train_step(micro, archs)
            self.global_step += 1
            self.step_in_epoch += 1
            taken += 1
            record.update(step=self.global_step, epoch=self.epoch, archs=[arch_summary(arch) for arch in archs],
                          seconds=round(time.perf_counter() - started, 4))
            progress.add(record)
            if self.step_in_epoch >= self.steps_per_epoch:
                self.epoch, self.step_in_epoch = self.epoch + 1, 0
                self.save(f"epoch_{self.epoch - 1}")
                break  # a new epoch needs a new batch order
            if args.save_steps and self.global_step % args.save_steps == 0:
                self.save(f"step_{self.global_step}")
            if max_steps is not None and taken >= max_steps:
                break
        return taken


class StepLog:
    """Per-step rows of ``loss_log.jsonl`` (rank 0), the progress bar and the summary line."""

    def __init__(self, path: str, show_bar: bool, write: bool, every: int, total: int, initial: int):
        from utils.progress import progress

        self.path, self.write, self.every = path, write, every
        # off a terminal the bar is silent: the summary line below every ``every`` steps is the log's progress
        self.bar = progress(total=total, initial=initial, desc="pre-training", unit="step", enabled=show_bar, every=0)
        self._reset()

    def _reset(self) -> None:
        self.loss, self.tokens, self.steps, self.started = 0.0, 0, 0, time.perf_counter()

    def add(self, record: dict) -> None:
        if self.write:
            append_jsonl(self.path, record)
        self.bar.update(1)
        self.bar.set_postfix(loss=f"{record['loss']:.4f}", refresh=False)
        self.loss += record["loss"]
        self.tokens += record["tokens"]
        self.steps += 1
        if record["step"] % self.every == 0:
            elapsed = max(time.perf_counter() - self.started, 1e-9)
            logger.info("step %d/%d  epoch %d  loss %.4f  lr %.3g  %.0f tokens/s", record["step"], self.bar.total,
                        record["epoch"], self.loss / self.steps, record["lr"], self.tokens / elapsed)
            self._reset()

    def close(self) -> None:
        self.bar.close()


@contextlib.contextmanager
def _main_rank_lock(ctx: DistContext, output_dir: str):
    """Rank 0 holds ``utils.output_lock(output_dir)`` for the whole run and clears what killed
    saves left behind; when the lock is taken, every rank stops with the same one-line error."""
    with contextlib.ExitStack() as stack:
        error = None
        if ctx.is_main:
            try:
                stack.enter_context(output_lock(output_dir, "pre-training output directory (--output_dir)"))
                remove_stale_staging(output_dir)
            except UserError as err:
                error = str(err)
        errors = ctx.gather(error)
        if errors[0] is not None:
            raise UserError(errors[0])
        yield


def train(args) -> TrainResult:
    """Run (or resume) pre-training as ``args`` (``pre_training.build_parser``) describe."""
    _validate(args)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    ctx = init_distributed(args.device)
    try:
        with _main_rank_lock(ctx, args.output_dir):
            return Trainer(args, ctx).run()
    finally:
        ctx.close()
