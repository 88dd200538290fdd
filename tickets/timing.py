"""Latency of a *given* Hugging Face model with the rounds of the previous latency protocol
(``baf-latency-2``; the tables' default is now the paired ``baf-latency-3``): raw ms, in no table's unit.

The latency stage (``latency.backends``) builds a plain ``BertModel`` from an arch with random
weights; a ticket is a specific model, so this module feeds the ticket itself through the same
pieces: ``latency.backends.example_inputs`` (batch x seq of one fixed token), ``latency.measure.measure``
(warm-up, timed runs, interleaving, wall and CPU clocks) and ``Timing.statistics`` (median,
p10/p90, ...). Nothing of the protocol is re-implemented here.

What is timed is ``model.bert`` -- embeddings, encoder and pooler -- the module the latency tables
time, so a ticket's row compares with the searched models' measured latency. The pruned weights
are stored zeros in dense matrices: PyTorch's fp32 GEMM and the fbgemm/x86 int8 kernels multiply
them like any other value, so the latency is that of the dense model whatever the sparsity.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from latency.measure import Protocol, apply_threads, environment, load_average, measure, utc_now
from latency.protocol import ROUNDS  # a ticket is timed in rounds (latency.measure.measure)
from utils import UserError

TIMED_BACKENDS = ("torch_fp32", "torch_dynamic_int8")


def to_int8(model: nn.Module) -> tuple[nn.Module, int]:
    """The one place a ticket gets its int8 scheme: PyTorch dynamic int8 on every ``nn.Linear``
    of a copy (the latency tables' and the ptq evaluator's scheme). Returns ``(model, converted)``."""
    from quantize_utils import SCHEMES

    quantized, info = SCHEMES["torch_dynamic_int8"].scored_model(copy.deepcopy(model).cpu().eval())
    return quantized, info["converted_linear"]


def ticket_protocol(config, runs: int = 20, warmup: int = 5, rounds: int = 4, threads: int = 1,
                    seq_len: int = 128, timer: str = "wall") -> Protocol:
    """The tables' protocol for a model with ``config`` (its vocab and position limits)."""
    if seq_len > config.max_position_embeddings:
        raise UserError(f"--latency_seq_len {seq_len} exceeds the model's max_position_embeddings "
                        f"{config.max_position_embeddings}")
    return Protocol(version=ROUNDS, warmup=warmup, runs=runs, rounds=rounds, interleave=len(TIMED_BACKENDS),
                    timer=timer, threads=threads, seq_len=seq_len, vocab_size=config.vocab_size,
                    max_position_embeddings=config.max_position_embeddings)


def _runner(model: nn.Module, inputs: dict):
    def run():
        with torch.inference_mode():
            return model(**inputs)
    return run


def time_modules(models: dict[str, nn.Module], protocol: Protocol) -> dict[str, dict]:
    """Time each module (called with the protocol's inputs) interleaved, as the tables' chunks;
    ``{name: stats}``. The process's intra-op thread count is restored afterwards."""
    from latency.backends import example_inputs

    inputs = example_inputs(protocol)
    previous = torch.get_num_threads()
    apply_threads(protocol.threads)
    try:
        timings = measure([_runner(model, inputs) for model in models.values()], protocol)
    finally:
        torch.set_num_threads(previous)
    out = {}
    for name, timing in zip(models, timings):
        stats = timing.statistics(protocol.timer)
        # the tables' robust headline: the median over rounds, so one slow round cannot move it
        stats["median_ms"] = float(np.median(timing.round_medians(protocol.timer)))
        out[name] = stats
    return out


def time_hf_model(model: nn.Module, protocol: Protocol) -> dict:
    """fp32 and dynamic-int8 latency of ``model`` (an HF ``BertModel``; a model with a ``.bert``
    is timed through it). Returns ``{"torch_fp32": stats, "torch_dynamic_int8": stats,
    "protocol": ..., "environment": ..., ...}``."""
    from quantize_utils import count_linear_modules

    base = getattr(model, "bert", model)
    fp32 = copy.deepcopy(base).cpu().eval()
    int8, converted = to_int8(fp32)
    result = {"protocol": protocol.to_record(), "environment": environment("torch_dynamic_int8"),
              "load_average": load_average(), "measured_at": utc_now(),
              "timed_module": type(base).__name__, "linear_modules": count_linear_modules(fp32),
              "converted_linear": converted}
    result.update(time_modules(dict(zip(TIMED_BACKENDS, (fp32, int8))), protocol))
    return result
