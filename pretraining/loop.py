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
import os
import time

import torch
from torch import nn
from transformers import get_linear_schedule_with_warmup

from pretraining.checkpointing import (
    FINAL_DIR,
    LOSS_LOG,
    LOSS_PLOT,
    QUALITY_JSON,
    capture_rng,
    has_run,
    plot_loss_curve,
    prune_step_checkpoints,
    remove_run,
    remove_stale_staging,
    save_checkpoint,
    save_final,
    supernet_extra_files,
)
from pretraining.data import RankBatches, make_loader
from pretraining.distributed import DistContext, init_distributed
from pretraining.models import (
    CONFIG_FLAGS,
    archs_for_step,
    build_student,
    check_space_fits,
    load_teacher,
    parse_config_overrides,
    teacher_width,
)
from pretraining.preflight import quality_space, shard_manifest, validate_args
from pretraining.quality import heldout_batches, quality_report, write_report
from pretraining.shard_index import VOCAB_NAME
from pretraining.setup import RunPlan, plan_run, restore_position
from pretraining.sliced_updates import check_known_parameters
from pretraining.step import PreTrainingStep, amp_settings, make_optimizer, run_step
from transformer.checkpoint import load_supernet
from utils import (
    UserError,
    append_jsonl,
    arch_summary,
    atomic_write,
    get_logger,
    output_lock,
    recorded_roles,
    set_seed,
    stage_space,
)

logger = get_logger("pre_training")

LOSS_KEYS = ("mlm_loss", "kd_att_loss", "kd_rep_loss")
_ONCE = ("resume", "final_info", "vocab_tokens", "vocab_bytes")  # RunPlan fields used while building only


@dataclasses.dataclass
class TrainResult:
    model: nn.Module
    global_step: int
    finished: bool  # False when --stop_after_steps ended the invocation early
    last_checkpoint: str | None


class Trainer:
    """State and steps of one pre-training invocation (built by ``train``)."""

    def __init__(self, args, ctx: DistContext):
        self.args, self.ctx = args, ctx
        self.space, _ = stage_space("supernet", args)
        self.quality_space = quality_space(args, self.space)
        self.output_dir = args.output_dir
        self.log_path = os.path.join(self.output_dir, LOSS_LOG)
        self.use_mlm, self.use_kd = bool(args.mlm), bool(args.teacher_model)
        plan = plan_run(args, ctx, self.output_dir, self.use_mlm)
        for field in dataclasses.fields(plan):  # the plan's decisions are the trainer's state (not the
            if field.name not in _ONCE:  # resumed checkpoint's tensors: those are freed once used)
                setattr(self, field.name, getattr(plan, field.name))
        self._build(plan)
        self._set_position(plan)

    def _build(self, plan: RunPlan) -> None:
        """The student (fresh, resumed or final), the teacher, the optimizer and the step module."""
        args, ctx = self.args, self.ctx
        set_seed(args.seed)  # identical initialisation on every rank
        kd_width = teacher_width(args.teacher_model) if self.use_kd else None
        overrides = parse_config_overrides(args.supernet_config, {flag: getattr(args, flag) for flag in CONFIG_FLAGS})
        if self.already_finished:
            self.model = load_supernet(os.path.join(self.output_dir, FINAL_DIR))
        elif plan.resume:
            self.model = plan.resume.model
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
                                        plan.vocab_tokens).to(ctx.device)
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

    def _set_position(self, plan: RunPlan) -> None:
        """Where the run starts: the final step, the resumed checkpoint's, or step 0 on a cleared directory."""
        ctx, final_info = self.ctx, plan.final_info
        self.global_step, self.epoch, self.step_in_epoch = 0, 0, 0
        self.last_checkpoint, self.saved_step = None, None
        if self.already_finished:
            self.global_step = self.total_steps
            self.epoch, self.step_in_epoch = int(final_info.get("epoch", 0)), int(final_info.get("step_in_epoch", 0))
        elif plan.resume:
            restore_position(self, plan.resume)
        elif ctx.is_main:
            if self.restart and has_run(self.output_dir):
                logger.warning("--resume: %s holds no checkpoint yet (interrupted before the first save); "
                               "starting again from step 0", self.output_dir)
            remove_run(self.output_dir)  # --overwrite_output_dir, or the restart (has_run was checked above)
        if ctx.is_main:
            # Checkpoints copy the vocab from OUTPUT_DIR/vocab.txt: the source may be a step
            # checkpoint that pruning deletes later.
            with atomic_write(os.path.join(self.output_dir, VOCAB_NAME), "wb") as handle:
                handle.write(plan.vocab_bytes)
        ctx.barrier()
        self.vocab_file = os.path.join(self.output_dir, VOCAB_NAME)

    # ----- resume
    def _position_info(self) -> dict:
        return {"global_step": self.global_step, "epoch": self.epoch, "step_in_epoch": self.step_in_epoch,
                "world_size": self.ctx.world_size, "train_batch_size": self.args.train_batch_size,
                "gradient_accumulation_steps": self.args.gradient_accumulation_steps, "seed": self.args.seed,
                "num_examples": len(self.dataset), "total_steps": self.total_steps,
                "masked_updates": self.masked_updates, "heldout_fraction": self.heldout_fraction}

    def _data_split(self) -> dict:
        return {"heldout_fraction": self.heldout_fraction, "rule": "pretraining.data.heldout_split",
                "sequences": len(self.shards), "heldout_sequences": int(len(self.heldout_indices)),
                "shards_fingerprint": shard_manifest(self.args).get("fingerprint"), "space": self.space.name}

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
    def autocast(self):
        return torch.autocast(self.ctx.device.type, dtype=self.amp_dtype, enabled=self.amp)

    def train_step(self, micro_batches: list[dict], archs: list[dict]) -> dict:
        """One optimizer step over every (micro-batch, arch) pair (``pretraining.step.run_step``)."""
        return run_step(self, micro_batches, archs)

    def active_parts(self) -> tuple[str, ...]:
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
                    self.warmup_steps, "+".join(self.active_parts()),
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
    validate_args(args)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    ctx = init_distributed(args.device)
    try:
        with _main_rank_lock(ctx, args.output_dir):
            return Trainer(args, ctx).run()
    finally:
        ctx.close()
