"""What a latency record times: the *extracted plain* Hugging Face ``BertModel`` of an arch
(SPEC section 5), with random weights (latency depends on shape only), in one or several of the three
backends of the scheme registry (``quantize_utils.SCHEMES``; each scheme's ``latency_runner``);
``prepare_backends`` builds the model once for all the backends of a run:

* ``torch_fp32``          -- the model as is, under ``torch.inference_mode()``;
* ``torch_dynamic_int8``  -- ``quantize_utils.quantize_dynamic_int8`` (every ``nn.Linear`` int8; checked);
* ``ort_dynamic_int8``    -- exported with ``torch.onnx`` and quantized to ONNX Runtime dynamic int8
                             (``quantize_utils.ort_dynamic_int8``; every Linear a ``MatMulInteger``; checked).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Callable

import torch

from latency.measure import BACKENDS, Protocol
from quantize_utils import LATENCY_OUTPUT_NAMES as OUTPUT_NAMES  # noqa: F401 (the timed outputs; tests use it)
from utils import UserError


@dataclasses.dataclass
class Prepared:
    """One arch ready to time: ``run()`` is one forward pass; ``info`` goes into its record."""

    run: Callable[[], object]
    info: dict


def import_model_code() -> None:
    """Import what building a model needs (transformers' BERT takes seconds to import), so that a
    run's measuring time does not include it."""
    from transformers import BertModel  # noqa: F401

    from transformer.hf_converter import arch_to_bert_config  # noqa: F401


def build_plain_bert(arch: dict, protocol: Protocol):
    """The plain HF ``BertModel`` of ``arch`` (eval mode, fp32, seeded random weights)."""
    from transformers import BertModel

    from transformer.config import SuperBertConfig
    from transformer.hf_converter import arch_to_bert_config

    supernet = SuperBertConfig(vocab_size=protocol.vocab_size, max_position_embeddings=protocol.max_position_embeddings)
    config = arch_to_bert_config(arch, supernet)
    torch.manual_seed(protocol.seed)
    return BertModel(config).eval()


def example_inputs(protocol: Protocol) -> dict[str, torch.Tensor]:
    """The timed input: one fixed non-special token everywhere, full attention, token types 0."""
    shape = (protocol.batch_size, protocol.seq_len)
    return {"input_ids": torch.full(shape, protocol.token_id, dtype=torch.long),
            "attention_mask": torch.ones(shape, dtype=torch.long),
            "token_type_ids": torch.zeros(shape, dtype=torch.long)}


def prepare(arch: dict, backend: str, protocol: Protocol, exporter: str = "torchscript",
            ort_quantizer: str = "fast") -> Prepared:
    """Build (and quantize / export) the model of ``arch`` for ``backend``, as the scheme registry
    (``quantize_utils.SCHEMES``) times it."""
    return prepare_backends(arch, [backend], protocol, exporter=exporter, ort_quantizer=ort_quantizer)[backend]


def prepare_backends(arch: dict, names: list[str], protocol: Protocol, exporter: str = "torchscript",
                     ort_quantizer: str = "fast") -> dict[str, Prepared]:
    """The model of ``arch`` built once (same seeded weights) and made ready for every backend in
    ``names`` (``{backend: Prepared}``): the fp32 model as is, a dynamic int8 copy, an ORT session.
    ``prepare_s`` of each is the shared build plus its own conversion."""
    from quantize_utils import count_linear_modules, scheme_for_backend

    for backend in names:
        if backend not in BACKENDS:
            raise UserError(f"unknown latency backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    start = time.perf_counter()
    model = build_plain_bert(arch, protocol)
    inputs = example_inputs(protocol)
    shared = {"linear_modules": count_linear_modules(model),
              "attn_implementation": getattr(model.config, "_attn_implementation", None)}
    build_s = time.perf_counter() - start
    prepared = {}
    for backend in names:
        begin = time.perf_counter()
        run, scheme_info = scheme_for_backend(backend).latency_runner(model, inputs, protocol.threads,
                                                                      exporter=exporter, ort_quantizer=ort_quantizer)
        info = dict(shared, **scheme_info)
        info["prepare_s"] = round(build_s + time.perf_counter() - begin, 4)
        prepared[backend] = Prepared(run=run, info=info)
    return prepared
