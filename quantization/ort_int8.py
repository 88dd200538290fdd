"""ONNX Runtime dynamic int8 (scheme ``ort_dynamic_int8``): the exported fp32 graph quantized in ORT's
QOperator format (``DynamicQuantizeLinear`` + ``MatMulInteger``), built directly or by ORT's own tool,
and run in a pinned ``InferenceSession``."""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from quantization.onnx_export import ORT_OPSET, export_onnx
from quantization.torch_int8 import count_linear_modules
from utils import UserError

# The onnxruntime release our int8 graph was checked against (identical outputs to its
# quantize_dynamic; tests/test_latency_onnx.py). requirements.txt pins the same version.
ORT_CHECKED_VERSION = "1.32.0"
ORT_QUANTIZERS = ("fast", "official")


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

    g = graph.graph
    rewrite = _Int8Rewrite(g, weights)
    for node in g.node:
        kind = node.op_type
        quantize = kind in op_types and kind in ("MatMul", "Gemm")
        if quantize and kind == "Gemm":
            quantize = (_attribute(node, "transA", 0) == 0 and _attribute(node, "alpha", 1.0) == 1.0
                        and _attribute(node, "beta", 1.0) == 1.0)
        matrix, folded = (rewrite.weight_matrix(node.input[1], kind == "Gemm" and _attribute(node, "transB", 0) == 1)
                          if quantize else (None, None))
        if matrix is None:
            rewrite.nodes.append(node)
        else:
            rewrite.quantize(node, matrix, folded)
    nodes = [node for node in rewrite.nodes if not (node.op_type == "Transpose" and node.output[0] in rewrite.dropped)]
    used = {name for node in nodes for name in node.input}
    tensors = dict(rewrite.tensors)
    tensors.update({name: np.ascontiguousarray(array) for name, array in weights.items() if name in used})
    kept_inputs = [value for value in g.input if value.name not in weights]
    del g.node[:]
    g.node.extend(nodes)
    del g.input[:]
    g.input.extend(kept_inputs)
    external = _set_initializers(g, tensors, inline_bytes)
    # value_info for every intermediate tensor, as quantize_dynamic leaves it: with symbolic axes ORT
    # fuses MatMulInteger/Cast/Mul only where it knows the shapes (without it, outputs differ by ~1e-7)
    import onnx

    del g.value_info[:]  # the exporter's, describing the fp32 graph
    inferred = onnx.shape_inference.infer_shapes(graph)
    g.value_info.extend(inferred.graph.value_info)
    return graph, external, rewrite.converted


class _Int8Rewrite:
    """The new node list of ``ort_quantize_dynamic_int8``, built one weight MatMul/Gemm at a time."""

    def __init__(self, g, weights: dict):
        self.weights = weights
        self.producer = {out: node for node in g.node for out in node.output}
        self.uses: dict[str, int] = {}
        for node in g.node:
            for name in node.input:
                self.uses[name] = self.uses.get(name, 0) + 1
        self.nodes, self.tensors, self.dropped, self.converted = [], {}, set(), 0
        self.activations: dict[str, tuple[str, str, str]] = {}

    def weight_matrix(self, name: str, transposed: bool):
        """The [in, out] matrix behind a MatMul/Gemm B input, and the Transpose node it folds."""
        import numpy as np

        weights, folded = self.weights, None
        if name not in weights and name in self.producer and self.producer[name].op_type == "Transpose":
            node = self.producer[name]
            if (node.input[0] in weights and weights[node.input[0]].ndim == 2
                    and list(_attribute(node, "perm", [1, 0])) == [1, 0]):
                folded, transposed, name = node, not transposed, node.input[0]
        if name not in weights or weights[name].ndim != 2 or weights[name].dtype != np.float32:
            return None, None
        return (weights[name].T if transposed else weights[name]), folded

    def quantize(self, node, matrix, folded) -> None:
        """Replace ``node`` by DynamicQuantizeLinear (shared per activation) + MatMulInteger + scales."""
        import numpy as np
        from onnx import TensorProto, helper
        from onnxruntime.quantization.quant_utils import quantize_data

        if folded is not None and self.uses.get(folded.output[0], 0) == 1:
            self.dropped.add(folded.output[0])
        self.converted += 1
        base = node.name or f"{node.op_type}_{self.converted}"
        zero_point, scale, quantized = quantize_data(matrix, TensorProto.INT8, symmetric=True, reduce_range=False)
        w_q, w_scale, w_zp = f"{base}.W_quantized", f"{base}.W_scale", f"{base}.W_zero_point"
        self.tensors[w_q] = np.ascontiguousarray(quantized, dtype=np.int8)
        self.tensors[w_scale] = np.asarray(scale, dtype=np.float32).reshape(())
        self.tensors[w_zp] = np.asarray(zero_point, dtype=np.int8).reshape(())
        # one DynamicQuantizeLinear per activation, shared by the MatMuls that read it (Q/K/V), as
        # quantize_dynamic does: same ops, same numbers, and fewer quantizations per layer
        if node.input[0] not in self.activations:
            a_q, a_scale, a_zp = f"{base}.A_quantized", f"{base}.A_scale", f"{base}.A_zero_point"
            self.nodes.append(helper.make_node("DynamicQuantizeLinear", [node.input[0]], [a_q, a_scale, a_zp],
                                               f"{base}_dql"))
            self.activations[node.input[0]] = (a_q, a_scale, a_zp)
        a_q, a_scale, a_zp = self.activations[node.input[0]]
        integer, as_float, scales = f"{base}.MatMulInteger", f"{base}.MatMulInteger_float", f"{base}.scales"
        out = node.output[0] if len(node.input) < 3 else f"{base}.scaled"
        self.nodes += [
            helper.make_node("MatMulInteger", [a_q, w_q, a_zp, w_zp], [integer], f"{base}_quant"),
            helper.make_node("Cast", [integer], [as_float], f"{base}_cast", to=TensorProto.FLOAT),
            helper.make_node("Mul", [a_scale, w_scale], [scales], f"{base}_scales_mul"),
            helper.make_node("Mul", [as_float, scales], [out], f"{base}_output_scale_mul"),
        ]
        if out != node.output[0]:  # Gemm bias
            self.nodes.append(helper.make_node("Add", [out, node.input[2]], [node.output[0]], f"{base}_bias"))


def _set_initializers(g, tensors: dict, inline_bytes: int) -> dict:
    """The graph's initializers: small ones inline, large ones declared external and returned
    (name -> array) for ``ort_session`` to hand over in memory."""
    from onnx import TensorProto, helper, numpy_helper

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
    return external


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
