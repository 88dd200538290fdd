"""Stage 2: pre_training.py -- masking, data order, KD loss, arch schedule, checkpoints, resume,
teacher checks and bad input. The distributed tests are in test_pretraining_distributed.py."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import pre_training
from pretraining.checkpointing import TRAINER_FILE, load_training_state
from pretraining.data import RankBatches, epoch_order
from pretraining.losses import kd_losses
from pretraining.step import PreTrainingStep, part_counts, teacher_outputs
from pretraining.masking import IGNORE_INDEX, MaskingConfig, Vocabulary, collate, example_rng, frame, mask_tokens
from pretraining.models import archs_for_step, check_space_fits
from pretraining.shards import GenerateSettings, generate_shards
from pretraining_fixtures import tiny_space_args, write_corpus, write_vocab
from transformer.checkpoint import load_supernet, save_supernet
from transformer.config import SuperBertConfig
from transformer.modeling_super import SuperBertForPreTraining
from utils import SearchSpace, UserError, get_space, read_jsonl, run_cli


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models on a shared 2-core machine: intra-op threads only add contention."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    """Shards of a tiny corpus (max_seq_len 32), its vocab and a tiny KD teacher directory."""
    root = tmp_path_factory.mktemp("pretraining")
    vocab = str(root / "vocab.txt")
    tokens = write_vocab(vocab)
    write_corpus(str(root / "raw"), documents=5, seed=1)
    shards = str(root / "shards")
    generate_shards(str(root / "raw"), shards, vocab, GenerateSettings(max_seq_len=32, do_lower_case=True,
                                                                       num_shards=3, num_workers=1), progress=False)
    teacher = str(root / "teacher")
    make_teacher(teacher, vocab, len(tokens))
    return {"root": root, "vocab": vocab, "tokens": tokens, "shards": shards, "teacher": teacher}


def make_teacher(directory, vocab, vocab_size, hidden=48, layers=2, heads=2, seed=3):
    from transformers import BertConfig, BertForMaskedLM

    torch.manual_seed(seed)
    config = BertConfig(vocab_size=vocab_size, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                        intermediate_size=64, max_position_embeddings=64)
    BertForMaskedLM(config).save_pretrained(directory)
    shutil.copyfile(vocab, os.path.join(directory, "vocab.txt"))
    return directory


def base_args(data, output_dir, *extra):
    return ["--pregenerated_data", data["shards"], "--output_dir", str(output_dir), *tiny_space_args(),
            "--max_seq_length", "32", "--train_batch_size", "4", "--learning_rate", "2e-3", "--warmup_steps", "2",
            "--logging_steps", "1000", "--no_progress", "--seed", "7", "--device", "cpu", *extra]


def cli(argv):
    with pytest.raises(SystemExit) as exit_info:
        run_cli(pre_training.main, argv)
    return exit_info.value.code


def losses(output_dir):
    return [(row["step"], row["loss"]) for row in read_jsonl(os.path.join(output_dir, "loss_log.jsonl"))]


# --------------------------------------------------------------------------------------
# Masking and batching
# --------------------------------------------------------------------------------------


def toy_vocab(size=200):
    return Vocabulary.from_tokens(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(size - 5)])


def test_masking_is_80_10_10_over_real_tokens_only():
    vocab = toy_vocab()
    ids = frame(np.arange(5, 1005) % 195 + 5, 2000, vocab)
    assert ids[0] == vocab.cls_id and ids[-1] == vocab.sep_id and len(ids) == 1002
    counts = {"mask": 0, "random_or_keep": 0, "keep": 0, "total": 0}
    for index in range(40):
        masked, labels = mask_tokens(ids, example_rng(0, 0, index), vocab, MaskingConfig(prob=0.15))
        chosen = np.flatnonzero(labels != IGNORE_INDEX)
        assert len(chosen) == 150  # round(1000 * 0.15)
        assert chosen.min() >= 1 and chosen.max() <= 1000  # never [CLS] / [SEP]
        assert np.array_equal(labels[chosen], ids[chosen])
        assert np.array_equal(masked[labels == IGNORE_INDEX], ids[labels == IGNORE_INDEX])
        counts["mask"] += int((masked[chosen] == vocab.mask_id).sum())
        counts["keep"] += int((masked[chosen] == ids[chosen]).sum())
        counts["total"] += len(chosen)
        replaced = masked[chosen][(masked[chosen] != vocab.mask_id) & (masked[chosen] != ids[chosen])]
        assert not np.isin(replaced, [0, 1, 2, 3, 4]).any()  # random tokens are never special
    total = counts["total"]
    assert abs(counts["mask"] / total - 0.8) < 0.02
    assert abs(counts["keep"] / total - 0.1) < 0.02  # (a random draw equal to the original counts as kept)
    assert abs((total - counts["mask"] - counts["keep"]) / total - 0.1) < 0.02


def test_masks_are_fresh_each_epoch_and_reproducible():
    vocab = toy_vocab()
    ids = frame(np.arange(5, 105), 128, vocab)
    config = MaskingConfig(prob=0.15, max_predictions=10)
    first, _ = mask_tokens(ids, example_rng(5, 0, 17), vocab, config)
    again, _ = mask_tokens(ids, example_rng(5, 0, 17), vocab, config)
    other_epoch, labels = mask_tokens(ids, example_rng(5, 1, 17), vocab, config)
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other_epoch)
    assert (labels != IGNORE_INDEX).sum() == 10  # the cap
    unmasked, labels = mask_tokens(ids, example_rng(5, 0, 17), vocab, MaskingConfig(prob=0.0))
    assert np.array_equal(unmasked, ids) and (labels == IGNORE_INDEX).all()


def test_frame_truncates_and_collate_pads_with_masks():
    vocab = toy_vocab()
    long = frame(np.arange(5, 50), 10, vocab)
    assert len(long) == 10 and long[0] == vocab.cls_id and long[-1] == vocab.sep_id
    short = frame(np.array([7, 8]), 10, vocab)
    batch = collate([(short, np.full(4, IGNORE_INDEX)), (long, np.full(10, IGNORE_INDEX))], vocab.pad_id)
    assert batch["input_ids"].shape == (2, 10)
    assert batch["attention_mask"][0].tolist() == [1] * 4 + [0] * 6
    assert batch["input_ids"][0, 4:].eq(vocab.pad_id).all()
    assert batch["token_type_ids"].eq(0).all() and batch["labels"][0, 4:].eq(IGNORE_INDEX).all()


# --------------------------------------------------------------------------------------
# Data order across ranks, epochs and resume
# --------------------------------------------------------------------------------------


def test_epoch_order_splits_ranks_disjointly_and_reshuffles_each_epoch():
    n, world = 23, 3
    parts = [epoch_order(n, world, rank, seed=1, epoch=0) for rank in range(world)]
    assert len({len(p) for p in parts}) == 1  # equal counts keep DDP in lock-step
    flat = np.concatenate(parts)
    assert set(flat.tolist()) == set(range(n)) and len(flat) == 24  # one example repeated as padding
    assert len(set(parts[0]) & set(parts[1])) == 0
    assert not np.array_equal(epoch_order(n, 1, 0, 1, 0), epoch_order(n, 1, 0, 1, 1))
    assert np.array_equal(epoch_order(n, 1, 0, 1, 1), epoch_order(n, 1, 0, 1, 1))


def test_rank_batches_skip_without_reading():
    full = list(RankBatches(30, 4, 2, 1, seed=3, epoch=2))
    resumed = list(RankBatches(30, 4, 2, 1, seed=3, epoch=2, skip_batches=2))
    assert resumed == full[2:] and len(full) == 4 and all(key[0] == 2 for batch in full for key in batch)


# --------------------------------------------------------------------------------------
# KD loss and attention masks
# --------------------------------------------------------------------------------------


def test_kd_loss_ignores_padding_and_matches_a_manual_mean():
    torch.manual_seed(0)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    s_scores, t_scores = torch.randn(2, 3, 5, 5), torch.randn(2, 3, 5, 5)
    s_hidden, t_hidden = torch.randn(2, 5, 4), torch.randn(2, 5, 4)
    att, rep = kd_losses(s_scores, t_scores, s_hidden, t_hidden, mask)
    expected_att = torch.cat([((s_scores[0, :, :3, :3] - t_scores[0, :, :3, :3]) ** 2).flatten(),
                              ((s_scores[1] - t_scores[1]) ** 2).flatten()]).mean()
    expected_rep = torch.cat([((s_hidden[0, :3] - t_hidden[0, :3]) ** 2).flatten(),
                              ((s_hidden[1] - t_hidden[1]) ** 2).flatten()]).mean()
    assert torch.allclose(att, expected_att, atol=1e-6) and torch.allclose(rep, expected_rep, atol=1e-6)
    s_scores[0, :, 3:, :] += 100  # padded query rows
    s_scores[0, :, :, 4] -= 50  # padded key column
    s_hidden[0, 4] += 9
    att2, rep2 = kd_losses(s_scores, t_scores, s_hidden, t_hidden, mask)
    assert torch.allclose(att, att2) and torch.allclose(rep, rep2)


def test_padded_batch_gives_the_same_kd_and_mlm_loss_as_unpadded_examples(tiny_data):
    """Student and teacher both get the attention mask (by keyword): padding one example of a
    batch changes nothing for its real tokens, so the batch loss is the per-example combination."""
    vocab = Vocabulary.from_tokens(tiny_data["tokens"])
    teacher = load_supernet(tiny_data["teacher"]).eval()
    torch.manual_seed(0)
    student = SuperBertForPreTraining(SuperBertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2,
                                                      intermediate_size=64, qkv_size=32, num_attention_heads=2,
                                                      max_position_embeddings=64, kd_hidden_size=48)).eval()
    student.set_sample_config({"sample_layer_num": 2, "sample_hidden_size": 32, "sample_intermediate_sizes": [64, 64],
                               "sample_num_attention_heads": [2, 2], "sample_qkv_sizes": [32, 32]})
    step = PreTrainingStep(student, mlm=True, kd=True)
    rng = np.random.default_rng(0)
    examples = []
    for length in (6, 14):
        ids = frame(rng.integers(5, len(vocab), length), 64, vocab)
        labels = np.full_like(ids, IGNORE_INDEX)
        labels[2] = ids[2]
        examples.append((ids, labels))

    def parts(batch):  # per-batch means: the step's sums over the batch's counts
        hidden, scores = teacher_outputs(teacher, batch)
        with torch.no_grad():
            sums = step(batch, hidden, scores)
        counts = part_counts(batch, tuple(sums), kd_heads=2, kd_width=48)
        return {key: float(value) / count for (key, value), count in zip(sums.items(), counts)}

    pair = parts(collate(examples, vocab.pad_id))
    single = [parts(collate([example], vocab.pad_id)) for example in examples]
    lengths = [len(ids) for ids, _ in examples]
    pairs_count = [n * n for n in lengths]
    expected_att = sum(p["kd_att_loss"] * c for p, c in zip(single, pairs_count)) / sum(pairs_count)
    expected_rep = sum(p["kd_rep_loss"] * n for p, n in zip(single, lengths)) / sum(lengths)
    expected_mlm = sum(p["mlm_loss"] for p in single) / 2  # one masked token per example
    assert pair["kd_att_loss"] == pytest.approx(expected_att, rel=1e-5)
    assert pair["kd_rep_loss"] == pytest.approx(expected_rep, rel=1e-5)
    assert pair["mlm_loss"] == pytest.approx(expected_mlm, rel=1e-5)


# --------------------------------------------------------------------------------------
# Arch schedule
# --------------------------------------------------------------------------------------


def test_arch_schedule_is_seeded_by_step_and_sandwich_brackets_it():
    space = get_space("paper_supernet")
    first = archs_for_step(space, seed=1, global_step=10, sample_times=3)
    assert first == archs_for_step(space, seed=1, global_step=10, sample_times=3)  # what every rank draws
    assert len(first) == 3 and len({json.dumps(a, sort_keys=True) for a in first}) == 3
    assert first != archs_for_step(space, seed=1, global_step=11, sample_times=3)
    assert first != archs_for_step(space, seed=2, global_step=10, sample_times=3)
    sandwich = archs_for_step(space, seed=1, global_step=10, sample_times=1, sandwich=True)
    assert sandwich[:2] == [space.largest(), space.smallest()] and sandwich[2] == first[0]
    for arch in first:
        space.validate(arch)


def test_space_must_fit_the_supernet():
    config = SuperBertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, intermediate_size=64, qkv_size=32,
                             num_attention_heads=2)
    fits = {"name": "t", "layer_num": [1, 2, 1], "hidden_size": [16, 32, 16], "intermediate_size": [32, 64, 32],
            "num_attention_heads": [2, 2, 1], "qkv_size": [16, 32, 16]}
    check_space_fits(SearchSpace.from_dict(fits), config)
    with pytest.raises(UserError, match="hidden size up to 48 does not fit the supernet's 32"):
        check_space_fits(SearchSpace.from_dict(fits | {"hidden_size": [16, 48, 16]}), config)
    with pytest.raises(UserError, match=r"head size \(qkv / heads\) up to 32 does not fit the supernet's 16"):
        check_space_fits(SearchSpace.from_dict(fits | {"num_attention_heads": [1, 2, 1]}), config)


# --------------------------------------------------------------------------------------
# End to end: training, checkpoints, resume
# --------------------------------------------------------------------------------------


def test_mlm_run_writes_checkpoints_log_and_moves_the_weights(tiny_data, tmp_path):
    start = str(tmp_path / "start")
    torch.manual_seed(0)
    config = SuperBertConfig(vocab_size=len(tiny_data["tokens"]), hidden_size=32, num_hidden_layers=2,
                             intermediate_size=64, qkv_size=32, num_attention_heads=2, max_position_embeddings=64)
    save_supernet(SuperBertForPreTraining(config), start, tiny_data["vocab"])
    out = tmp_path / "run"
    assert pre_training.main(base_args(tiny_data, out, "--mlm", "--student_model", start, "--max_steps", "12",
                                       "--save_steps", "3", "--save_total_limit", "2")) == 0
    rows = read_jsonl(out / "loss_log.jsonl")
    assert [row["step"] for row in rows] == list(range(1, 13))
    assert all(np.isfinite(row["loss"]) and row["mlm_loss"] == row["loss"] for row in rows)
    assert np.mean([r["loss"] for r in rows[-4:]]) < np.mean([r["loss"] for r in rows[:4]])  # it learns
    step_dirs = sorted(name for name in os.listdir(out) if name.startswith("step_"))
    assert step_dirs == ["step_12", "step_9"]  # every 3 steps, the last 2 kept
    assert os.path.isfile(out / "loss_curve.png")
    final = load_file(str(out / "final" / "model.safetensors"))
    initial = load_file(os.path.join(start, "model.safetensors"))
    moved = [key for key in initial if not torch.equal(initial[key], final[key])]
    assert "bert.embeddings.word_embeddings.weight" in moved and "bert.encoder.layer.0.attention.self.query.weight" in moved
    latest = "step_12"
    state = load_training_state(str(out / latest))  # weights_only=True
    assert set(state) >= {"optimizer", "scheduler", "rng"} and len(state["rng"]) == 1
    assert json.load(open(out / latest / TRAINER_FILE))["global_step"] == 12
    reloaded = load_supernet(str(out / latest))
    assert all(torch.equal(reloaded.state_dict()[k], final[k]) for k in final)
    # the supernet says which sampler trained it (a custom space: no family, so no search space)
    from utils import read_space_record

    recorded = read_space_record(str(out / "final"))
    assert set(recorded) == {"supernet"} and recorded["supernet"].hidden_size.values == [16, 32]
    assert read_space_record(str(out / latest)) == recorded


def test_a_space_family_file_travels_into_every_checkpoint(tiny_data, tmp_path):
    from utils import read_space_record

    family = {"name": "tiny", "supernet": {"layer_num": [1, 2], "hidden_size": [16, 32, 16],
                                           "intermediate_size": [32, 64, 32], "num_attention_heads": [2, 2],
                                           "qkv_size": [16, 32, 16]},
              "search": {"layer_num": [1, 2], "hidden_size": [16, 32, 16], "intermediate_size": [32, 64, 32],
                         "num_attention_heads": [2, 2]}}
    path = tmp_path / "tiny_space.json"
    path.write_text(json.dumps(family))
    out = tmp_path / "run"
    args = [a for a in base_args(tiny_data, out, "--mlm", "--max_steps", "2", "--save_steps", "1") if a]
    args[args.index("--space") + 1] = str(path)
    for flag in ("--layer_num_space", "--hidden_size_space", "--intermediate_size_space", "--head_num_space",
                 "--qkv_size_space"):  # the file says it all
        at = args.index(flag)
        end = at + 1
        while end < len(args) and not args[end].startswith("--"):
            end += 1
        del args[at:end]
    assert pre_training.main(args) == 0
    for name in ("final", "step_2"):
        recorded = read_space_record(str(out / name))
        assert set(recorded) == {"supernet", "search"}
        assert recorded["search"].qkv_size is None and recorded["supernet"].qkv_size.values == [16, 32]


def test_killed_and_resumed_run_follows_the_same_loss_curve(tiny_data, tmp_path):
    # 146 sequences / batch 8 = 19 micro-batches = 10 steps per epoch (the last with one micro-batch).
    common = ["--mlm", "--max_steps", "12", "--save_steps", "2", "--save_total_limit", "2", "--train_batch_size", "8",
              "--gradient_accumulation_steps", "2", "--sample_times_per_batch", "2", "--masked_updates"]
    full, part = tmp_path / "full", tmp_path / "part"
    assert pre_training.main(base_args(tiny_data, full, *common)) == 0
    assert pre_training.main(base_args(tiny_data, part, *common, "--stop_after_steps", "5")) == 0
    assert len(losses(part)) == 5 and not os.path.exists(part / "final")
    # Simulate a kill after step 5 was logged but before its checkpoint was written.
    shutil.rmtree(part / "step_5")
    assert os.path.isdir(part / "step_4")
    assert pre_training.main(base_args(tiny_data, part, *common, "--resume")) == 0
    uninterrupted, resumed = losses(full), losses(part)
    assert [s for s, _ in resumed] == list(range(1, 13))  # the truncated row 5 is not duplicated
    assert np.allclose([l for _, l in resumed], [l for _, l in uninterrupted], atol=1e-4, rtol=0)
    a, b = load_file(str(full / "final" / "model.safetensors")), load_file(str(part / "final" / "model.safetensors"))
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-5
    epochs = [row["epoch"] for row in read_jsonl(full / "loss_log.jsonl")]
    assert epochs == [0] * 10 + [1] * 2 and os.path.isdir(part / "epoch_0")  # crossed an epoch boundary
    # The masked updates' per-entry optimizer state went through the checkpoint as well.
    state = load_training_state(str(part / "step_12"))["optimizer"]["state"]
    assert all({"bias_correction1", "bias_correction2"} <= set(entry) for entry in state.values())
    assert json.load(open(part / "step_12" / TRAINER_FILE))["masked_updates"] is True


def test_kd_run_with_teacher_sets_the_projection_width(tiny_data, tmp_path):
    out = tmp_path / "kd"
    assert pre_training.main(base_args(tiny_data, out, "--teacher_model", tiny_data["teacher"],
                                       "--max_steps", "3", "--save_steps", "0", "--sandwich")) == 0
    rows = read_jsonl(out / "loss_log.jsonl")
    assert len(rows) == 3 and rows[0]["archs"][:2] == ["L2/H32/F64/Q32/A2", "L1/H16/F32/Q16/A2"]  # sandwich
    for row in rows:
        assert "mlm_loss" not in row and row["kd_att_loss"] > 0 and row["kd_rep_loss"] > 0
        assert row["loss"] == pytest.approx(row["kd_att_loss"] + row["kd_rep_loss"], rel=1e-5)
    assert SuperBertConfig.load(str(out / "final")).kd_hidden_size == 48


def test_dataloader_workers_do_not_change_the_run(tiny_data, tmp_path):
    common = ["--mlm", "--max_steps", "3", "--save_steps", "0", "--further_train"]
    assert pre_training.main(base_args(tiny_data, tmp_path / "w0", *common)) == 0
    assert pre_training.main(base_args(tiny_data, tmp_path / "w2", *common, "--num_workers", "2")) == 0
    in_process, workers = read_jsonl(tmp_path / "w0" / "loss_log.jsonl"), read_jsonl(tmp_path / "w2" / "loss_log.jsonl")
    assert [r["loss"] for r in in_process] == [r["loss"] for r in workers]
    assert all(r["archs"] == ["L2/H32/F64/Q32/A2"] for r in in_process)  # --further_train: the full supernet


# --------------------------------------------------------------------------------------
# Bad input: one line, exit 2, nothing lost
# --------------------------------------------------------------------------------------


def assert_one_line_error(capsys, code, pattern):
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert pattern in err, err


def final_weights(output_dir):
    return load_file(os.path.join(output_dir, "final", "model.safetensors"))


def assert_same_run(first, second, atol=1e-6):
    """Two runs followed the same loss curve and ended with the same supernet."""
    assert [s for s, _ in losses(second)] == [s for s, _ in losses(first)]
    assert np.allclose([l for _, l in losses(second)], [l for _, l in losses(first)], atol=atol, rtol=0)
    a, b = final_weights(first), final_weights(second)
    assert max(float((a[k] - b[k]).abs().max()) for k in a) <= atol


def test_interrupted_before_the_first_checkpoint_restarts_from_step_0(tiny_data, tmp_path, capsys, caplog):
    """A kill before the first save leaves a loss log but no checkpoint: --resume restarts cleanly
    from step 0 (and a plain re-run still asks for --resume instead of clobbering)."""
    common = ["--mlm", "--max_steps", "6", "--save_steps", "100"]
    full, part = tmp_path / "full", tmp_path / "part"
    assert pre_training.main(base_args(tiny_data, full, *common)) == 0
    assert pre_training.main(base_args(tiny_data, part, *common, "--stop_after_steps", "3")) == 0
    shutil.rmtree(part / "step_3")  # the kill came before the first checkpoint
    assert len(losses(part)) == 3
    capsys.readouterr()
    assert_one_line_error(capsys, cli(base_args(tiny_data, part, *common)), "pass --resume")
    assert cli(base_args(tiny_data, part, *common, "--resume")) == 0
    assert "no checkpoint yet" in caplog.text
    assert_same_run(full, part)
    empty = tmp_path / "empty"  # --resume on a directory without any run: a fresh start
    assert cli(base_args(tiny_data, empty, *common, "--resume")) == 0 and len(losses(empty)) == 6


@pytest.mark.parametrize("broken", ["model.safetensors", "training_state.pt", "trainer_state.json"])
def test_corrupt_latest_checkpoint_falls_back_to_the_newest_intact_one(tiny_data, tmp_path, caplog, broken):
    common = ["--mlm", "--max_steps", "6", "--save_steps", "2", "--save_total_limit", "0"]
    full, part = tmp_path / "full", tmp_path / "part"
    assert pre_training.main(base_args(tiny_data, full, *common)) == 0
    assert pre_training.main(base_args(tiny_data, part, *common, "--stop_after_steps", "4")) == 0
    path = part / "step_4" / broken
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])  # truncated: a disk that filled up
    caplog.clear()
    assert cli(base_args(tiny_data, part, *common, "--resume")) == 0
    warnings = [r.getMessage() for r in caplog.records if "falling back" in r.getMessage()]
    assert len(warnings) == 1 and "step_4" in warnings[0]
    assert_same_run(full, part)


def test_no_intact_checkpoint_is_one_line(tiny_data, tmp_path, capsys):
    out = tmp_path / "run"
    assert pre_training.main(base_args(tiny_data, out, "--mlm", "--max_steps", "4", "--save_steps", "2",
                                       "--stop_after_steps", "2")) == 0
    (out / "step_2" / "model.safetensors").write_bytes(b"not safetensors")
    capsys.readouterr()
    code = cli(base_args(tiny_data, out, "--mlm", "--max_steps", "4", "--save_steps", "2", "--resume"))
    err = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert code == 2 and len(err) == 1 and "no intact checkpoint" in err[0] and "step_2" in err[0]


def test_resuming_a_finished_run_does_nothing(tiny_data, tmp_path, caplog):
    caplog.set_level("INFO")
    out = tmp_path / "run"
    args = base_args(tiny_data, out, "--mlm", "--max_steps", "3", "--save_steps", "0")
    assert pre_training.main(args) == 0
    before = {name: os.stat(out / "final" / name).st_mtime_ns for name in os.listdir(out / "final")}
    log = open(out / "loss_log.jsonl").read()
    assert cli(args + ["--resume"]) == 0
    assert "already finished" in caplog.text
    assert {name: os.stat(out / "final" / name).st_mtime_ns for name in os.listdir(out / "final")} == before
    assert open(out / "loss_log.jsonl").read() == log


def test_save_steps_0_writes_epoch_checkpoints_only_and_resumes_from_them(tiny_data, tmp_path):
    # 146 sequences / batch 16 = 10 steps per epoch: epoch_0 at step 10, the run ends at step 12.
    common = ["--mlm", "--max_steps", "12", "--save_steps", "0", "--train_batch_size", "16"]
    full, part = tmp_path / "full", tmp_path / "part"
    assert pre_training.main(base_args(tiny_data, full, *common)) == 0
    names = sorted(os.listdir(full))
    assert "epoch_0" in names and "final" in names and not [n for n in names if n.startswith("step_")]
    assert pre_training.main(base_args(tiny_data, part, *common)) == 0
    shutil.rmtree(part / "final")  # killed after step 12 was logged, before final/ was written
    assert pre_training.main(base_args(tiny_data, part, *common, "--resume")) == 0
    assert not [n for n in os.listdir(part) if n.startswith("step_")]
    assert_same_run(full, part)


def test_a_second_run_on_the_same_output_dir_is_refused(tiny_data, tmp_path, capsys):
    from pretraining_fixtures import lock_held_by_another_process

    out = tmp_path / "run"
    with lock_held_by_another_process(out) as pid:
        assert_one_line_error(capsys, cli(base_args(tiny_data, out, "--mlm", "--max_steps", "2")),
                              f"in use by pid {pid}")
    assert not os.path.exists(out / "loss_log.jsonl")


def test_leftovers_of_a_killed_save_are_cleared_and_a_half_renamed_checkpoint_restored(tiny_data, tmp_path):
    common = ["--mlm", "--max_steps", "6", "--save_steps", "2", "--save_total_limit", "0"]
    full, part = tmp_path / "full", tmp_path / "part"
    assert pre_training.main(base_args(tiny_data, full, *common)) == 0
    assert pre_training.main(base_args(tiny_data, part, *common, "--stop_after_steps", "4")) == 0
    # What kills leave: a staging directory of the next save, atomic-write temporaries, and
    # save_supernet's "X.old" when the kill came between its two renames (X itself missing).
    (part / ".step_6.k1ll3d00").mkdir()
    (part / ".step_6.k1ll3d00" / "config.json").write_text("{}")
    (part / ".final.zz9xx8yy").mkdir()
    (part / ".loss_log.jsonl.abc123.tmp").write_text("partial")
    os.replace(part / "step_4", part / "step_4.old")
    shutil.copytree(part / "step_2", part / "step_2.old")
    assert pre_training.main(base_args(tiny_data, part, *common, "--resume")) == 0
    leftovers = [n for n in os.listdir(part) if n.startswith(".step") or n.startswith(".final")
                 or n.endswith(".tmp") or n.endswith(".old")]
    assert leftovers == []
    assert os.path.isdir(part / "step_4")  # restored, and resumed from (not from step_2)
    assert_same_run(full, part)


@pytest.mark.parametrize("flags,message", [
    (["--learning_rate=-1e-4"], "--learning_rate must be positive"),
    (["--max_steps", "0"], "--max_steps must be positive, or -1"),
    (["--max_steps", "-5"], "--max_steps must be positive, or -1"),
    (["--weight_decay", "-0.1"], "--weight_decay must be >= 0"),
    (["--warmup_proportion", "1.5"], "--warmup_proportion must be in [0, 1]"),
    (["--heldout_fraction", "0.7"], "--heldout_fraction must be in [0, 0.5)"),
    (["--quality_space", "nope"], "unknown space 'nope'"),
])
def test_bad_numbers_are_one_line(tiny_data, tmp_path, capsys, flags, message):
    assert_one_line_error(capsys, cli(base_args(tiny_data, tmp_path / "run", "--mlm", *flags)), message)
    assert not os.path.exists(tmp_path / "run")


def test_output_dir_that_is_a_file_and_a_missing_shards_dir(tiny_data, tmp_path, capsys):
    target = tmp_path / "file"
    target.write_text("keep me")
    assert_one_line_error(capsys, cli(base_args(tiny_data, target, "--mlm", "--max_steps", "1")),
                          "--output_dir")
    assert target.read_text() == "keep me"
    missing = str(tmp_path / "no_shards")
    code = cli(base_args(dict(tiny_data, shards=missing), tmp_path / "run", "--mlm", "--max_steps", "1"))
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "--pregenerated_data" in err and missing in err
    assert "no vocabulary" not in err


def test_existing_run_is_not_clobbered(tiny_data, tmp_path, capsys):
    out = tmp_path / "run"
    assert pre_training.main(base_args(tiny_data, out, "--mlm", "--max_steps", "2")) == 0
    before = open(out / "loss_log.jsonl").read()
    capsys.readouterr()
    assert_one_line_error(capsys, cli(base_args(tiny_data, out, "--mlm", "--max_steps", "2")), "already holds a run")
    assert open(out / "loss_log.jsonl").read() == before and os.path.isdir(out / "final")


def test_bad_shard_line_names_file_and_line(tiny_data, tmp_path, capsys):
    shards = tmp_path / "shards"
    shutil.copytree(tiny_data["shards"], shards)
    path = shards / "train_doc_tokens_ngrams_2.json"
    lines = open(path).read().splitlines(keepends=True)
    lines[3] = '{"tokens": ["the", \n'
    open(path, "w").writelines(lines)
    data = dict(tiny_data, shards=str(shards))
    code = cli(base_args(data, tmp_path / "run", "--mlm", "--num_train_epochs", "1", "--save_steps", "0"))
    assert_one_line_error(capsys, code, "train_doc_tokens_ngrams_2.json:4: not valid JSON")


@pytest.mark.parametrize("change,message", [({"heads": 4}, "4 heads, but the student samples [2]"),
                                            ({"layers": 1}, "1 layer(s), fewer than the largest student's 2"),
                                            ({"vocab_size": 1}, "vocab size")])
def test_teacher_that_does_not_fit(tiny_data, tmp_path, capsys, change, message):
    teacher = str(tmp_path / "teacher")
    make_teacher(teacher, tiny_data["vocab"], len(tiny_data["tokens"]) + change.get("vocab_size", 0),
                 layers=change.get("layers", 2), heads=change.get("heads", 2))
    capsys.readouterr()
    code = cli(base_args(tiny_data, tmp_path / "run", "--teacher_model", teacher, "--max_steps", "1"))
    assert_one_line_error(capsys, code, message)
    assert not os.path.exists(tmp_path / "run" / "loss_log.jsonl")


def test_student_checkpoint_whose_projection_does_not_fit_the_teacher(tiny_data, tmp_path, capsys):
    start = str(tmp_path / "start")
    config = SuperBertConfig(vocab_size=len(tiny_data["tokens"]), hidden_size=32, num_hidden_layers=2,
                             intermediate_size=64, qkv_size=32, num_attention_heads=2, max_position_embeddings=64,
                             kd_hidden_size=40)
    save_supernet(SuperBertForPreTraining(config), start, tiny_data["vocab"])
    capsys.readouterr()
    code = cli(base_args(tiny_data, tmp_path / "run", "--teacher_model", tiny_data["teacher"], "--student_model",
                         start, "--max_steps", "1"))
    assert_one_line_error(capsys, code, "width 48 does not fit the student's KD projection")


def test_no_objective_and_missing_vocab(tiny_data, tmp_path, capsys):
    assert_one_line_error(capsys, cli(base_args(tiny_data, tmp_path / "a", "--max_steps", "1")), "nothing to train")
    assert_one_line_error(capsys, cli(base_args(tiny_data, tmp_path / "b", "--mlm", "--vocab",
                                                str(tmp_path / "missing.txt"))), "--vocab")
