"""Export a plain fp32 model with ``torch.onnx`` for ONNX Runtime (scheme ``ort_dynamic_int8``): the
TorchScript exporter with the weights passed as graph inputs (fast), or the dynamo exporter."""

from __future__ import annotations

import torch
from torch import nn

from utils import UserError

# Opset pinned for reproducible graphs: 17 is the first with a fused LayerNormalization op.
ORT_OPSET = 17
ORT_EXPORTERS = ("torchscript", "dynamo")


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
