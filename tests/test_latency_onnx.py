"""The ONNX Runtime int8 path: our export (weights as graph inputs) computes what the torch model
computes, our int8 graph is exactly what onnxruntime's quantize_dynamic builds (plus the pooler's
Gemm), every nn.Linear becomes a MatMulInteger, and the ONNX stage writes the same records."""

import os
from collections import Counter

import numpy as np
import pytest
import torch

import inference_time_evaluation_quant_onnx as onnx_stage
import quantize_utils as qu
from latency.backends import OUTPUT_NAMES, build_plain_bert, example_inputs
from latency.measure import Protocol
from latency.table import read_latency_table
from utils import make_arch, run_cli

PROTOCOL = Protocol(vocab_size=128, seq_len=16, max_position_embeddings=32)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_plain_bert(make_arch(2, 64, 96, 4), PROTOCOL)


def torch_outputs(model):
    with torch.no_grad():
        out = model(**example_inputs(PROTOCOL))
    return [out.last_hidden_state.numpy(), out.pooler_output.numpy()]


def ort_outputs(graph, external=None):
    feeds = {name: tensor.numpy() for name, tensor in example_inputs(PROTOCOL).items()}
    session = qu.ort_session(graph, 1, external)
    return session.run(None, {k: v for k, v in feeds.items() if k in {i.name for i in session.get_inputs()}})


def test_export_with_weights_as_inputs_matches_torch(model):
    graph, weights = qu.export_onnx(model, example_inputs(PROTOCOL), OUTPUT_NAMES)
    assert not model.training  # the exporter must not leave the model in train mode (dropout on)
    assert len(graph.graph.initializer) == 0 and set(weights) == {n for n, _ in model.named_parameters()}
    fp32, external, converted = qu.ort_quantize_dynamic_int8(graph, weights, op_types=())  # nothing quantized
    assert converted == 0 and external  # the big weights are handed over in memory
    for ours, reference in zip(ort_outputs(fp32, external), torch_outputs(model)):
        np.testing.assert_allclose(ours, reference, atol=1e-4)


def test_fast_int8_graph_equals_onnxruntime_quantize_dynamic(model):
    inputs = example_inputs(PROTOCOL)
    graph, weights = qu.export_onnx(model, inputs, OUTPUT_NAMES)
    official, official_count = qu.ort_quantize_dynamic_official(graph, weights, op_types=("MatMul", "Gemm"))
    graph, weights = qu.export_onnx(model, inputs, OUTPUT_NAMES)
    fast, external, fast_count = qu.ort_quantize_dynamic_int8(graph, weights)
    assert fast_count == official_count == qu.count_linear_modules(model) == 13
    ops = Counter(node.op_type for node in fast.graph.node)
    assert ops == Counter(node.op_type for node in official.graph.node)
    # Q, K and V share one quantized activation per layer: 13 - 2 x 2 layers
    assert ops["MatMulInteger"] == 13 and ops["DynamicQuantizeLinear"] == 9
    assert ops["MatMul"] == 2 * 2  # attention scores and context stay fp32 (activation x activation)
    import onnxruntime

    for ours, reference in zip(ort_outputs(fast, external), ort_outputs(official)):
        np.testing.assert_array_equal(ours, reference, err_msg=(
            f"our int8 graph no longer equals onnxruntime {onnxruntime.__version__}'s quantize_dynamic (checked with "
            f"{qu.ORT_CHECKED_VERSION}): re-derive ort_quantize_dynamic_int8 before trusting ORT latency or accuracy"))
    # int8, but still the same function: close to fp32 torch
    ours, reference = ort_outputs(fast, external)[0].ravel(), torch_outputs(model)[0].ravel()
    assert np.dot(ours, reference) / (np.linalg.norm(ours) * np.linalg.norm(reference)) > 0.999
    # a self-contained copy loads without the in-memory weights
    np.testing.assert_array_equal(ort_outputs(qu.ort_embed_external(fast, external))[0], ort_outputs(fast, external)[0])


def test_onnxruntime_is_the_version_the_int8_graph_was_checked_with():
    """The hand-built graph is checked against one ORT release; a different one must be re-checked
    (and ``ORT_CHECKED_VERSION`` and requirements.txt bumped together), never drift silently."""
    import onnxruntime

    assert onnxruntime.__version__ == qu.ORT_CHECKED_VERSION, (
        f"onnxruntime {onnxruntime.__version__} is installed but the int8 graph was checked with "
        f"{qu.ORT_CHECKED_VERSION} (requirements.txt pins it)")
    with open(os.path.join(os.path.dirname(__file__), "..", "requirements.txt")) as handle:
        assert f"onnxruntime=={qu.ORT_CHECKED_VERSION}" in handle.read().split()


def test_dynamic_axes_graph_serves_any_batch_and_length(model):
    """One graph for the latency stage's 1 x 128 input and the evaluator's padded batches."""
    session, info = qu.ort_dynamic_int8(model, example_inputs(PROTOCOL), OUTPUT_NAMES, threads=1)
    assert info["ort_dynamic_axes"] is True
    torch.manual_seed(1)
    feeds = {"input_ids": torch.randint(5, 128, (3, 9)), "attention_mask": torch.ones(3, 9, dtype=torch.long),
             "token_type_ids": torch.zeros(3, 9, dtype=torch.long)}
    wanted = {value.name for value in session.get_inputs()}
    hidden, pooled = session.run(None, {k: v.numpy() for k, v in feeds.items() if k in wanted})
    with torch.no_grad():
        reference = model(**feeds)
    assert hidden.shape == (3, 9, 64) and pooled.shape == (3, 64)
    ours, ref = hidden.ravel(), reference.last_hidden_state.numpy().ravel()
    assert np.dot(ours, ref) / (np.linalg.norm(ours) * np.linalg.norm(ref)) > 0.999


def test_ort_dynamic_int8_checks_and_times(model):
    session, info = qu.ort_dynamic_int8(model, example_inputs(PROTOCOL), OUTPUT_NAMES, threads=1)
    assert info["converted_linear"] == info["linear_modules"] == 13
    assert info["exporter"] == "torchscript" and info["opset"] == qu.ORT_OPSET
    assert min(info["export_s"], info["quantize_s"], info["session_s"]) >= 0
    with pytest.raises(qu.UserError, match="--ort_quantizer"):
        qu.ort_dynamic_int8(model, example_inputs(PROTOCOL), OUTPUT_NAMES, quantizer="nope")


def test_onnx_stage_records(tmp_path, monkeypatch):
    monkeypatch.setenv("BAF_TIMING_LOCK_DIR", str(tmp_path / "timing_slot"))
    out = str(tmp_path / "lat")
    argv = ["--save_dir", out, "--space", "demo_latency", "--layer_num_space", "1", "2", "--hidden_size_space", "64",
            "96", "32", "--intermediate_size_space", "128", "128", "--head_num_space", "4", "4", "--vocab_size", "128", "--max_seq_length", "16",
            "--max_position_embeddings", "32", "--infer_cnt", "2", "--warmup", "1", "--legacy_format"]
    with pytest.raises(SystemExit) as info:
        run_cli(onnx_stage.main, argv)
    assert info.value.code == 0
    records = read_latency_table(os.path.join(out, "lat_ort_dynamic_int8.jsonl"))
    assert len(records) == 4 and records.references  # one per arch (the latest measurement), plus the references
    for record in records + records.references:
        assert record["backend"] == "ort_dynamic_int8" and record["quant_engine"] == "onnxruntime-cpu"
        assert record["converted_linear"] == record["linear_modules"] == 6 * record["arch"]["sample_layer_num"] + 1
        assert record["exporter"] == "torchscript" and record["ort_quantizer"] == "fast" and record["median_ms"] > 0
        assert record["onnxruntime_version"]
    assert len(open(os.path.join(out, "lat_ort_quant_.tmp")).read().splitlines()) == 4


@pytest.mark.slow
def test_dynamo_exporter_gives_the_same_int8_model(model):
    """The torch.export-based exporter (dynamo=True) is supported too; its graph keeps weights as
    initializers (folded Transposes) and quantizes to the same 13 MatMulInteger."""
    inputs = example_inputs(PROTOCOL)
    graph, weights = qu.export_onnx(model, inputs, OUTPUT_NAMES, exporter="dynamo")
    fast, external, converted = qu.ort_quantize_dynamic_int8(graph, weights)
    assert converted == 13
    ours = ort_outputs(fast, external)[0].ravel()
    graph, weights = qu.export_onnx(model, inputs, OUTPUT_NAMES)
    reference = ort_outputs(*qu.ort_quantize_dynamic_int8(graph, weights)[:2])[0].ravel()
    assert np.dot(ours, reference) / (np.linalg.norm(ours) * np.linalg.norm(reference)) > 0.999
