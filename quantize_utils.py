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
"""

from __future__ import annotations

import copy
import dataclasses
import warnings
from typing import Callable

import torch
from torch import nn

from utils import UserError


@dataclasses.dataclass(frozen=True)
class Scheme:
    """One deployment precision: how it is timed and how it is scored."""

    name: str  # canonical; = the latency backend of its tables (except the fakequant parity scheme)
    search_type: str  # the short name of scripts and search directories: fp | ptq | ort | fakequant
    aliases: tuple[str, ...]
    precision: str  # fp32 | int8
    latency_backend: str  # the table (``lat_<backend>.jsonl``) a predictor for this scheme is trained on
    runtime: str  # torch | onnxruntime
    description: str

    @property
    def quantized(self) -> bool:
        return self.precision == "int8"

    @property
    def needs_supernet(self) -> bool:
        """fakequant takes its ranges from whole supernet tensors (the original's scheme)."""
        return self.name == "fakequant"

    def latency_runner(self, model: nn.Module, inputs: dict[str, torch.Tensor], threads: int = 1,
                       **options) -> tuple[Callable[[], object], dict]:
        """``(run, info)``: ``run()`` is one timed forward pass of the plain ``BertModel``."""
        return _LATENCY_RUNNERS[self.latency_backend](model, inputs, threads, **options)

    def scored_model(self, model: nn.Module, threads: int = 1) -> tuple[object, dict]:
        """The model the evaluator scores for this scheme, from a fine-tuned fp32 CPU
        ``BertForSequenceClassification``: ``(callable(**inputs) -> .logits, info)``. ``info`` has
        ``converted_linear`` and ``size_mb_int8`` for int8 schemes."""
        if self.needs_supernet:
            raise ValueError("fakequant is applied to the whole supernet (evaluation.candidate), not to a sub-model")
        return _SCORERS[self.name](model, threads)


SCHEMES: dict[str, Scheme] = {scheme.name: scheme for scheme in (
    Scheme("torch_fp32", "fp", ("fp", "fp32", "none"), "fp32", "torch_fp32", "torch",
           "PyTorch fp32 (no quantization; the AutoTinyBERT baseline)"),
    Scheme("torch_dynamic_int8", "ptq", ("ptq", "int8", "torch_dynamic", "torch_int8", "dynamic"), "int8",
           "torch_dynamic_int8", "torch", "PyTorch dynamic int8 on every nn.Linear (the paper's int8)"),
    Scheme("ort_dynamic_int8", "ort", ("ort", "ort_dynamic", "ort_int8", "onnx", "onnxruntime"), "int8",
           "ort_dynamic_int8", "onnxruntime", "ONNX Runtime dynamic int8 (MatMulInteger for every Linear)"),
    Scheme("fakequant", "fakequant", ("fake", "fake_quant"), "int8", "torch_dynamic_int8", "torch",
           "the original's min-max fake-quant of the whole supernet (accuracy parity only)"),
)}
LATENCY_BACKENDS = ("torch_fp32", "torch_dynamic_int8", "ort_dynamic_int8")


def resolve_scheme(name: str, flag: str = "--scheme") -> Scheme:
    """The scheme for a canonical name or an alias users type (case-insensitive); one-line error."""
    key = str(name).strip().lower()
    for scheme in SCHEMES.values():
        if key == scheme.name or key in scheme.aliases:
            return scheme
    names = ", ".join(f"{s.name} ({'/'.join(s.aliases)})" for s in SCHEMES.values())
    raise UserError(f"{flag}: unknown scheme {name!r}; choose one of {names}")


def scheme_for_backend(backend: str) -> Scheme:
    """The deployment scheme a latency table's backend times (fakequant is never the answer)."""
    for scheme in SCHEMES.values():
        if scheme.latency_backend == backend and not scheme.needs_supernet:
            return scheme
    raise UserError(f"unknown latency backend {backend!r}; choose one of {', '.join(LATENCY_BACKENDS)}")


def _quantize_dynamic_api():
    """``torch.ao.quantization.quantize_dynamic``, with a clear error if a future torch removed it."""
    try:
        from torch.ao.quantization import quantize_dynamic
    except ImportError:  # pragma: no cover - depends on the installed torch
        raise UserError(f"torch {torch.__version__} has no torch.ao.quantization.quantize_dynamic; "
                        "install the pinned torch from requirements.txt") from None
    return quantize_dynamic


def select_quantized_engine(preferred: tuple[str, ...] = ("x86", "fbgemm", "qnnpack")) -> str:
    """Pick and set an available quantized engine explicitly (the default can be 'none' on
    some builds); returns its name so that it can be recorded with every measurement."""
    supported = torch.backends.quantized.supported_engines
    for engine in preferred:
        if engine in supported:
            torch.backends.quantized.engine = engine
            return engine
    raise UserError(f"no quantized engine available in this torch build (supported: {supported})")


def count_linear_modules(model: nn.Module) -> int:
    """Plain ``nn.Linear`` modules (exact type, as ``quantize_dynamic`` matches them)."""
    return sum(1 for module in model.modules() if type(module) is nn.Linear)


def count_dynamic_int8_linear(model: nn.Module) -> int:
    from torch.ao.nn.quantized.dynamic import Linear as DynamicQuantizedLinear

    return sum(1 for module in model.modules() if type(module) is DynamicQuantizedLinear)


def quantize_dynamic_int8(model: nn.Module, inplace: bool = False) -> tuple[nn.Module, int]:
    """PyTorch dynamic int8 on every ``nn.Linear``; returns ``(quantized_model, converted_count)``.

    Raises if any ``nn.Linear`` was left in fp32 (the failure mode the original never checked).
    """
    quantize_dynamic = _quantize_dynamic_api()
    expected = count_linear_modules(model)
    select_quantized_engine()
    with warnings.catch_warnings():
        # torch.ao eager quantization warns that it is deprecated in favour of torchao; the paper's
        # latency tables use exactly this path, so the warning is expected and silenced here.
        warnings.simplefilter("ignore")
        quantized = quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8, inplace=inplace)
    converted = count_dynamic_int8_linear(quantized)
    left = count_linear_modules(quantized)
    if converted != expected or left:
        raise RuntimeError(f"dynamic int8 converted {converted} of {expected} nn.Linear modules ({left} left in fp32)")
    return quantized, converted


# --------------------------------------------------------------------------------------
# The original's fake-quant (parity option)
# --------------------------------------------------------------------------------------


def fake_quantize_tensor(tensor: torch.Tensor, bits: int = 8) -> torch.Tensor:
    """Per-tensor asymmetric min-max quantize then dequantize (the original ``quantize`` +
    ``dequantize``): ``q = rint((w - min) / (max - min) * (2^bits - 1))``, back to float."""
    if not tensor.is_floating_point() or tensor.numel() == 0:
        return tensor
    levels = 2**bits - 1
    low = tensor.min()
    span = tensor.max() - low
    if span == 0:
        return tensor.clone()  # the original keeps constant tensors unchanged
    scale = span / levels
    return torch.round((tensor - low) / scale) * scale + low


def fake_quantize_model(model: nn.Module, bits: int = 8, inplace: bool = False) -> nn.Module:
    """Fake-quantize every floating-point state-dict tensor of ``model`` (weights, biases,
    LayerNorm, embeddings), as the original's ``quantize_model``. Values stay fp32."""
    target = model if inplace else copy.deepcopy(model)
    with torch.no_grad():
        state = target.state_dict()
        target.load_state_dict({key: fake_quantize_tensor(value, bits) for key, value in state.items()})
    return target


def int8_model_size_bytes(model: nn.Module) -> int:
    """Serialized size of a model's weights (int8 packed Linear weights count one byte each)."""
    import io

    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getbuffer().nbytes


# --------------------------------------------------------------------------------------
# ONNX Runtime dynamic int8 (``ort_dynamic``): export the fp32 plain model, quantize in ORT's
# QOperator format (DynamicQuantizeLinear + MatMulInteger), run with InferenceSession.
# --------------------------------------------------------------------------------------

# Opset pinned for reproducible graphs: 17 is the first with a fused LayerNormalization op.
ORT_OPSET = 17
# The onnxruntime release our int8 graph was checked against (identical outputs to its
# quantize_dynamic; tests/test_latency_onnx.py). requirements.txt pins the same version.
ORT_CHECKED_VERSION = "1.32.0"
ORT_EXPORTERS = ("torchscript", "dynamo")
ORT_QUANTIZERS = ("fast", "official")


class _WeightsAsInputs(nn.Module):
    """Runs ``model`` with its parameters taken from the forward arguments.

    The TorchScript exporter then emits the weights as graph *inputs* instead of serialising them
    into the graph and running ONNX shape inference over them (most of the export time for a
    BERT with a 30k-row embedding). ``ort_quantize_dynamic_int8`` writes them back as (int8)
    initializers. The traced graph is the model's own; only where the weights live differs.
    """

    def __init__(self, model: nn.Module, input_names: tuple[str, ...], output_names: tuple[str, ...]):
        super().__init__()
        self.model, self.input_names, self.output_names = model, input_names, output_names
        named = dict(model.named_parameters())  # unique tensors, in a fixed order
        self.weight_names = tuple(named)
        index = {id(tensor): i for i, tensor in enumerate(named.values())}
        # every (module, attribute) slot, shared parameters included, -> index of its tensor
        self._slots = [(module, attr, index[id(tensor)])
                       for module in model.modules() for attr, tensor in module._parameters.items()
                       if tensor is not None]

    def forward(self, *tensors):
        inputs, weights = tensors[:len(self.input_names)], tensors[len(self.input_names):]
        saved = [(module, attr, module._parameters[attr]) for module, attr, _ in self._slots]
        try:
            for module, attr, i in self._slots:
                module._parameters[attr] = weights[i]
            output = self.model(**dict(zip(self.input_names, inputs)))
        finally:
            for module, attr, tensor in saved:
                module._parameters[attr] = tensor
        return tuple(getattr(output, name) for name in self.output_names)


# Axes left symbolic in exported graphs (TorchScript exporter), so one graph serves the latency
# stage's 1 x 128 input and the evaluator's dynamically padded batches.
DYNAMIC_OUTPUT_AXES = {"last_hidden_state": {0: "batch", 1: "sequence"}, "pooler_output": {0: "batch"},
                       "logits": {0: "batch"}}


def export_onnx(model: nn.Module, inputs: dict[str, torch.Tensor], output_names: tuple[str, ...],
                exporter: str = "torchscript", opset: int = ORT_OPSET, dynamic: bool = True):
    """Export an fp32 model with ``torch.onnx.export``; returns ``(graph, weights)``, where
    ``weights`` maps initializer/graph-input names to numpy arrays. With ``dynamic`` (TorchScript
    exporter only) the batch and sequence axes are symbolic; the dynamo path exports static shapes.

    ``torchscript`` (``dynamo=False``, the default here) is ~3x faster per arch than ``dynamo=True``
    for HF BERT (see BENCHMARKS.md) and, with the weights passed as inputs, spends almost nothing on
    the weights. ``dynamo`` (torch.export) is the exporter PyTorch recommends going forward; its graph
    keeps the weights as initializers, which this function moves into ``weights`` as well.
    """
    if exporter not in ORT_EXPORTERS:
        raise UserError(f"--exporter: unknown exporter {exporter!r}; choose one of {', '.join(ORT_EXPORTERS)}")
    was_training = model.training
    model.eval()
    names = tuple(inputs)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tracing runs one small forward: extra threads only spin (2x CPU on 2 cores)
    try:
        return _export_onnx(model, inputs, names, output_names, exporter, opset, dynamic)
    finally:
        torch.set_num_threads(threads)
        model.train(was_training)  # the exporter restores its wrapper's mode, recursively


def _export_onnx(model, inputs, names, output_names, exporter, opset, dynamic):
    import io
    import warnings

    import onnx
    from onnx import numpy_helper

    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # TorchScript exporter deprecation + tracer warnings
        if exporter == "torchscript":
            wrapper = _WeightsAsInputs(model, names, output_names).eval()
            weights_t = [p.detach() for p in dict(model.named_parameters()).values()]
            buffer = io.BytesIO()
            axes = None
            if dynamic:
                axes = {name: {0: "batch", 1: "sequence"} for name in names}
                axes.update({name: DYNAMIC_OUTPUT_AXES.get(name, {0: "batch"}) for name in output_names})
            torch.onnx.export(wrapper, tuple(inputs.values()) + tuple(weights_t), buffer, dynamo=False,
                              opset_version=opset, input_names=list(names) + list(wrapper.weight_names),
                              output_names=list(output_names), do_constant_folding=True, dynamic_axes=axes)
            graph = onnx.load_from_string(buffer.getvalue())
            weights = {name: t.numpy() for name, t in zip(wrapper.weight_names, weights_t)}
        else:
            wrapper = _OutputSelector(model, output_names).eval()
            # the dynamo exporter implements opset >= 18 only (it would convert down, slowly)
            program = torch.onnx.export(wrapper, (), kwargs=dict(inputs), dynamo=True, opset_version=max(opset, 18),
                                        input_names=list(names), output_names=list(output_names),
                                        optimize=True, verbose=False)
            graph = program.model_proto
            weights = {init.name: numpy_helper.to_array(init) for init in graph.graph.initializer}
            del graph.graph.initializer[:]
    return graph, weights


class _OutputSelector(nn.Module):
    def __init__(self, model: nn.Module, output_names: tuple[str, ...]):
        super().__init__()
        self.model, self.output_names = model, output_names

    def forward(self, **inputs):
        output = self.model(**inputs)
        return tuple(getattr(output, name) for name in self.output_names)


def _attribute(node, name: str, default):
    from onnx import helper

    for attr in node.attribute:
        if attr.name == name:
            return helper.get_attribute_value(attr)
    return default


def ort_quantize_dynamic_int8(graph, weights: dict, op_types: tuple[str, ...] = ("MatMul", "Gemm"),
                              inline_bytes: int = 4096):
    """ONNX Runtime dynamic int8 of every weight MatMul/Gemm, built directly.

    Returns ``(graph, external, converted_count)``: the graph is modified in place; tensors larger
    than ``inline_bytes`` are declared as external initializers and returned in ``external``
    (name -> numpy array) for ``ort_session`` to hand over in memory, so that no weight is copied
    into protobuf, serialised and parsed again.

    The graph is the one ``onnxruntime.quantization.quantize_dynamic`` builds (QOperator format:
    ``DynamicQuantizeLinear`` on the activation, int8 symmetric per-tensor weights from ORT's own
    ``quantize_data``, ``MatMulInteger``, ``Cast``, scale ``Mul``), without the official tool's
    save / shape-infer / reload round trips (most of its time). A Linear exported as
    ``MatMul(x, Transpose(W))`` is recognised, and so is a ``Gemm`` (the pooler), so every
    ``nn.Linear`` is int8, as in the PyTorch scheme.
    """
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper
    from onnxruntime.quantization.quant_utils import quantize_data

    g = graph.graph
    producer = {out: node for node in g.node for out in node.output}
    uses: dict[str, int] = {}
    for node in g.node:
        for name in node.input:
            uses[name] = uses.get(name, 0) + 1

    def weight_matrix(name: str, transposed: bool):
        """The [in, out] matrix behind a MatMul/Gemm B input, and the Transpose node it folds."""
        folded = None
        if name not in weights and name in producer and producer[name].op_type == "Transpose":
            node = producer[name]
            if (node.input[0] in weights and weights[node.input[0]].ndim == 2
                    and list(_attribute(node, "perm", [1, 0])) == [1, 0]):
                folded, transposed, name = node, not transposed, node.input[0]
        if name not in weights or weights[name].ndim != 2 or weights[name].dtype != np.float32:
            return None, None
        return (weights[name].T if transposed else weights[name]), folded

    nodes, tensors, dropped, converted = [], {}, set(), 0
    activation_quantized: dict[str, tuple[str, str, str]] = {}
    for node in g.node:
        kind = node.op_type
        quantize = kind in op_types and kind in ("MatMul", "Gemm")
        if quantize and kind == "Gemm":
            quantize = (_attribute(node, "transA", 0) == 0 and _attribute(node, "alpha", 1.0) == 1.0
                        and _attribute(node, "beta", 1.0) == 1.0)
        matrix, folded = (weight_matrix(node.input[1], kind == "Gemm" and _attribute(node, "transB", 0) == 1)
                          if quantize else (None, None))
        if matrix is None:
            nodes.append(node)
            continue
        if folded is not None and uses.get(folded.output[0], 0) == 1:
            dropped.add(folded.output[0])
        converted += 1
        base = node.name or f"{kind}_{converted}"
        zero_point, scale, quantized = quantize_data(matrix, TensorProto.INT8, symmetric=True, reduce_range=False)
        w_q, w_scale, w_zp = f"{base}.W_quantized", f"{base}.W_scale", f"{base}.W_zero_point"
        tensors[w_q] = np.ascontiguousarray(quantized, dtype=np.int8)
        tensors[w_scale] = np.asarray(scale, dtype=np.float32).reshape(())
        tensors[w_zp] = np.asarray(zero_point, dtype=np.int8).reshape(())
        # one DynamicQuantizeLinear per activation, shared by the MatMuls that read it (Q/K/V), as
        # quantize_dynamic does: same ops, same numbers, and fewer quantizations per layer
        if node.input[0] not in activation_quantized:
            a_q, a_scale, a_zp = f"{base}.A_quantized", f"{base}.A_scale", f"{base}.A_zero_point"
            nodes.append(helper.make_node("DynamicQuantizeLinear", [node.input[0]], [a_q, a_scale, a_zp],
                                          f"{base}_dql"))
            activation_quantized[node.input[0]] = (a_q, a_scale, a_zp)
        a_q, a_scale, a_zp = activation_quantized[node.input[0]]
        integer, as_float, scales = f"{base}.MatMulInteger", f"{base}.MatMulInteger_float", f"{base}.scales"
        out = node.output[0] if len(node.input) < 3 else f"{base}.scaled"
        nodes += [
            helper.make_node("MatMulInteger", [a_q, w_q, a_zp, w_zp], [integer], f"{base}_quant"),
            helper.make_node("Cast", [integer], [as_float], f"{base}_cast", to=TensorProto.FLOAT),
            helper.make_node("Mul", [a_scale, w_scale], [scales], f"{base}_scales_mul"),
            helper.make_node("Mul", [as_float, scales], [out], f"{base}_output_scale_mul"),
        ]
        if out != node.output[0]:  # Gemm bias
            nodes.append(helper.make_node("Add", [out, node.input[2]], [node.output[0]], f"{base}_bias"))

    nodes = [node for node in nodes if not (node.op_type == "Transpose" and node.output[0] in dropped)]
    used = {name for node in nodes for name in node.input}
    tensors.update({name: np.ascontiguousarray(array) for name, array in weights.items() if name in used})
    kept_inputs = [value for value in g.input if value.name not in weights]
    del g.node[:]
    g.node.extend(nodes)
    del g.input[:]
    g.input.extend(kept_inputs)
    del g.initializer[:]
    external = {}
    for name, array in tensors.items():
        if array.nbytes <= inline_bytes:
            g.initializer.append(numpy_helper.from_array(array, name))
            continue
        tensor = g.initializer.add()  # declared here, data handed to ORT in memory
        tensor.name, tensor.data_type = name, helper.np_dtype_to_tensor_dtype(array.dtype)
        tensor.dims.extend(array.shape)
        tensor.data_location = TensorProto.EXTERNAL
        entry = tensor.external_data.add()
        entry.key, entry.value = "location", f"in-memory/{name}"
        external[name] = array
    # value_info for every intermediate tensor, as quantize_dynamic leaves it: with symbolic axes ORT
    # fuses MatMulInteger/Cast/Mul only where it knows the shapes (without it, outputs differ by ~1e-7)
    import onnx

    del g.value_info[:]  # the exporter's, describing the fp32 graph
    inferred = onnx.shape_inference.infer_shapes(graph)
    g.value_info.extend(inferred.graph.value_info)
    return graph, external, converted


def ort_embed_external(graph, external: dict):
    """A self-contained copy of a graph whose external initializers are given in memory (to save
    it to a file or to hand it to tools that read ONNX files)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.ModelProto()
    model.CopyFrom(graph)
    for index, tensor in enumerate(model.graph.initializer):
        if tensor.name in external:
            model.graph.initializer[index].CopyFrom(numpy_helper.from_array(external[tensor.name], tensor.name))
    return model


def ort_quantize_dynamic_official(graph, weights: dict, op_types: tuple[str, ...] = ("MatMul",)):
    """The same through ``onnxruntime.quantization.quantize_dynamic`` (the slow reference; the
    weights are written as initializers first, with weight Transposes folded so that ORT sees
    constant MatMul inputs). Returns ``(quantized_graph, converted_count)``."""
    import logging
    import os
    import tempfile

    import numpy as np
    import onnx
    from onnx import numpy_helper
    from onnxruntime.quantization import QuantType, quantize_dynamic

    g = onnx.ModelProto()
    g.CopyFrom(graph)
    folded = {}
    for node in g.graph.node:
        if node.op_type == "Transpose" and node.input[0] in weights and weights[node.input[0]].ndim == 2:
            folded[node.output[0]] = weights[node.input[0]].T
    keep = [node for node in g.graph.node if node.output[0] not in folded]
    del g.graph.node[:]
    g.graph.node.extend(keep)
    used = {name for node in keep for name in node.input}
    for name, array in list(weights.items()) + list(folded.items()):
        if name in used:
            g.graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
    inputs = [value for value in g.graph.input if value.name not in weights]
    del g.graph.input[:]
    g.graph.input.extend(inputs)
    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.ERROR))  # ORT logs one INFO line per skipped node on the root logger
    try:
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, "model.int8.onnx")
            quantize_dynamic(g, out, weight_type=QuantType.QInt8, op_types_to_quantize=list(op_types))
            quantized = onnx.load(out)
    finally:
        root.setLevel(level)
    converted = sum(1 for node in quantized.graph.node if node.op_type == "MatMulInteger")
    return quantized, converted


def ort_session(graph, threads: int = 1, external: dict | None = None):
    """An ORT CPU session pinned like the torch timing: ``intra_op_num_threads=threads``,
    ``inter_op_num_threads=1``, sequential execution, all graph optimisations. ``external`` holds
    the in-memory data of external initializers (see ``ort_quantize_dynamic_int8``)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    if external:
        names = list(external)
        options.add_external_initializers(names,
                                          [ort.OrtValue.ortvalue_from_numpy(external[name]) for name in names])
    payload = graph if isinstance(graph, bytes) else graph.SerializeToString()
    session = ort.InferenceSession(payload, options, providers=["CPUExecutionProvider"])
    session._bigger_and_faster_external = external  # the arrays must outlive the session
    return session


@dataclasses.dataclass
class OrtInt8Graph:
    """An ONNX Runtime dynamic int8 graph: ``graph`` declares the large initializers as external and
    ``external`` holds their data in memory (``ort_quantize_dynamic_int8``); ``info`` says how it was built."""

    graph: object
    external: dict | None
    info: dict

    def session(self, threads: int = 1):
        return ort_session(self.graph, threads, self.external)

    def save(self, path: str) -> int:
        """A self-contained ``.onnx`` file (atomic); returns its size in bytes."""
        import onnx

        from utils import atomic_write

        model = ort_embed_external(self.graph, self.external) if self.external else self.graph
        payload = model.SerializeToString()
        if len(payload) >= 2**31 - 1:  # protobuf's limit; BERT-base int8 is ~110 MB, far below
            raise UserError(f"{path}: the ONNX model is too large for one protobuf file")
        with atomic_write(path, "wb", encoding=None) as handle:
            handle.write(payload)
        onnx.checker.check_model(path)
        return len(payload)

    def size_bytes(self) -> int:
        """Bytes of the int8 graph with its weights, as the saved file holds them."""
        return self.graph.ByteSize() + sum(array.nbytes for array in (self.external or {}).values())


def ort_int8_graph(model: nn.Module, inputs: dict[str, torch.Tensor], output_names: tuple[str, ...],
                   exporter: str = "torchscript", quantizer: str = "fast", opset: int = ORT_OPSET,
                   dynamic: bool = True) -> OrtInt8Graph:
    """Export + ORT dynamic int8, checking that every ``nn.Linear`` became a ``MatMulInteger``
    (the fast quantizer; the official tool skips the pooler's Gemm). The latency stage and the
    evaluator both build their graphs here."""
    import time

    if quantizer not in ORT_QUANTIZERS:
        raise UserError(f"--ort_quantizer: unknown quantizer {quantizer!r}; choose one of {', '.join(ORT_QUANTIZERS)}")
    expected = count_linear_modules(model)
    start = time.perf_counter()
    graph, weights = export_onnx(model, inputs, output_names, exporter=exporter, opset=opset, dynamic=dynamic)
    exported = time.perf_counter()
    external = None
    if quantizer == "fast":
        quantized, external, converted = ort_quantize_dynamic_int8(graph, weights)
        if converted != expected:
            raise RuntimeError(f"ORT dynamic int8 converted {converted} of {expected} nn.Linear modules")
    else:
        quantized, converted = ort_quantize_dynamic_official(graph, weights)
        if converted < expected - 1:  # quantize_dynamic leaves Gemm (the pooler) in fp32
            raise RuntimeError(f"onnxruntime quantize_dynamic converted {converted} of {expected} nn.Linear modules")
    opset_used = next((op.version for op in quantized.opset_import if op.domain in ("", "ai.onnx")), opset)
    info = {"converted_linear": converted, "linear_modules": expected, "exporter": exporter, "opset": opset_used,
            "ort_quantizer": quantizer, "ort_dynamic_axes": bool(dynamic and exporter == "torchscript"),
            "export_s": exported - start, "quantize_s": time.perf_counter() - exported}
    return OrtInt8Graph(quantized, external, info)


def ort_dynamic_int8(model: nn.Module, inputs: dict[str, torch.Tensor], output_names: tuple[str, ...],
                     threads: int = 1, exporter: str = "torchscript", quantizer: str = "fast",
                     opset: int = ORT_OPSET, dynamic: bool = True):
    """``ort_int8_graph`` and its session: ``(session, info)``; ``info`` holds the counts and the
    export / quantize / session seconds."""
    import time

    built = ort_int8_graph(model, inputs, output_names, exporter, quantizer, opset, dynamic)
    start = time.perf_counter()
    session = built.session(threads)
    return session, dict(built.info, session_s=time.perf_counter() - start)


# --------------------------------------------------------------------------------------
# The registry's two faces: a timed runner per latency backend, a scored model per scheme
# --------------------------------------------------------------------------------------

LATENCY_OUTPUT_NAMES = ("last_hidden_state", "pooler_output")


def _torch_runner(model: nn.Module, inputs: dict[str, torch.Tensor]) -> Callable[[], object]:
    def run():
        with torch.inference_mode():
            return model(**inputs)
    return run


def _time_torch_fp32(model, inputs, threads, **_options):
    return _torch_runner(model, inputs), {"converted_linear": 0}


def _time_torch_dynamic_int8(model, inputs, threads, **_options):
    quantized, converted = quantize_dynamic_int8(model)
    return _torch_runner(quantized, inputs), {"converted_linear": converted}


def _time_ort_dynamic_int8(model, inputs, threads, exporter: str = "torchscript", ort_quantizer: str = "fast",
                           **_options):
    session, info = ort_dynamic_int8(model, inputs, LATENCY_OUTPUT_NAMES, threads=threads, exporter=exporter,
                                     quantizer=ort_quantizer)
    wanted = {value.name for value in session.get_inputs()}  # the exporter may drop an unused input
    feeds = {name: tensor.numpy() for name, tensor in inputs.items() if name in wanted}

    def run():
        return session.run(None, feeds)
    return run, info


_LATENCY_RUNNERS = {"torch_fp32": _time_torch_fp32, "torch_dynamic_int8": _time_torch_dynamic_int8,
                    "ort_dynamic_int8": _time_ort_dynamic_int8}


class _Logits:
    def __init__(self, logits: torch.Tensor):
        self.logits = logits


class OrtSequenceClassifier:
    """An ONNX Runtime int8 ``BertForSequenceClassification``, called like the torch model
    (``model(input_ids=..., attention_mask=..., token_type_ids=...).logits``) so the evaluator's
    ``evaluate`` scores it unchanged. ``graph`` is what ``save`` writes as an ``.onnx`` file."""

    training = False

    def __init__(self, graph: OrtInt8Graph, threads: int = 1):
        self.graph = graph
        self.session = graph.session(threads)
        self.input_names = [value.name for value in self.session.get_inputs()]

    def __call__(self, **inputs) -> _Logits:
        import numpy as np

        feeds = {name: np.ascontiguousarray(inputs[name].cpu().numpy().astype(np.int64)) for name in self.input_names}
        (logits,) = self.session.run(["logits"], feeds)
        return _Logits(torch.from_numpy(logits))

    def eval(self):
        return self

    def train(self, mode: bool = True):
        return self

    def save(self, path: str) -> int:
        return self.graph.save(path)


def _example_text_inputs(batch: int = 2, length: int = 8) -> dict[str, torch.Tensor]:
    shape = (batch, length)
    return {"input_ids": torch.full(shape, 5, dtype=torch.long), "attention_mask": torch.ones(shape, dtype=torch.long),
            "token_type_ids": torch.zeros(shape, dtype=torch.long)}


def _score_torch_fp32(model, threads):
    return model, {}


def _score_torch_dynamic_int8(model, threads):
    quantized, converted = quantize_dynamic_int8(model)
    return quantized, {"engine": select_quantized_engine(), "converted_linear": converted,
                       "size_mb_int8": int8_model_size_bytes(quantized) / 2**20}


def _score_ort_dynamic_int8(model, threads):
    graph = ort_int8_graph(model.eval(), _example_text_inputs(), ("logits",))
    scored = OrtSequenceClassifier(graph, threads)
    import onnxruntime

    return scored, {"engine": "onnxruntime-cpu", "onnxruntime_version": onnxruntime.__version__,
                    "converted_linear": graph.info["converted_linear"], "opset": graph.info["opset"],
                    "size_mb_int8": graph.size_bytes() / 2**20}


_SCORERS = {"torch_fp32": _score_torch_fp32, "torch_dynamic_int8": _score_torch_dynamic_int8,
            "ort_dynamic_int8": _score_ort_dynamic_int8}
