"""Protocol baf-latency-3 (paired runs) on the synthetic machine of tests/latency_fixtures.py: a slow
period spanning several runs moves the raw figures but not the paired headline; the records hold the
unit and the raw runs; a resumed table equals an uninterrupted one; a baf-latency-2 table is still
read and refused where mixed with a baf-latency-3 one; cheap model builds give the model a full build
gives; the protocol's defaults live in one place."""

import json
import logging
import os
import subprocess
import sys

import numpy as np
import pytest

from latency import drift, measure, table
from latency.protocol import Protocol
from latency_fixtures import GRID, PAIRED, PROTOCOL, FakeMachine, law_ms, private_timing_slot, stage  # noqa: F401
from utils import arch_key, make_arch, run_cli

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytestmark = pytest.mark.usefixtures("private_timing_slot")  # a timing slot of its own per test
REL = 1e-9  # synthetic timings go through float clock arithmetic only
# the auto reference of GRID (the middle of its 1..2 x 64..96 x 128..384 grid)
REFERENCE = make_arch(2, 96, 256, 4)


def test_a_slow_period_over_several_pairs_moves_the_raw_figure_not_the_ratio(monkeypatch):
    machine = FakeMachine().install(monkeypatch)
    protocol = Protocol(vocab_size=128, seq_len=16, max_position_embeddings=32, runs=7, warmup=1)
    arch, ref = make_arch(1, 64, 256, 4), make_arch(2, 96, 256, 4)
    slow = range(1, 5)  # pairs 1..4 of 7 run 30 % slow, both models: a slow period spanning 8 runs
    machine.per_call[arch_key(arch)] = lambda build, call: 1.3 if call - protocol.warmup in slow else 1.0
    machine.per_call[arch_key(ref)] = lambda build, call: 1.3 if call in slow else 1.0
    order = []
    built = {key: machine.prepare_backends(a, ["torch_fp32"], protocol)["torch_fp32"] for key, a in
             (("A", arch), ("R", ref))}

    def logged(key):
        def run():
            order.append(key)
            built[key].run()
        return run

    timing = measure.time_pairs(logged("A"), logged("R"), protocol.runs, protocol.warmup)
    assert "".join(order) == "A" + "AR" "RA" "AR" "RA" "AR" "RA" "AR"  # warm-up, then the order alternates
    stats = timing.statistics("wall", law_ms(ref))
    assert stats["median_ms"] == pytest.approx(law_ms(arch), rel=REL)  # the headline does not move
    assert stats["ratio"] == pytest.approx(law_ms(arch) / law_ms(ref), rel=REL)
    assert stats["raw_median_ms"] == pytest.approx(1.3 * law_ms(arch), rel=REL)  # the raw one does
    assert stats["reference_raw_ms"] == pytest.approx(1.3 * law_ms(ref), rel=REL)
    assert stats["reference_slowdown_pct"] == pytest.approx(30.0, rel=1e-6)
    assert stats["ratio_spread_pct"] == pytest.approx(0.0, abs=1e-6)
    assert stats["ratio_se_pct"] == pytest.approx(0.0, abs=1e-6)
    assert len(stats["pair_ratios"]) == len(stats["times_ms"]) == len(stats["reference_times_ms"]) == 7
    assert sorted(stats["times_ms"])[3:] == pytest.approx([1.3 * law_ms(arch)] * 4, abs=6e-5)  # kept to 0.1 us


def test_a_slow_period_spanning_several_archs_of_the_stage(tmp_path, monkeypatch):
    """The stage on a 20-arch grid, once on a steady machine and once with the machine 30 % slower
    during the middle third of the run: the same table, except the raw figures inside that third."""
    machine = FakeMachine().install(monkeypatch)
    stage(["--save_dir", str(tmp_path / "steady")] + GRID + PAIRED)
    steady = {r["arch_key"]: r for r in table.read_latency_table(str(tmp_path / "steady" / "lat_torch_fp32.jsonl"))}
    total = machine.t
    FakeMachine(speed=lambda t: 1.3 if total / 3 <= t < 2 * total / 3 else 1.0).install(monkeypatch)
    stage(["--save_dir", str(tmp_path / "slow")] + GRID + PAIRED)
    slow = {r["arch_key"]: r for r in table.read_latency_table(str(tmp_path / "slow" / "lat_torch_fp32.jsonl"))}
    assert set(slow) == set(steady) and len(slow) == 20
    inside = 0
    for key, record in slow.items():
        assert record["median_ms"] == pytest.approx(steady[key]["median_ms"], rel=REL), record["arch_summary"]
        assert record["median_ms"] == pytest.approx(law_ms(record["arch"]), rel=REL)
        if record["raw_median_ms"] == pytest.approx(1.3 * law_ms(record["arch"]), rel=REL):
            inside += 1
        else:
            assert record["raw_median_ms"] == pytest.approx(law_ms(record["arch"]), rel=0.2)
    assert inside >= 4  # the slow third held several whole archs: their raw figures moved by 30 %
    summary = drift.drift_summary(table.read_latency_table(str(tmp_path / "slow" / "lat_torch_fp32.jsonl")))
    assert summary["drift_pct"] == pytest.approx(30.0, rel=1e-6) and not summary["flagged"]  # reported, cancelled


def test_paired_records_hold_the_unit_and_the_raw_runs(tmp_path, monkeypatch):
    FakeMachine(speed=lambda t: 1.1).install(monkeypatch)  # the whole run 10 % slow: the unit absorbs it
    out = str(tmp_path / "lat")
    stage(["--save_dir", out, "--backends", "fp32", "int8"] + GRID + PAIRED)
    for backend in ("torch_fp32", "torch_dynamic_int8"):
        records = table.read_latency_table(os.path.join(out, f"lat_{backend}.jsonl"))
        (start,) = records.references
        assert start["arch_key"] == arch_key(REFERENCE) and start["checkpoint_kind"] == "start"
        base = 1.1 * law_ms(REFERENCE, backend)
        assert start["reference_base_ms"] == pytest.approx(base, rel=REL) == start["median_ms"]
        assert len(records) == 20 and len(records.runs) == 1
        for record in records:
            assert record["protocol"] == "baf-latency-3" and record["runs"] == 6 and record["model_build"] == "cheap"
            assert record["median_ms"] == pytest.approx(1.1 * law_ms(record["arch"], backend), rel=REL)
            assert record["ratio"] == pytest.approx(law_ms(record["arch"], backend) / law_ms(REFERENCE, backend),
                                                    rel=REL)
            assert record["raw_median_ms"] == pytest.approx(1.1 * law_ms(record["arch"], backend), rel=REL)
            assert record["reference_raw_ms"] == pytest.approx(base, rel=REL)
            assert record["reference_base_ms"] == start["reference_base_ms"]
            assert record["unit"] == (f"ms at the table's start: {backend} reference L2/H96/F256/Q96/A4 = "
                                      f"{base:.4g} ms")
            assert record["reference_key"] == arch_key(REFERENCE) and record["measurement"] == 1
            assert len(record["times_ms"]) == len(record["reference_times_ms"]) == len(record["pair_ratios"]) == 6
            assert "rounds" not in record and "remeasure_cap" not in record  # baf-latency-2's settings
        assert drift.reference_values(records) == {arch_key(REFERENCE): pytest.approx(base, rel=REL)}
    assert stage(["--save_dir", out, "--backends", "fp32", "int8"] + GRID + PAIRED) == 0  # complete: nothing new
    assert len(table.read_latency_table(os.path.join(out, "lat_torch_fp32.jsonl")).runs) == 1


def test_resumed_paired_table_equals_an_uninterrupted_one(tmp_path, monkeypatch):
    """The machine slows by 0.5 % at every model build; a table measured in three runs (a resumed
    one) equals one measured in a single run: each run's pairs cancel the drift and a resumed table
    keeps the unit of its start."""
    results = {}
    for name, limits in (("whole", [None]), ("parts", [7, 5, None])):
        FakeMachine(build_step=0.005).install(monkeypatch)
        out = str(tmp_path / name)
        for limit in limits:
            stage(["--save_dir", out] + GRID + PAIRED + (["--limit", str(limit)] if limit else []))
        results[name] = table.read_latency_table(os.path.join(out, "lat_torch_fp32.jsonl"))
    whole, parts = results["whole"], results["parts"]
    assert len(parts.references) == 3 and len(parts.runs) == 3 and len(whole.runs) == 1
    assert {r["reference_base_ms"] for r in parts.references} == {whole.references[0]["reference_base_ms"]}
    by_key = {r["arch_key"]: r for r in whole}
    assert {r["arch_key"] for r in parts} == set(by_key) and len(by_key) == 20
    for record in parts:
        assert record["median_ms"] == pytest.approx(by_key[record["arch_key"]]["median_ms"], rel=REL)
    # the later runs' machine was slower (the raw figures say so); the unit did not move
    assert parts.references[-1]["reference_slowdown_pct"] > 5


def test_old_protocol_table_is_read_and_refused_where_mixed(tmp_path, monkeypatch, capsys):
    import latency_predictor

    FakeMachine().install(monkeypatch)
    old, new = str(tmp_path / "old"), str(tmp_path / "new")
    stage(["--save_dir", old, "--remeasure_cap", "0"] + GRID + PROTOCOL)
    stage(["--save_dir", new] + GRID + PAIRED)
    old_path, new_path = os.path.join(old, "lat_torch_fp32.jsonl"), os.path.join(new, "lat_torch_fp32.jsonl")
    old_table = table.read_latency_table(old_path)
    assert len(old_table) == 20 and {r["protocol"] for r in old_table} == {"baf-latency-2"}
    assert drift.drift_summary(old_table)["correction"] == "anchor"
    # a predictor trains on either, never on both together
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        run_cli(latency_predictor.main, ["--lat_dataset_path", old_path, new_path, "--ckpt_path",
                                         str(tmp_path / "p.pt"), "--max_steps", "5", "--no_plot", "--quiet"])
    err = capsys.readouterr().err.strip()
    assert info.value.code == 2 and len(err.splitlines()) == 1 and not (tmp_path / "p.pt").exists()
    assert f"{new_path}:" in err and f"{old_path}:" in err
    assert "protocol='baf-latency-3'" in err and "protocol='baf-latency-2'" in err
    # nor does a run of the new protocol append to a table of the old one
    before = open(old_path, "rb").read()
    stage(["--save_dir", old] + GRID + PAIRED, expect=2)
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"{old_path}:1: this table was measured with protocol='baf-latency-2'" in err
    assert err.endswith("use another --save_dir or --protocol baf-latency-2")
    assert open(old_path, "rb").read() == before


def test_a_setting_of_the_other_protocol_is_one_line(tmp_path, monkeypatch, capsys):
    machine = FakeMachine().install(monkeypatch)
    capsys.readouterr()
    stage(["--save_dir", str(tmp_path / "a"), "--rounds", "2"] + GRID + PAIRED, expect=2)
    err = capsys.readouterr().err.strip()
    assert err.endswith("--rounds is a setting of protocol baf-latency-2; this run measures with baf-latency-3 "
                        "(--protocol baf-latency-2 to use it)")
    stage(["--save_dir", str(tmp_path / "a"), "--references", "none"] + GRID + PAIRED, expect=2)
    assert "--references none: protocol baf-latency-3 times every arch next to a reference" in capsys.readouterr().err
    assert machine.total_builds == 0 and not (tmp_path / "a" / "lat_torch_fp32.jsonl").exists()


def test_protocol_defaults_are_written_once():
    """The stage's --help states the protocol's defaults (read from latency.protocol), and the shell
    script passes no protocol setting unless one is set (so it cannot disagree with them)."""
    from latency.dataset import build_parser

    text = build_parser("x", "", onnx=False).format_help()
    paired, rounds = Protocol(), Protocol(version="baf-latency-2")
    assert f"default {paired.runs}; default {rounds.runs} under baf-latency-2" in " ".join(text.split())
    assert f"default {paired.warmup}; default {rounds.warmup} under baf-latency-2" in " ".join(text.split())
    assert f"(default {rounds.remeasure_cap})" in text
    assert (paired.version, paired.timer, rounds.timer) == ("baf-latency-3", "cpu", "wall")


def test_lat_dataset_gen_passes_only_the_settings_given(tmp_path):
    """LEGACY (the .tmp files) is opt-in, and no protocol default is repeated by the script."""
    fake = tmp_path / "python"
    fake.write_text("#!/usr/bin/env bash\nprintf '%s\\n' \"$@\" > \"$ARGS_OUT\"\n")
    fake.chmod(0o755)
    env = dict(os.environ, PYTHON=str(fake), BAF_PYTHON_CHECKED=str(fake), ARGS_OUT=str(tmp_path / "args"))
    subprocess.run(["bash", os.path.join(REPO, "script", "lat_dataset_gen.sh")], env=env, check=True)
    args = (tmp_path / "args").read_text().split("\n")
    assert "--legacy_format" not in args
    for flag in ("--infer_cnt", "--warmup", "--timer", "--threads", "--seed", "--vocab_size", "--protocol"):
        assert flag not in args
    subprocess.run(["bash", os.path.join(REPO, "script", "lat_dataset_gen.sh")], check=True,
                   env=dict(env, LEGACY="1", INFER_CNT="7", PROTOCOL="baf-latency-2"))
    args = (tmp_path / "args").read_text().split("\n")
    assert "--legacy_format" in args and args[args.index("--infer_cnt") + 1] == "7"
    assert args[args.index("--protocol") + 1] == "baf-latency-2"


def test_remeasure_passes_never_exceed_the_cap(tmp_path, monkeypatch, caplog):
    """baf-latency-2's --remeasure_cap N: at most N re-measure passes, even when every pass would find
    a new suspect (a neighbour whose residual stands out after the previous pass)."""
    from latency.session import Session

    FakeMachine().install(monkeypatch)
    seen = []

    def one_new_suspect_per_pass(self, selected):
        fresh = next(key for key in selected if key not in seen)
        seen.append(fresh)
        return {backend: {fresh: ["a neighbour stood out"]} for backend in self.tables}

    monkeypatch.setattr(Session, "suspects", one_new_suspect_per_pass)
    with caplog.at_level(logging.INFO, logger="latency"):
        stage(["--save_dir", str(tmp_path / "lat"), "--remeasure_cap", "2"] + GRID + PROTOCOL)
    passes = [r.getMessage() for r in caplog.records if r.getMessage().startswith("re-measure pass")]
    assert passes == ["re-measure pass 1: 1 suspect arch(s)", "re-measure pass 2: 1 suspect arch(s)"]


def test_cheap_build_is_the_full_build_without_its_random_init():
    import torch

    from latency.backends import build_plain_bert, prepare_backends

    protocol = Protocol(vocab_size=256, seq_len=16, max_position_embeddings=32)
    assert protocol.model_build == "cheap" and Protocol(version="baf-latency-2").model_build == "full"
    arch = make_arch(2, 64, 192, 4)
    cheap, full = build_plain_bert(arch, protocol), build_plain_bert(arch, protocol, build="full")
    assert type(cheap) is type(full) and not cheap.training
    cheap_state, full_state = cheap.state_dict(), full.state_dict()
    assert list(cheap_state) == list(full_state)
    for name, value in cheap_state.items():
        assert value.shape == full_state[name].shape and value.dtype == full_state[name].dtype, name
        assert torch.isfinite(value).all(), name
        if name.startswith("embeddings.") and not name.endswith(("weight", "bias")):  # the buffers
            assert torch.equal(value, full_state[name]), name
        elif name.endswith("bias"):
            assert not value.any(), name
        elif "LayerNorm" in name:
            assert torch.equal(value, torch.ones_like(value)), name
        else:  # the distribution BERT's own initialisation draws (N(0, 0.02))
            assert abs(float(value.std()) - 0.02) < 0.004 and abs(float(value.mean())) < 0.004, name
    again = build_plain_bert(arch, protocol)
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in cheap_state.items())  # seeded
    ready = prepare_backends(arch, ["torch_fp32", "torch_dynamic_int8"], protocol)
    assert ready["torch_dynamic_int8"].info["converted_linear"] == ready["torch_fp32"].info["linear_modules"] == 13
    for backend in ready:
        output = ready[backend].run()
        assert torch.isfinite(output.last_hidden_state).all() and ready[backend].info["model_build"] == "cheap"
    outputs = [np.asarray(ready[b].run().last_hidden_state) for b in ready]
    assert np.abs(outputs[0] - outputs[1]).max() < 0.5  # int8 computes the same model, roughly


def test_a_failing_build_is_one_line_and_keeps_what_was_measured(tmp_path, monkeypatch, capsys):
    machine = FakeMachine().install(monkeypatch)
    bad = make_arch(2, 96, 320, 4)
    build = machine.prepare_backends

    def failing(arch, names, protocol, **options):
        if arch_key(arch) == arch_key(bad):
            raise RuntimeError("can't allocate memory")
        return build(arch, names, protocol, **options)

    monkeypatch.setattr("latency.backends.prepare_backends", failing)
    capsys.readouterr()
    out = tmp_path / "lat"
    stage(["--save_dir", str(out), "--order", "grid"] + GRID + PAIRED, expect=2)
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "L2/H96/F320/Q96/A4 cannot be measured (RuntimeError: can't allocate memory)" in err
    assert str(out / "lat_torch_fp32.jsonl") in err
    kept = table.read_latency_table(str(out / "lat_torch_fp32.jsonl"))
    assert len(kept) == 18 and f"the {len(kept)} arch(s) measured before it in this run are kept" in err
    lines = [json.loads(line) for line in open(out / "lat_torch_fp32.jsonl")]
    assert all(line["record_type"] in ("reference", "arch") for line in lines)


def test_the_stage_runs_for_real_with_default_settings(tmp_path):
    """Real timing (tiny models): the default protocol end to end, in a subprocess."""
    out = tmp_path / "lat"
    subprocess.run([sys.executable, os.path.join(REPO, "inference_time_evaluation_quant.py"), "--save_dir", str(out),
                    "--backends", "fp32", "int8", "--infer_cnt", "3"] + GRID[:-4] + ["--intermediate_size_space",
                    "128", "192", "64", "--head_num_space", "4", "4", "--vocab_size", "128", "--max_seq_length", "16",
                    "--max_position_embeddings", "32", "--no_progress"], check=True, cwd=REPO,
                   env=dict(os.environ, BAF_TIMING_LOCK_DIR=str(tmp_path / "slot")), capture_output=True)
    for backend in ("torch_fp32", "torch_dynamic_int8"):
        records = table.read_latency_table(str(out / f"lat_{backend}.jsonl"))
        assert len(records) == 8 and records.references[0]["reference_base_ms"] > 0
        for record in records:
            assert record["median_ms"] == pytest.approx(record["ratio"] * record["reference_base_ms"], rel=1e-12)
            assert record["timer"] == "cpu" and record["warmup"] == 2 and record["runs"] == 3
            assert min(record["times_ms"]) > 0 and record["raw_median_ms"] > 0
