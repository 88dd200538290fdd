"""Candidate evaluation end to end on a tiny supernet and learnable GLUE-layout tasks: fp32 and
int8 metrics, every Linear converted, int8 within tolerance of fp32, resume, saved models,
the fakequant parity path, and bad input."""

import copy
import json
import os

import pytest
import torch

from evaluation import runner
from evaluation.candidate import load_saved_int8
from evaluation.data import encode_examples, load_tokenizer
from evaluation.finetune import evaluate
from evaluation.results import parse_results
from glue.tasks import get_task, read_split
from quantize_utils import count_dynamic_int8_linear, count_linear_modules
from tests.evaluation_fixtures import make_supernet_dir, write_arches, write_mnli, write_sst2
from transformer.checkpoint import load_supernet
from transformer.hf_converter import extract_state_dict, write_submodel_into_supernet
from transformer.modeling_super import SuperBertForSequenceClassification
from utils import make_arch, run_cli

# int8 (dynamic, per-tensor weights) may flip a few borderline dev predictions of a fine-tuned
# model; we allow 3 of 90 examples.
INT8_TOLERANCE = 3 / 90
BIG, SMALL = make_arch(2, 64, 128, 4), make_arch(1, 32, 64, 4)
TRAIN_ARGS = ["--num_train_epochs", "4", "--learning_rate", "2e-3", "--eval_step", "10", "--max_seq_length", "32",
              "--train_batch_size", "16", "--do_lower_case", "--num_threads", "1"]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluation")
    model = make_supernet_dir(str(root / "supernet"))
    mnli = write_mnli(str(root / "MNLI"), n_train=400, n_dev=90)
    sst2 = write_sst2(str(root / "SST-2"), n_train=200, n_dev=60)
    return {"root": root, "model": model, "mnli": mnli, "sst2": sst2}


def run(argv, quantize=True):
    """The CLI in-process, through run_cli (one-line errors, exit codes)."""
    with pytest.raises(SystemExit) as info:
        run_cli(lambda args: runner.main(args, default_scheme="ptq" if quantize else "fp"), argv)
    return info.value.code


def records(output_dir):
    with open(os.path.join(output_dir, "subbert.results.jsonl")) as handle:
        return [json.loads(line) for line in handle]


def base_args(ws, arches, output, task="mnli", data="mnli"):
    return ["--model", ws["model"], "--data_dir", ws[data], "--task_name", task, "--arches_file", arches,
            "--output_dir", str(output)] + TRAIN_ARGS


@pytest.fixture(scope="module")
def ptq_run(workspace):
    arches = write_arches(str(workspace["root"] / "two.cands"), [BIG, SMALL])
    output = workspace["root"] / "ptq"
    assert run(base_args(workspace, arches, output) + ["--save_model_flag", "1"]) == 0
    return output


def test_ptq_records_fp32_and_int8_for_matched_and_mismatched(ptq_run):
    got = records(ptq_run)
    assert [r["arch"] for r in got] == [BIG, SMALL]
    for record in got:
        assert record["scheme"] == "torch_dynamic_int8" and record["task_name"] == "mnli"
        assert record["best_by_scheme"]["torch_dynamic_int8"] == record["best_int8"]
        assert record["best_by_scheme"]["torch_fp32"] == record["best_fp32"]
        assert 0 < record["encoder_parameter_size"] < record["parameter_size"]
        for key in ("metrics_fp32", "metrics_int8"):
            assert set(record[key]) == {"matched", "mismatched"}
        assert record["best_acc"] == record["best_int8"] == record["metrics_int8"]["matched"]["acc"]
        assert record["best_fp32"] == record["metrics_fp32"]["matched"]["acc"]
        # every Linear of the sub-model: q, k, v, attention output, intermediate, output per layer + pooler + classifier
        assert record["converted_linear"] == 6 * record["arch"]["sample_layer_num"] + 2
        assert record["size_mb_int8"] < record["size_mb_fp32"]
        assert record["infer_cnt"] == 3 and record["time_per_batch_infer_ms"] > 0  # 90 dev examples / 32
    blocks = parse_results(str(ptq_run / "subbert.results"))
    assert [(b.arch, b.fitness, b.parameter_size) for b in blocks] == [
        (r["arch"], r["best_acc"], r["parameter_size"]) for r in got]


def test_int8_accuracy_is_within_tolerance_of_fp32(ptq_run):
    big = records(ptq_run)[0]
    assert big["best_fp32"] >= 0.9  # the task was learned, so the comparison means something
    for split in ("matched", "mismatched"):
        fp32, int8 = big["metrics_fp32"][split]["acc"], big["metrics_int8"][split]["acc"]
        assert abs(fp32 - int8) <= INT8_TOLERANCE, (split, fp32, int8)


def test_saved_int8_model_has_every_linear_converted_and_reproduces_the_metric(ptq_run, workspace):
    big = records(ptq_run)[0]
    directory = big["saved_model"]
    assert os.path.isfile(os.path.join(directory, "config.json")) and os.path.isfile(os.path.join(directory, "vocab.txt"))
    model = load_saved_int8(directory)
    assert count_linear_modules(model) == 0
    assert count_dynamic_int8_linear(model) == 6 * BIG["sample_layer_num"] + 2
    task = get_task("mnli")
    dev = encode_examples(load_tokenizer(directory, True), read_split(task, workspace["mnli"], "matched"), task, 32)
    assert evaluate(model, dev, task, 32).primary == pytest.approx(big["best_int8"])
    # int8 logits stay close to fp32 ones (not only the argmax): relative error well under 10 %
    from transformers import BertForSequenceClassification

    fp32 = BertForSequenceClassification.from_pretrained(directory, local_files_only=True).eval()
    batch = dev.batch(torch.arange(len(dev)))
    inputs = {key: batch[key] for key in ("input_ids", "attention_mask", "token_type_ids")}
    with torch.no_grad():
        reference, quantized = fp32(**inputs).logits, model(**inputs).logits
    relative = (quantized - reference).abs().mean() / reference.abs().mean()
    assert relative < 0.1, float(relative)
    assert (quantized.argmax(-1) == reference.argmax(-1)).float().mean() >= 1 - INT8_TOLERANCE


def test_resume_skips_done_archs_and_equals_an_uninterrupted_run(ptq_run, workspace):
    before = (ptq_run / "subbert.results").read_bytes()
    arches = str(workspace["root"] / "two.cands")
    assert run(base_args(workspace, arches, ptq_run) + ["--save_model_flag", "1"]) == 0
    assert (ptq_run / "subbert.results").read_bytes() == before  # nothing re-evaluated or appended
    # interrupted after the first arch, then resumed: the second arch's result equals the full run's
    partial = workspace["root"] / "partial"
    assert run(base_args(workspace, write_arches(str(workspace["root"] / "one.cands"), [BIG]), partial)) == 0
    assert run(base_args(workspace, arches, partial)) == 0
    resumed, full = records(partial), records(ptq_run)
    assert [r["arch"] for r in resumed] == [BIG, SMALL]
    for key in ("best_acc", "best_fp32", "metrics_int8", "best_step"):
        assert resumed[1][key] == full[1][key]


def test_ranks_share_the_candidates(ptq_run, workspace, monkeypatch):
    """torchrun-style sharding: rank r of W evaluates every W-th candidate; together they equal one run."""
    output = workspace["root"] / "sharded"
    arches = str(workspace["root"] / "two.cands")
    monkeypatch.setenv("WORLD_SIZE", "2")
    for rank in ("1", "0"):
        monkeypatch.setenv("RANK", rank)
        assert run(base_args(workspace, arches, output)) == 0
        assert len(records(output)) == (1 if rank == "1" else 2)
    sharded = {r["arch_key"]: r["best_acc"] for r in records(output)}
    assert sharded == {r["arch_key"]: r["best_acc"] for r in records(ptq_run)}


def test_fp_evaluator_on_sst2_reports_fp32_only(workspace):
    arches = write_arches(str(workspace["root"] / "big.cands"), [BIG])
    output = workspace["root"] / "fp"
    assert run(base_args(workspace, arches, output, task="sst-2", data="sst2"), quantize=False) == 0
    (record,) = records(output)
    assert record["scheme"] == "torch_fp32" and "metrics_int8" not in record
    assert record["best_acc"] == record["best_fp32"] == record["metrics_fp32"]["dev"]["acc"] >= 0.9


def test_fakequant_parity_path(workspace):
    arches = write_arches(str(workspace["root"] / "big.cands"), [BIG])
    output = workspace["root"] / "fakequant"
    assert run(base_args(workspace, arches, output) + ["--quant_scheme", "fakequant"]) == 0  # the original flag
    (record,) = records(output)
    assert record["scheme"] == "fakequant" and record["best_acc"] == record["best_int8"]
    assert abs(record["best_int8"] - record["best_fp32"]) <= INT8_TOLERANCE


def test_write_submodel_into_supernet_inverts_extraction(workspace):
    supernet = load_supernet(workspace["model"], SuperBertForSequenceClassification, num_labels=3)
    donor = copy.deepcopy(supernet)
    with torch.no_grad():
        for param in donor.parameters():
            param.add_(torch.randn_like(param))
    state = extract_state_dict(donor, SMALL, head="cls")
    target = copy.deepcopy(supernet)
    assert write_submodel_into_supernet(target, SMALL, state) == len(state)
    again = extract_state_dict(target, SMALL, head="cls")
    assert all(torch.equal(again[key], state[key]) for key in state)
    # the rest of the supernet is untouched: the big arch still differs from the donor's
    assert not torch.equal(extract_state_dict(target, BIG, head="cls")["bert.encoder.layer.1.output.dense.weight"],
                           extract_state_dict(donor, BIG, head="cls")["bert.encoder.layer.1.output.dense.weight"])


# --------------------------------------------------------------------------------------
# bad input: one line, exit 2, results never lost
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("case, message", [
    ("empty", "holds no arch"),
    ("too_big", ":2: sample_hidden_size=96 exceeds the supernet's 64"),
    ("qkv", ":1: this arch cannot be a plain Hugging Face BERT: qkv size 32 != hidden size 64"),
    ("off_space", ":1: sample_hidden_size=64 is outside the paper_search space"),
    ("negative_lr", "--learning_rate: must be >= 0, got -0.001"),
    ("bad_utf8", "dev_matched.tsv:4: not valid UTF-8"),
    ("output_is_file", "exists and is not a directory"),
    ("cands_is_dir", "is a directory, expected an arch file"),
    ("bad_scheme", "--scheme: unknown scheme 'int4'"),
    ("missing_task_file", "dev_mismatched.tsv: no such file"),
    ("bad_label", "dev_matched.tsv:3: unknown label 'maybe' for task mnli"),
])
def test_bad_input_is_one_line_and_keeps_results(workspace, ptq_run, tmp_path, capsys, case, message):
    output = tmp_path / "out"
    output.mkdir()
    (output / "subbert.results").write_bytes((ptq_run / "subbert.results").read_bytes())
    before = (output / "subbert.results").read_bytes()
    arches = str(tmp_path / "a.cands")
    data = workspace["mnli"]
    extra = []
    if case == "empty":
        open(arches, "w").close()
    elif case == "too_big":
        write_arches(arches, [BIG, make_arch(1, 96, 64, 4)])
    elif case == "qkv":
        write_arches(arches, [make_arch(1, 64, 64, 4, qkv_size=32)])
    else:
        write_arches(arches, [BIG])
    if case == "off_space":
        extra = ["--space", "paper_search"]
    if case == "negative_lr":
        extra = ["--learning_rate", "-0.001"]
    if case == "bad_scheme":
        extra = ["--scheme", "int4"]
    if case == "cands_is_dir":
        arches = str(tmp_path)
    if case in ("missing_task_file", "bad_label", "bad_utf8"):
        data = str(tmp_path / "MNLI")
        write_mnli(data, n_train=20, n_dev=5)
        if case == "missing_task_file":
            os.remove(os.path.join(data, "dev_mismatched.tsv"))
        elif case == "bad_utf8":
            path = os.path.join(data, "dev_matched.tsv")
            lines = open(path, "rb").read().split(b"\n")
            lines[3] = lines[3].replace(b"the", b"th\xe9", 1) if b"the" in lines[3] else lines[3] + b"\xe9"
            open(path, "wb").write(b"\n".join(lines))
        else:
            path = os.path.join(data, "dev_matched.tsv")
            lines = open(path).read().splitlines()
            lines[2] = "\t".join(lines[2].split("\t")[:-1] + ["maybe"])
            open(path, "w").write("\n".join(lines) + "\n")
    if case == "output_is_file":
        output = tmp_path / "a_file"
        output.write_text("not a directory")
    argv = ["--model", workspace["model"], "--data_dir", data, "--task_name", "mnli", "--arches_file", arches,
            "--output_dir", str(output)] + TRAIN_ARGS + extra
    capsys.readouterr()
    assert run(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err and "error:" in err, err
    if output.is_dir():
        assert (output / "subbert.results").read_bytes() == before


# --------------------------------------------------------------------------------------
# results tied to their settings; the vocab; schemes from the registry
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("change, field", [
    (["--learning_rate", "1e-3"], "learning_rate"),
    (["--num_train_epochs", "3"], "num_train_epochs"),
    (["--max_seq_length", "24"], "max_seq_length"),
    (["--max_train_examples", "100"], "max_train_examples"),
])
def test_results_of_other_settings_are_refused_not_reused(ptq_run, workspace, tmp_path, capsys, change, field):
    output = tmp_path / "out"
    output.mkdir()
    for name in ("subbert.results", "subbert.results.jsonl"):
        (output / name).write_bytes((ptq_run / name).read_bytes())
    before = (output / "subbert.results.jsonl").read_bytes()
    args = base_args(workspace, str(workspace["root"] / "two.cands"), output)
    # later flags win in argparse: the changed setting overrides TRAIN_ARGS
    capsys.readouterr()
    assert run(args + change) == 2
    err = capsys.readouterr().err.strip()
    assert f"subbert.results.jsonl:1: evaluated with {field}=" in err and "--restart" in err, err
    assert len(err.splitlines()) == 1
    assert (output / "subbert.results.jsonl").read_bytes() == before


def test_another_model_is_refused_and_restart_moves_old_results_aside(ptq_run, workspace, tmp_path, capsys):
    output = tmp_path / "out"
    output.mkdir()
    for name in ("subbert.results", "subbert.results.jsonl"):
        (output / name).write_bytes((ptq_run / name).read_bytes())
    other = make_supernet_dir(str(tmp_path / "other_supernet"), seed=1)
    args = ["--model", other, "--data_dir", workspace["mnli"], "--task_name", "mnli", "--arches_file",
            write_arches(str(tmp_path / "small.cands"), [SMALL]), "--output_dir", str(output)] + TRAIN_ARGS
    capsys.readouterr()
    assert run(args) == 2
    assert "evaluated with model=" in capsys.readouterr().err
    assert run(args + ["--restart"]) == 0
    assert [r["arch"] for r in records(output)] == [SMALL]
    kept = [name for name in os.listdir(output) if name.startswith("subbert.results.jsonl.before-")]
    assert len(kept) == 1 and (output / kept[0]).read_bytes() == (ptq_run / "subbert.results.jsonl").read_bytes()


def test_vocab_that_differs_from_the_supernet_is_refused(workspace, tmp_path, capsys):
    import shutil

    model = tmp_path / "model"
    shutil.copytree(workspace["model"], model)
    with open(model / "vocab.txt", "a") as handle:
        handle.write("extra1\nextra2\n")
    argv = ["--model", str(model), "--data_dir", workspace["mnli"], "--task_name", "mnli", "--arches_file",
            write_arches(str(tmp_path / "a.cands"), [SMALL]), "--output_dir", str(tmp_path / "out")] + TRAIN_ARGS
    capsys.readouterr()
    assert run(argv) == 2
    err = capsys.readouterr().err
    assert "vocab.txt has" in err and "embedding has" in err
    assert not (tmp_path / "out" / "subbert.results.jsonl").exists()


def test_old_scheme_names_resume_the_same_results(ptq_run, workspace, tmp_path):
    """Records of the former names (torch_dynamic / fp32) are the same evaluations."""
    output = tmp_path / "renamed"
    output.mkdir()
    lines = (ptq_run / "subbert.results.jsonl").read_text().splitlines()
    old = [json.dumps(dict(json.loads(line), scheme="torch_dynamic")) for line in lines]
    (output / "subbert.results.jsonl").write_text("\n".join(old) + "\n")
    (output / "subbert.results").write_bytes((ptq_run / "subbert.results").read_bytes())
    assert run(base_args(workspace, str(workspace["root"] / "two.cands"), output) + ["--scheme", "ptq"]) == 0
    assert len(records(output)) == 2  # nothing evaluated again


@pytest.mark.slow
def test_ort_scheme_scores_and_saves_an_onnx_file_that_reproduces_the_metric(workspace, tmp_path):
    import numpy as np
    import onnxruntime
    from transformers import BertTokenizerFast

    output = tmp_path / "ort"
    arches = write_arches(str(tmp_path / "big.cands"), [BIG])
    assert run(base_args(workspace, arches, output) + ["--scheme", "ort", "--save_model_flag", "1"]) == 0
    (record,) = records(output)
    assert record["scheme"] == "ort_dynamic_int8" and record["best_acc"] == record["best_int8"]
    assert record["converted_linear"] == 6 * BIG["sample_layer_num"] + 2
    assert abs(record["best_int8"] - record["best_fp32"]) <= INT8_TOLERANCE
    directory = record["saved_model"]
    session = onnxruntime.InferenceSession(os.path.join(directory, "model_int8.onnx"), providers=["CPUExecutionProvider"])
    tokenizer = BertTokenizerFast.from_pretrained(directory)  # the saved tokenizer files
    task = get_task("mnli")
    for split in ("matched", "mismatched"):
        examples = read_split(task, workspace["mnli"], split)
        encoded = tokenizer([e.text_a for e in examples], [e.text_b for e in examples], truncation=True,
                            max_length=32, padding=True, return_tensors="np")
        names = {value.name for value in session.get_inputs()}
        (logits,) = session.run(["logits"], {k: v.astype(np.int64) for k, v in encoded.items() if k in names})
        labels = np.array([task.label_id(e.label) for e in examples])
        accuracy = float((logits.argmax(-1) == labels).mean())
        assert accuracy == pytest.approx(record["metrics_int8"][split]["acc"]), split


def test_fp_evaluator_scores_extra_int8_on_the_same_weights(workspace, tmp_path):
    output = tmp_path / "fp_extra"
    arches = write_arches(str(tmp_path / "big.cands"), [BIG])
    argv = base_args(workspace, arches, output) + ["--extra_schemes", "ptq"]
    assert run(argv, quantize=False) == 0
    (record,) = records(output)
    assert record["scheme"] == "torch_fp32" and record["best_acc"] == record["best_fp32"]
    assert set(record["best_by_scheme"]) == {"torch_fp32", "torch_dynamic_int8"}
    assert abs(record["best_by_scheme"]["torch_dynamic_int8"] - record["best_fp32"]) <= INT8_TOLERANCE
    assert record["size_mb_by_scheme"]["torch_dynamic_int8"] < record["size_mb_fp32"]


def test_a_rerun_removes_staging_directories_a_killed_save_left(ptq_run, workspace):
    models = ptq_run / "models"
    stale = models / ".mnli_seed42_L2_H64_F128_Q64_A4.k3j4h5"
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"half written")
    kept = sorted(p.name for p in models.iterdir() if not p.name.startswith("."))
    assert run(base_args(workspace, str(workspace["root"] / "two.cands"), ptq_run) + ["--save_model_flag", "1"]) == 0
    assert not stale.exists() and sorted(p.name for p in models.iterdir()) == kept


def test_an_evaluation_whose_record_was_lost_is_redone(ptq_run, workspace, tmp_path):
    """subbert.results kept the last block but the JSONL (the record) lost it: the re-run evaluates
    that arch again instead of counting it as done, and the text is the JSONL's view again."""
    import shutil

    output = tmp_path / "lost"
    output.mkdir()
    for name in ("subbert.results", "subbert.results.jsonl"):
        shutil.copyfile(ptq_run / name, output / name)
    full = records(ptq_run)
    with open(output / "subbert.results.jsonl") as handle:
        kept = handle.readlines()[:1]
    with open(output / "subbert.results.jsonl", "w") as handle:
        handle.writelines(kept)
    assert run(base_args(workspace, str(workspace["root"] / "two.cands"), output)) == 0
    redone = records(output)
    assert [r["arch"] for r in redone] == [BIG, SMALL]
    assert redone[1]["best_acc"] == full[1]["best_acc"]  # seeded: the same result as the lost one
    assert [b.arch for b in parse_results(str(output / "subbert.results"))] == [BIG, SMALL]
