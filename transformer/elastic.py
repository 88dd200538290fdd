"""The slicing rule of the elastic supernet, in one place: the elastic primitives (a Linear, LayerNorm or
Embedding that runs a prefix slice of its weight), the head slicing of qkv (sub-head ``i`` is super-head
``i`` truncated to its first ``qkv / heads`` dimensions), the per-layer arch a forward pass runs, and
the check that an arch fits a supernet (``check_arch_fits``). ``transformer.modeling_super`` builds the
supernet from these; the extractor slices with them too."""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from transformer.config import SuperBertConfig
from utils import ArchError, check_arch_schema

Tensor = torch.Tensor


# --------------------------------------------------------------------------------------
# Slicing primitives
# --------------------------------------------------------------------------------------


def head_slice_rows(weight: Tensor, super_heads: int, heads: int, head_dim: int) -> Tensor:
    """Rows of a ``[super_heads * super_head_dim, ...]`` tensor kept by the head rule."""
    super_head_dim = weight.shape[0] // super_heads
    if heads == super_heads and head_dim == super_head_dim:
        return weight
    rest = weight.shape[1:]
    return weight.reshape(super_heads, super_head_dim, *rest)[:heads, :head_dim].reshape(heads * head_dim, *rest)


def head_slice_cols(weight: Tensor, super_heads: int, heads: int, head_dim: int) -> Tensor:
    """Columns of a ``[out, super_heads * super_head_dim]`` weight kept by the head rule."""
    super_head_dim = weight.shape[1] // super_heads
    if heads == super_heads and head_dim == super_head_dim:
        return weight
    out = weight.shape[0]
    return weight.reshape(out, super_heads, super_head_dim)[:, :heads, :head_dim].reshape(out, heads * head_dim)


class ElasticLinear(nn.Module):
    """A linear layer whose weight is prefix-sliced to the active ``(in, out)`` sizes.

    Deliberately *not* an ``nn.Linear`` subclass: it is never a deployment module. Deployment
    (latency, int8) always goes through the extracted plain model.
    """

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(out_features))

    def sliced(self, in_dim: int, out_dim: int) -> tuple[Tensor, Tensor]:
        return self.weight[:out_dim, :in_dim], self.bias[:out_dim]


class ElasticLayerNorm(nn.Module):
    """LayerNorm over the active width, with the prefix of the shared affine parameters."""

    def __init__(self, size: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(size))
        self.bias = nn.Parameter(torch.zeros(size))

    def sliced(self, dim: int) -> tuple[Tensor, Tensor]:
        return self.weight[:dim], self.bias[:dim]

    def forward(self, x: Tensor) -> Tensor:
        dim = x.shape[-1]
        weight, bias = self.sliced(dim)
        return F.layer_norm(x, (dim,), weight, bias, self.eps)


class ElasticEmbedding(nn.Module):
    """An embedding table whose vectors are truncated to the active hidden size."""

    def __init__(self, num: int, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num, dim))

    def sliced(self, dim: int) -> Tensor:
        return self.weight[:, :dim]

    def forward(self, ids: Tensor, dim: int) -> Tensor:
        return F.embedding(ids, self.sliced(dim))


# --------------------------------------------------------------------------------------
# The per-layer arch the forward pass runs
# --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class LayerArch:
    hidden: int
    ffn: int
    heads: int
    qkv: int

    @property
    def head_dim(self) -> int:
        return self.qkv // self.heads


def layer_archs(arch: dict) -> list[LayerArch]:
    return [LayerArch(arch["sample_hidden_size"], ffn, heads, qkv)
            for ffn, heads, qkv in zip(arch["sample_intermediate_sizes"], arch["sample_num_attention_heads"],
                                       arch["sample_qkv_sizes"])]


def check_arch_fits(arch: dict, config: SuperBertConfig, where: str = "") -> dict:
    """Schema check plus 'the supernet is big enough for this arch'; one-line ArchError."""
    arch = check_arch_schema(arch, where)
    prefix = f"{where}: " if where else ""
    limits = (("sample_layer_num", [arch["sample_layer_num"]], config.num_hidden_layers),
              ("sample_hidden_size", [arch["sample_hidden_size"]], config.hidden_size),
              ("sample_intermediate_sizes", arch["sample_intermediate_sizes"], config.intermediate_size),
              ("sample_num_attention_heads", arch["sample_num_attention_heads"], config.num_attention_heads))
    for field, values, limit in limits:
        if max(values) > limit:
            raise ArchError(f"{prefix}{field}={max(values)} exceeds the supernet's {limit}")
    for qkv, heads in zip(arch["sample_qkv_sizes"], arch["sample_num_attention_heads"]):
        if qkv // heads > config.head_dim:
            raise ArchError(f"{prefix}sample_qkv_sizes={qkv} with {heads} heads needs head size {qkv // heads}, "
                            f"more than the supernet's {config.head_dim} ({config.qkv_size}/{config.num_attention_heads})")
    return arch
