"""BERT-Tickets (bert_tickets.py, tickets/): pruning, rewinding, masks, resume, saved tickets, bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))
from evaluation_fixtures import make_supernet_dir, write_mnli  # noqa: E402

import bert_tickets  # noqa: E402
from evaluation.recipe import RecipeSettings  # noqa: E402
from tickets import imp, pruning, storage, timing  # noqa: E402
from tickets.report import SINGLE_SEED_TOLERANCE, format_table, select_matching, ticket_rows  # noqa: E402
from utils import UserError, run_cli  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Timing-dependent fields: everything else of a record is a function of the inputs.
VOLATILE = ("latency", "round_wall_seconds", "round_cpu_seconds", "train_seconds")


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """A tiny supernet, the plain HF BERT extracted from it, and a learnable MNLI-layout task."""
    from submodel_extractor import save_hf_directory
    from transformer.checkpoint import load_supernet
    from transformer.hf_converter import to_hf_model

    root = tmp_path_factory.mktemp("tickets")
    supernet = make_supernet_dir(str(root / "supernet"), hidden=32, layers=2, ffn=64, heads=2)
    model = to_hf_model(load_supernet(supernet), load_supernet(supernet).config.largest_arch(), head="none")
    bert = str(root / "bert")
    save_hf_directory(model, bert, os.path.join(supernet, "vocab.txt"))
    data = write_mnli(str(root / "mnli"), n_train=96, n_dev=32)
    return {"root": root, "supernet": supernet, "bert": bert, "data": data}


def options(inputs, output_dir, **overrides) -> imp.RunOptions:
    """Options of a small run; an override named like a recipe field goes into the recipe."""
    recipe = dict(num_train_epochs=1.0, learning_rate=2e-3, train_batch_size=16, max_seq_length=32, eval_step=100)
    recipe.update({key: overrides.pop(key) for key in list(overrides) if key in RecipeSettings.__dataclass_fields__})
    values = dict(model=inputs["bert"], data_dir=inputs["data"], task_name="mnli", output_dir=str(output_dir),
                  rounds=2, seeds=(3,), latency=False, recipe=RecipeSettings(**recipe))
    values.update(overrides)
    return imp.RunOptions(**values)


def tiny_classifier(seed: int = 0):
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    config = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=24, max_position_embeddings=32, num_labels=3)
    return BertForSequenceClassification(config).eval()


def stable(record: dict) -> dict:
    kept = {key: value for key, value in record.items() if key not in VOLATILE}
    kept["per_seed"] = [stable(seed) for seed in record.get("per_seed", [])]
    return kept


def read_records(directory) -> list[dict]:
    with open(os.path.join(directory, "tickets.jsonl"), encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


def tensors(path: str) -> dict:
    from safetensors.torch import load_file

    return load_file(path)


# --------------------------------------------------------------------------------------
# Pruning
# --------------------------------------------------------------------------------------


def test_pruned_set_is_the_encoder_linear_weights():
    model = tiny_classifier()
    keys = [key for key, _ in pruning.prunable_modules(model)]
    assert len(keys) == 2 * 6
    assert keys[:6] == [f"bert.encoder.layer.0.{name}.weight" for name in (
        "attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense",
        "intermediate.dense", "output.dense")]
    assert pruning.prunable_count(model) == 2 * (4 * 16 * 16 + 2 * 16 * 24)


def test_round_prunes_exactly_the_asked_fraction_globally_and_nothing_else():
    model = tiny_classifier()
    before = {key: value.clone() for key, value in model.state_dict().items()}
    total = pruning.prunable_count(model)
    masks = pruning.dense_masks(model)
    first = pruning.next_pruned_total(0, total, 0.1, None)
    assert first == round(0.1 * total)
    masks1 = pruning.prune_by_magnitude(model, masks, first)
    assert pruning.pruned_count(masks1) == first
    # global magnitude: every pruned weight is no larger than every surviving one
    weights = {key: before[key] for key in masks1}
    pruned = torch.cat([weights[key][~mask].abs() for key, mask in masks1.items()])
    kept = torch.cat([weights[key][mask].abs() for key, mask in masks1.items()])
    assert pruned.max() <= kept.min()
    # layers end up with different sparsities (one global threshold, not per-layer pruning)
    per_layer = {round(float((~mask).float().mean()), 3) for mask in masks1.values()}
    assert len(per_layer) > 1
    # the second round removes 10 % of the survivors, and keeps the first round's zeros
    second = pruning.next_pruned_total(first, total, 0.1, None)
    assert second == first + round(0.1 * (total - first))
    masks2 = pruning.prune_by_magnitude(model, masks1, second)
    assert pruning.pruned_count(masks2) == second
    assert all(not (masks2[key] & ~masks1[key]).any() for key in masks1)
    # nothing outside the pruned set changed
    pruning.make_permanent(model)
    after = model.state_dict()
    for key, value in before.items():
        if key in masks2:
            assert torch.equal(after[key], value * masks2[key])
        else:
            assert torch.equal(after[key], value), key


def test_target_sparsity_caps_the_last_round():
    total = 1000
    schedule, pruned = [], 0
    while pruned < 500:
        pruned = pruning.next_pruned_total(pruned, total, 0.1, 0.5)
        schedule.append(pruned)
    assert schedule == [100, 190, 271, 344, 410, 469, 500]


def test_original_schedule_and_pooler_option():
    total = 1000
    levels, pruned = [], 0
    for _ in range(9):
        pruned = pruning.next_pruned_total(pruned, total, 0.1, None, schedule="original")
        levels.append(pruned)
    assert levels == [100, 200, 300, 400, 500, 600, 700, 800, 900]  # the authors' code's 10 % ... 90 %
    model = tiny_classifier()
    keys = [key for key, _ in pruning.prunable_modules(model, include_pooler=True)]
    assert keys[-1] == "bert.pooler.dense.weight" and len(keys) == 13
    masks = pruning.prune_by_magnitude(model, pruning.dense_masks(model, include_pooler=True), 500)
    assert pruning.pruned_count(masks) == 500 and "bert.pooler.dense.weight" in masks
    pruning.make_permanent(model)
    assert int((model.bert.pooler.dense.weight == 0).sum()) == int((~masks["bert.pooler.dense.weight"]).sum())


def test_masks_survive_save_and_load(tmp_path):
    model = tiny_classifier()
    masks = pruning.prune_by_magnitude(model, pruning.dense_masks(model), 300)
    path = str(tmp_path / "round_01.safetensors")
    storage.save_masks(path, masks, {"round": 1, "pruned_params": 300})
    loaded, meta = storage.load_masks(path)
    assert set(loaded) == set(masks)
    assert all(torch.equal(loaded[key], masks[key]) and loaded[key].dtype == torch.bool for key in masks)
    assert meta == {"round": 1, "pruned_params": 300}
    # the masks applied to a fresh model give the same effective weights
    fresh = pruning.apply_masks(tiny_classifier(), loaded)
    assert pruning.pruned_count(pruning.current_masks(fresh)) == 300
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"not a safetensors file")
    with pytest.raises(UserError, match="broken.safetensors"):
        storage.load_masks(str(broken))


def test_sparse_size_formats():
    mask = torch.zeros(64, 100, dtype=torch.bool)
    mask[:, :10] = True  # 10 % density: the bitmap wins
    assert storage.bitmap_bytes(mask) == 6400 // 8 + 4 * 640
    assert storage.csr_bytes(mask) == 8 * 640 + 4 * 65
    model = tiny_classifier()
    masks = pruning.prune_by_magnitude(model, pruning.dense_masks(model), 1000)
    sizes = storage.storage_sizes(pruning.make_permanent(model), masks)
    assert sizes["size_mb_sparse"] < sizes["size_mb_dense_fp32"]
    assert sizes["size_mb_sparse"] == min(sizes["size_mb_sparse_bitmap"], sizes["size_mb_sparse_csr"])


# --------------------------------------------------------------------------------------
# Latency (the tables' protocol on a given model)
# --------------------------------------------------------------------------------------


def test_time_hf_model_uses_the_protocol_and_restores_threads():
    model = tiny_classifier()
    protocol = timing.ticket_protocol(model.config, runs=4, warmup=1, rounds=2, seq_len=16)
    torch.set_num_threads(1)
    result = timing.time_hf_model(model, protocol)
    assert result["timed_module"] == "BertModel"
    assert result["converted_linear"] == result["linear_modules"] == 2 * 6 + 1  # encoder + pooler
    for backend in timing.TIMED_BACKENDS:
        stats = result[backend]
        assert len(stats["times_ms"]) == 4 and stats["median_ms"] > 0
        assert stats["median_ms"] == pytest.approx(float(np.median(stats["round_medians_ms"])), rel=1e-4)
    assert result["protocol"]["seq_len"] == 16 and result["protocol"]["protocol"] == "baf-latency-2"
    assert torch.get_num_threads() == 1
    with pytest.raises(UserError, match="max_position_embeddings"):
        timing.ticket_protocol(model.config, seq_len=128)


# --------------------------------------------------------------------------------------
# The IMP loop
# --------------------------------------------------------------------------------------


def test_rewinding_restores_pretrained_survivors_bit_for_bit(inputs, tmp_path):
    from transformers import BertModel

    context, _ = imp.prepare(options(inputs, tmp_path / "out"))
    pretrained = BertModel.from_pretrained(inputs["bert"]).state_dict()
    base, _ = imp.load_classifier_model(inputs["bert"], 3)
    first, _ = imp.finetune_ticket(context, pruning.dense_masks(base), seed=3)  # round 0, fine-tuned
    total = pruning.prunable_count(first)
    masks = pruning.prune_by_magnitude(first, pruning.current_masks(first), pruning.next_pruned_total(0, total, 0.3, None))
    rewound = imp.rewound_model(context, 3, masks)
    state = rewound.state_dict()
    for key, mask in masks.items():
        bare = key[len("bert."):]
        assert torch.equal(state[key[:-len("weight")] + "weight_orig"], pretrained[bare])  # all of them, bit for bit
        effective = dict(rewound.named_modules())[key[:-len(".weight")]].weight
        assert torch.equal(effective[mask], pretrained[bare][mask])
        assert not effective[~mask].any()
    for key, value in pretrained.items():
        if "bert." + key not in masks and not key.endswith("position_ids"):
            assert torch.equal(state["bert." + key], value), key
    # the classifier restarts from the same seeded values every round
    again = imp.rewound_model(context, 3, masks)
    assert torch.equal(again.classifier.weight, rewound.classifier.weight)
    assert not torch.equal(imp.rewound_model(context, 4, masks).classifier.weight, rewound.classifier.weight)


def test_saved_ticket_loads_with_the_same_logits(inputs, tmp_path):
    from transformers import BertForSequenceClassification

    context, _ = imp.prepare(options(inputs, tmp_path / "out"))
    base, _ = imp.load_classifier_model(inputs["bert"], 3)
    masks = pruning.prune_by_magnitude(base, pruning.dense_masks(base), 2000)
    ticket, record = imp.finetune_ticket(context, masks, seed=3)
    directory = str(tmp_path / "ticket")
    plain = pruning.make_permanent(imp._copy(ticket))
    imp.save_ticket(plain, directory, context.vocab_file, {"round": 1})
    loaded = BertForSequenceClassification.from_pretrained(directory).eval()
    batch = next(context.data.dev["matched"].eval_batches(16))
    batch = {key: batch[key] for key in ("input_ids", "attention_mask", "token_type_ids")}
    with torch.no_grad():
        expected, got = ticket.eval()(**batch).logits, loaded(**batch).logits
    assert torch.allclose(expected, got, atol=1e-6, rtol=0)
    saved = tensors(os.path.join(directory, "model.safetensors"))
    for key, mask in masks.items():
        assert not saved[key][~mask].any() and saved[key][mask].count_nonzero() == mask.sum()
    assert json.load(open(os.path.join(directory, "ticket.json")))["round"] == 1
    assert set(record["dev_fp32"]) == set(record["dev_int8"]) == {"matched", "mismatched"}


def test_killed_run_resumes_at_the_next_round_and_equals_an_uninterrupted_one(inputs, tmp_path, monkeypatch):
    whole = tmp_path / "whole"
    imp.run(options(inputs, whole))
    killed = tmp_path / "killed"
    original_save = imp.save_ticket

    def die_in_round_two(plain, directory, vocab_file, info):
        if info["round"] == 2:
            raise KeyboardInterrupt  # killed after round 2's masks and fine-tune, before its record
        original_save(plain, directory, vocab_file, info)

    monkeypatch.setattr(imp, "save_ticket", die_in_round_two)
    with pytest.raises(KeyboardInterrupt):
        imp.run(options(inputs, killed))
    assert [record["round"] for record in read_records(killed)] == [0, 1]
    monkeypatch.setattr(imp, "save_ticket", original_save)
    finetuned = []
    original_finetune = imp.finetune_ticket

    def counting(context, masks, seed):
        finetuned.append(pruning.pruned_count(masks))
        return original_finetune(context, masks, seed)

    monkeypatch.setattr(imp, "finetune_ticket", counting)
    records = imp.run(options(inputs, killed))
    assert len(finetuned) == 1  # only round 2 ran again
    assert [record["round"] for record in records] == [0, 1, 2]
    assert [stable(r) for r in read_records(killed)] == [stable(r) for r in read_records(whole)]
    for round_index in range(3):
        name = f"round_{round_index:02d}"
        for path in (f"masks/{name}.safetensors", f"subnetworks/{name}/model.safetensors"):
            a, b = tensors(str(whole / path)), tensors(str(killed / path))
            assert a.keys() == b.keys() and all(torch.equal(a[key], b[key]) for key in a), path
    sparsities = [record["sparsity_pct"] for record in records]
    assert sparsities[0] == 0.0 and abs(sparsities[1] - 10.0) < 0.01 and abs(sparsities[2] - 19.0) < 0.01
    # a finished run with more rounds asked continues from where it stopped
    more = imp.run(options(inputs, killed, rounds=3))
    assert [record["round"] for record in more] == [0, 1, 2, 3] and len(finetuned) == 2


def test_cli_from_a_supernet_with_latency_and_report_rows(inputs, tmp_path, capsys):
    out = tmp_path / "cli"
    argv = ["--model", inputs["supernet"], "--arch", "largest", "--data_dir", inputs["data"], "--task_name", "mnli",
            "--output_dir", str(out), "--target_sparsity", "0.15", "--seeds", "5 6", "--num_train_epochs", "1",
            "--learning_rate", "2e-3", "--train_batch_size", "16", "--max_seq_length", "32",
            "--latency_seq_len", "16", "--latency_runs", "4", "--latency_warmup", "1", "--latency_rounds", "2"]
    assert bert_tickets.main(argv) == 0
    assert "| round | sparsity %" in capsys.readouterr().out
    rows = ticket_rows(str(out))
    assert [row["round"] for row in rows] == [0, 1, 2]
    assert rows[-1]["sparsity_pct"] == pytest.approx(15.0, abs=0.01)  # capped at the target
    for row in rows:
        assert row["n_seeds"] == 2 and row["seeds"] == [5, 6]
        assert row["nonzero_params"] == row["total_params"] - row["pruned_params"]
        assert row["latency_ms_fp32"] > 0 and row["latency_ms_int8"] > 0
        assert row["latency_p10_ms_fp32"] <= row["latency_ms_fp32"] <= row["latency_p90_ms_fp32"]
        assert set(row["dev_fp32"]) == {"matched", "mismatched"} and "primary" in row["dev_fp32"]["matched"]
        assert row["dev_primary_fp32"] == row["dev_fp32"]["matched"]["primary"]
        assert row["dev_primary_fp32_std"] is not None
    assert os.path.isfile(out / "pretrained" / "config.json")
    assert "over 2 seeds" in rows[0]["matching_rule"]


# --------------------------------------------------------------------------------------
# The report's rows and the matching rule
# --------------------------------------------------------------------------------------


def _record(round_index, sparsity, metric, std=None, n_seeds=1):
    return {"round": round_index, "sparsity_pct": sparsity, "dev_primary_fp32": metric, "dev_primary_fp32_std": std,
            "dev_primary_int8": metric, "n_seeds": n_seeds, "seeds": list(range(n_seeds)), "pruned_params": 0,
            "nonzero_params": 10, "total_params": 10, "size_mb_dense_fp32": 1.0, "size_mb_sparse": 1.0,
            "latency_ms_fp32": None, "latency_ms_int8": None}


def _write_records(directory, records):
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "tickets.jsonl"), "w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record) + "\n")


def test_matching_uses_the_seed_spread_and_picks_the_sparsest(tmp_path):
    _write_records(tmp_path, [_record(0, 0.0, 0.80, 0.02, 3), _record(1, 10.0, 0.79, 0.01, 3),
                              _record(2, 19.0, 0.781, 0.01, 3), _record(3, 27.1, 0.77, 0.01, 3)])
    rows = ticket_rows(str(tmp_path))
    assert [row["is_matching"] for row in rows] == [False, True, True, False]  # threshold 0.78
    assert select_matching(rows)["round"] == 2 and rows[2]["is_selected"]
    assert "1 std" in rows[0]["matching_rule"] and "3 seeds" in rows[0]["matching_rule"]
    assert "**selected**" in format_table(rows)


def test_matching_with_one_seed_uses_the_stated_tolerance(tmp_path):
    _write_records(tmp_path, [_record(0, 0.0, 0.80), _record(1, 10.0, 0.795), _record(2, 19.0, 0.785)])
    rows = ticket_rows(str(tmp_path))
    assert SINGLE_SEED_TOLERANCE == 0.01
    assert [row["is_matching"] for row in rows] == [False, True, False]
    assert rows[0]["matching_rule"].startswith("single seed")
    _write_records(tmp_path, [_record(0, 0.0, 0.80), _record(1, 10.0, 0.70)])
    assert select_matching(ticket_rows(str(tmp_path))) is None


# --------------------------------------------------------------------------------------
# Bad input: one line naming it, nothing written
# --------------------------------------------------------------------------------------


def _cli_error(argv, capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        run_cli(bert_tickets.main, argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    return err


def _argv(inputs, out, **flags):
    values = {"--model": inputs["bert"], "--data_dir": inputs["data"], "--task_name": "mnli",
              "--output_dir": str(out), "--rounds": "1", "--max_seq_length": "32", "--latency_seq_len": "16"}
    values.update(flags)
    argv = []
    for flag, value in values.items():
        argv += [flag, value]
    return argv


def test_not_a_bert_directory(inputs, tmp_path, capsys):
    gpt = tmp_path / "gpt"
    gpt.mkdir()
    (gpt / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_embd": 8}))
    out = tmp_path / "out"
    assert "gpt2" in _cli_error(_argv(inputs, out, **{"--model": str(gpt)}), capsys)
    assert "no config.json" in _cli_error(_argv(inputs, out, **{"--model": str(tmp_path)}), capsys)
    assert not out.exists()


@pytest.mark.parametrize("flag,value", [("--target_sparsity", "1.0"), ("--target_sparsity", "0"),
                                        ("--target_sparsity", "-0.2"), ("--prune_fraction", "1.5")])
def test_sparsity_outside_the_open_interval(inputs, tmp_path, capsys, flag, value):
    out = tmp_path / "out"
    err = _cli_error(_argv(inputs, out, **{flag: value}), capsys)
    assert flag in err and "(0, 1)" in err
    assert not out.exists()


def test_task_directory_with_a_missing_file(inputs, tmp_path, capsys):
    import shutil

    data = tmp_path / "mnli"
    shutil.copytree(inputs["data"], data)
    os.remove(data / "dev_mismatched.tsv")
    out = tmp_path / "out"
    assert "dev_mismatched.tsv" in _cli_error(_argv(inputs, out, **{"--data_dir": str(data)}), capsys)
    assert not out.exists()


def test_resume_with_other_settings_is_refused(inputs, tmp_path):
    out = tmp_path / "out"
    imp.run(options(inputs, out, rounds=0))
    before = sorted(os.listdir(out))
    with pytest.raises(UserError, match="prune_fraction"):
        imp.run(options(inputs, out, rounds=1, prune_fraction=0.2))
    assert sorted(os.listdir(out)) == before and len(read_records(out)) == 1
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="holds no ticket run"):
        imp.run(options(inputs, tmp_path / "other"))


def test_shell_script_help_and_preflight(tmp_path):
    script = os.path.join(ROOT, "script", "bert_tickets.sh")
    env = dict(os.environ, PYTHON=sys.executable)
    shown = subprocess.run(["bash", script, "--help"], capture_output=True, text=True, env=env)
    assert shown.returncode == 0 and "MODEL_DIR" in shown.stdout and "TARGET_SPARSITY" in shown.stdout
    env.update(MODEL_DIR=str(tmp_path / "absent"), OUTPUT_DIR=str(tmp_path / "out"))
    failed = subprocess.run(["bash", script], capture_output=True, text=True, env=env)
    assert failed.returncode == 2 and "MODEL_DIR" in failed.stderr and len(failed.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_round_zero_is_the_projects_candidate_evaluation(inputs, tmp_path):
    """The dense round fine-tunes exactly as the candidate evaluator does (same recipe, seed, data)."""
    from evaluation.candidate import evaluate_candidate
    from transformer.checkpoint import load_supernet
    from transformer.modeling_super import SuperBertForSequenceClassification

    context, _ = imp.prepare(options(inputs, tmp_path / "out", model=inputs["supernet"], arch="largest"))
    imp._extract_pretrained(context)
    base, _ = imp.load_classifier_model(context.pretrained_dir, 3)
    _, ticket = imp.finetune_ticket(context, pruning.dense_masks(base), seed=3)
    supernet = load_supernet(inputs["supernet"], SuperBertForSequenceClassification, num_labels=3).eval()
    reference = evaluate_candidate(supernet, context.supernet_arch, context.data, context.finetune_configs[3],
                                   "cpu", "torch_dynamic")
    assert ticket["evaluations"] == reference["evaluations"]
    assert ticket["dev_fp32"] == reference["metrics_fp32"]
    assert ticket["dev_int8"] == reference["metrics_int8"]
