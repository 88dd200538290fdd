"""The latency predictor's feature encodings of an arch (the original's 4 features and ours)."""

from __future__ import annotations

# --------------------------------------------------------------------------------------
# Latency predictor features
# --------------------------------------------------------------------------------------

# The original's 4 features and their normalisers ([hidden, layers, mean FFN, mean qkv]).
FEATURE_NAMES = ("hidden_size", "layer_num", "mean_intermediate_size", "mean_qkv_size")
ORIGINAL_FEATURE_NORM = (564.0, 5.0, 1024.0, 564.0)


def arch_features(arch: dict) -> list[float]:
    """The predictor's input features of an arch, in ``FEATURE_NAMES`` order."""
    ffn, qkv = arch["sample_intermediate_sizes"], arch["sample_qkv_sizes"]
    return [float(arch["sample_hidden_size"]), float(arch["sample_layer_num"]),
            sum(ffn) / len(ffn), sum(qkv) / len(qkv)]


# A richer encoding for the default latency predictor (the original's 4 features above stay for
# ``--recipe original``). Besides sizes it has FLOP-like products (what latency is made of) and
# alignment flags: int8/fp32 GEMM kernels and attention run measurably faster when a dimension is a
# multiple of 8/16/32/64 or the head dim a multiple of 4 (visible in the authors' own tables).
# Per-layer values enter as means (products, flags) so heterogeneous archs still encode.
FEATURE_NAMES_V2 = (
    "layer_num", "hidden_size", "mean_intermediate_size", "mean_qkv_size", "mean_num_attention_heads",
    "layers_x_hidden_x_ffn", "layers_x_hidden_x_qkv", "layers_x_hidden", "layers_x_ffn", "layers_x_qkv",
    "ffn_div8", "ffn_div16", "ffn_div32", "ffn_div64",
    "hidden_div8", "hidden_div16", "hidden_div32", "hidden_div64",
    "head_dim_mod4_0", "head_dim_mod4_1", "head_dim_mod4_2", "head_dim_mod4_3", "head_dim_div8",
)


def arch_features_v2(arch: dict) -> list[float]:
    """The default predictor's features of an arch, in ``FEATURE_NAMES_V2`` order."""
    layers, hidden = float(arch["sample_layer_num"]), float(arch["sample_hidden_size"])
    ffn, qkv, heads = arch["sample_intermediate_sizes"], arch["sample_qkv_sizes"], arch["sample_num_attention_heads"]
    n = len(ffn)

    def mean(values):
        return sum(values) / n

    def frac(values, test):
        return sum(1.0 for v in values if test(v)) / n

    head_dims = [q // a for q, a in zip(qkv, heads)]
    return [
        layers, hidden, mean(ffn), mean(qkv), mean(heads),
        hidden * sum(ffn), hidden * sum(qkv), layers * hidden, float(sum(ffn)), float(sum(qkv)),
        frac(ffn, lambda v: v % 8 == 0), frac(ffn, lambda v: v % 16 == 0),
        frac(ffn, lambda v: v % 32 == 0), frac(ffn, lambda v: v % 64 == 0),
        float(hidden % 8 == 0), float(hidden % 16 == 0), float(hidden % 32 == 0), float(hidden % 64 == 0),
        frac(head_dims, lambda v: v % 4 == 0), frac(head_dims, lambda v: v % 4 == 1),
        frac(head_dims, lambda v: v % 4 == 2), frac(head_dims, lambda v: v % 4 == 3),
        frac(head_dims, lambda v: v % 8 == 0),
    ]
