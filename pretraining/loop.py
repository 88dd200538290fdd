"""The supernet pre-training loop: MLM and/or KD, one or more sampled archs per step, resumable,
single process or DistributedDataParallel under torchrun.

One optimizer step = ``gradient_accumulation_steps`` micro-batches x the step's archs
(``archs_for_step``); every (micro-batch, arch) pair adds ``loss / (micro-batches x archs)`` to the
gradients, which DDP averages over ranks once per step (``no_sync`` before the last pair).

DDP and the elastic supernet: a sampled arch leaves layers beyond its depth, the pooler, and the
MLM head or KD projection (whichever objective is off) without gradient. DDP is built with
``find_unused_parameters=True``, which marks those as ready instead of waiting for them; DDP's
reducer remembers which parameters any ``no_sync`` pass used, so gradients from an earlier,
deeper arch of the same step are still averaged. Every rank trains the same archs, so the
unused set is the same everywhere. Parameters without gradient are skipped by AdamW.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import time

import torch
from torch import nn

from pretraining.checkpointing import (
    FINAL_DIR,
    LOSS_LOG,
    LOSS_PLOT,
    capture_rng,
    has_run,
    latest_checkpoint,
    load_training_state,
    plot_loss_curve,
    prune_step_checkpoints,
    read_trainer_info,
    remove_run,
    restore_rng,
    save_checkpoint,
    truncate_loss_log,
)
from pretraining.data import PretrainingDataset, RankBatches, batches_per_epoch, examples_per_rank, make_loader
from pretraining.distributed import DistContext, init_distributed
from pretraining.losses import kd_losses
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
from pretraining.shards import MANIFEST_NAME, VOCAB_NAME, ShardIndex, find_shards, load_vocab, resolve_vocab
from transformer.checkpoint import load_supernet, save_supernet, vocab_path
from utils import UserError, append_jsonl, arch_summary, atomic_write, get_logger, set_seed, space_from_args

logger = get_logger("pre_training")

LOSS_KEYS = ("mlm_loss", "kd_att_loss", "kd_rep_loss")


@dataclasses.dataclass
class TrainResult:
    model: nn.Module
    global_step: int
    finished: bool  # False when --stop_after_steps ended the invocation early
    last_checkpoint: str | None


class PreTrainingStep(nn.Module):
    """The student's loss for one batch and the active arch: what DDP wraps."""

    def __init__(self, student: nn.Module, mlm: bool, kd: bool):
        super().__init__()
        self.student, self.mlm, self.kd = student, mlm, kd

    def forward(self, batch: dict, teacher_hidden=None, teacher_scores=None):
        out = self.student(batch["input_ids"], attention_mask=batch["attention_mask"],
                           token_type_ids=batch["token_type_ids"], labels=batch["labels"] if self.mlm else None,
                           mlm=self.mlm, kd=self.kd)
        parts = {}
        if self.mlm:
            parts["mlm_loss"] = out.loss
        if self.kd:
            parts["kd_att_loss"], parts["kd_rep_loss"] = kd_losses(
                out.kd_scores, teacher_scores, out.kd_hidden, teacher_hidden, batch["attention_mask"])
        return sum(parts.values()), parts


def teacher_outputs(teacher: nn.Module, batch: dict):
    """The teacher's last hidden state and last-layer pre-softmax scores (no gradient)."""
    with torch.no_grad():
        out = teacher.bert(batch["input_ids"], attention_mask=batch["attention_mask"],
                           token_type_ids=batch["token_type_ids"], return_last_scores=True)
    return out.last_hidden_state, out.last_attention_scores


def linear_warmup_decay(warmup_steps: int, total_steps: int):
    """lr factor: linear 0 -> 1 over the warm-up, then linear 1 -> 0 at ``total_steps``."""
    def factor(step: int) -> float:
        if step < warmup_steps:
            return step / max(1, warmup_steps)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))
    return factor


def make_optimizer(model: nn.Module, args) -> torch.optim.Optimizer:
    """AdamW; no weight decay on biases and LayerNorm parameters (the original's rule)."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (no_decay if name.endswith("bias") or "LayerNorm" in name else decay).append(param)
    groups = [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
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
    if not args.mlm and not args.teacher_model:
        raise UserError("nothing to train: pass --mlm and/or --teacher_model DIR (knowledge distillation)")
    for flag, value, low in (("--train_batch_size", args.train_batch_size, 1),
                             ("--gradient_accumulation_steps", args.gradient_accumulation_steps, 1),
                             ("--num_train_epochs", args.num_train_epochs, 1),
                             ("--sample_times_per_batch", args.sample_times_per_batch, 1),
                             ("--max_seq_length", args.max_seq_length, 5), ("--num_workers", args.num_workers, 0),
                             ("--logging_steps", args.logging_steps, 1), ("--save_steps", args.save_steps, 0)):
        if value < low:
            raise UserError(f"{flag} must be at least {low}, got {value}")
    if args.masked_lm_prob is not None and not 0.0 <= args.masked_lm_prob <= 1.0:
        raise UserError(f"--masked_lm_prob must be in [0, 1], got {args.masked_lm_prob}")
    if args.precision == "fp16" and (args.device == "cpu" or (args.device == "auto" and not torch.cuda.is_available())):
        raise UserError("--precision fp16 needs a GPU; use bf16 or fp32 on CPU")
    if args.mlm and args.masked_lm_prob == 0:
        raise UserError("--mlm with --masked_lm_prob 0 has nothing to predict")


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
    raise UserError("no vocabulary: pass --vocab (vocab.txt or a BERT dir); neither the model nor the shards hold one")


def _check_shard_vocab(args, vocab_tokens) -> None:
    shard_vocab = os.path.join(args.pregenerated_data, VOCAB_NAME)
    if os.path.isfile(shard_vocab) and tuple(load_vocab(shard_vocab)) != tuple(vocab_tokens):
        raise UserError(f"--pregenerated_data: the shards were tokenised with {shard_vocab}, which differs from "
                        "the model's vocab; token ids would not match")
    manifest = os.path.join(args.pregenerated_data, MANIFEST_NAME)
    if os.path.isfile(manifest):
        with open(manifest, encoding="utf-8") as handle:
            longest = json.load(handle).get("max_tokens_per_sequence", 0)
        if longest > args.max_seq_length - 2:
            logger.warning("the shards hold sequences of up to %d tokens; --max_seq_length %d truncates them to %d",
                           longest, args.max_seq_length, args.max_seq_length - 2)


class Trainer:
    """State and steps of one pre-training invocation (built by ``train``)."""

    def __init__(self, args, ctx: DistContext):
        self.args, self.ctx = args, ctx
        self.space = space_from_args(args)
        self.output_dir = args.output_dir
        self.log_path = os.path.join(self.output_dir, LOSS_LOG)
        self.use_mlm, self.use_kd = bool(args.mlm), bool(args.teacher_model)

        resume_dir = None
        if args.resume:
            resume_dir = latest_checkpoint(self.output_dir)
            if resume_dir is None:
                raise UserError(f"--resume: no checkpoint (step_N/ or epoch_N/ with training state) in {self.output_dir}")
        elif has_run(self.output_dir) and not args.overwrite_output_dir:
            raise UserError(f"--output_dir: {self.output_dir} already holds a run; pass --resume to continue it "
                            "or --overwrite_output_dir to start over")
        self.resume_dir = resume_dir

        vocab_file = _choose_vocab(args, resume_dir)
        vocab_tokens = load_vocab(vocab_file)
        with open(vocab_file, "rb") as handle:
            vocab_bytes = handle.read()
        self.vocab = Vocabulary.from_tokens(vocab_tokens)
        _check_shard_vocab(args, vocab_tokens)
        self.shards = ShardIndex(find_shards(args.pregenerated_data))

        set_seed(args.seed)  # identical initialisation on every rank
        kd_width = teacher_width(args.teacher_model) if self.use_kd else None
        overrides = parse_config_overrides(args.supernet_config, {flag: getattr(args, flag) for flag in CONFIG_FLAGS})
        if resume_dir:
            self.model = load_supernet(resume_dir)
            check_space_fits(self.space, self.model.config)
            if kd_width is not None and kd_width != self.model.config.kd_hidden_size:
                raise UserError(f"--teacher_model width {kd_width} does not fit the checkpoint's KD projection "
                                f"({self.model.config.kd_hidden_size})")
        else:
            self.model = build_student(self.space, len(self.vocab), args.student_model, overrides,
                                       args.max_seq_length, kd_width)
        self.model.to(ctx.device)
        self.teacher = None
        if self.use_kd:
            self.teacher = load_teacher(args.teacher_model, self.model, self.space, args.max_seq_length,
                                        vocab_tokens).to(ctx.device)
        self.fixed_arch = self.model.config.largest_arch() if args.further_train else None
        torch.manual_seed(args.seed + 1000003 * ctx.rank)  # dropout differs across ranks

        prob = args.masked_lm_prob if args.masked_lm_prob is not None else (0.15 if self.use_mlm else 0.0)
        self.masking = MaskingConfig(prob=prob, max_predictions=args.max_predictions_per_seq)
        self.dataset = PretrainingDataset(self.shards, self.vocab, args.max_seq_length, self.masking, args.seed)
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

        self.amp, self.amp_dtype, use_scaler = amp_settings(args.precision, ctx.device)
        self.optimizer = make_optimizer(self.model, args)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, linear_warmup_decay(self.warmup_steps, self.total_steps))
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
        if resume_dir:
            self._resume(resume_dir)
        elif ctx.is_main:
            remove_run(self.output_dir)  # --overwrite_output_dir (has_run was checked above)
        if ctx.is_main:
            # Checkpoints copy the vocab from OUTPUT_DIR/vocab.txt: the source may be a step
            # checkpoint that pruning deletes later.
            with atomic_write(os.path.join(self.output_dir, VOCAB_NAME), "wb") as handle:
                handle.write(vocab_bytes)
        ctx.barrier()
        self.vocab_file = os.path.join(self.output_dir, VOCAB_NAME)

    # ----- resume
    def _position_info(self) -> dict:
        return {"global_step": self.global_step, "epoch": self.epoch, "step_in_epoch": self.step_in_epoch,
                "world_size": self.ctx.world_size, "train_batch_size": self.args.train_batch_size,
                "gradient_accumulation_steps": self.args.gradient_accumulation_steps, "seed": self.args.seed,
                "num_examples": len(self.dataset), "total_steps": self.total_steps}

    def _resume(self, path: str) -> None:
        info = read_trainer_info(path)
        state = load_training_state(path)
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
            logger.info("resumed from %s at step %d (epoch %d, step %d in it); loss log keeps %d rows", path,
                        self.global_step, self.epoch, self.step_in_epoch, kept)
        self.last_checkpoint, self.saved_step = path, self.global_step

    # ----- checkpoints
    def save(self, name: str) -> str:
        """Every rank calls (RNG states are gathered); rank 0 writes."""
        rng_states = self.ctx.gather(capture_rng())
        path = os.path.join(self.output_dir, name)
        if self.ctx.is_main:
            state = {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                     "scaler": self.scaler.state_dict() if self.scaler is not None else {}, "rng": rng_states}
            info = self._position_info()
            info["args"] = {key: value for key, value in vars(self.args).items()
                            if isinstance(value, (str, int, float, bool, type(None), list))}
            save_checkpoint(path, self.model, self.vocab_file, state, info)
            prune_step_checkpoints(self.output_dir, self.args.save_total_limit)
            logger.info("saved %s", path)
        self.ctx.barrier()
        self.last_checkpoint, self.saved_step = path, self.global_step
        return path

    # ----- one optimizer step
    def _autocast(self):
        return torch.autocast(self.ctx.device.type, dtype=self.amp_dtype, enabled=self.amp)

    def train_step(self, micro_batches: list[dict], archs: list[dict]) -> dict:
        """Forward/backward every (micro-batch, arch) pair, then one optimizer step."""
        device = self.ctx.device
        pairs = len(micro_batches) * len(archs)
        totals = {key: 0.0 for key in ("loss",) + LOSS_KEYS}
        tokens = 0
        done = 0
        for batch in micro_batches:
            batch = {key: value.to(device, non_blocking=True) for key, value in batch.items()}
            tokens += int(batch["attention_mask"].sum())
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
                        loss, parts = self.step_module(batch, teacher_hidden, teacher_scores)
                    scaled = loss / pairs
                    (self.scaler.scale(scaled) if self.scaler is not None else scaled).backward()
                totals["loss"] += float(loss.detach()) / pairs
                for key, value in parts.items():
                    totals[key] += float(value.detach()) / pairs
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.args.max_grad_norm)
        lr = self.scheduler.get_last_lr()[0]
        if self.scaler is not None:
            self.scaler.step(self.optimizer)  # skips the step itself on inf/nan gradients
            self.scaler.update()
        elif torch.isfinite(grad_norm):
            self.optimizer.step()
        else:
            logger.warning("step %d: non-finite gradient norm; update skipped", self.global_step)
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        keys = ["loss"] + [key for key in LOSS_KEYS if key in self._active_parts()]
        averaged = self.ctx.mean(torch.tensor([totals[key] for key in keys] + [float(tokens)], dtype=torch.float64))
        record = {key: float(averaged[i]) for i, key in enumerate(keys)}
        record.update(lr=lr, grad_norm=float(grad_norm), tokens=int(round(float(averaged[-1]) * self.ctx.world_size)))
        return record

    def _active_parts(self) -> tuple[str, ...]:
        return (("mlm_loss",) if self.use_mlm else ()) + (("kd_att_loss", "kd_rep_loss") if self.use_kd else ())

    # ----- the loop
    @property
    def done(self) -> bool:
        return self.global_step >= self.total_steps or self.epoch >= self.num_epochs

    def run(self) -> TrainResult:
        args, ctx, config = self.args, self.ctx, self.model.config
        logger.info("rank %d/%d on %s; %d sequences, %d steps/epoch, %d steps in total (warm-up %d); objectives: %s; "
                    "space %s; supernet L%d/H%d/F%d/Q%d/A%d", ctx.rank, ctx.world_size, ctx.device, len(self.dataset),
                    self.steps_per_epoch, self.total_steps, self.warmup_steps, "+".join(self._active_parts()),
                    self.space.name, config.num_hidden_layers, config.hidden_size, config.intermediate_size,
                    config.qkv_size, config.num_attention_heads)
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
            if self.saved_step != self.global_step:
                self.save(f"step_{self.global_step}")  # stopped mid-epoch: the position is on disk
        finally:
            progress.close()
        if self.done and ctx.is_main:
            save_supernet(self.model, os.path.join(self.output_dir, FINAL_DIR), self.vocab_file)
            plot_loss_curve(self.log_path, os.path.join(self.output_dir, LOSS_PLOT))
            logger.info("done: %d steps; final supernet in %s", self.global_step,
                        os.path.join(self.output_dir, FINAL_DIR))
        elif ctx.is_main:
            logger.info("stopped after %d step(s) (--stop_after_steps) at step %d; continue with --resume",
                        steps_this_run, self.global_step)
        ctx.barrier()
        return TrainResult(self.model, self.global_step, self.done, self.last_checkpoint)

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
        from tqdm.auto import tqdm

        self.path, self.write, self.every = path, write, every
        self.bar = tqdm(total=total, initial=initial, desc="pre-training", unit="step", disable=not show_bar,
                        dynamic_ncols=True)
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


def train(args) -> TrainResult:
    """Run (or resume) pre-training as ``args`` (``pre_training.build_parser``) describe."""
    _validate(args)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    ctx = init_distributed(args.device)
    try:
        return Trainer(args, ctx).run()
    finally:
        ctx.close()
