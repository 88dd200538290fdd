"""One pre-training step (``run_step``) and its pieces: the student's loss sums for a batch
(``PreTrainingStep``, what DDP wraps), the counts each loss part is divided by, the teacher's outputs,
the optimizer (AdamW, or ``SlicedAdamW`` for masked updates) and mixed precision."""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn

from pretraining.losses import kd_counts, kd_loss_sums
from pretraining.sliced_updates import SlicedAdamW, step_regions
from utils import UserError, get_logger

logger = get_logger("pre_training")


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


def run_step(trainer, micro_batches: list[dict], archs: list[dict]) -> dict:
    """Forward/backward every (micro-batch, arch) pair of ``trainer`` (``pretraining.loop.Trainer``), then
    one optimizer step.

    Each loss part is divided by its count over the whole step (all micro-batches, all ranks),
    so the gradient is the token-weighted mean however the step's examples are split."""
    device = trainer.ctx.device
    parts = trainer.active_parts()
    local = torch.tensor([part_counts(batch, parts, trainer.kd_heads, trainer.kd_width) + [float(batch["attention_mask"].sum())]
                          for batch in micro_batches], dtype=torch.float64).sum(dim=0)
    counts = trainer.ctx.sum(local)  # one all-reduce: the step's totals over every rank
    normalisers = [max(float(count), 1.0) for count in counts[:-1]]
    scale = trainer.ctx.world_size / len(archs)  # DDP averages the ranks' gradients
    pairs = len(micro_batches) * len(archs)
    totals = torch.zeros(len(parts), dtype=torch.float64, device=device)
    done = 0
    for batch in micro_batches:
        batch = {key: value.to(device, non_blocking=True) for key, value in batch.items()}
        teacher_hidden = teacher_scores = None
        if trainer.teacher is not None:
            with trainer.autocast():
                teacher_hidden, teacher_scores = teacher_outputs(trainer.teacher, batch)
        for arch in archs:
            trainer.model.set_sample_config(arch)
            done += 1
            sync = done == pairs or not trainer.ctx.enabled
            context = contextlib.nullcontext() if sync else trainer.step_module.no_sync()
            with context:
                with trainer.autocast():
                    sums = trainer.step_module(batch, teacher_hidden, teacher_scores)
                weighted = [sums[part].float() / normaliser for part, normaliser in zip(parts, normalisers)]
                loss = sum(weighted) * scale
                (trainer.scaler.scale(loss) if trainer.scaler is not None else loss).backward()
            totals += torch.stack([value.detach().double() for value in weighted]) / len(archs)
    if trainer.scaler is not None:
        trainer.scaler.unscale_(trainer.optimizer)
    grad_norm = torch.nn.utils.clip_grad_norm_(trainer.model.parameters(), trainer.args.max_grad_norm)
    lr = trainer.scheduler.get_last_lr()[0]
    if trainer.masked_updates:
        regions = step_regions(trainer.model, archs, trainer.use_mlm, trainer.use_kd)
        trainer.optimizer.set_regions({trainer.params_by_name[name]: region for name, region in regions.items()})
    if trainer.scaler is not None:
        trainer.scaler.step(trainer.optimizer)  # skips the step itself on inf/nan gradients
        trainer.scaler.update()
    elif torch.isfinite(grad_norm):
        trainer.optimizer.step()
    else:
        logger.warning("step %d: non-finite gradient norm; update skipped", trainer.global_step)
    trainer.scheduler.step()
    trainer.optimizer.zero_grad(set_to_none=True)
    step_loss = trainer.ctx.sum(totals)  # the token-weighted loss of the whole step
    record = {part: float(step_loss[i]) for i, part in enumerate(parts)}
    record.update(loss=float(step_loss.sum()), lr=lr, grad_norm=float(grad_norm), tokens=int(counts[-1]))
    return record
