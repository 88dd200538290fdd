"""The registry of int8 schemes (quantize_utils.SCHEMES): every scheme times and scores, names and
aliases resolve to one scheme, and the scored models agree with fp32 within int8 tolerance."""

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification, BertModel

import quantize_utils as qu
from utils import UserError


def _inputs(batch, length, seed=0):
    generator = torch.Generator().manual_seed(seed)
    inputs = {"input_ids": torch.randint(5, 100, (batch, length), generator=generator),
              "attention_mask": torch.ones(batch, length, dtype=torch.long),
              "token_type_ids": torch.zeros(batch, length, dtype=torch.long)}
    inputs["attention_mask"][0, length // 2:] = 0  # padding in one row, as the evaluator's batches have
    return inputs


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    config = BertConfig(vocab_size=100, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=128, max_position_embeddings=128, num_labels=3)
    return BertModel(config).eval(), BertForSequenceClassification(config).eval()


@pytest.mark.parametrize("name", [n for n, s in qu.SCHEMES.items() if not s.needs_supernet])
def test_every_scheme_times_and_scores(models, name):
    scheme = qu.SCHEMES[name]
    bert, classifier = models
    run, info = scheme.latency_runner(bert, _inputs(1, 16), threads=1)
    run()
    assert info["converted_linear"] == (13 if scheme.quantized else 0)  # 6 per layer + pooler
    scored, info = scheme.scored_model(classifier, threads=1)
    inputs = _inputs(3, 11, seed=1)
    with torch.no_grad():
        reference = classifier(**inputs).logits
        logits = scored(**inputs).logits
    assert logits.shape == reference.shape
    error = float((logits - reference).abs().max())
    if scheme.quantized:
        assert 0 < error < 0.02 and info["converted_linear"] == 14 and info["size_mb_int8"] > 0
    else:
        assert error == 0.0 and scored is classifier


def test_names_and_aliases_resolve_to_one_scheme():
    cases = {"ptq": "torch_dynamic_int8", "int8": "torch_dynamic_int8", "torch_dynamic": "torch_dynamic_int8",
             "TORCH_DYNAMIC_INT8": "torch_dynamic_int8", "fp": "torch_fp32", "fp32": "torch_fp32",
             "ort": "ort_dynamic_int8", "ort_dynamic": "ort_dynamic_int8", "fakequant": "fakequant"}
    for typed, canonical in cases.items():
        assert qu.resolve_scheme(typed).name == canonical
    aliases = [alias for scheme in qu.SCHEMES.values() for alias in (scheme.name,) + scheme.aliases]
    assert len(aliases) == len(set(aliases))  # one name, one thing
    with pytest.raises(UserError, match="--scheme: unknown scheme 'int4'"):
        qu.resolve_scheme("int4")


def test_each_latency_backend_has_one_deployment_scheme():
    assert {b: qu.scheme_for_backend(b).name for b in qu.LATENCY_BACKENDS} == {
        "torch_fp32": "torch_fp32", "torch_dynamic_int8": "torch_dynamic_int8", "ort_dynamic_int8": "ort_dynamic_int8"}
    assert qu.SCHEMES["fakequant"].latency_backend == "torch_dynamic_int8"  # timed as the authors did
    with pytest.raises(UserError):
        qu.scheme_for_backend("tensorrt")


def test_fakequant_needs_the_supernet(models):
    with pytest.raises(ValueError, match="whole supernet"):
        qu.SCHEMES["fakequant"].scored_model(models[1])
