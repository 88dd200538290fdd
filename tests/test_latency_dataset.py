"""The latency-table stage (inference_time_evaluation_quant.py): records, protocol, resume,
shards, legacy lines and bad input, on a tiny 8-arch grid with a tiny vocab and short sequences."""

import json
import os

import numpy as np
import pytest

import inference_time_evaluation_quant as torch_stage
from latency import measure, table
from utils import arch_key, arch_to_legacy_repr, make_arch, parse_arch, run_cli

TINY = ["--space", "demo_latency", "--layer_num_space", "1", "2", "--hidden_size_space", "64", "96", "32",
        "--intermediate_size_space", "128", "192", "64", "--head_num_space", "4", "4", "--vocab_size", "128",
        "--max_seq_length", "16", "--max_position_embeddings", "32", "--infer_cnt", "3", "--warmup", "1"]
# the fields other stages and the predictor read (issue 4, "Interface")
RECORD_FIELDS = {"arch", "arch_key", "backend", "median_ms", "p10_ms", "p90_ms", "mean_ms", "std_ms", "runs", "warmup",
                 "batch_size", "seq_len", "threads", "cpu_model", "torch_version", "onnxruntime_version",
                 "quant_engine", "converted_linear", "hostname", "measured_at", "timer", "protocol"}
ROUNDS = ["--protocol", "baf-latency-2"]  # the tests of protocol baf-latency-2's records pin it
# protocol baf-latency-2 (issue 9)
NEW_FIELDS = {"record_type", "raw_median_ms", "round_medians_ms", "round_values_ms", "round_spread_pct",
              "reference_ratio", "anchor_round_ms", "anchor_ms", "reference_base_ms", "reference_key", "measurement",
              "measurement_ms", "measurements_ms", "remeasured", "remeasure_reasons", "stable", "remeasure_cap_reached",
              "run_id", "chunk", "timing_s", "cpu_flags", "drift_correction", "reference_keys", "remeasure_cap"}


@pytest.fixture(autouse=True)
def private_timing_slot(tmp_path, monkeypatch):
    monkeypatch.setenv("BAF_TIMING_LOCK_DIR", str(tmp_path / "timing_slot"))


def arch_lines(path):
    """The arch records of a table file as written (first measurements and re-measurements)."""
    return [json.loads(line) for line in lines(path) if json.loads(line).get("record_type") == "arch"]


def run(argv):
    with pytest.raises(SystemExit) as info:
        run_cli(torch_stage.main, argv)
    return info.value.code


def lines(path):
    with open(path, encoding="utf-8") as handle:
        return handle.read().splitlines()


def test_summarize_and_interleaved_protocol():
    stats = measure.summarize([1.0, 2.0, 3.0, 4.0, 10.0])
    assert stats["median_ms"] == 3.0 and stats["mean_ms"] == 4.0 and stats["min_ms"] == 1.0
    assert stats["p10_ms"] == pytest.approx(1.4) and stats["p90_ms"] == pytest.approx(7.6)
    assert stats["std_ms"] == pytest.approx(3.535534, rel=1e-6)

    calls = [0, 0]
    runners = [lambda: calls.__setitem__(0, calls[0] + 1), lambda: calls.__setitem__(1, calls[1] + 1)]
    timings = measure.measure(runners, measure.Protocol(warmup=2, runs=7, rounds=3, interleave=2))
    assert [len(t.wall_ms) for t in timings] == [7, 7] and [len(t.cpu_ms) for t in timings] == [7, 7]
    assert calls == [2 + 2 + 7, 2 + 2 + 7]  # warm-up, one refresh run per later round, 7 timed
    assert all(value >= 0 for t in timings for value in t.wall_ms + t.cpu_ms)


@pytest.mark.parametrize("kwargs, message", [(dict(timer="cpu", threads=2), "--threads 1"),
                                             (dict(rounds=4, runs=3), "--rounds"),
                                             (dict(runs=0), "--infer_cnt"),
                                             (dict(seq_len=64, max_position_embeddings=32), "--max_seq_length")])
def test_protocol_rejects_bad_settings(kwargs, message):
    with pytest.raises(measure.UserError, match=message):
        measure.Protocol(**kwargs)


def test_fp32_and_int8_tables_with_legacy_lines(tmp_path):
    out = str(tmp_path / "lat")
    assert run(["--save_dir", out, "--legacy_format"] + TINY + ROUNDS) == 0
    assert run(["--save_dir", out, "--legacy_format", "--quant"] + TINY + ROUNDS) == 0
    grid = {arch_key(make_arch(layers, hidden, ffn, 4)) for layers in (1, 2) for hidden in (64, 96) for ffn in (128, 192)}
    assert len(grid) == 8
    for backend, legacy in (("torch_fp32", "lat_.tmp"), ("torch_dynamic_int8", "lat_quant_.tmp")):
        records = table.read_latency_table(os.path.join(out, f"lat_{backend}.jsonl"))
        assert len(records) == 8 and {r["arch_key"] for r in records} == grid
        assert len(records.references) >= 2 * 2 and len(records.runs) == 1  # 2 references at 2+ checkpoints
        for record in records:
            assert RECORD_FIELDS | NEW_FIELDS <= set(record)
            assert record["backend"] == backend and record["runs"] == 3 and len(record["times_ms"]) == 3
            assert record["protocol"] == "baf-latency-2" and len(record["round_medians_ms"]) == 3
            assert record["median_ms"] == pytest.approx(np.median(record["measurements_ms"]) if
                                                        record["measurement"] != 2 else
                                                        np.mean(record["measurements_ms"]))
            assert record["reference_base_ms"] > 0 and record["anchor_ms"] > 0
            assert 0 < record["min_ms"] <= record["raw_median_ms"] <= max(record["times_ms"])
            assert (record["seq_len"], record["threads"], record["vocab_size"]) == (16, 1, 128)
            expected = record["linear_modules"] if backend == "torch_dynamic_int8" else 0
            assert record["converted_linear"] == expected
            assert record["linear_modules"] == 6 * record["arch"]["sample_layer_num"] + 1  # + pooler
        if backend == "torch_dynamic_int8":
            assert records[0]["quant_engine"] in ("x86", "fbgemm", "qnnpack")
        # the legacy file: the original's str(dict)<TAB>ms lines, same archs and medians
        legacy_lines = lines(os.path.join(out, legacy))
        assert [line.split("\t")[0] for line in legacy_lines] == [arch_to_legacy_repr(r["arch"]) for r in records]
        assert [float(line.split("\t")[1]) for line in legacy_lines] == [r["median_ms"] for r in records]
        assert {arch_key(parse_arch(line.split("\t")[0])) for line in legacy_lines} == grid
        # both formats read back through the one reader
        assert [r["median_ms"] for r in table.read_latency_table(os.path.join(out, legacy))] == \
               [r["median_ms"] for r in records]


def test_resumed_run_equals_uninterrupted(tmp_path):
    """Real timings: the same archs in the same order; values are checked on synthetic timings in
    test_latency_protocol.py."""
    whole, parts = str(tmp_path / "whole"), str(tmp_path / "parts")
    assert run(["--save_dir", whole] + TINY) == 0
    assert run(["--save_dir", parts, "--limit", "3"] + TINY) == 0
    path = os.path.join(parts, "lat_torch_fp32.jsonl")
    first = lines(path)
    assert len(arch_lines(path)) == 3
    # a writer killed mid-line leaves a truncated tail: it is dropped and re-measured
    with open(path, "a", encoding="utf-8") as handle:
        handle.write('{"arch": {"sample_hidden_size": 6')
    assert run(["--save_dir", parts] + TINY) == 0
    resumed = lines(path)
    assert resumed[:len(first)] == first  # measured rows never rewritten
    keys = [r["arch_key"] for r in arch_lines(path) if r["measurement"] == 1]
    assert keys == [r["arch_key"] for r in arch_lines(os.path.join(whole, "lat_torch_fp32.jsonl"))
                    if r["measurement"] == 1]
    assert run(["--save_dir", parts] + TINY) == 0  # nothing left: nothing appended
    assert lines(path) == resumed


def test_two_backends_in_one_process(tmp_path):
    out = str(tmp_path / "lat")
    assert run(["--save_dir", out, "--backends", "torch_fp32", "int8", "--legacy_format"] + TINY) == 0
    fp32 = table.read_latency_table(os.path.join(out, "lat_torch_fp32.jsonl"))
    int8 = table.read_latency_table(os.path.join(out, "lat_torch_dynamic_int8.jsonl"))
    assert {r["arch_key"] for r in fp32} == {r["arch_key"] for r in int8} and len(fp32) == 8
    assert {r["converted_linear"] for r in fp32} == {0} and all(r["converted_linear"] == r["linear_modules"] for r in int8)
    assert fp32.references[0]["run_id"] == int8.references[0]["run_id"]
    assert os.path.exists(os.path.join(out, "lat_.tmp")) and os.path.exists(os.path.join(out, "lat_quant_.tmp"))


def test_refuses_to_append_another_protocol(tmp_path, capsys):
    out = str(tmp_path / "lat")
    assert run(["--save_dir", out, "--limit", "2"] + TINY) == 0
    path = os.path.join(out, "lat_torch_fp32.jsonl")
    before = open(path, "rb").read()
    argv = ["--save_dir", out] + TINY
    argv[argv.index("--infer_cnt") + 1] = "4"
    capsys.readouterr()
    assert run(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "runs=3" in err and "runs=4" in err and "lat_torch_fp32.jsonl:1" in err
    assert open(path, "rb").read() == before


def test_shards_split_the_selection(tmp_path):
    out = str(tmp_path / "lat")
    assert run(["--save_dir", out, "--shard", "0/2", "--order", "grid"] + TINY) == 0
    assert run(["--save_dir", out, "--shard", "1/2", "--order", "grid"] + TINY) == 0
    shards = [table.read_latency_table(os.path.join(out, f"lat_torch_fp32.shard{i}of2.jsonl")) for i in (0, 1)]
    keys = [[r["arch_key"] for r in records] for records in shards]
    assert len(keys[0]) == len(keys[1]) == 4 and not set(keys[0]) & set(keys[1])
    merged = table.read_latency_tables([os.path.join(out, f"lat_torch_fp32.shard{i}of2.jsonl") for i in (0, 1)])
    assert len(merged) == 8
    assert keys[0][0] == arch_key(make_arch(1, 64, 128, 4))  # grid order: L -> H -> FFN, round-robin


def test_sample_is_seeded(tmp_path):
    for name in ("a", "b"):
        assert run(["--save_dir", str(tmp_path / name), "--sample", "3", "--seed", "5"] + TINY) == 0
    keys = [[r["arch_key"] for r in table.read_latency_table(str(tmp_path / n / "lat_torch_fp32.jsonl"))] for n in "ab"]
    assert keys[0] == keys[1] and len(set(keys[0])) == 3


@pytest.mark.parametrize("content, message", [
    ('{"sample_layer_num": 1, "sample_hidden_size": 64, "sample_intermediate_sizes": [128], '
     '"sample_num_attention_heads": [4], "sample_qkv_sizes": [64]}\n' * 2, "archs.txt:2: duplicate arch"),
    ('{"sample_layer_num": 1, "sample_hidden_size": 128, "sample_intermediate_sizes": [128], '
     '"sample_num_attention_heads": [4], "sample_qkv_sizes": [128]}\n',
     "archs.txt:1: sample_hidden_size=128 is outside the demo_latency+custom space's range 64..96"),
    ("{'sample_layer_num': 1\n", "archs.txt:1: not a JSON or Python-literal arch"),
    ('{"sample_layer_num": 1, "sample_hidden_size": 64, "sample_intermediate_sizes": [128], '
     '"sample_num_attention_heads": [4], "sample_qkv_sizes": [64]}\n\n{"sample_layer_num": 1, "sample_hidden_size": 64, '
     '"sample_intermediate_sizes": [128], "sample_num_attention_heads": [4], "sample_qkv_sizes": [32]}\n',
     "archs.txt:3: sample_qkv_sizes=32 must equal sample_hidden_size=64"),
    ("\n", "no archs"),
])
def test_bad_arch_file_is_one_line(tmp_path, capsys, content, message):
    arch_file = tmp_path / "archs.txt"
    arch_file.write_text(content)
    assert run(["--save_dir", str(tmp_path / "lat"), "--arch_file", str(arch_file)] + TINY) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err
    assert not os.path.exists(tmp_path / "lat" / "lat_torch_fp32.jsonl")


@pytest.mark.parametrize("flags, message", [(["--shard", "2/2"], "--shard 2/2"), (["--shard", "x"], "--shard"),
                                            (["--sample", "99"], "--sample 99"), (["--timer", "cpu", "--threads", "2"],
                                                                                   "--threads 1")])
def test_bad_flags_are_one_line(tmp_path, capsys, flags, message):
    assert run(["--save_dir", str(tmp_path / "lat")] + TINY + flags) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err


def test_arch_that_is_no_plain_bert_is_named(tmp_path, capsys):
    """In a space where qkv is searched on its own, an arch with qkv != hidden is valid but cannot be
    timed as a plain Hugging Face BERT (what the latency tables measure)."""
    arch_file = tmp_path / "archs.txt"
    arch_file.write_text('{"sample_layer_num": 1, "sample_hidden_size": 64, "sample_intermediate_sizes": [128], '
                         '"sample_num_attention_heads": [4], "sample_qkv_sizes": [64]}\n\n'
                         '{"sample_layer_num": 1, "sample_hidden_size": 64, "sample_intermediate_sizes": [128], '
                         '"sample_num_attention_heads": [4], "sample_qkv_sizes": [32]}\n')
    argv = ["--save_dir", str(tmp_path / "lat"), "--arch_file", str(arch_file), "--qkv_size_space", "32", "96", "32"]
    assert run(argv + TINY) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "archs.txt:3: this arch cannot be a plain Hugging Face BERT" in err


def test_one_build_serves_every_backend_unchanged():
    """prepare_backends builds the plain BERT once; the int8 copy and the ORT export leave the fp32
    model as it was, and each backend's model computes what a separate build's does."""
    import torch

    from latency.backends import prepare, prepare_backends

    protocol = measure.Protocol(vocab_size=128, seq_len=16, max_position_embeddings=32)
    arch = make_arch(2, 64, 128, 4)
    names = ["torch_fp32", "torch_dynamic_int8", "ort_dynamic_int8"]
    together = prepare_backends(arch, names, protocol)
    for backend in names:
        alone = prepare(arch, backend, protocol).run()
        shared = together[backend].run()
        first = alone[0] if isinstance(alone, (list, tuple)) else alone.last_hidden_state
        second = shared[0] if isinstance(shared, (list, tuple)) else shared.last_hidden_state
        assert torch.equal(torch.as_tensor(first), torch.as_tensor(second)), backend
        assert together[backend].info["linear_modules"] == 13 and together[backend].info["prepare_s"] > 0
