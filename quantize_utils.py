"""The int8 schemes of Bigger&Faster, in one place (SPEC section 2): the registry ``SCHEMES``.

Every scheme has one canonical name -- the name of the latency tables it is timed with -- and says
both how to *time* it (``Scheme.latency_runner``: the extracted plain ``BertModel`` of an arch, as
the latency stage measures it) and how to *score* it (``Scheme.scored_model``: the fine-tuned
``BertForSequenceClassification`` the evaluator runs on dev). A search pairs a predictor trained on
a scheme's table with candidates scored by the same scheme; ``resolve_scheme`` accepts the names
users type (``TYPE=ptq``, ``--quant_scheme torch_dynamic``, ``int8``, ``ort``).

* ``torch_fp32`` (search type ``fp``): no quantization, the AutoTinyBERT baseline.
* ``torch_dynamic_int8`` (``ptq``; the paper's int8): PyTorch eager dynamic quantization of every
  ``nn.Linear`` -- int8 per-tensor symmetric weights, activations quantized on the fly -- on the
  *extracted plain* model; the converted-module count is checked, because ``quantize_dynamic`` swaps
  modules by exact type and silently skips anything else.
* ``ort_dynamic_int8`` (``ort``): the plain model exported with ``torch.onnx`` (batch and sequence
  axes dynamic) and quantized to ONNX Runtime dynamic int8 (``DynamicQuantizeLinear`` +
  ``MatMulInteger`` for every Linear, checked), run in an ``InferenceSession``. The latency stage
  and the evaluator build the graph with the same function (``ort_dynamic_int8``).
* ``fakequant`` (parity only): the original code's per-tensor asymmetric min-max uint8
  quantize-dequantize of every supernet tensor; values stay fp32, so it is timed as
  ``torch_dynamic_int8`` as the authors did, and the evaluator applies it to the whole supernet.

A scheme also owns every name it goes by -- short name (``TYPE=ptq``), aliases, latency table and
predictor file names -- and whether it quantizes; other tables of these names are derived from
``SCHEMES``, and the shell scripts ask ``python -m quantize_utils FIELD NAME`` (``main``). The
machinery lives in ``quantization/`` and is re-exported here on first use.
"""

from __future__ import annotations

import dataclasses
import importlib
import sys
from typing import TYPE_CHECKING, Callable

from utils import UserError

if TYPE_CHECKING:
    import torch
    from torch import nn


@dataclasses.dataclass(frozen=True)
class Scheme:
    """One deployment precision and every name it goes by: how it is timed, how it is scored, and
    the names of its files. Every other table of scheme names in the project is derived from here."""

    name: str  # canonical; = the latency backend of its tables (except the fakequant parity scheme)
    short: str  # the short name of scripts and search directories (TYPE=, kd_<short>_<ms>): fp | ptq | ort | fakequant
    aliases: tuple[str, ...]  # other names users type (--scheme int8, TYPE=onnx, older records' names)
    precision: str  # fp32 | int8
    latency_backend: str  # the table (``lat_<backend>.jsonl``) a predictor for this scheme is trained on
    runtime: str  # torch | onnxruntime
    predictor_file: str  # the latency predictor's file name (conf_datasets/<predictor_file>)
    legacy_table: str  # the original's ``<arch>\t<ms>`` file name of its latency table
    description: str

    @property
    def names(self) -> tuple[str, ...]:
        """Every name that resolves to this scheme: canonical, short, aliases."""
        return tuple(dict.fromkeys((self.name, self.short) + self.aliases))

    @property
    def quantized(self) -> bool:
        return self.precision == "int8"

    @property
    def evaluator(self) -> str:
        """Which evaluator script scores it: ``superbert_run_en_classifier_<fp|ptq>.py``."""
        return "ptq" if self.quantized else "fp"

    @property
    def table_name(self) -> str:
        """The latency table the latency stage writes for this scheme's backend."""
        return f"lat_{self.latency_backend}.jsonl"

    @property
    def needs_supernet(self) -> bool:
        """fakequant takes its ranges from whole supernet tensors (the original's scheme)."""
        return self.name == "fakequant"

    def latency_runner(self, model: nn.Module, inputs: dict[str, torch.Tensor], threads: int = 1,
                       **options) -> tuple[Callable[[], object], dict]:
        """``(run, info)``: ``run()`` is one timed forward pass of the plain ``BertModel``."""
        from quantization.runners import LATENCY_RUNNERS

        return LATENCY_RUNNERS[self.latency_backend](model, inputs, threads, **options)

    def scored_model(self, model: nn.Module, threads: int = 1) -> tuple[object, dict]:
        """The model the evaluator scores for this scheme, from a fine-tuned fp32 CPU
        ``BertForSequenceClassification``: ``(callable(**inputs) -> .logits, info)``. ``info`` has
        ``converted_linear`` and ``size_mb_int8`` for int8 schemes."""
        if self.needs_supernet:
            raise ValueError("fakequant is applied to the whole supernet (evaluation.candidate), not to a sub-model")
        from quantization.runners import SCORERS

        return SCORERS[self.name](model, threads)


SCHEMES: dict[str, Scheme] = {scheme.name: scheme for scheme in (
    Scheme("torch_fp32", "fp", ("fp32", "none"), "fp32", "torch_fp32", "torch", "lat_predictor.pt", "lat_.tmp",
           "PyTorch fp32 (no quantization; the AutoTinyBERT baseline)"),
    Scheme("torch_dynamic_int8", "ptq", ("int8", "torch_dynamic", "torch_int8", "dynamic"), "int8",
           "torch_dynamic_int8", "torch", "lat_predictor_quant.pt", "lat_quant_.tmp",
           "PyTorch dynamic int8 on every nn.Linear (the paper's int8)"),
    Scheme("ort_dynamic_int8", "ort", ("ort_dynamic", "ort_int8", "onnx", "onnxruntime"), "int8",
           "ort_dynamic_int8", "onnxruntime", "lat_predictor_ort.pt", "lat_ort_quant_.tmp",
           "ONNX Runtime dynamic int8 (MatMulInteger for every Linear)"),
    Scheme("fakequant", "fakequant", ("fake", "fake_quant"), "int8", "torch_dynamic_int8", "torch",
           "lat_predictor_quant.pt", "lat_quant_.tmp",
           "the original's min-max fake-quant of the whole supernet (accuracy parity only)"),
)}
# The deployment schemes, one per latency backend (fakequant is timed as torch_dynamic_int8).
DEPLOYED: tuple[Scheme, ...] = tuple(scheme for scheme in SCHEMES.values() if not scheme.needs_supernet)
LATENCY_BACKENDS: tuple[str, ...] = tuple(scheme.latency_backend for scheme in DEPLOYED)
SHORT_NAMES: tuple[str, ...] = tuple(scheme.short for scheme in SCHEMES.values())


def resolve_scheme(name: str, flag: str = "--scheme") -> Scheme:
    """The scheme for any of its names (canonical, short, alias; case-insensitive); one-line error."""
    key = str(name).strip().lower()
    for scheme in SCHEMES.values():
        if key in scheme.names:
            return scheme
    names = ", ".join(f"{s.name} ({'/'.join(s.names[1:])})" for s in SCHEMES.values())
    raise UserError(f"{flag}: unknown scheme {name!r}; choose one of {names}")


def scheme_for_backend(backend: str) -> Scheme:
    """The deployment scheme a latency table's backend times (fakequant is never the answer)."""
    for scheme in DEPLOYED:
        if scheme.latency_backend == backend:
            return scheme
    raise UserError(f"unknown latency backend {backend!r}; choose one of {', '.join(LATENCY_BACKENDS)}")


def describe_short_names() -> str:
    """``fp, ptq, ort or fakequant``: the short names, as a sentence lists them."""
    return ", ".join(SHORT_NAMES[:-1]) + " or " + SHORT_NAMES[-1]


# --------------------------------------------------------------------------------------
# The machinery, re-exported lazily from ``quantization.*`` so that the registry (and the scripts'
# name look-ups) load without torch; ``from quantize_utils import quantize_dynamic_int8`` still works.
# --------------------------------------------------------------------------------------

_MACHINERY = {
    "quantization.torch_int8": ("select_quantized_engine", "count_linear_modules", "count_dynamic_int8_linear",
                                "quantize_dynamic_int8", "fake_quantize_tensor", "fake_quantize_model",
                                "int8_model_size_bytes"),
    "quantization.onnx_export": ("ORT_OPSET", "ORT_EXPORTERS", "DYNAMIC_OUTPUT_AXES", "export_onnx"),
    "quantization.ort_int8": ("ORT_CHECKED_VERSION", "ORT_QUANTIZERS", "ort_quantize_dynamic_int8",
                              "ort_embed_external", "ort_quantize_dynamic_official", "ort_session", "OrtInt8Graph",
                              "ort_int8_graph", "ort_dynamic_int8"),
    "quantization.runners": ("LATENCY_OUTPUT_NAMES", "OrtSequenceClassifier"),
}
_HOME = {name: module for module, names in _MACHINERY.items() for name in names}


def __getattr__(name: str):
    if name in _HOME:
        value = getattr(importlib.import_module(_HOME[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# --------------------------------------------------------------------------------------
# The scripts' one source of scheme names: ``python -m quantize_utils FIELD [NAME...]``
# --------------------------------------------------------------------------------------

FIELDS = ("name", "short", "predictor_file", "table_name", "legacy_table", "latency_backend", "evaluator",
          "quantized", "names")


def lookup(field: str, names: list[str]) -> list[str]:
    """``field`` of each named scheme (every deployment scheme when ``names`` is empty)."""
    if field not in FIELDS:
        raise UserError(f"FIELD: unknown field {field!r}; choose one of {', '.join(FIELDS)}")
    schemes = [resolve_scheme(name, "NAME") for name in names] if names else list(DEPLOYED)
    values = []
    for scheme in schemes:
        value = getattr(scheme, field)
        values.append(" ".join(value) if isinstance(value, tuple) else str(int(value)) if isinstance(value, bool)
                      else value)
    return values


def main(argv=None) -> int:
    """``python -m quantize_utils FIELD [NAME...]``: one line, the FIELD of each scheme NAME (any of its
    names: ``ptq``, ``int8``, ``torch_dynamic_int8``), space-separated; without NAME, of every
    deployment scheme. FIELD: name, short, predictor_file, table_name, legacy_table, latency_backend,
    evaluator (fp | ptq), quantized (1 | 0), names."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(main.__doc__)
        return 0 if argv else 2
    print(" ".join(lookup(argv[0], argv[1:])))
    return 0


if __name__ == "__main__":
    from utils import run_cli

    run_cli(main)
