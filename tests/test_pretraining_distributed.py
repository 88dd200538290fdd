"""Stage 2 under DistributedDataParallel: 2 CPU processes (gloo) train the same archs on disjoint
data and end with identical parameters that have moved from their start."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file

import pre_training
from pretraining.models import archs_for_step
from pretraining.shards import GenerateSettings, generate_shards
from pretraining_fixtures import changed_outside_step, tiny_space_args, write_corpus, write_vocab
from transformer.checkpoint import save_supernet
from transformer.config import SuperBertConfig
from transformer.modeling_super import SuperBertForPreTraining
from utils import read_jsonl, space_from_args

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    vocab = str(root / "vocab.txt")
    tokens = write_vocab(vocab)
    write_corpus(str(root / "raw"), documents=4, seed=2)
    shards = str(root / "shards")
    generate_shards(str(root / "raw"), shards, vocab, GenerateSettings(max_seq_len=32, do_lower_case=True,
                                                                       num_shards=2, num_workers=1), progress=False)
    start = str(root / "start")
    torch.manual_seed(0)
    config = SuperBertConfig(vocab_size=len(tokens), hidden_size=32, num_hidden_layers=2, intermediate_size=64,
                             qkv_size=32, num_attention_heads=2, max_position_embeddings=64)
    save_supernet(SuperBertForPreTraining(config), start, vocab)
    # The same weights without dropout: runs split differently over ranks can then agree exactly.
    no_dropout = str(root / "start_no_dropout")
    torch.manual_seed(0)
    save_supernet(SuperBertForPreTraining(SuperBertConfig(**{**config.__dict__, "hidden_dropout_prob": 0.0,
                                                             "attention_probs_dropout_prob": 0.0})), no_dropout, vocab)
    return {"root": root, "shards": shards, "start": start, "start_no_dropout": no_dropout}


def train_args(setup, output_dir, *extra):
    return ["--pregenerated_data", setup["shards"], "--output_dir", str(output_dir), "--student_model", setup["start"],
            *tiny_space_args(), "--max_seq_length", "32", "--train_batch_size", "4", "--learning_rate", "2e-3",
            "--warmup_steps", "1", "--logging_steps", "1000", "--no_progress", "--seed", "5", "--device", "cpu",
            "--mlm", *extra]


def _rank_main(rank: int, world_size: int, port: int, argv: list, dump_dir: str) -> None:
    """One spawned rank: the env torchrun would set, then the real training entry point."""
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    import pre_training
    from pretraining.loop import train

    result = train(pre_training.build_parser().parse_args(argv))
    state = {key: value.detach().contiguous() for key, value in result.model.state_dict().items()}
    save_file(state, os.path.join(dump_dir, f"rank{rank}.safetensors"))


def test_two_cpu_ranks_end_with_identical_moved_parameters(setup, tmp_path):
    # Accumulation and two archs per step exercise no_sync with archs of different depth
    # (unused layers) inside one step.
    argv = train_args(setup, tmp_path / "run", "--max_steps", "4", "--gradient_accumulation_steps", "2",
                      "--sample_times_per_batch", "2", "--save_steps", "1", "--save_total_limit", "0")
    mp.spawn(_rank_main, args=(2, free_port(), argv, str(tmp_path)), nprocs=2, join=True)
    # Masked updates under DDP: what no arch of a step read is bit-identical after it.
    args = pre_training.build_parser().parse_args(argv)
    for step in range(1, 4):
        archs = archs_for_step(space_from_args(args), args.seed, step, 2)
        outside, changed, inside = changed_outside_step(str(tmp_path / "run" / f"step_{step}"),
                                                        str(tmp_path / "run" / f"step_{step + 1}"), archs)
        assert outside > 500 and changed == 0 and inside > 500, (step, outside, changed, inside)
    rank0, rank1 = (load_file(str(tmp_path / f"rank{r}.safetensors")) for r in (0, 1))
    start = load_file(os.path.join(setup["start"], "model.safetensors"))
    assert set(rank0) == set(rank1)
    assert all(torch.equal(rank0[key], rank1[key]) for key in rank0)
    moved = [key for key in start if not torch.equal(start[key], rank0[key])]
    assert "bert.encoder.layer.0.attention.self.query.weight" in moved
    assert "bert.embeddings.word_embeddings.weight" in moved
    rows = read_jsonl(tmp_path / "run" / "loss_log.jsonl")
    assert [row["step"] for row in rows] == [1, 2, 3, 4]  # written once, by rank 0
    saved = load_file(str(tmp_path / "run" / "final" / "model.safetensors"))
    assert all(torch.equal(saved[key], rank0[key]) for key in rank0)


def test_two_ranks_of_batch_4_equal_one_process_of_batch_8(setup, tmp_path):
    """Token-weighted reduction: the loss of a step is its masked tokens' mean over all ranks, so
    2 ranks x batch 4 and 1 process x batch 8 (same examples per step) train the same supernet."""
    data = dict(setup, start=setup["start_no_dropout"])
    common = ["--max_steps", "30", "--save_steps", "0", "--quality_ladder", "0", "--sample_times_per_batch", "2"]
    two_ranks = train_args(data, tmp_path / "ddp", *common)
    mp.spawn(_rank_main, args=(2, free_port(), two_ranks, str(tmp_path)), nprocs=2, join=True)
    one = train_args(data, tmp_path / "single", *common)
    one[one.index("--train_batch_size") + 1] = "8"
    assert pre_training.main(one) == 0
    rows_ddp, rows_one = (read_jsonl(tmp_path / run / "loss_log.jsonl") for run in ("ddp", "single"))
    assert len(rows_ddp) == len(rows_one) == 30
    assert [r["tokens"] for r in rows_ddp] == [r["tokens"] for r in rows_one]  # the same examples per step
    assert max(abs(a["loss"] - b["loss"]) for a, b in zip(rows_ddp, rows_one)) < 1e-4
    a, b = (load_file(str(tmp_path / run / "final" / "model.safetensors")) for run in ("ddp", "single"))
    assert max(float((a[key] - b[key]).abs().max()) for key in a) < 1e-4


@pytest.mark.slow
def test_torchrun_command_line(setup, tmp_path):
    env = dict(os.environ, PYTHONPATH=ROOT)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               os.path.join(ROOT, "pre_training.py"),
               *train_args(setup, tmp_path / "run", "--max_steps", "3", "--save_steps", "0")]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "rank 1/2" in done.stderr and "rank 0/2" in done.stderr
    assert [row["step"] for row in read_jsonl(tmp_path / "run" / "loss_log.jsonl")] == [1, 2, 3]
    assert os.path.isfile(tmp_path / "run" / "final" / "model.safetensors")
