"""The FFN line of an arch, defined once for the latency package.

Latency tables are measured line by line: archs that differ only in FFN size lie on (nearly) a
straight line of latency against FFN size, and some kernels switch by shape, so the points of one
line share an offset. The line of an arch is its number of layers, hidden size, mean qkv size and
mean number of heads (for the homogeneous archs of a latency grid: the first layer's sizes).
``latency.robust`` (residuals of re-measurement), ``latency.noise`` (second differences) and the
predictor's line effects (``latency.predictor``) all group by ``ffn_line``.
"""

from __future__ import annotations


def ffn_line(arch: dict) -> str:
    """``"<layers>/<hidden>/<mean qkv>/<mean heads>"``: the FFN line ``arch`` lies on (this string is
    stored in predictor checkpoints as the key of a line effect; do not change its format)."""
    qkv, heads = arch["sample_qkv_sizes"], arch["sample_num_attention_heads"]
    return (f"{arch['sample_layer_num']}/{arch['sample_hidden_size']}/"
            f"{round(sum(qkv) / len(qkv))}/{round(sum(heads) / len(heads))}")


def ffn_size(arch: dict) -> int | None:
    """The FFN size of an arch whose layers all have the same one (``None`` otherwise)."""
    sizes = set(arch["sample_intermediate_sizes"])
    return next(iter(sizes)) if len(sizes) == 1 else None
