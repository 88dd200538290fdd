"""The registry's two faces per scheme: the timed runner of a plain ``BertModel`` (the latency
stage, per latency backend) and the scored model of a fine-tuned classifier (the evaluator)."""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from quantization.ort_int8 import OrtInt8Graph, ort_dynamic_int8, ort_int8_graph
from quantization.torch_int8 import int8_model_size_bytes, quantize_dynamic_int8, select_quantized_engine

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


LATENCY_RUNNERS = {"torch_fp32": _time_torch_fp32, "torch_dynamic_int8": _time_torch_dynamic_int8,
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


SCORERS = {"torch_fp32": _score_torch_fp32, "torch_dynamic_int8": _score_torch_dynamic_int8,
            "ort_dynamic_int8": _score_ort_dynamic_int8}
