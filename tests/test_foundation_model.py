"""The elastic supernet, extraction to Hugging Face and back, and dynamic int8 on extracted models."""

import json
import os
import subprocess
import sys

import pytest
import torch

from quantize_utils import count_dynamic_int8_linear, quantize_dynamic_int8
from transformer.checkpoint import load_supernet, save_supernet
from transformer.config import SuperBertConfig
from transformer.hf_converter import supernet_from_hf, to_hf_model
from transformer.modeling_super import (
    SuperBertForPreTraining,
    SuperBertForSequenceClassification,
    count_active_parameters,
)
from utils import ArchError, SPACES, arch_to_json, make_arch, sample_arch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOL = 1e-5  # fp32, eval mode

DEMO_CONFIG = SuperBertConfig(vocab_size=300, hidden_size=448, num_hidden_layers=4, intermediate_size=1536,
                              qkv_size=448, num_attention_heads=4, max_position_embeddings=64, kd_hidden_size=96)
# The paper's geometry (AutoTinyBERT KD-S1: qkv 528 != hidden 564) with a small vocabulary.
PAPER_CONFIG = SuperBertConfig(vocab_size=200, max_position_embeddings=32)


def _inputs(vocab: int, batch: int = 3, seq: int = 20, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, vocab, (batch, seq), generator=gen)
    mask = torch.ones_like(ids)
    mask[1, 12:] = 0  # padded rows exercise the attention mask
    mask[2, 5:] = 0
    types = torch.zeros_like(ids)
    types[:, seq // 2:] = 1
    return ids, mask, types


@pytest.fixture(scope="module")
def demo_supernet():
    torch.manual_seed(0)
    return SuperBertForPreTraining(DEMO_CONFIG).eval()


def _archs(space, count, seed=0):
    archs = [space.smallest(), space.largest()]
    archs += [sample_arch(space, seed + i) for i in range(count - 2)]
    return archs


def _assert_close(a, b, what):
    diff = (a - b).abs().max().item()
    assert diff <= TOL, f"{what}: max abs diff {diff:.3g} > {TOL}"


@pytest.mark.parametrize("space_name, config", [("demo_search", DEMO_CONFIG), ("paper_search", PAPER_CONFIG)])
def test_sliced_supernet_equals_extracted_model(space_name, config):
    torch.manual_seed(1)
    supernet = SuperBertForPreTraining(config).eval()
    ids, mask, types = _inputs(config.vocab_size, seq=16 if space_name == "paper_search" else 20)
    count = 22 if space_name == "demo_search" else 6
    for arch in _archs(SPACES[space_name], count):
        supernet.set_sample_config(arch)
        with torch.no_grad():
            sliced = supernet.bert(ids, mask, types, arch=arch)
            sliced_mlm = supernet(ids, mask, types).mlm_logits
            hf = to_hf_model(supernet, arch, head="none")
            plain = hf(input_ids=ids, attention_mask=mask, token_type_ids=types)
            hf_mlm = to_hf_model(supernet, arch, head="mlm")(input_ids=ids, attention_mask=mask, token_type_ids=types).logits
        _assert_close(sliced.last_hidden_state, plain.last_hidden_state, f"hidden states {arch}")
        _assert_close(sliced.pooler_output, plain.pooler_output, f"pooler {arch}")
        _assert_close(sliced_mlm, hf_mlm, f"MLM logits {arch}")
        assert sum(p.numel() for p in hf.parameters()) == count_active_parameters(supernet, arch)


def test_classification_head_extracts_with_its_weights(demo_supernet):
    torch.manual_seed(2)
    model = SuperBertForSequenceClassification(SuperBertConfig(**{**DEMO_CONFIG.__dict__, "num_labels": 3})).eval()
    ids, mask, types = _inputs(DEMO_CONFIG.vocab_size)
    arch = make_arch(2, 128, 384, 4)
    model.set_sample_config(arch)
    with torch.no_grad():
        _assert_close(model(ids, mask, types), to_hf_model(model, arch, head="cls")(
            input_ids=ids, attention_mask=mask, token_type_ids=types).logits, "classifier logits")


def test_attention_mask_and_token_types_are_wired(demo_supernet):
    ids, mask, types = _inputs(DEMO_CONFIG.vocab_size)
    with torch.no_grad():
        base = demo_supernet.bert(ids, mask, types).last_hidden_state
        changed = ids.clone()
        changed[1, 12:] = 7  # only padded positions change
        same = demo_supernet.bert(changed, mask, types).last_hidden_state
        other_types = demo_supernet.bert(ids, mask, torch.zeros_like(types)).last_hidden_state
    _assert_close(base[1, :12], same[1, :12], "real tokens must not attend to padding")
    assert (base - other_types).abs().max() > 1e-3  # token types reach the embeddings


def test_qkv_different_from_hidden_runs_in_supernet_but_not_as_plain_bert():
    torch.manual_seed(3)
    supernet = SuperBertForPreTraining(PAPER_CONFIG).eval()
    arch = sample_arch(SPACES["paper_supernet"], 5)
    arch = make_arch(arch["sample_layer_num"], 300, 512, 12, 240)
    supernet.set_sample_config(arch)
    ids, mask, types = _inputs(PAPER_CONFIG.vocab_size, seq=8)
    with torch.no_grad():
        out = supernet(ids, mask, types, kd=True)
    assert out.kd_hidden.shape == (3, 8, PAPER_CONFIG.kd_hidden_size)
    assert out.kd_scores.shape == (3, 12, 8, 8)
    with pytest.raises(ArchError, match=r"qkv size 240 != hidden size 300"):
        to_hf_model(supernet, arch)
    with pytest.raises(ArchError, match=r"sample_hidden_size=600 exceeds the supernet's 564"):
        supernet.set_sample_config(make_arch(2, 600, 512, 12, 240))
    with pytest.raises(ArchError, match=r"needs head size 46, more than the supernet's 44"):
        supernet.set_sample_config(make_arch(2, 552, 512, 12, 552))


def test_head_slicing_keeps_each_heads_identity():
    """With 12 heads fixed, shrinking qkv keeps the first dims of *every* super head."""
    torch.manual_seed(4)
    supernet = SuperBertForPreTraining(PAPER_CONFIG)
    attention = supernet.bert.encoder.layer[0].attention.self
    from transformer.modeling_super import LayerArch
    weight, _ = attention.sliced_projection("query", LayerArch(hidden=564, ffn=1024, heads=12, qkv=264))
    expected = torch.cat([attention.query.weight[44 * h: 44 * h + 22] for h in range(12)])
    assert torch.equal(weight, expected)


def test_extracted_directory_roundtrips_through_from_pretrained(demo_supernet, tmp_path):
    from transformers import AutoModel, AutoModelForMaskedLM

    supernet_dir = tmp_path / "supernet"
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(295)]) + "\n")
    save_supernet(demo_supernet, str(supernet_dir), str(vocab))
    arch = make_arch(3, 192, 512, 4)
    out_dir = tmp_path / "sub"
    result = subprocess.run([sys.executable, os.path.join(ROOT, "submodel_extractor.py"), "--model", str(supernet_dir),
                             "--arch", arch_to_json(arch), "--output", str(out_dir), "--head", "mlm"],
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert sorted(os.listdir(out_dir)) == ["config.json", "model.safetensors", "vocab.txt"]
    ids, mask, types = _inputs(DEMO_CONFIG.vocab_size)
    reloaded = load_supernet(str(supernet_dir)).eval()
    reloaded.set_sample_config(arch)
    with torch.no_grad():
        expected = reloaded(ids, mask, types).mlm_logits
        expected_hidden = reloaded.bert(ids, mask, types, arch=arch).last_hidden_state
        mlm = AutoModelForMaskedLM.from_pretrained(out_dir, local_files_only=True).eval()
        base = AutoModel.from_pretrained(out_dir, local_files_only=True).eval()
        _assert_close(mlm(input_ids=ids, attention_mask=mask, token_type_ids=types).logits, expected, "reloaded MLM")
        _assert_close(base(input_ids=ids, attention_mask=mask, token_type_ids=types).last_hidden_state[:, :, :],
                      expected_hidden, "reloaded AutoModel hidden states")
    assert json.loads((out_dir / "config.json").read_text())["bigger_and_faster_arch"] == arch


def test_hf_to_supernet_to_hf_is_identity_for_the_largest_arch(tmp_path):
    from transformers import BertConfig, BertForMaskedLM

    torch.manual_seed(5)
    hf_config = BertConfig(vocab_size=300, hidden_size=256, num_hidden_layers=4, intermediate_size=768,
                           num_attention_heads=4, max_position_embeddings=64)
    original = BertForMaskedLM(hf_config).eval()
    original.save_pretrained(tmp_path / "hf")
    supernet = supernet_from_hf(str(tmp_path / "hf"))
    back = to_hf_model(supernet, supernet.config.largest_arch(), head="mlm")
    expected = original.state_dict()
    got = back.state_dict()
    assert set(got) == set(expected)
    for key in expected:
        assert torch.equal(got[key], expected[key]), key


def test_smaller_bert_fills_the_slots_the_slicing_rule_reads(tmp_path):
    from transformers import BertConfig, BertModel

    torch.manual_seed(6)
    small = BertModel(BertConfig(vocab_size=200, hidden_size=144, num_hidden_layers=2, intermediate_size=256,
                                 num_attention_heads=12, max_position_embeddings=32)).eval()
    small.save_pretrained(tmp_path / "small")
    supernet = SuperBertForPreTraining(PAPER_CONFIG)
    from transformer.hf_converter import load_hf_into_supernet

    uncovered = load_hf_into_supernet(supernet, str(tmp_path / "small"))
    assert "dense_fit.weight" in uncovered
    arch = make_arch(2, 144, 256, 12)
    extracted = to_hf_model(supernet.eval(), arch).state_dict()
    for key, value in small.state_dict().items():
        assert torch.equal(extracted[key], value), key


def test_dynamic_int8_converts_every_encoder_linear(demo_supernet):
    for arch in (make_arch(1, 64, 128, 4), make_arch(4, 256, 768, 4)):
        plain = to_hf_model(demo_supernet, arch, head="none")
        quantized, converted = quantize_dynamic_int8(plain)
        layers = arch["sample_layer_num"]
        assert converted == 6 * layers + 1  # q, k, v, attn-out, FFN in, FFN out per layer + pooler
        assert count_dynamic_int8_linear(quantized) == converted
        ids, mask, types = _inputs(DEMO_CONFIG.vocab_size)
        with torch.no_grad():
            fp = plain(input_ids=ids, attention_mask=mask, token_type_ids=types).last_hidden_state
            q = quantized(input_ids=ids, attention_mask=mask, token_type_ids=types).last_hidden_state
        rel = ((fp - q).norm() / fp.norm()).item()
        assert 0 < rel < 0.05, rel  # int8 really changes the numbers, but only slightly


def _run_extractor(*args):
    return subprocess.run([sys.executable, os.path.join(ROOT, "submodel_extractor.py"), *args],
                          capture_output=True, text=True, cwd=ROOT)


def test_extractor_bad_input_is_one_line_and_writes_nothing(demo_supernet, tmp_path):
    supernet_dir = tmp_path / "supernet"
    save_supernet(demo_supernet, str(supernet_dir))
    (tmp_path / "notbert").mkdir()
    (tmp_path / "notbert" / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_embd": 8}))
    good = arch_to_json(make_arch(2, 128, 384, 4))
    cases = [
        (["--model", str(tmp_path / "missing"), "--arch", good], "no such model directory"),
        (["--model", str(tmp_path / "notbert"), "--arch", good], "is not a BERT model"),
        (["--model", str(supernet_dir), "--arch", '{"sample_layer_num": 2}'], "missing arch key(s)"),
        (["--model", str(supernet_dir), "--arch", good.replace("[4, 4]", "[3, 3]")], "does not divide"),
        (["--model", str(supernet_dir), "--arch", good.replace("[384, 384]", "[384]")], "has 1 value(s)"),
        (["--model", str(supernet_dir), "--arch", arch_to_json(make_arch(2, 512, 384, 4))], "exceeds the supernet's 448"),
        (["--model", str(supernet_dir), "--arch", arch_to_json(make_arch(2, 128, 384, 4, 64))], "qkv size 64 != hidden size 128"),
    ]
    for args, message in cases:
        out = tmp_path / "out"
        result = _run_extractor(*args, "--output", str(out))
        assert result.returncode == 2, (args, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], (message, result.stderr)
        assert not out.exists()
    # a truncated weights file is named in one line; an output path that is a file is refused
    truncated = tmp_path / "truncated"
    save_supernet(demo_supernet, str(truncated))
    weights = truncated / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    result = _run_extractor("--model", str(truncated), "--arch", good, "--output", str(tmp_path / "out2"))
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "model.safetensors: not a readable safetensors file" in result.stderr
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    result = _run_extractor("--model", str(supernet_dir), "--arch", good, "--output", str(a_file))
    assert result.returncode == 2 and "exists and is not a directory" in result.stderr
    assert a_file.read_text() == "x"
    # an existing non-empty output is not clobbered
    out = tmp_path / "kept"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    result = _run_extractor("--model", str(supernet_dir), "--arch", good, "--output", str(out))
    assert result.returncode == 2 and "not empty" in result.stderr
    assert (out / "precious.txt").read_text() == "keep me"
