"""Weight sharing without drift (issue 13): masked updates leave every entry outside the step's
archs bit-identical, the default samplers cover what the search spaces select, and the
sub-model quality report (held-out MLM loss per ladder arch, Kendall tau vs fine-tuned accuracy)."""

from __future__ import annotations

import dataclasses
import json
import os
import random

import numpy as np
import pytest
import torch

import pre_training
from pretraining import quality
from pretraining.data import heldout_split
from pretraining.step import make_optimizer
from pretraining.models import archs_for_step
from pretraining.shard_index import ShardIndex, find_shards
from pretraining.shards import GenerateSettings, generate_shards
from pretraining.sliced_updates import Region, SlicedAdamW, check_known_parameters, step_regions
from pretraining_fixtures import changed_outside_step, tiny_space_args, write_corpus, write_vocab
from transformer.checkpoint import save_supernet
from transformer.config import SuperBertConfig
from transformer.modeling_super import SuperBertForPreTraining, count_active_parameters
from utils import uncovered_dimensions, SPACES, Grid, get_space, make_arch, space_from_args

TINY = SuperBertConfig(vocab_size=30, hidden_size=48, num_hidden_layers=3, intermediate_size=96, qkv_size=48,
                       num_attention_heads=4, max_position_embeddings=16, kd_hidden_size=20, hidden_dropout_prob=0.0,
                       attention_probs_dropout_prob=0.0)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def random_arch(rng: random.Random, config: SuperBertConfig, homogeneous: bool) -> dict:
    layers = rng.randint(1, config.num_hidden_layers)
    hidden = rng.randrange(4, config.hidden_size + 1, 4)
    per_layer = 1 if homogeneous else layers
    heads = [rng.choice([1, 2, 4]) for _ in range(per_layer)]
    qkv = [h * rng.randint(1, config.head_dim) for h in heads]
    ffn = [rng.randint(1, config.intermediate_size) for _ in range(per_layer)]
    if homogeneous:
        heads, qkv, ffn = heads * layers, qkv * layers, ffn * layers
    return {"sample_layer_num": layers, "sample_hidden_size": hidden, "sample_intermediate_sizes": ffn,
            "sample_num_attention_heads": heads, "sample_qkv_sizes": qkv}


def covering_batch(config: SuperBertConfig):
    """Every vocab id, every position, both token types, every token an MLM target."""
    seq = config.max_position_embeddings
    ids = torch.arange(2 * seq) % config.vocab_size
    ids = ids.view(2, seq)
    types = torch.tensor([[0] * seq, [1] * seq])
    return ids, torch.ones_like(ids), types


# --------------------------------------------------------------------------------------
# Regions: exactly the entries that receive gradient
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("homogeneous", [True, False])
def test_regions_are_exactly_the_entries_that_receive_gradient(homogeneous):
    torch.manual_seed(0)
    model = SuperBertForPreTraining(TINY).train()
    check_known_parameters(model)
    ids, mask, types = covering_batch(TINY)
    rng = random.Random(1 + homogeneous)
    for _ in range(6):
        arch = random_arch(rng, TINY, homogeneous)
        model.set_sample_config(arch)
        model.zero_grad(set_to_none=True)
        out = model(ids, attention_mask=mask, token_type_ids=types, labels=ids, mlm=True, kd=True)
        kd = out.kd_hidden.pow(2).mean() + out.kd_scores.pow(2).mean()
        (out.loss + kd).backward()
        regions = step_regions(model, [arch], mlm=True, kd=True)
        for name, param in model.named_parameters():
            touched = param.grad is not None and bool(param.grad.ne(0).any())
            if name not in regions:
                assert not touched, f"{name} has gradient but no region ({arch})"
                continue
            expected = regions[name].full_mask().reshape(param.shape)
            got = param.grad.ne(0) if param.grad is not None else torch.zeros_like(expected)
            assert not (got & ~expected).any(), f"{name}: gradient outside its region ({arch})"
            if not name.endswith("key.bias"):  # softmax ignores a key bias: its gradient is ~0 by design
                assert torch.equal(got, expected), f"{name}: region differs from the gradient's support ({arch})"


def test_union_of_unlike_boxes_needs_a_mask_and_nested_ones_do_not():
    region = Region((6, 8), [(2, 8), (6, 3)])
    assert region.bounding == (6, 8)
    mask = region.mask()
    assert mask.sum() == 2 * 8 + 6 * 3 - 2 * 3 and not mask[5, 7] and mask[1, 7] and mask[5, 2]
    assert Region((6, 8), [(6, 8), (2, 3)]).mask() is None  # the sandwich case: the largest box


# --------------------------------------------------------------------------------------
# The optimizer
# --------------------------------------------------------------------------------------


def test_sliced_adamw_is_adamw_when_every_step_trains_the_whole_supernet():
    torch.manual_seed(0)
    first = SuperBertForPreTraining(TINY)
    second = SuperBertForPreTraining(TINY)
    second.load_state_dict(first.state_dict())
    args = dataclasses.make_dataclass("A", [("learning_rate", float), ("weight_decay", float),
                                            ("adam_epsilon", float)])(3e-3, 0.01, 1e-8)
    plain, sliced = make_optimizer(first, args), make_optimizer(second, args, masked=True)
    assert isinstance(sliced, SlicedAdamW) and not isinstance(plain, SlicedAdamW)
    ids, mask, types = covering_batch(TINY)
    arch = TINY.largest_arch()
    names = dict(second.named_parameters())
    for step in range(5):
        # The same gradients for both (from the first model): what is compared is the update rule,
        # without the chaotic feedback of float rounding through later forward passes.
        first.set_sample_config(arch)
        first(ids, attention_mask=mask, token_type_ids=types, labels=ids).loss.backward()
        for a, b in zip(first.parameters(), second.parameters()):
            b.grad = None if a.grad is None else a.grad.clone()
        sliced.set_regions({names[n]: r for n, r in step_regions(second, [arch], True, False).items()})
        plain.step()
        sliced.step()
        plain.zero_grad(set_to_none=True)
        sliced.zero_grad(set_to_none=True)
    for (name, a), b in zip(first.state_dict().items(), second.state_dict().values()):
        assert torch.allclose(a, b, rtol=1e-6, atol=1e-8), name
    with pytest.raises(RuntimeError, match="set_regions"):
        sliced.step()  # regions are consumed by each step


def test_sliced_adamw_continues_a_plain_adamw_state():
    torch.manual_seed(0)
    model = SuperBertForPreTraining(TINY)
    args = dataclasses.make_dataclass("A", [("learning_rate", float), ("weight_decay", float),
                                            ("adam_epsilon", float)])(1e-3, 0.01, 1e-8)
    plain = make_optimizer(model, args)
    ids, mask, types = covering_batch(TINY)
    model(ids, attention_mask=mask, token_type_ids=types, labels=ids).loss.backward()
    plain.step()
    sliced = make_optimizer(model, args, masked=True)
    sliced.load_state_dict(plain.state_dict())
    state = sliced.state[model.bert.embeddings.word_embeddings.weight]
    assert "step" not in state  # one step of plain AdamW: every entry's corrections are 1 - beta
    assert torch.allclose(state["bias_correction1"], torch.full_like(state["exp_avg"], 0.1))
    assert torch.allclose(state["bias_correction2"], torch.full_like(state["exp_avg"], 0.001))


# --------------------------------------------------------------------------------------
# Whole runs: untouched entries stay bit-identical (value and optimizer state)
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_run_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("sliced")
    vocab = str(root / "vocab.txt")
    tokens = write_vocab(vocab)
    write_corpus(str(root / "raw"), documents=4, seed=4)
    shards = str(root / "shards")
    generate_shards(str(root / "raw"), shards, vocab, GenerateSettings(max_seq_len=32, do_lower_case=True,
                                                                       num_shards=2, num_workers=1), progress=False)
    # A supernet wider and deeper than the tiny space's largest arch: even the sandwich rule
    # leaves entries outside every sampled arch.
    start = str(root / "start")
    torch.manual_seed(0)
    save_supernet(SuperBertForPreTraining(SuperBertConfig(
        vocab_size=len(tokens), hidden_size=48, num_hidden_layers=3, intermediate_size=96, qkv_size=48,
        num_attention_heads=2, max_position_embeddings=64)), start, vocab)
    return {"shards": shards, "start": start}


def run_argv(data, output_dir, *extra):
    return ["--pregenerated_data", data["shards"], "--output_dir", str(output_dir), "--student_model", data["start"],
            *tiny_space_args(), "--max_seq_length", "32", "--train_batch_size", "4", "--learning_rate", "3e-3",
            "--warmup_steps", "0", "--weight_decay", "0.05", "--logging_steps", "1000", "--no_progress", "--seed", "3",
            "--device", "cpu", "--mlm", "--save_steps", "1", "--save_total_limit", "0", "--quality_ladder", "0",
            *extra]


def step_archs(argv, step):
    args = pre_training.build_parser().parse_args(argv)
    return archs_for_step(space_from_args(args), args.seed, step, args.sample_times_per_batch, args.sandwich)


@pytest.mark.parametrize("mode", ["accumulation_two_archs", "sandwich"])
def test_entries_outside_the_step_archs_stay_bit_identical(tiny_run_data, tmp_path, mode):
    extra = (["--gradient_accumulation_steps", "2", "--sample_times_per_batch", "2"] if mode != "sandwich"
             else ["--sandwich"])
    argv = run_argv(tiny_run_data, tmp_path / "run", "--max_steps", "5", *extra)
    assert pre_training.main(argv) == 0
    masked_unions = 0
    for step in range(1, 5):  # step_{k} -> step_{k+1} trained the archs drawn at global step k
        archs = step_archs(argv, step)
        outside, changed, inside = changed_outside_step(str(tmp_path / "run" / f"step_{step}"),
                                                        str(tmp_path / "run" / f"step_{step + 1}"), archs)
        assert outside > 1000 and changed == 0, (step, outside, changed)
        assert inside > 1000  # the sampled slices did train
        model = SuperBertForPreTraining(SuperBertConfig.load(tiny_run_data["start"]))
        masked_unions += any(r.mask() is not None for r in step_regions(model, archs, True, False).values())
    assert masked_unions > 0 if mode != "sandwich" else masked_unions == 0  # both update paths ran


def test_plain_adamw_moves_entries_outside_the_sampled_slices(tiny_run_data, tmp_path):
    """The control: what the masked update fixes (stale momentum and weight decay)."""
    argv = run_argv(tiny_run_data, tmp_path / "dense", "--max_steps", "4", "--sample_times_per_batch", "2",
                    "--no_masked_updates")
    assert pre_training.main(argv) == 0
    outside, changed, _ = changed_outside_step(str(tmp_path / "dense" / "step_3"), str(tmp_path / "dense" / "step_4"),
                                               step_archs(argv, 3))
    assert changed > outside // 4  # (the third layer and the pooler get no gradient at all: they stay)


def test_resume_keeps_the_checkpoint_update_mode(tiny_run_data, tmp_path, capsys):
    from utils import run_cli

    out = tmp_path / "run"
    assert pre_training.main(run_argv(tiny_run_data, out, "--max_steps", "2", "--stop_after_steps", "1")) == 0
    assert json.load(open(out / "step_1" / "trainer_state.json"))["masked_updates"] is True
    capsys.readouterr()
    with pytest.raises(SystemExit) as done:
        run_cli(pre_training.main, run_argv(tiny_run_data, out, "--max_steps", "2", "--resume", "--no_masked_updates"))
    err = capsys.readouterr().err.strip()
    assert done.value.code == 2 and len(err.splitlines()) == 1 and "trained with masked updates" in err


# --------------------------------------------------------------------------------------
# Coverage: the default samplers train what the search spaces select
# --------------------------------------------------------------------------------------


def test_named_supernet_samplers_cover_their_search_spaces():
    assert uncovered_dimensions(SPACES["paper_search"], SPACES["paper_supernet"]) == []
    assert uncovered_dimensions(SPACES["demo_search"], SPACES["demo_supernet"]) == []
    original = dataclasses.replace(SPACES["paper_supernet"], qkv_size=Grid(180, 528, 12))
    assert uncovered_dimensions(SPACES["paper_search"], original) == ["qkv 144..528 vs 180..528"]
    narrow = dataclasses.replace(SPACES["demo_supernet"], layer_num=Grid(2, 3), intermediate_size=Grid(256, 1024, 128))
    assert [line.split()[0] for line in uncovered_dimensions(SPACES["demo_search"], narrow)] == ["layers", "FFN"]


@pytest.mark.parametrize("search,supernet", [("paper_search", "paper_supernet"), ("demo_search", "demo_supernet")])
def test_default_sampler_draws_every_value_the_search_selects(search, supernet):
    draws = [arch for step in range(3000) for arch in archs_for_step(get_space(supernet), 42, step)]
    drawn = {"layers": {a["sample_layer_num"] for a in draws}, "hidden": {a["sample_hidden_size"] for a in draws},
             "FFN": {a["sample_intermediate_sizes"][0] for a in draws},
             "qkv": {a["sample_qkv_sizes"][0] for a in draws}}
    space = get_space(search)
    wanted = {"layers": space.layer_num.values, "hidden": space.hidden_size.values,
              "FFN": space.intermediate_size.values, "qkv": space.hidden_size.values}  # qkv tied to hidden
    for dimension, values in wanted.items():
        assert set(values) <= drawn[dimension], (dimension, sorted(set(values) - drawn[dimension]))


def test_every_slice_paper_search_reaches_receives_gradient_from_the_default_sampler():
    """The paper supernet's shape (small vocab), 2000 steps of the default paper_supernet sampler:
    every row / column / head-dim index that a paper_search arch can use gets gradient. Only the
    steps whose arch reaches further along some axis than all steps before are run (the others
    cannot add an index; the region test above shows regions are the gradient's support)."""
    config = SuperBertConfig(vocab_size=40, max_position_embeddings=8, hidden_dropout_prob=0.0,
                             attention_probs_dropout_prob=0.0)  # L5/H564/F1024/Q528/A12
    torch.manual_seed(0)
    model = SuperBertForPreTraining(config)
    ids = torch.arange(8).view(1, 8) + 5
    extent: dict[str, tuple[int, ...]] = {}
    reached: dict[str, list[torch.Tensor]] = {}
    head_dims, runs = set(), 0
    for step in range(2000):
        (arch,) = archs_for_step(get_space("paper_supernet"), 42, step)
        head_dims.add(arch["sample_qkv_sizes"][0] // 12)
        regions = {name: region for name, region in step_regions(model, [arch], True, False).items()
                   if name.startswith("bert.encoder")}
        grows = [name for name, region in regions.items()
                 if name not in extent or any(a > b for a, b in zip(region.boxes[0], extent[name]))]
        if not grows:
            continue
        runs += 1
        model.set_sample_config(arch)
        model.zero_grad(set_to_none=True)
        model(ids, labels=ids).loss.backward()
        for name, region in regions.items():
            extent[name] = tuple(max(a, b) for a, b in zip(region.boxes[0], extent.get(name, region.boxes[0])))
            view = model.get_parameter(name).grad.ne(0).reshape(region.view_shape)
            axes = [view.movedim(axis, 0).reshape(view.shape[axis], -1).any(dim=1) for axis in range(view.dim())]
            old = reached.get(name)
            reached[name] = axes if old is None else [a | b for a, b in zip(old, axes)]
    largest = get_space("paper_search").largest()  # L5/H528/F1024/Q528
    for name, region in step_regions(model, [largest], True, False).items():
        if name.startswith("bert.encoder") and not name.endswith("key.bias"):
            for axis, size in enumerate(region.boxes[0]):
                assert bool(reached[name][axis][:size].all()), (name, axis, int(reached[name][axis].sum()), size)
    assert min(head_dims) == 12 and max(head_dims) == 44  # qkv 144 and 528 were both trained
    assert runs < 60


# --------------------------------------------------------------------------------------
# Held-out split and the quality report
# --------------------------------------------------------------------------------------


def test_heldout_split_is_fixed_by_the_shards_and_disjoint(tiny_run_data):
    shards = ShardIndex(find_shards(tiny_run_data["shards"]))
    train, held = heldout_split(shards, 0.2)
    again_train, again_held = heldout_split(ShardIndex(find_shards(tiny_run_data["shards"])), 0.2)
    assert np.array_equal(held, again_held) and np.array_equal(train, again_train) and len(held) > 0
    assert set(train.tolist()).isdisjoint(held.tolist()) and len(train) + len(held) == len(shards)
    # The fraction, on shards of 3 x 20,000 lines (only the line counts matter): sd 0.0016.
    big = type("Lines", (), {"starts": [np.zeros(20_000)] * 3})()
    _, big_held = heldout_split(big, 0.02)
    assert abs(len(big_held) / 60_000 - 0.02) < 0.003
    none_train, none_held = heldout_split(shards, 0.0)
    assert len(none_held) == 0 and np.array_equal(none_train, np.arange(len(shards)))


@pytest.mark.parametrize("name", ["demo_search", "paper_search"])
def test_quality_ladder_is_ordered_by_size(name):
    space = get_space(name)
    archs = quality.ladder(space, 6)
    assert archs[0] == space.smallest() and archs[-1] == space.largest() and len(archs) == 6
    config = SuperBertConfig(vocab_size=1000, hidden_size=space.hidden_size.stop, num_hidden_layers=space.layer_num.stop,
                             intermediate_size=space.intermediate_size.stop, qkv_size=space.hidden_size.stop,
                             num_attention_heads=space.num_attention_heads.stop, max_position_embeddings=128)
    model = SuperBertForPreTraining(config)
    sizes = [count_active_parameters(model, arch) for arch in archs]
    assert sizes == sorted(sizes) and len(set(sizes)) == len(sizes)
    for key in ("sample_layer_num", "sample_hidden_size"):
        values = [arch[key] for arch in archs]
        assert values == sorted(values)
    if name == "demo_search":  # the README's ladder (on the finer demo_search grid)
        from utils import arch_summary
        assert [arch_summary(a) for a in archs] == ["L1/H192/F256/Q192/A4", "L2/H256/F512/Q256/A4",
                                                    "L2/H288/F768/Q288/A4", "L3/H352/F1024/Q352/A4",
                                                    "L3/H384/F1280/Q384/A4", "L4/H448/F1536/Q448/A4"]


def test_pre_training_writes_the_quality_report_and_the_cli_adds_the_rank_agreement(tiny_run_data, tmp_path):
    out = tmp_path / "run"
    argv = run_argv(tiny_run_data, out, "--max_steps", "6", "--save_steps", "0", "--heldout_fraction", "0.2",
                    "--sample_times_per_batch", "2")
    argv[argv.index("--quality_ladder") + 1] = "2"
    assert pre_training.main(argv) == 0
    report = json.load(open(out / "subnet_quality.json"))
    assert os.path.isfile(out / "subnet_quality.png")
    assert [row["arch_summary"] for row in report["ladder"]] == ["L1/H16/F32/Q16/A2", "L2/H32/F64/Q32/A2"]
    assert report["heldout_fraction"] == 0.2 and report["masked_updates"] is True
    for row in report["ladder"]:
        assert np.isfinite(row["mlm_loss"]) and row["sem"] >= 0 and row["masked_tokens"] > 0 and row["batches"] > 1
    split = json.load(open(out / "final" / "data_split.json"))
    assert split["heldout_fraction"] == 0.2 and split["heldout_sequences"] == report["heldout_sequences"] > 0

    # The CLI on the same supernet and shards: the same held-out batches and masks as the run's own
    # report, plus every arch of a results file (the evaluator's JSONL layout; one arch twice).
    space = space_from_args(pre_training.build_parser().parse_args(argv))
    accuracies = [(space.smallest(), 0.41), (space.largest(), 0.62), (make_arch(2, 16, 64, 2, 16), 0.50),
                  (make_arch(1, 32, 32, 2, 32), 0.47), (space.largest(), 0.66)]
    results = tmp_path / "subbert.results.jsonl"
    with open(results, "w") as handle:
        for arch, acc in accuracies:
            handle.write(json.dumps({"task_name": "mnli", "arch": arch, "best_acc": acc, "seed": 1}) + "\n")
    assert quality.main(["--supernet", str(out / "final"), "--shards", tiny_run_data["shards"], *tiny_space_args(),
                         "--ladder", "2", "--batch_size", "8", "--threads", "1", "--out", str(tmp_path / "q"),
                         "--results", str(results)]) == 0
    again = json.load(open(tmp_path / "q" / "subnet_quality.json"))
    for row, mine in zip(report["ladder"], again["ladder"]):
        assert row["arch"] == mine["arch"] and mine["mlm_loss"] == pytest.approx(row["mlm_loss"], abs=1e-5)
    rows = again["results"]["archs"]
    assert len(rows) == 4 and again["results"]["archs"] == rows
    by_arch = {json.dumps(row["arch"], sort_keys=True): row for row in rows}
    assert by_arch[json.dumps(space.largest(), sort_keys=True)]["best_acc"] == pytest.approx(0.64)  # mean of 2
    from scipy.stats import kendalltau

    expected = kendalltau([row["mlm_loss"] for row in rows], [row["best_acc"] for row in rows]).statistic
    assert again["results"]["kendall_tau_loss_vs_accuracy"] == pytest.approx(expected)
    assert os.path.isfile(tmp_path / "q" / "subnet_quality.png")


def test_rank_agreement_is_minus_one_when_loss_orders_archs_as_accuracy_does():
    rows = [{"mlm_loss": loss, "best_acc": acc} for loss, acc in ((3.0, 0.5), (2.5, 0.6), (2.0, 0.7), (4.0, 0.4))]
    assert quality.rank_agreement(rows)["kendall_tau_loss_vs_accuracy"] == pytest.approx(-1.0)
    flipped = [dict(row, best_acc=1 - row["best_acc"]) for row in rows]
    assert quality.rank_agreement(flipped)["kendall_tau_loss_vs_accuracy"] == pytest.approx(1.0)
    assert quality.rank_agreement(rows[:1])["kendall_tau_loss_vs_accuracy"] is None


def test_quality_cli_bad_input_is_one_line(tiny_run_data, tmp_path, capsys):
    from utils import run_cli

    bad_results = tmp_path / "bad.jsonl"
    bad_results.write_text(json.dumps({"task_name": "mnli", "best_acc": 0.5}) + "\n")
    a_file = tmp_path / "file"
    a_file.write_text("x")
    common = ["--shards", tiny_run_data["shards"], *tiny_space_args()]
    for argv, needle in (
            (["--supernet", str(tmp_path / "none"), "--out", str(tmp_path / "q"), *common], "no such model directory"),
            (["--supernet", tiny_run_data["start"], "--out", str(a_file), *common], "--out"),
            (["--supernet", tiny_run_data["start"], "--out", str(tmp_path / "q"), "--results", str(tmp_path / "x.jsonl"),
              *common], "no such results file"),
            (["--supernet", tiny_run_data["start"], "--out", str(tmp_path / "q"), "--results", str(bad_results),
              *common], "not a results file"),
            (["--supernet", tiny_run_data["start"], "--out", str(tmp_path / "q"), "--ladder", "1", *common],
             "--ladder must be at least 2")):
        with pytest.raises(SystemExit) as done:
            run_cli(quality.main, argv)
        err = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
        assert done.value.code == 2 and len(err) == 1 and needle in err[0], (needle, err)
