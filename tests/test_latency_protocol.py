"""Protocol baf-latency-2 on a synthetic machine (tests/latency_fixtures.py: a clock that advances by a
known latency law, with injected slow rounds, slow periods, slow first measurements and drift):
the robust headline, re-measurement, the re-measure cap, drift flag and correction, comparability of
two runs, resume, one process for several backends, off-grid arch files, and the demo spaces."""

import json
import logging
import os
import subprocess
import sys
import time

import numpy as np
import pytest

import inference_time_evaluation_quant as torch_stage
from latency import drift, measure, robust, table
from latency_fixtures import (GRID, PROTOCOL, FakeMachine, law_ms, private_timing_slot,  # noqa: F401
                              round_of_call, stage)
from utils import arch_key, get_space, make_arch, run_cli, write_arch_file

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REL = 1e-9  # synthetic timings go through float clock arithmetic only


pytestmark = pytest.mark.usefixtures("private_timing_slot")


def file_records(path):
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def by_key(records):
    return {record["arch_key"]: record for record in records}


# --------------------------------------------------------------------------------------
# The statistics
# --------------------------------------------------------------------------------------


def test_slow_round_does_not_move_the_headline(monkeypatch):
    machine = FakeMachine().install(monkeypatch)
    protocol = measure.Protocol(warmup=1, runs=8, rounds=4)
    arch, other, anchor = make_arch(1, 64, 256, 4), make_arch(1, 96, 256, 4), make_arch(2, 96, 256, 4)
    # arch's round 2 runs 60 % slow (another job on the core for a second), nothing else is slowed
    machine.per_call[arch_key(arch)] = lambda build, call: (
        1.6 if round_of_call(call, protocol.warmup, protocol.runs_per_round) == 2 else 1.0)
    prepared = [machine.prepare_backends(a, ["torch_fp32"], protocol)["torch_fp32"] for a in (arch, other, anchor)]
    timings = measure.measure([p.run for p in prepared], protocol)
    rounds = timings[0].round_medians("wall")
    assert rounds[2] == pytest.approx(1.6 * law_ms(arch), rel=REL)
    base = law_ms(anchor)
    head = robust.headline(rounds, timings[2].round_medians("wall"), base)
    assert head["value_ms"] == pytest.approx(law_ms(arch), rel=REL)  # the slow round did not move it
    assert head["round_spread_pct"] == pytest.approx(60.0, rel=1e-6)
    assert head["reference_ratio"] == pytest.approx(law_ms(arch) / base, rel=REL)
    assert robust.headline(timings[1].round_medians("wall"))["round_spread_pct"] == pytest.approx(0.0, abs=1e-6)
    reasons = robust.needs_remeasure([head["value_ms"]], head["round_spread_pct"], None, 5.0, 8.0, 2.0)
    assert reasons == ["round spread 60.0 % > 8 %"]


def test_slow_period_over_the_whole_chunk_cancels_against_the_anchor(monkeypatch):
    """A median over runs cannot help when a slow period covers all of an arch's runs; the anchor
    timed in the same chunk is slowed alike, and the ratio cancels it."""
    machine = FakeMachine().install(monkeypatch)
    protocol = measure.Protocol(warmup=1, runs=8, rounds=4)
    anchor_arch, archs = make_arch(2, 96, 256, 4), [make_arch(1, 64, f, 4) for f in (128, 256, 384)]
    anchor = machine.prepare_backends(anchor_arch, ["torch_fp32"], protocol)["torch_fp32"]
    start = measure.measure([anchor.run], protocol)[0]
    base = robust.headline(start.round_medians("wall"))["value_ms"]
    assert base == pytest.approx(law_ms(anchor_arch), rel=REL)
    machine.speed = lambda t: 1.25  # the whole chunk runs in a slow period
    prepared = [machine.prepare_backends(a, ["torch_fp32"], protocol)["torch_fp32"] for a in archs]
    timings = measure.measure([p.run for p in prepared] + [anchor.run], protocol, warm=[False] * 3 + [True])
    for arch, timing in zip(archs, timings):
        assert timing.statistics("wall")["raw_median_ms"] == pytest.approx(1.25 * law_ms(arch), rel=REL)
        head = robust.headline(timing.round_medians("wall"), timings[-1].round_medians("wall"), base)
        assert head["value_ms"] == pytest.approx(law_ms(arch), rel=REL)


def test_combine_stable_and_residuals():
    assert robust.combine([2.0]) == 2.0 and robust.combine([2.0, 2.2]) == pytest.approx(2.1)
    assert robust.combine([2.6, 2.0, 2.02]) == 2.02
    assert not robust.stable([2.0], 2.0) and robust.stable([2.6, 2.0, 2.02], 2.0) and not robust.stable([2.0, 2.2], 2.0)
    assert robust.needs_remeasure([2.6, 2.0], 0.0, 30.0, 5.0, 8.0, 2.0)[0].startswith("its 2 measurements disagree")
    assert robust.needs_remeasure([2.6, 2.0, 2.02], 50.0, 30.0, 5.0, 8.0, 2.0) == []  # settled: a real effect
    line = {arch_key(make_arch(1, 64, f, 4)): (make_arch(1, 64, f, 4), 1.0 + f / 100) for f in (128, 192, 256, 320)}
    outlier = make_arch(1, 64, 384, 4)
    line[arch_key(outlier)] = (outlier, 1.3 * (1.0 + 3.84))
    residuals = robust.line_residuals(line)
    assert residuals[arch_key(outlier)] == pytest.approx(30.0, rel=1e-6)
    assert max(abs(v) for k, v in residuals.items() if k != arch_key(outlier)) < 1e-9
    assert robust.line_residuals({k: v for k, v in list(line.items())[:2]}) == {}  # 2 points: no line


# --------------------------------------------------------------------------------------
# The stage on the synthetic machine
# --------------------------------------------------------------------------------------


def test_stage_remeasures_suspects_and_records_it(tmp_path, monkeypatch):
    machine = FakeMachine().install(monkeypatch)
    slowed, blipped = make_arch(1, 64, 256, 4), make_arch(2, 64, 192, 4)
    machine.per_build[arch_key(slowed)] = [1.3]  # its whole first measurement 30 % slow, not the anchor
    machine.per_call[arch_key(blipped)] = lambda build, call: (
        1.5 if build == 0 and round_of_call(call, 1, [2, 2, 2, 2]) == 1 else 1.0)  # one slow round
    out = str(tmp_path / "lat")
    stage(["--save_dir", out, "--legacy_format"] + GRID + PROTOCOL)
    path = os.path.join(out, "lat_torch_fp32.jsonl")
    records = table.read_latency_table(path)
    assert len(records) == 20 and len(records.references) == 2 * 3  # start and end checkpoints, 3 references
    latest = by_key(records)
    for key, record in latest.items():
        assert record["median_ms"] == pytest.approx(law_ms(record["arch"]), rel=REL), record["arch_summary"]
    # the slowed arch: 1.3x, then 1.0x (they disagree), then 1.0x again (settled); the median
    first = latest[arch_key(slowed)]
    assert first["measurement"] == 3 and first["remeasured"] and first["stable"] is True
    assert first["measurements_ms"] == pytest.approx([1.3 * law_ms(slowed), law_ms(slowed), law_ms(slowed)], rel=REL)
    assert not first["remeasure_cap_reached"] and "disagree" in first["remeasure_reasons"][0]
    every = [r for r in file_records(path) if r.get("record_type") == "arch" and r["arch_key"] == arch_key(slowed)]
    assert [r["measurement"] for r in every] == [1, 2, 3]  # nothing measured is rewritten
    assert every[1]["remeasure_reasons"][0].startswith("residual +30.0 % against its FFN line")
    # the blipped arch: its headline was already right; the spread sent it back once, and the two agree
    blip = latest[arch_key(blipped)]
    assert blip["measurement"] == 2 and blip["stable"] is True
    assert blip["remeasure_reasons"] == ["round spread 50.0 % > 8 %"]
    assert blip["measurements_ms"] == pytest.approx([law_ms(blipped)] * 2, rel=REL)
    others = [r for k, r in latest.items() if k not in (arch_key(slowed), arch_key(blipped))]
    assert all(r["measurement"] == 1 and not r["remeasured"] for r in others)
    run_end = records.runs[-1]
    assert (run_end["archs_measured"], run_end["remeasurements"], run_end["remeasure_cap_reached"]) == (20, 3, 0)
    # the original's lines carry the combined figure
    legacy = table.read_latency_table(os.path.join(out, "lat_.tmp"))
    assert [r["median_ms"] for r in legacy] == [r["median_ms"] for r in records]
    assert stage(["--save_dir", out] + GRID + PROTOCOL) == 0  # complete and settled: nothing appended
    assert len(file_records(path)) == len(records) + 3 + len(records.references) + len(records.runs)


def test_remeasure_cap_is_one_line_and_keeps_every_measurement(tmp_path, monkeypatch, caplog):
    machine = FakeMachine().install(monkeypatch)
    noisy = make_arch(1, 96, 256, 4)
    machine.per_build[arch_key(noisy)] = [1.3, 1.0, 1.15]  # never two within 2 %
    out = str(tmp_path / "lat")
    with caplog.at_level(logging.WARNING, logger="latency"):
        stage(["--save_dir", out] + GRID + PROTOCOL)
    lines = [r.getMessage() for r in caplog.records if "still unstable" in r.getMessage()]
    assert len(lines) == 1 and "\n" not in lines[0]
    assert lines[0].startswith("lat_torch_fp32.jsonl: 1 arch(s) still unstable after 2 re-measurement(s)")
    assert "L1/H96/F256/Q96/A4" in lines[0] and "spread 30.0 %" in lines[0]
    path = os.path.join(out, "lat_torch_fp32.jsonl")
    record = by_key(table.read_latency_table(path))[arch_key(noisy)]
    assert record["remeasure_cap_reached"] is True and record["stable"] is False
    assert record["median_ms"] == pytest.approx(1.15 * law_ms(noisy), rel=REL)  # the median of 3
    assert len([r for r in file_records(path) if r.get("arch_key") == arch_key(noisy)
                and r.get("record_type") == "arch"]) == 3
    assert table.read_latency_table(path).runs[-1]["remeasure_cap_reached"] == 1


def test_resumed_table_equals_an_uninterrupted_one(tmp_path, monkeypatch):
    slowed = make_arch(2, 96, 192, 4)
    results = {}
    for name, limits in (("whole", [None]), ("parts", [7, 5, None])):
        machine = FakeMachine().install(monkeypatch)
        machine.per_build[arch_key(slowed)] = [1.3]
        out = str(tmp_path / name)
        for limit in limits:
            stage(["--save_dir", out] + GRID + PROTOCOL + (["--limit", str(limit)] if limit else []))
        results[name] = by_key(table.read_latency_table(os.path.join(out, "lat_torch_fp32.jsonl")))
    whole, parts = results["whole"], results["parts"]
    assert set(whole) == set(parts) and len(whole) == 20
    for key in whole:
        assert parts[key]["median_ms"] == pytest.approx(whole[key]["median_ms"], rel=REL)
        assert parts[key]["measurements_ms"] == pytest.approx(whole[key]["measurements_ms"], rel=REL)
        assert parts[key]["reference_base_ms"] == pytest.approx(whole[key]["reference_base_ms"], rel=REL)
    assert whole[arch_key(slowed)]["measurement"] == parts[arch_key(slowed)]["measurement"] == 3


def test_drift_is_corrected_recorded_and_flagged(tmp_path, monkeypatch, caplog):
    """The machine slows by 0.5 % at every model build (about 10 % over the run)."""
    tables = {}
    for correction in ("anchor", "none"):
        FakeMachine(build_step=0.005).install(monkeypatch)
        out = str(tmp_path / correction)
        with caplog.at_level(logging.WARNING, logger="latency"):
            stage(["--save_dir", out, "--drift_correction", correction, "--remeasure_cap", "0"] + GRID + PROTOCOL)
        tables[correction] = table.read_latency_table(os.path.join(out, "lat_torch_fp32.jsonl"))
    corrected, raw = tables["anchor"], tables["none"]
    # 3 reference builds before the start checkpoint, 20 arch builds before the end checkpoint
    expected = 100 * ((1 + 0.005 * 23) / (1 + 0.005 * 3) - 1)
    summary = drift.drift_summary(corrected)
    assert summary["drift_pct"] == pytest.approx(expected, rel=1e-6) and summary["flagged"]
    assert summary["corrected_drift_pct"] == pytest.approx(0.0, abs=1e-6)  # a uniform drift cancels
    assert summary["message"].startswith(f"lat_torch_fp32.jsonl: its reference archs drifted {expected:.1f} %")
    assert sum(1 for r in caplog.records if r.getMessage() == summary["message"]) == 1
    assert drift.drift_summary(raw)["drift_pct"] == pytest.approx(expected, rel=1e-6)
    # with the anchor every figure is in the table's unit (the speed at its start); without, it drifts
    unit = 1 + 0.005 * 3
    assert max(abs(r["median_ms"] / (unit * law_ms(r["arch"])) - 1) for r in corrected) < 1e-9
    assert max(r["median_ms"] / (unit * law_ms(r["arch"])) - 1 for r in raw) > 0.05
    # the predictor stage says so in one line too
    import latency_predictor

    caplog.clear()
    with caplog.at_level(logging.WARNING):
        with pytest.raises(SystemExit) as info:
            run_cli(latency_predictor.main, ["--lat_dataset_path", corrected.path, "--ckpt_path",
                                             str(tmp_path / "p.pt"), "--max_steps", "20", "--no_plot", "--quiet"])
    assert info.value.code == 0
    assert any(f"drifted {expected:.1f} %" in r.getMessage() for r in caplog.records)
    metrics = json.load(open(tmp_path / "p.pt.metrics.json"))
    assert metrics["table_drift"][os.path.abspath(corrected.path)]["flagged"] is True


def test_drift_summary_of_shifted_references():
    ref_a, ref_b = make_arch(1, 64, 128, 4), make_arch(2, 96, 256, 4)

    def ref(arch, ms, checkpoint, run="r1"):
        return {"record_type": "reference", "arch": arch, "arch_key": arch_key(arch), "median_ms": ms,
                "checkpoint": checkpoint, "run_id": run, "anchor": arch is ref_b, "backend": "torch_fp32"}

    steady = [ref(ref_b, 4.0, c) for c in range(3)] + [ref(ref_a, 1.0, c) for c in range(3)]
    assert drift.drift_summary(steady)["drift_pct"] == 0.0 and not drift.drift_summary(steady)["flagged"]
    shifted = steady + [ref(ref_b, 4.4, 3), ref(ref_a, 1.1, 3)]  # both 10 % slower at the last checkpoint
    summary = drift.drift_summary(shifted)
    assert summary["drift_pct"] == pytest.approx(10.0) and summary["flagged"] and summary["checkpoints"] == 4
    assert "drifted 10.0 % while it was measured (threshold 5 %" in summary["message"]
    assert not drift.drift_summary(shifted, threshold_pct=12)["flagged"]
    assert drift.drift_summary([{"arch": ref_a, "median_ms": 1.0}])["drift_pct"] is None  # no references


def test_uniform_slowdown_of_a_remeasurement_run_cancels(tmp_path, monkeypatch):
    """The report's case: the table behind the predictor, and a later re-measurement of chosen
    (off-grid) archs on a machine 20 % slower; --references <table> + make_comparable puts the
    re-measurement in the table's unit."""
    FakeMachine().install(monkeypatch)
    grid_dir, again_dir = str(tmp_path / "grid"), str(tmp_path / "again")
    stage(["--save_dir", grid_dir] + GRID + PROTOCOL)
    grid_path = os.path.join(grid_dir, "lat_torch_fp32.jsonl")
    chosen = [make_arch(1, 64, 160, 4), make_arch(2, 96, 352, 4), make_arch(1, 80, 224, 4)]  # none on the grid
    arch_file = tmp_path / "chosen.cands"
    write_arch_file(str(arch_file), chosen)
    FakeMachine(speed=lambda t: 1.2).install(monkeypatch)
    stage(["--save_dir", again_dir, "--arch_file", str(arch_file), "--references", grid_path] + PROTOCOL)
    again = table.read_latency_table(os.path.join(again_dir, "lat_torch_fp32.jsonl"))
    grid = table.read_latency_table(grid_path)
    assert drift.reference_keys(again) == drift.reference_keys(grid)
    assert all(r["median_ms"] == pytest.approx(1.2 * law_ms(r["arch"]), rel=REL) for r in again)
    comparable, info = drift.make_comparable(again, grid)
    assert info["factor"] == pytest.approx(1 / 1.2, rel=REL) and info["references"] == 3
    assert info["spread_pct"] == pytest.approx(0.0, abs=1e-7)
    for record in comparable:
        assert record["median_ms"] == pytest.approx(law_ms(record["arch"]), rel=REL)
        assert record["uncorrected_median_ms"] == pytest.approx(1.2 * law_ms(record["arch"]), rel=REL)
    # the table's own references, e.g. from a predictor's metadata, work as the target too
    assert drift.comparability_factor(again, drift.reference_values(grid))["factor"] == pytest.approx(1 / 1.2, rel=REL)
    with pytest.raises(drift.UserError, match="shares no reference arch"):
        drift.comparability_factor(again, {"other": 1.0})


def test_two_backends_in_one_process_arch_by_arch(tmp_path, monkeypatch):
    FakeMachine().install(monkeypatch)
    out = str(tmp_path / "lat")
    stage(["--save_dir", out, "--backends", "fp32", "int8", "--remeasure_cap", "0"] + GRID + PROTOCOL)
    fp32 = by_key(table.read_latency_table(os.path.join(out, "lat_torch_fp32.jsonl")))
    int8 = by_key(table.read_latency_table(os.path.join(out, "lat_torch_dynamic_int8.jsonl")))
    assert set(fp32) == set(int8) and len(fp32) == 20
    for key in fp32:
        assert (fp32[key]["chunk"], fp32[key]["run_id"]) == (int8[key]["chunk"], int8[key]["run_id"])
        assert int8[key]["median_ms"] == pytest.approx(law_ms(int8[key]["arch"], "torch_dynamic_int8"), rel=REL)
        assert fp32[key]["backend"] == "torch_fp32" and int8[key]["backend"] == "torch_dynamic_int8"
    with pytest.raises(SystemExit):
        run_cli(torch_stage.main, ["--save_dir", out, "--backends", "fp32", "--quant"] + GRID + PROTOCOL)


def test_arch_file_accepts_off_grid_archs_and_checks_an_explicit_space(tmp_path, monkeypatch, capsys):
    FakeMachine().install(monkeypatch)
    arch_file = tmp_path / "archs.cands"
    write_arch_file(str(arch_file), [make_arch(1, 128, 640, 4), make_arch(2, 224, 384, 4)])  # off every grid
    stage(["--save_dir", str(tmp_path / "a"), "--arch_file", str(arch_file)] + PROTOCOL)
    records = table.read_latency_table(str(tmp_path / "a" / "lat_torch_fp32.jsonl"))
    assert len(records) == 2 and records[0]["space"] is None
    capsys.readouterr()
    stage(["--save_dir", str(tmp_path / "b"), "--arch_file", str(arch_file), "--space", "demo_latency"] + PROTOCOL,
          expect=2)
    err = capsys.readouterr().err.strip()
    assert err.endswith("archs.cands:1: sample_hidden_size=128 is outside the demo_latency space's range 192..448")
    assert len(err.splitlines()) == 1 and not os.path.exists(tmp_path / "b" / "lat_torch_fp32.jsonl")
    write_arch_file(str(arch_file), [make_arch(2, 224, 384, 4)])  # inside the ranges, off the grid
    stage(["--save_dir", str(tmp_path / "c"), "--arch_file", str(arch_file), "--space", "demo_latency"] + PROTOCOL)


def test_a_table_of_another_protocol_is_refused(tmp_path, monkeypatch, capsys):
    FakeMachine().install(monkeypatch)
    out = tmp_path / "lat"
    out.mkdir()
    old = {"arch": make_arch(1, 64, 128, 4), "median_ms": 1.0, "backend": "torch_fp32", "protocol": "baf-latency-1"}
    (out / "lat_torch_fp32.jsonl").write_text(json.dumps(old) + "\n")
    before = (out / "lat_torch_fp32.jsonl").read_bytes()
    capsys.readouterr()
    stage(["--save_dir", str(out)] + GRID + PROTOCOL, expect=2)
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "lat_torch_fp32.jsonl:1" in err and "protocol='baf-latency-1'" in err
    assert (out / "lat_torch_fp32.jsonl").read_bytes() == before


# --------------------------------------------------------------------------------------
# One writer per directory, one latency job per machine, unwritable outputs
# --------------------------------------------------------------------------------------


HOLD_LOCK = ("import sys, time\nfrom utils import output_lock\nwith output_lock(sys.argv[1]):\n"
             "    print('held', flush=True)\n    time.sleep(float(sys.argv[2]))\n")


def start_holder(directory, seconds):
    """Another process holding ``utils.output_lock(directory)`` for ``seconds``."""
    process = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(directory), str(seconds)], cwd=REPO,
                               stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "held"
    return process


def test_second_writer_on_a_directory_gets_one_line(tmp_path, monkeypatch, capsys):
    FakeMachine().install(monkeypatch)
    out = tmp_path / "lat"
    holder = start_holder(out, 30)
    try:
        capsys.readouterr()
        stage(["--save_dir", str(out)] + GRID + PROTOCOL, expect=2)
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and f"pid {holder.pid}" in err and "latency table directory" in err
        assert not (out / "lat_torch_fp32.jsonl").exists()
    finally:
        holder.kill()
        holder.wait()


def test_no_two_latency_jobs_time_at_once(tmp_path, monkeypatch, capsys, caplog):
    FakeMachine().install(monkeypatch)
    slot = os.environ["BAF_TIMING_LOCK_DIR"]
    holder = start_holder(slot, 30)
    try:
        capsys.readouterr()
        stage(["--save_dir", str(tmp_path / "a"), "--timing_lock", "fail"] + GRID + PROTOCOL, expect=2)
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and f"another latency job is timing on this machine (pid {holder.pid}" in err
        assert not (tmp_path / "a" / "lat_torch_fp32.jsonl").exists()
    finally:
        holder.kill()
        holder.wait()
    holder = start_holder(slot, 1.0)  # by default the second job waits for the first
    started = time.perf_counter()
    with caplog.at_level(logging.WARNING, logger="latency"):
        stage(["--save_dir", str(tmp_path / "b")] + GRID + PROTOCOL)
    holder.wait()
    assert time.perf_counter() - started >= 0.5
    assert any("waiting for the machine's latency timing slot, held by pid" in r.getMessage() for r in caplog.records)
    assert len(table.read_latency_table(str(tmp_path / "b" / "lat_torch_fp32.jsonl"))) == 20


def read_only_directory(tmp_path):
    """A directory this process cannot write to (chmod for a normal user; /sys/kernel for root)."""
    if os.geteuid() != 0:
        path = tmp_path / "ro"
        path.mkdir()
        path.chmod(0o555)
        return str(path)
    if os.path.isdir("/sys/kernel"):
        try:
            open("/sys/kernel/.probe", "w").close()
        except OSError:
            return "/sys/kernel"
    pytest.skip("no read-only directory available")


def test_read_only_outputs_fail_before_any_work(tmp_path, monkeypatch, capsys):
    machine = FakeMachine().install(monkeypatch)
    directory = read_only_directory(tmp_path)
    capsys.readouterr()
    stage(["--save_dir", directory] + GRID + PROTOCOL, expect=2)
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and directory in err and ("cannot write" in err or "permission" in err)
    assert machine.total_builds == 0  # nothing was measured
    import latency_predictor

    source = str(tmp_path / "lat")
    stage(["--save_dir", source, "--remeasure_cap", "0"] + GRID + PROTOCOL)
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        run_cli(latency_predictor.main, ["--lat_dataset_path", os.path.join(source, "lat_torch_fp32.jsonl"),
                                         "--ckpt_path", os.path.join(directory, "p.pt"), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert info.value.code == 2 and len(err.splitlines()) == 1
    assert "--ckpt_path: cannot write to" in err and "nothing was trained" in err


# --------------------------------------------------------------------------------------
# The demo spaces
# --------------------------------------------------------------------------------------


def test_the_demo_search_space_is_held_out_from_its_latency_grid():
    search, grid, supernet = get_space("demo_search"), get_space("demo_latency"), get_space("demo_supernet")
    candidates = list(search.grid())
    on_grid = [a for a in candidates if grid.contains(a)]
    assert len(list(grid.grid())) == 120 and len(on_grid) == 120  # the table stays the demo's size
    assert len(candidates) == 756 and len(candidates) - len(on_grid) == 636  # 84 % of candidates off the table
    assert all(search.contains(a) for a in grid.grid())
    assert all(supernet.contains(dict(a)) for a in candidates)  # every candidate is a slice of the demo supernet
    for field in ("layer_num", "hidden_size", "intermediate_size", "num_attention_heads"):
        assert (getattr(search, field).start, getattr(search, field).stop) == \
               (getattr(grid, field).start, getattr(grid, field).stop)


def test_default_references_are_plain_archs_of_the_space():
    for name in ("paper_latency", "demo_latency", "demo_search"):
        space = get_space(name)
        refs = drift.check_reference_archs(drift.default_references(space))
        assert len(refs) == 3 and all(space.contains(a) for a in refs)
        sizes = [a["sample_layer_num"] * a["sample_hidden_size"] * a["sample_intermediate_sizes"][0] for a in refs]
        assert sizes[1] < sizes[0] < sizes[2]  # the anchor is the middle one
    assert [arch_key(a) for a in drift.default_references(get_space("paper_latency"))][0] == \
        arch_key(make_arch(3, 348, 572, 12))
    assert np.isfinite(law_ms(drift.default_references(get_space("demo_latency"))[0]))
