"""The int8 schemes of Bigger&Faster, in one place (SPEC section 2).

* ``torch_dynamic`` (default; the paper's latency tables): PyTorch eager dynamic quantization
  of every ``nn.Linear`` -- int8 per-tensor symmetric weights, activations quantized on the fly.
  Applied to the *extracted plain* model; the converted-module count is checked, because
  ``quantize_dynamic`` swaps modules by exact type and silently skips anything else.
* ``ort_dynamic``: ONNX Runtime ``quantize_dynamic`` of an exported fp32 graph
  (see ``inference_time_evaluation_quant_onnx.py``; the ORT helpers live here as well).
* ``fakequant``: the original code's per-tensor asymmetric min-max uint8 quantize-dequantize of
  every state-dict tensor, kept for parity with the authors' accuracy numbers.
"""

from __future__ import annotations

import copy
import warnings

import torch
from torch import nn

from utils import UserError

SCHEMES = ("torch_dynamic", "fakequant")


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


def apply_scheme(model: nn.Module, scheme: str) -> tuple[nn.Module, dict]:
    """Apply an int8 scheme to a (plain, extracted) model; returns the model and a description
    suitable for result records."""
    if scheme == "torch_dynamic":
        quantized, converted = quantize_dynamic_int8(model)
        return quantized, {"scheme": scheme, "engine": torch.backends.quantized.engine,
                           "converted_linear": converted}
    if scheme == "fakequant":
        return fake_quantize_model(model), {"scheme": scheme, "bits": 8}
    raise UserError(f"--quant_scheme: unknown scheme {scheme!r}; choose one of {', '.join(SCHEMES)}")


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


def export_onnx(model: nn.Module, inputs: dict[str, torch.Tensor], output_names: tuple[str, ...],
                exporter: str = "torchscript", opset: int = ORT_OPSET):
    """Export an fp32 model (static shapes) with ``torch.onnx.export``; returns ``(graph, weights)``,
    where ``weights`` maps initializer/graph-input names to numpy arrays.

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
        return _export_onnx(model, inputs, names, output_names, exporter, opset)
    finally:
        torch.set_num_threads(threads)
        model.train(was_training)  # the exporter restores its wrapper's mode, recursively


def _export_onnx(model, inputs, names, output_names, exporter, opset):
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
            torch.onnx.export(wrapper, tuple(inputs.values()) + tuple(weights_t), buffer, dynamo=False,
                              opset_version=opset, input_names=list(names) + list(wrapper.weight_names),
                              output_names=list(output_names), do_constant_folding=True)
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
        a_q, a_scale, a_zp = f"{base}.A_quantized", f"{base}.A_scale", f"{base}.A_zero_point"
        integer, as_float, scales = f"{base}.MatMulInteger", f"{base}.MatMulInteger_float", f"{base}.scales"
        out = node.output[0] if len(node.input) < 3 else f"{base}.scaled"
        nodes += [
            helper.make_node("DynamicQuantizeLinear", [node.input[0]], [a_q, a_scale, a_zp], f"{base}_dql"),
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


def ort_dynamic_int8(model: nn.Module, inputs: dict[str, torch.Tensor], output_names: tuple[str, ...],
                     threads: int = 1, exporter: str = "torchscript", quantizer: str = "fast",
                     opset: int = ORT_OPSET):
    """Export + ORT dynamic int8 + session, checking that every ``nn.Linear`` became a
    ``MatMulInteger`` (the fast quantizer; the official tool skips the pooler's Gemm).
    Returns ``(session, info)``; ``info`` holds the counts and the export/quantize seconds."""
    import time

    if quantizer not in ORT_QUANTIZERS:
        raise UserError(f"--ort_quantizer: unknown quantizer {quantizer!r}; choose one of {', '.join(ORT_QUANTIZERS)}")
    expected = count_linear_modules(model)
    start = time.perf_counter()
    graph, weights = export_onnx(model, inputs, output_names, exporter=exporter, opset=opset)
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
    quantized_at = time.perf_counter()
    session = ort_session(quantized, threads, external)
    done = time.perf_counter()
    opset_used = next((op.version for op in quantized.opset_import if op.domain in ("", "ai.onnx")), opset)
    return session, {"converted_linear": converted, "linear_modules": expected, "exporter": exporter,
                     "opset": opset_used, "ort_quantizer": quantizer, "export_s": exported - start,
                     "quantize_s": quantized_at - exported, "session_s": done - quantized_at}
