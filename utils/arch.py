"""The arch dict (SPEC section 3): schema, validation with one-line errors naming the field,
canonical identity (``arch_key``) and parsing (JSON, or the original's Python-repr lines read with
``ast.literal_eval``, never ``eval``). Arch files are in ``utils.arch_files``."""

from __future__ import annotations

import ast
import json
from typing import Any

from utils.cli import ArchError
from utils.files import json_problem

# --------------------------------------------------------------------------------------
# The arch dict
# --------------------------------------------------------------------------------------

ARCH_KEYS = (
    "sample_layer_num",
    "sample_hidden_size",
    "sample_intermediate_sizes",
    "sample_num_attention_heads",
    "sample_qkv_sizes",
)
PER_LAYER_KEYS = ("sample_intermediate_sizes", "sample_num_attention_heads", "sample_qkv_sizes")
# Key order of the original's str(dict) lines (latency tables, .cands), kept for --legacy_format.
LEGACY_KEY_ORDER = (
    "sample_layer_num",
    "sample_num_attention_heads",
    "sample_hidden_size",
    "sample_intermediate_sizes",
    "sample_qkv_sizes",
)


def make_arch(layer_num: int, hidden_size: int, intermediate_size: int, num_attention_heads: int,
              qkv_size: int | None = None) -> dict:
    """A homogeneous arch dict (every layer alike, as in the paper); qkv defaults to hidden."""
    qkv = hidden_size if qkv_size is None else qkv_size
    return {
        "sample_layer_num": int(layer_num),
        "sample_hidden_size": int(hidden_size),
        "sample_intermediate_sizes": [int(intermediate_size)] * int(layer_num),
        "sample_num_attention_heads": [int(num_attention_heads)] * int(layer_num),
        "sample_qkv_sizes": [int(qkv)] * int(layer_num),
    }


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_arch_schema(arch: Any, where: str = "") -> dict:
    """Check the arch dict's structure (keys, types, list lengths, head divisibility).

    Returns a normalised copy. Raises ``ArchError`` with one line naming the bad field.
    """
    prefix = f"{where}: " if where else ""
    if not isinstance(arch, dict):
        raise ArchError(f"{prefix}an arch must be a dict, got {type(arch).__name__}")
    unknown = sorted(set(arch) - set(ARCH_KEYS))
    if unknown:
        raise ArchError(f"{prefix}unknown arch key(s) {', '.join(map(repr, unknown))}; expected {', '.join(ARCH_KEYS)}")
    missing = [key for key in ARCH_KEYS if key not in arch]
    if missing:
        raise ArchError(f"{prefix}missing arch key(s) {', '.join(map(repr, missing))}")
    layers = arch["sample_layer_num"]
    if not _is_int(layers) or layers < 1:
        raise ArchError(f"{prefix}'sample_layer_num' must be a positive int, got {layers!r}")
    if not _is_int(arch["sample_hidden_size"]) or arch["sample_hidden_size"] < 1:
        raise ArchError(f"{prefix}'sample_hidden_size' must be a positive int, got {arch['sample_hidden_size']!r}")
    for key in PER_LAYER_KEYS:
        values = arch[key]
        if not isinstance(values, (list, tuple)):
            raise ArchError(f"{prefix}{key!r} must be a list with one value per layer, got {values!r}")
        if len(values) != layers:
            raise ArchError(f"{prefix}{key!r} has {len(values)} value(s) but 'sample_layer_num' is {layers}")
        bad = [v for v in values if not _is_int(v) or v < 1]
        if bad:
            raise ArchError(f"{prefix}{key!r} must hold positive ints, got {bad[0]!r}")
    for index, (qkv, heads) in enumerate(zip(arch["sample_qkv_sizes"], arch["sample_num_attention_heads"])):
        if qkv % heads:
            raise ArchError(f"{prefix}layer {index}: 'sample_num_attention_heads'={heads} does not divide 'sample_qkv_sizes'={qkv}")
    return {key: (list(arch[key]) if key in PER_LAYER_KEYS else int(arch[key])) for key in ARCH_KEYS}


def is_homogeneous(arch: dict) -> bool:
    return all(len(set(arch[key])) == 1 for key in PER_LAYER_KEYS)


def arch_key(arch: dict) -> str:
    """The identity of an arch: its canonical JSON (sorted keys, no spaces)."""
    return json.dumps(check_arch_schema(arch), sort_keys=True, separators=(",", ":"))


def arch_to_json(arch: dict) -> str:
    """One JSON line for arch files (sorted keys, readable spacing)."""
    return json.dumps(check_arch_schema(arch), sort_keys=True)


def arch_to_legacy_repr(arch: dict) -> str:
    """The original's ``str(dict)`` line, in its key order (for ``--legacy_format`` files)."""
    arch = check_arch_schema(arch)
    return str({key: arch[key] for key in LEGACY_KEY_ORDER})


def arch_summary(arch: dict) -> str:
    """Short human label, e.g. ``L4/H256/F512/Q256/A4`` (per-layer mean for FFN and qkv)."""
    def mean(values):
        return round(sum(values) / len(values))
    return (f"L{arch['sample_layer_num']}/H{arch['sample_hidden_size']}/F{mean(arch['sample_intermediate_sizes'])}"
            f"/Q{mean(arch['sample_qkv_sizes'])}/A{mean(arch['sample_num_attention_heads'])}")


def parse_arch(text: str, where: str = "") -> dict:
    """Parse one arch from JSON or from the original's Python-repr (``ast.literal_eval``)."""
    prefix = f"{where}: " if where else ""
    text = text.strip()
    if not text:
        raise ArchError(f"{prefix}empty arch")
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            raise ArchError(f"{prefix}not a JSON or Python-literal arch dict: {text[:80]!r}") from None
    except (ValueError, RecursionError, MemoryError) as err:  # too deep, a number too long to read
        raise ArchError(f"{prefix}{json_problem(err)}") from None
    return check_arch_schema(value, where)
