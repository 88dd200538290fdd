"""The pruned set and the pruning of a ticket, through ``torch.nn.utils.prune``.

Pruned: the weight matrix of every ``nn.Linear`` inside the encoder (per layer: query, key, value,
attention output, intermediate and output dense) -- the weights whose matrix products are the
model's compute and most of its parameters. Kept dense (the BERT-Tickets setting this project follows): the
embeddings (a lookup, not a matrix product), every bias and LayerNorm (a few thousand values),
the pooler and the task classifier (new for each task). ``include_pooler`` adds the pooler's
dense weight, which the authors' public code prunes as well. Masks are boolean tensors keyed by the
parameter name in ``BertForSequenceClassification`` (``bert.encoder.layer.0.attention.self.query.weight``).

Pruning is global: one magnitude threshold over the whole pruned set, so layers end up with
different sparsities, as in the paper. ``prune.global_unstructured`` with an integer amount
removes exactly that many of the weights still alive (it ranks only the unmasked entries).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.utils import prune

ENCODER_MARK = "encoder.layer."
POOLER_KEY = "pooler.dense.weight"
SCHEDULES = ("remaining", "original")


def prunable_modules(model: nn.Module, include_pooler: bool = False) -> list[tuple[str, nn.Linear]]:
    """``(parameter name, module)`` of every Linear weight in the pruned set, in model order
    (``include_pooler``: the pooler's dense weight too, as the authors' public code prunes it)."""
    found = []
    for name, module in model.named_modules():
        key = f"{name}.weight"
        if isinstance(module, nn.Linear) and (ENCODER_MARK in name or (include_pooler and key.endswith(POOLER_KEY))):
            found.append((key, module))
    if not any(ENCODER_MARK in key for key, _ in found):
        raise ValueError(f"{type(model).__name__} has no nn.Linear under '{ENCODER_MARK}'; not a BERT encoder")
    return found


def prunable_count(model: nn.Module, include_pooler: bool = False) -> int:
    """Weights in the pruned set (the denominator of ``sparsity``)."""
    return sum(module.weight.numel() for _, module in prunable_modules(model, include_pooler))


def dense_masks(model: nn.Module, include_pooler: bool = False) -> dict[str, torch.Tensor]:
    """Round 0: nothing pruned."""
    return {key: torch.ones_like(module.weight, dtype=torch.bool)
            for key, module in prunable_modules(model, include_pooler)}


def pruned_count(masks: dict[str, torch.Tensor]) -> int:
    return int(sum(int((~mask).sum()) for mask in masks.values()))


def _modules_for(model: nn.Module, masks: dict[str, torch.Tensor]) -> list[tuple[str, nn.Linear]]:
    """The modules ``masks`` are for (the pruned set is whatever the masks name)."""
    modules = dict(prunable_modules(model, include_pooler=any(key.endswith(POOLER_KEY) for key in masks)))
    unknown = sorted(set(masks) - set(modules))
    if unknown or not any(ENCODER_MARK in key for key in masks):
        raise ValueError(f"masks do not match the model's Linear weights (e.g. {(unknown or sorted(masks) or ['none'])[0]})")
    missing = sorted(key for key in modules if ENCODER_MARK in key and key not in masks)
    if missing:
        raise ValueError(f"masks lack the encoder weight {missing[0]}")
    return [(key, modules[key]) for key in masks]


def apply_masks(model: nn.Module, masks: dict[str, torch.Tensor]) -> nn.Module:
    """Attach ``masks`` to ``model`` (``prune.custom_from_mask``: the weight becomes
    ``weight_orig * weight_mask``, recomputed before every forward, so training keeps the
    pruned entries at zero and their gradient is zero)."""
    for key, module in _modules_for(model, masks):
        if tuple(masks[key].shape) != tuple(module.weight.shape):
            raise ValueError(f"mask {key} has shape {tuple(masks[key].shape)}, the weight {tuple(module.weight.shape)}")
        prune.custom_from_mask(module, "weight", masks[key].to(module.weight.device))
    return model


def current_masks(model: nn.Module) -> dict[str, torch.Tensor]:
    """The masks attached to ``model``, keyed by parameter name."""
    return {f"{name}.weight": module.weight_mask.detach().bool().cpu()
            for name, module in model.named_modules() if hasattr(module, "weight_mask")}


def make_permanent(model: nn.Module) -> nn.Module:
    """Remove the pruning re-parametrisation (``prune.remove``): a plain model whose pruned
    weights are stored zeros, loadable and quantizable like any other."""
    for module in model.modules():
        if hasattr(module, "weight_orig"):
            prune.remove(module, "weight")
    return model


def next_pruned_total(pruned: int, total: int, fraction: float, target: float | None,
                      schedule: str = "remaining") -> int:
    """How many weights are pruned after the next round (rounded half up, at least one more),
    capped at ``target`` x ``total``. ``remaining``: ``fraction`` of the weights still alive
    (sparsity 1 - (1 - fraction)^r); ``original``: ``fraction`` of all of them (10 %, 20 %, ...,
    the levels of the authors' public code)."""
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}")
    base = total - pruned if schedule == "remaining" else total
    goal = pruned + max(1, math.floor(fraction * base + 0.5))
    if target is not None:
        goal = min(goal, math.floor(target * total + 0.5))
    return min(goal, total)


def prune_by_magnitude(model: nn.Module, masks: dict[str, torch.Tensor], total_pruned: int) -> dict[str, torch.Tensor]:
    """The next masks: ``masks`` plus the globally smallest-magnitude surviving weights of
    ``model`` (the fine-tuned ticket of the round that just ended), ``total_pruned`` pruned in
    all over the pruned set ``masks`` names. ``model`` is left with the new masks attached."""
    already = pruned_count(masks)
    if total_pruned < already:
        raise ValueError(f"cannot prune {total_pruned} weights: {already} are pruned already")
    make_permanent(model)
    apply_masks(model, masks)
    parameters = [(module, "weight") for _, module in _modules_for(model, masks)]
    if total_pruned > already:
        prune.global_unstructured(parameters, pruning_method=prune.L1Unstructured, amount=total_pruned - already)
    new = current_masks(model)
    if pruned_count(new) != total_pruned:  # the mechanism's contract; never trade it for a silent drift
        raise RuntimeError(f"pruning left {pruned_count(new)} weights pruned, asked {total_pruned}")
    return new
