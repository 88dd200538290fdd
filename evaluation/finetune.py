"""Fine-tune one plain Hugging Face sub-model on a GLUE task and evaluate it.

The recipe is the original evaluator's (reference/original.md section 9), on the extracted
sub-model instead of the whole supernet: AdamW (the decoupled-decay equivalent of BertAdam) with
weight decay 0.01 except biases and LayerNorm, gradient clipping at 1.0 (BertAdam's default),
linear warm-up over the first 10% of steps then linear decay; cross-entropy (MSE for STS-B);
evaluation on the primary dev set every ``eval_step`` steps and at the end; the best primary
metric and its weights are kept.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time

import torch
from torch import nn
from transformers import get_linear_schedule_with_warmup

from evaluation.data import EncodedSplit
from evaluation.learning import LearningVerdict, judge
from glue.metrics import compute_metrics, primary_metric
from glue.tasks import TaskSpec
from utils import wait_while_timing


@dataclasses.dataclass(frozen=True)
class FinetuneConfig:
    learning_rate: float
    num_train_epochs: float
    train_batch_size: int
    eval_batch_size: int
    eval_step: int
    warmup_proportion: float = 0.1
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    seed: int = 42
    # bf16: the training forward under bfloat16 autocast (weights, gradients and the optimizer stay fp32);
    # evaluation is always fp32
    train_dtype: str = "fp32"


@dataclasses.dataclass
class EvalResult:
    metrics: dict[str, float]
    primary: float
    time_per_batch_ms: float  # model forward only, batch already on the device
    batches: int
    verdict: LearningVerdict | None = None  # did it learn (evaluation.learning)


@dataclasses.dataclass
class FinetuneOutcome:
    best: EvalResult
    best_state: dict[str, torch.Tensor]  # CPU copy of the best weights
    best_step: int
    steps: int
    evaluations: list[tuple[int, float]]  # (step, primary metric)
    train_seconds: float  # without the pauses below
    paused_seconds: float = 0.0  # stood still while a latency job timed on this machine (utils.timing_slot)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def evaluate(model: nn.Module, split: EncodedSplit, task: TaskSpec, batch_size: int,
             device: torch.device | str = "cpu") -> EvalResult:
    """Metrics of ``model`` on ``split`` and whether it learned (``evaluation.learning``); the forward pass of every batch is timed with
    ``perf_counter`` (CUDA synchronised), excluding batching and the host transfer."""
    device = torch.device(device)
    was_training = model.training
    model.eval()
    predictions, elapsed, batches = [], 0.0, 0
    for batch in split.eval_batches(batch_size):
        inputs = {key: batch[key].to(device) for key in ("input_ids", "attention_mask", "token_type_ids")}
        _synchronize(device)
        start = time.perf_counter()
        logits = model(**inputs).logits
        _synchronize(device)
        elapsed += time.perf_counter() - start
        batches += 1
        predictions.append(logits.squeeze(-1) if task.is_regression else logits.argmax(dim=-1))
    model.train(was_training)
    preds = torch.cat(predictions).float().cpu().numpy() if task.is_regression else torch.cat(predictions).cpu().numpy()
    # eval batches come in length order; labels are gathered in the same order
    order = torch.argsort(split.lengths, stable=True)
    labels = split.labels[order].numpy()
    metrics = compute_metrics(task.name, preds, labels)
    primary = primary_metric(task.name, metrics)
    return EvalResult(metrics, primary, 1000.0 * elapsed / max(batches, 1), batches, judge(task, preds, labels, primary))


def make_optimizer(model: nn.Module, learning_rate: float, weight_decay: float) -> torch.optim.Optimizer:
    """AdamW with no weight decay on biases and LayerNorm weights (BERT's grouping)."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (no_decay if name.endswith("bias") or "LayerNorm" in name else decay).append(param)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    # fused: one kernel per step instead of a loop over tensors (~10 % of a small CPU fine-tune)
    return torch.optim.AdamW(groups, lr=learning_rate, fused=True)


def task_loss(logits: torch.Tensor, labels: torch.Tensor, task: TaskSpec) -> torch.Tensor:
    if task.is_regression:
        return nn.functional.mse_loss(logits.squeeze(-1), labels)
    return nn.functional.cross_entropy(logits, labels)


def apply_update(model: nn.Module, optimizer, scheduler, max_grad_norm: float) -> None:
    """One optimizer step on the gradients accumulated: clipped at ``max_grad_norm`` (0: not), then the schedule."""
    if max_grad_norm > 0:
        nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
    optimizer.step()
    scheduler.step()


TRAIN_DTYPES = ("fp32", "bf16")


def training_autocast(train_dtype: str, device: torch.device):
    """The context the training forward runs in: bfloat16 autocast for ``bf16`` (on a CPU with native bf16 a
    demo candidate trains in 0.87x the time, the median of 0.71-1.18x: the narrowest archs gain nothing;
    accuracies within their seed spread: BENCHMARKS.md), else none."""
    if train_dtype == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    if train_dtype != "fp32":
        raise ValueError(f"train_dtype must be one of {TRAIN_DTYPES}, got {train_dtype!r}")
    return contextlib.nullcontext()


def finetune(model: nn.Module, train: EncodedSplit, dev: EncodedSplit, task: TaskSpec, config: FinetuneConfig,
             device: torch.device | str = "cpu") -> FinetuneOutcome:
    """Train ``model`` in place; returns the best dev evaluation and its weights."""
    device = torch.device(device)
    model.to(device).train()
    steps_per_epoch = train.num_batches(config.train_batch_size)
    total_steps = int(round(steps_per_epoch * config.num_train_epochs))  # 0 epochs: evaluate only
    optimizer = make_optimizer(model, config.learning_rate, config.weight_decay)
    # BertAdam's warmup_linear: 0 -> lr over the first warmup_proportion of the steps, then linear to 0
    scheduler = get_linear_schedule_with_warmup(optimizer, int(round(config.warmup_proportion * max(1, total_steps))),
                                                max(1, total_steps))
    generator = torch.Generator().manual_seed(config.seed)
    autocast = training_autocast(config.train_dtype, device)
    best: EvalResult | None = None
    best_state: dict[str, torch.Tensor] = {}
    best_step, evaluations, step, paused = 0, [], 0, 0.0
    start = time.perf_counter()

    def check(at_step: int) -> None:
        nonlocal best, best_state, best_step
        result = evaluate(model, dev, task, config.eval_batch_size, device)
        evaluations.append((at_step, result.primary))
        if best is None or result.primary > best.primary:
            best, best_step = result, at_step
            best_state = {key: value.detach().to("cpu", copy=True) for key, value in model.state_dict().items()}

    if total_steps == 0:
        check(0)
    while step < total_steps:
        for batch in train.train_batches(config.train_batch_size, generator):
            paused += wait_while_timing()  # a latency job on this machine times alone
            batch = {key: value.to(device) for key, value in batch.items()}
            with autocast:
                logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                               token_type_ids=batch["token_type_ids"]).logits
            loss = task_loss(logits.float(), batch["labels"], task)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            apply_update(model, optimizer, scheduler, config.max_grad_norm)
            step += 1
            if step % config.eval_step == 0 or step == total_steps:
                check(step)
            if step >= total_steps:
                break
    model.eval()
    return FinetuneOutcome(best, best_state, best_step, step, evaluations, time.perf_counter() - start - paused, paused)
