"""Mask files and storage sizes of a ticket.

Masks are written as safetensors (``bool`` tensors keyed by parameter name, the round's figures in
the metadata), one file per round, atomically. Sizes, in MiB (2**20 bytes):

* dense fp32: the serialised state dict of the plain model (``quantize_utils.int8_model_size_bytes``,
  the figure the evaluator records as ``size_mb_fp32``), zeros and all;
* sparse: the same, with every pruned-set matrix stored in the smaller of two standard formats --
  a bitmap (one bit per entry) plus the fp32 surviving values, or CSR (fp32 values, int32 column
  indices, int32 row pointers); everything outside the pruned set stays dense fp32. A bitmap wins
  above ~3 % density, so it is the format below 97 % sparsity.
"""

from __future__ import annotations

import json
import os

import torch

from utils import UserError, atomic_write

MASK_FORMAT = "bert-tickets-mask-1"


def save_masks(path: str, masks: dict[str, torch.Tensor], metadata: dict) -> None:
    from safetensors.torch import save

    tensors = {key: mask.detach().to("cpu", torch.bool).contiguous() for key, mask in masks.items()}
    meta = {"format": MASK_FORMAT, **{key: json.dumps(value) for key, value in metadata.items()}}
    with atomic_write(path, "wb") as handle:
        handle.write(save(tensors, metadata=meta))


def load_masks(path: str) -> tuple[dict[str, torch.Tensor], dict]:
    """``(masks, metadata)`` of a mask file; a damaged or foreign file is a one-line error."""
    from safetensors import safe_open

    if not os.path.isfile(path):
        raise UserError(f"{path}: no such mask file")
    try:
        with safe_open(path, framework="pt") as handle:
            meta = handle.metadata() or {}
            masks = {key: handle.get_tensor(key) for key in handle.keys()}
    except Exception as err:  # safetensors raises its own error types for a corrupt header
        raise UserError(f"{path}: not a readable safetensors file ({err.__class__.__name__})") from None
    if meta.get("format") != MASK_FORMAT:
        raise UserError(f"{path}: not a BERT-Tickets mask file (format {meta.get('format')!r})")
    bad = [key for key, mask in masks.items() if mask.dtype != torch.bool]
    if bad:
        raise UserError(f"{path}: mask {bad[0]} is {masks[bad[0]].dtype}, expected bool")
    return masks, {key: json.loads(value) for key, value in meta.items() if key != "format"}


def bitmap_bytes(mask: torch.Tensor) -> int:
    """One bit per entry plus 4 bytes per surviving fp32 value."""
    return -(-mask.numel() // 8) + 4 * int(mask.sum())


def csr_bytes(mask: torch.Tensor) -> int:
    """CSR of a matrix: 4-byte values and int32 column indices per surviving entry, int32 row pointers."""
    rows = mask.shape[0] if mask.dim() == 2 else 1
    return 8 * int(mask.sum()) + 4 * (rows + 1)


def storage_sizes(model: torch.nn.Module, masks: dict[str, torch.Tensor]) -> dict:
    """Dense and sparse sizes of a plain (pruning removed) model with ``masks``; see the module doc."""
    from quantize_utils import int8_model_size_bytes

    dense = int8_model_size_bytes(model)
    pruned_dense = sparse = 0
    formats = {"bitmap": 0, "csr": 0}
    for mask in masks.values():
        pruned_dense += 4 * mask.numel()
        bitmap, csr = bitmap_bytes(mask), csr_bytes(mask)
        formats["bitmap" if bitmap <= csr else "csr"] += 1
        sparse += min(bitmap, csr)
    return {
        "size_mb_dense_fp32": dense / 2**20,
        "size_mb_sparse": (dense - pruned_dense + sparse) / 2**20,
        "size_mb_sparse_bitmap": (dense - pruned_dense + sum(bitmap_bytes(m) for m in masks.values())) / 2**20,
        "size_mb_sparse_csr": (dense - pruned_dense + sum(csr_bytes(m) for m in masks.values())) / 2**20,
        "size_sparse_formats": formats,
    }
