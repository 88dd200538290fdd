"""What a latency record times: the *extracted plain* Hugging Face ``BertModel`` of an arch
(SPEC section 5), with random weights (latency depends on shape only), in one or several of the three
backends of the scheme registry (``quantize_utils.SCHEMES``; each scheme's ``latency_runner``);
``prepare_backends`` builds the model once for all the backends of a run.

Builds are *cheap* under protocol ``baf-latency-3`` (``Protocol.model_build``): the model is
created on the ``meta`` device (no memory, no initialisation: ``nn.Linear``'s and BERT's random
initialisations, whose values are thrown away, were most of the build time), then allocated and
filled by copying slices of one seeded pool of N(0, 0.02) values (LayerNorm weights 1, biases 0: the
distribution BERT's own initialisation gives). The kernels' speed does not depend on the values
(dense fp32 GEMM; dynamic int8 quantizes whatever range it finds), which
``benchmarks/bench_latency_paired.py`` checks by timing both builds of the same archs in pairs
(``--build_archs``; ``--skip_builds`` skips it).
Protocol ``baf-latency-2`` builds as before (``BertModel(config)`` after ``torch.manual_seed``).

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


def build_plain_bert(arch: dict, protocol: Protocol, build: str | None = None):
    """The plain HF ``BertModel`` of ``arch`` (eval mode, fp32, seeded random weights), built the
    protocol's way (``build``: ``cheap`` or ``full`` overrides it; the benchmark compares the two)."""
    from transformers import BertModel

    from transformer.config import SuperBertConfig
    from transformer.hf_converter import arch_to_bert_config

    supernet = SuperBertConfig(vocab_size=protocol.vocab_size, max_position_embeddings=protocol.max_position_embeddings)
    config = arch_to_bert_config(arch, supernet)
    if (build or protocol.model_build) == "cheap":
        return _cheap_bert(config, protocol.seed)
    torch.manual_seed(protocol.seed)
    return BertModel(config).eval()


POOL_SIZE = 1 << 22  # 4 Mi values (16 MB): larger tensors take it several times over
_POOLS: dict[int, torch.Tensor] = {}
# the buffers of BertEmbeddings, restored after allocation (anything else is refused: see _cheap_bert)
_BUFFERS = {"embeddings.position_ids": lambda b: b.copy_(torch.arange(b.shape[-1]).expand_as(b)),
            "embeddings.token_type_ids": lambda b: b.zero_()}


def _pool(seed: int) -> torch.Tensor:
    if seed not in _POOLS:
        generator = torch.Generator().manual_seed(seed)
        _POOLS[seed] = torch.randn(POOL_SIZE, generator=generator) * 0.02
    return _POOLS[seed]


def _cheap_bert(config, seed: int):
    """``BertModel(config)`` without its random initialisation (see the module docstring)."""
    from transformers import BertModel

    with torch.device("meta"):
        model = BertModel(config)
    model = model.to_empty(device="cpu")
    pool, offset = _pool(seed), 0
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("bias"):
                parameter.zero_()
            elif "LayerNorm" in name:
                parameter.fill_(1.0)
            else:
                flat = parameter.view(-1)
                for start in range(0, flat.numel(), POOL_SIZE):
                    count = min(POOL_SIZE, flat.numel() - start)
                    offset = offset if offset + count <= POOL_SIZE else 0
                    flat[start:start + count].copy_(pool[offset:offset + count])
                    offset += count
        for name, buffer in model.named_buffers():
            if name not in _BUFFERS:  # a transformers release added a buffer this build does not know
                raise RuntimeError(f"cheap model build: unknown buffer {name!r} of BertModel; add it to _BUFFERS")
            _BUFFERS[name](buffer)
    return model.eval()


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
              "attn_implementation": getattr(model.config, "_attn_implementation", None),
              "model_build": protocol.model_build}
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
