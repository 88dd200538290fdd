"""Masked optimizer updates for the weight-sharing supernet (``--masked_updates``, the default).

A sampled arch reads a slice of each shared tensor; the rest of the tensor gets a zero gradient,
not none. Plain AdamW would still move those entries -- its stale first moment keeps pushing them
in a direction set by another arch, and weight decay shrinks them -- so the weights of the archs
*not* sampled drift. ``SlicedAdamW`` updates only the union of the slices that the step's archs
read, and leaves every other entry (value, ``exp_avg``, ``exp_avg_sq``, its step count) bit for
bit as it was, under any gradient accumulation, number of archs per step, sandwich rule or DDP
(every rank trains the same archs, so every rank masks alike).

Adam's bias corrections count the steps *of each entry*: an entry is trained exactly as if it
were its own AdamW that saw only the steps that read it. This generalises what
``torch.optim.AdamW`` does for a whole unused tensor (no gradient: skipped, its step unchanged);
with a single full-size arch every step it is AdamW (tested within float rounding). The state
holds the corrections themselves, ``bias_correction1 = 1 - beta1 ** steps`` and
``bias_correction2 = 1 - beta2 ** steps`` of each entry, advanced as ``c <- beta * c + (1 - beta)``:
no power or exponential per step and no float32 cancellation, which keeps the update about as
cheap as AdamW's (``benchmarks/bench_pretraining.py`` measures it).

Regions. Every slice the supernet takes is a *prefix box* of the tensor seen in a suitable view
shape (``param_view_shape``): ``[:out, :in]`` of a linear weight, ``[:hidden]`` of a LayerNorm,
``[:heads, :head_dim, :hidden]`` of a query/key/value weight viewed as ``(super_heads,
super_head_dim, in)`` (the head rule of ``transformer.modeling_super``), and so on. A step's region
of a tensor is the union of its archs' boxes: the bounding box, plus a boolean mask inside it
when no single box fills it (several archs of unlike shapes and no sandwich). The test suite
checks the boxes against the entries that really receive gradient, for random archs.
"""

from __future__ import annotations

import dataclasses
import math
import re

import torch
from torch import Tensor

from transformer.modeling_super import check_arch_fits, layer_archs

_LAYER = re.compile(r"^bert\.encoder\.layer\.(\d+)\.(.+)$")


@dataclasses.dataclass
class Region:
    """The entries of one tensor that a step's archs read: prefix boxes of ``view_shape``."""

    view_shape: tuple[int, ...]
    boxes: list[tuple[int, ...]]

    @property
    def bounding(self) -> tuple[int, ...]:
        return tuple(max(sizes) for sizes in zip(*self.boxes))

    def mask(self) -> Tensor | None:
        """Boolean mask over the bounding box, or None when one box fills it (the usual case)."""
        bounding = self.bounding
        if bounding in self.boxes:
            return None
        mask = torch.zeros(bounding, dtype=torch.bool)
        for box in self.boxes:
            mask[tuple(slice(0, size) for size in box)] = True
        return mask

    def full_mask(self) -> Tensor:
        """Boolean mask over the whole view (for tests and diagnostics)."""
        mask = torch.zeros(self.view_shape, dtype=torch.bool)
        for box in self.boxes:
            mask[tuple(slice(0, size) for size in box)] = True
        return mask

    def view(self, tensor: Tensor) -> Tensor:
        """The bounding box of ``tensor`` as a view (in-place updates land in ``tensor``)."""
        return tensor.view(self.view_shape)[tuple(slice(0, size) for size in self.bounding)]

    def read(self, tensor: Tensor) -> Tensor:
        """The bounding box of ``tensor`` for reading (a copy if ``tensor`` is not contiguous)."""
        return tensor.reshape(self.view_shape)[tuple(slice(0, size) for size in self.bounding)]


def param_view_shape(name: str, shape: torch.Size, config) -> tuple[int, ...]:
    """The shape in which the supernet's slices of parameter ``name`` are prefix boxes."""
    heads, head_dim = config.num_attention_heads, config.head_dim
    match = _LAYER.match(name)
    rest = match.group(2) if match else ""
    if rest in ("attention.self.query.weight", "attention.self.key.weight", "attention.self.value.weight"):
        return (heads, head_dim, shape[1])
    if rest in ("attention.self.query.bias", "attention.self.key.bias", "attention.self.value.bias"):
        return (heads, head_dim)
    if rest == "attention.output.dense.weight":
        return (shape[0], heads, head_dim)
    return tuple(shape)


def _arch_boxes(arch: dict, config, mlm: bool, kd: bool) -> dict[str, tuple[int, ...]]:
    """Parameter name -> the prefix box (in ``param_view_shape``) that one arch reads."""
    hidden = arch["sample_hidden_size"]
    boxes = {
        "bert.embeddings.word_embeddings.weight": (config.vocab_size, hidden),
        "bert.embeddings.position_embeddings.weight": (config.max_position_embeddings, hidden),
        "bert.embeddings.token_type_embeddings.weight": (config.type_vocab_size, hidden),
        "bert.embeddings.LayerNorm.weight": (hidden,),
        "bert.embeddings.LayerNorm.bias": (hidden,),
    }
    for index, layer in enumerate(layer_archs(arch)):
        prefix = f"bert.encoder.layer.{index}."
        for name in ("query", "key", "value"):
            boxes[f"{prefix}attention.self.{name}.weight"] = (layer.heads, layer.head_dim, hidden)
            boxes[f"{prefix}attention.self.{name}.bias"] = (layer.heads, layer.head_dim)
        boxes[f"{prefix}attention.output.dense.weight"] = (hidden, layer.heads, layer.head_dim)
        boxes[f"{prefix}intermediate.dense.weight"] = (layer.ffn, hidden)
        boxes[f"{prefix}intermediate.dense.bias"] = (layer.ffn,)
        boxes[f"{prefix}output.dense.weight"] = (hidden, layer.ffn)
        for name in ("attention.output.dense.bias", "attention.output.LayerNorm.weight",
                     "attention.output.LayerNorm.bias", "output.dense.bias", "output.LayerNorm.weight",
                     "output.LayerNorm.bias"):
            boxes[prefix + name] = (hidden,)
    if mlm:  # the decoder is tied to the word embeddings (same box as above)
        boxes["cls.predictions.transform.dense.weight"] = (hidden, hidden)
        boxes["cls.predictions.transform.dense.bias"] = (hidden,)
        boxes["cls.predictions.transform.LayerNorm.weight"] = (hidden,)
        boxes["cls.predictions.transform.LayerNorm.bias"] = (hidden,)
        boxes["cls.predictions.bias"] = (config.vocab_size,)
    if kd:
        boxes["dense_fit.weight"] = (config.kd_hidden_size, hidden)
        boxes["dense_fit.bias"] = (config.kd_hidden_size,)
    # The pooler is computed but no pre-training loss reads it: it has no box.
    return boxes


KNOWN_UNREAD = ("bert.pooler.dense.weight", "bert.pooler.dense.bias")


def check_known_parameters(model) -> None:
    """Every trainable parameter must be one whose slices ``step_regions`` knows (a programming
    error otherwise: a new module needs its box here, or masked updates would never train it)."""
    largest = _arch_boxes(model.config.largest_arch(), model.config, mlm=True, kd=True)
    unknown = [name for name, param in model.named_parameters()
               if param.requires_grad and name not in largest and name not in KNOWN_UNREAD]
    if unknown:
        raise RuntimeError(f"masked updates: no slicing rule for parameter(s) {', '.join(unknown)}")


def step_regions(model, archs: list[dict], mlm: bool, kd: bool) -> dict[str, Region]:
    """Parameter name -> the region the step's ``archs`` read (parameters no arch reads are absent)."""
    config = model.config
    shapes = {name: param.shape for name, param in model.named_parameters()}
    regions: dict[str, Region] = {}
    for arch in archs:
        for name, box in _arch_boxes(check_arch_fits(arch, config), config, mlm, kd).items():
            region = regions.get(name)
            if region is None:
                regions[name] = Region(param_view_shape(name, shapes[name], config), [box])
            elif box not in region.boxes:
                region.boxes.append(box)
    return regions


class SlicedAdamW(torch.optim.Optimizer):
    """AdamW that updates only the entries in the regions given by ``set_regions`` before each
    step (decoupled weight decay, per-entry bias correction; no amsgrad)."""

    STATE_KEYS = ("exp_avg", "exp_avg_sq", "bias_correction1", "bias_correction2")

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.01):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))
        self._regions: dict[Tensor, Region] | None = None
        self._scratch: dict[tuple, Tensor] = {}  # one reusable buffer per (device, dtype)

    def set_regions(self, regions: dict[Tensor, Region]) -> None:
        """The regions of the next ``step`` (parameter tensor -> Region); consumed by it."""
        self._regions = regions

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict(state_dict)
        for group in self.param_groups:  # a checkpoint of plain AdamW: every entry saw its tensor's steps
            beta1, beta2 = group["betas"]
            for param in group["params"]:
                state = self.state.get(param)
                if state and "bias_correction1" not in state and "step" in state:
                    steps = float(state.pop("step"))
                    state["bias_correction1"] = torch.full_like(param, -math.expm1(steps * math.log(beta1)))
                    state["bias_correction2"] = torch.full_like(param, -math.expm1(steps * math.log(beta2)))

    def _buffer(self, like: Tensor, shape: tuple[int, ...]) -> Tensor:
        key = (like.device, like.dtype)
        size = math.prod(shape)
        buffer = self._scratch.get(key)
        if buffer is None or buffer.numel() < size:
            largest = max(p.numel() for group in self.param_groups for p in group["params"])
            buffer = self._scratch[key] = torch.empty(max(size, largest), device=like.device, dtype=like.dtype)
        return buffer[:size].view(shape)

    @torch.no_grad()
    def step(self, closure=None):
        if closure is not None:
            raise ValueError("SlicedAdamW does not take a closure")
        if self._regions is None:
            raise RuntimeError("SlicedAdamW.step: call set_regions(...) first (which entries the step trained)")
        regions, self._regions = self._regions, None
        for group in self.param_groups:
            lr, (beta1, beta2), eps, decay = group["lr"], group["betas"], group["eps"], group["weight_decay"]
            for param in group["params"]:
                region = regions.get(param)
                if param.grad is None or region is None:
                    continue
                state = self.state[param]
                if not state:
                    for key in self.STATE_KEYS:
                        state[key] = torch.zeros_like(param, memory_format=torch.contiguous_format)
                views = [region.view(param)] + [region.view(state[key]) for key in self.STATE_KEYS]
                grad = region.read(param.grad)
                mask = region.mask()
                scratch = self._buffer(param, region.bounding)
                if mask is None:
                    _adamw_update(*views, grad, scratch, lr, beta1, beta2, eps, decay)
                else:
                    new = [view.clone() for view in views]
                    _adamw_update(*new, grad, scratch, lr, beta1, beta2, eps, decay)
                    mask = mask.to(param.device)
                    for view, value in zip(views, new):
                        view.copy_(torch.where(mask, value, view))
        return None


def _adamw_update(param: Tensor, exp_avg: Tensor, exp_avg_sq: Tensor, correction1: Tensor, correction2: Tensor,
                  grad: Tensor, scratch: Tensor, lr: float, beta1: float, beta2: float, eps: float,
                  decay: float) -> None:
    """One AdamW update in place on (views of) the entries to train: torch.optim.AdamW's formula
    ``p -= lr / c1 * m / (sqrt(v) / sqrt(c2) + eps)`` with each entry's own corrections c1, c2."""
    correction1.mul_(beta1).add_(1 - beta1)  # 1 - beta1 ** (steps + 1)
    correction2.mul_(beta2).add_(1 - beta2)
    if decay:
        param.mul_(1 - lr * decay)
    exp_avg.lerp_(grad, 1 - beta1)
    exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
    denom = torch.div(exp_avg_sq, correction2, out=scratch).sqrt_().add_(eps).mul_(correction1)
    param.addcdiv_(exp_avg, denom, value=-lr)
