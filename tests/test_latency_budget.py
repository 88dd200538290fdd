"""Budgets kept by measurement, in one unit: a table's unit (latency.units), archs measured in it
with its protocol, a search's finalists measured before they are named (latency.finalists: one
measured over the budget is not chosen; when none fits the search says so and by how much the
predictor was off), the report choosing and printing with that same measurement, and one writer per
predictor directory while searches read it. Synthetic machine: tests/latency_fixtures.py."""

import json
import logging
import os
import subprocess
import sys

import numpy as np
import pytest

from latency import table, units
from latency.finalists import keep_within_budget, read_summary, summary_path, table_dir
from latency_fixtures import GRID, PAIRED, PROTOCOL, FakeMachine, law_ms, private_timing_slot, stage  # noqa: F401
from tests.test_report import BIG, MID, main as report_main, run  # noqa: F401 (run: the report's fixture)
from utils import UserError, arch_key, make_arch, run_cli

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytestmark = pytest.mark.usefixtures("private_timing_slot")  # a timing slot of its own per test
REL = 1e-9
# off the grid, the slowest first
OFF_GRID = [make_arch(2, 96, 352, 4), make_arch(1, 64, 160, 4), make_arch(1, 80, 224, 4), make_arch(2, 80, 288, 4)]


@pytest.fixture
def grid_table(tmp_path, monkeypatch):
    """A baf-latency-3 table of the 20-arch grid, measured on a steady machine."""
    FakeMachine().install(monkeypatch)
    stage(["--save_dir", str(tmp_path / "grid")] + GRID + PAIRED)
    return str(tmp_path / "grid" / "lat_torch_fp32.jsonl")


# --------------------------------------------------------------------------------------
# A table's unit, and archs measured in it
# --------------------------------------------------------------------------------------


def test_archs_measured_later_on_a_slower_machine_land_in_the_tables_unit(tmp_path, monkeypatch, grid_table):
    unit = units.unit_of_table(grid_table)
    reference = make_arch(2, 96, 256, 4)
    assert unit.reference == reference and unit.base_ms == pytest.approx(law_ms(reference), rel=REL)
    assert unit.protocol.runs == 6 and unit.protocol.warmup == 1 and unit.backend == "torch_fp32"
    assert unit.describe().startswith("ms at the table's start: torch_fp32 reference L2/H96/F256/Q96/A4 = ")
    assert units.TableUnit.from_dict(json.loads(json.dumps(unit.to_dict()))) == unit  # what predictors store
    machine = FakeMachine(speed=lambda t: 1.25).install(monkeypatch)  # a later day: the machine 25 % slower
    save = str(tmp_path / "later")
    measured = units.measure_in_unit(OFF_GRID, unit, save)
    for arch, one in zip(OFF_GRID, measured):
        assert one.arch_key == arch_key(arch)
        assert one.median_ms == pytest.approx(law_ms(arch), rel=REL)  # in the table's unit
        assert one.raw_median_ms == pytest.approx(1.25 * law_ms(arch), rel=REL)  # as timed now
        assert one.record["unit_source"] == unit.source and one.record["reference_base_ms"] == unit.base_ms
    later = table.read_latency_table(os.path.join(save, "lat_torch_fp32.jsonl"))
    assert later.references[0]["reference_slowdown_pct"] == pytest.approx(25.0, rel=1e-6)
    builds = machine.total_builds
    again = units.measure_in_unit(OFF_GRID[:2], unit, save)  # resumed: nothing measured is redone
    assert machine.total_builds == builds and [a.median_ms for a in again] == [m.median_ms for m in measured[:2]]


def test_a_table_without_a_unit_is_one_line(tmp_path, monkeypatch, grid_table):
    FakeMachine().install(monkeypatch)
    stage(["--save_dir", str(tmp_path / "old"), "--remeasure_cap", "0"] + GRID + PROTOCOL)
    old = str(tmp_path / "old" / "lat_torch_fp32.jsonl")
    with pytest.raises(UserError, match=r"lat_torch_fp32.jsonl: measured with protocol baf-latency-2, which has no "
                                        "reference unit"):
        units.unit_of_table(old)
    legacy = tmp_path / "lat_quant_.tmp"
    legacy.write_text("".join(f"{json.dumps(a)}\t1.5\n" for a in OFF_GRID))
    with pytest.raises(UserError, match=r"an original .tmp table"):
        units.unit_of_table(str(legacy))
    # the reference record of a table's start lost (a hand-edited file): the unit is unknown
    cut = tmp_path / "cut.jsonl"
    cut.write_text("".join(line for line in open(grid_table) if '"record_type": "reference"' not in line))
    with pytest.raises(UserError) as info:
        units.unit_of_table(str(cut))
    assert str(info.value).startswith(f"{cut}: names the reference ") and "holds no measurement of it" in str(info.value)


def test_a_unit_from_another_machine_or_a_directory_in_another_unit_is_refused(tmp_path, monkeypatch, grid_table):
    machine = FakeMachine().install(monkeypatch)
    unit = units.unit_of_table(grid_table)
    monkeypatch.setattr("latency.environment.cpu_model", lambda: "Another CPU")
    with pytest.raises(UserError, match="was measured on .*; this machine is 'Another CPU'"):
        units.measure_in_unit(OFF_GRID, unit, str(tmp_path / "x"))
    monkeypatch.undo()
    FakeMachine().install(monkeypatch)
    monkeypatch.setenv("BAF_TIMING_LOCK_DIR", str(tmp_path / "timing_slot"))
    save = str(tmp_path / "later")
    units.measure_in_unit(OFF_GRID[:1], unit, save)
    before = open(os.path.join(save, "lat_torch_fp32.jsonl"), "rb").read()
    other = units.TableUnit(**dict(vars(unit), base_ms=2 * unit.base_ms))
    builds = machine.total_builds
    with pytest.raises(UserError, match="holds archs in another unit"):
        units.measure_in_unit(OFF_GRID[1:], other, save)
    assert open(os.path.join(save, "lat_torch_fp32.jsonl"), "rb").read() == before and machine.total_builds == builds


# --------------------------------------------------------------------------------------
# A search's finalists
# --------------------------------------------------------------------------------------


def _finalists(tmp_path, grid_table, budget, predicted_fraction=0.9, top_k=2, monkeypatch=None):
    unit = units.unit_of_table(grid_table)
    ranked = [(arch, 0.9 - 0.1 * index) for index, arch in enumerate(OFF_GRID)]  # fittest first
    final = str(tmp_path / "cands" / "kd_ptq_x.final.cands")
    os.makedirs(os.path.dirname(final), exist_ok=True)
    chosen = keep_within_budget(ranked, lambda archs: np.full(len(archs), predicted_fraction * budget),
                                {"table_unit": unit.to_dict()}, budget, top_k, final)
    return chosen, read_summary(final), final


def test_a_finalist_measured_over_the_budget_is_not_chosen(tmp_path, grid_table):
    latencies = [law_ms(arch) for arch in OFF_GRID]
    budget = (latencies[0] + max(latencies[1], latencies[2])) / 2  # the fittest arch measures over it
    assert latencies[0] > budget > max(latencies[1:3])
    chosen, summary, final = _finalists(tmp_path, grid_table, budget)
    assert chosen == OFF_GRID[1:3]  # the predictor said all four fit; the measurement kept the fittest two that do
    measured = summary["measured"]
    assert [e["arch_key"] for e in measured] == [arch_key(a) for a in OFF_GRID[:3]]  # fitness order, no more
    assert [e["within_budget"] for e in measured] == [False, True, True]
    assert measured[0]["measured_ms"] == pytest.approx(latencies[0], rel=REL)
    assert measured[0]["budget_fraction"] == pytest.approx(latencies[0] / budget, rel=REL)
    assert measured[0]["predictor_error_pct"] == pytest.approx(100 * (0.9 * budget / latencies[0] - 1), rel=1e-9)
    assert summary["finalists"] == [arch_key(a) for a in OFF_GRID[1:3]] and summary["none_fit"] is False
    assert summary["unit"]["base_ms"] == units.unit_of_table(grid_table).base_ms
    assert summary_path(final).endswith("kd_ptq_x.final.latency.json")
    assert len(table.read_latency_table(os.path.join(table_dir(final), "lat_torch_fp32.jsonl"))) == 3


def test_when_no_finalist_fits_the_search_says_so_and_by_how_much(tmp_path, grid_table, caplog):
    budget = 0.5 * min(law_ms(arch) for arch in OFF_GRID)
    with caplog.at_level(logging.WARNING, logger="latency.finalists"):
        chosen, summary, _ = _finalists(tmp_path, grid_table, budget)
    assert chosen == OFF_GRID[:2]  # the final step still re-evaluates the fittest; the report names no winner
    assert summary["none_fit"] is True and summary["finalists"] == [] and len(summary["measured"]) == 4
    closest = min(OFF_GRID, key=law_ms)
    message = summary["message"]
    assert message.startswith(f"none of the 4 measured finalists fits the {budget:g} ms budget (ms at the table's start")
    assert f"the closest, L1/H64/F160/Q64/A4, measures {law_ms(closest):.3f} ms = 200 % of it" in message
    errors = sorted(100 * (0.9 * budget / law_ms(a) - 1) for a in OFF_GRID)
    assert f"the predictor was off by {errors[2]:+.1f} % (median over them); no winner can be named" in message
    assert [r.getMessage() for r in caplog.records if r.name == "latency.finalists"] == [message]


def test_a_predictor_without_a_unit_keeps_the_budget_by_prediction_in_one_line(tmp_path, caplog):
    ranked = [(arch, 0.9 - 0.1 * index) for index, arch in enumerate(OFF_GRID)]
    final = str(tmp_path / "kd.final.cands")
    with caplog.at_level(logging.WARNING, logger="latency.finalists"):
        chosen = keep_within_budget(ranked, lambda archs: np.ones(len(archs)), {"source_table": "/x/lat_quant_.tmp"},
                                    7.5, 3, final, "conf_datasets/lat_predictor_quant.pt")
    assert chosen == OFF_GRID[:3] and not os.path.exists(summary_path(final))
    (line,) = [r.getMessage() for r in caplog.records if r.name == "latency.finalists"]
    assert line == ("the 7.5 ms budget is kept by predicted latency only: conf_datasets/lat_predictor_quant.pt was "
                    "trained on /x/lat_quant_.tmp, which has no reference unit to measure the finalists in (protocol "
                    "of an original .tmp table)")


def test_the_predictor_records_its_tables_unit(tmp_path, monkeypatch):
    import latency_predictor
    from latency.predictor import load_predictor

    FakeMachine().install(monkeypatch)
    grid = ["--space", "demo_latency", "--layer_num_space", "1", "3", "--hidden_size_space", "64", "128", "32",
            "--intermediate_size_space", "128", "512", "64", "--head_num_space", "4", "4"]
    stage(["--save_dir", str(tmp_path / "grid")] + grid + PAIRED)  # 3 x 3 x 7 = 63 archs
    path = str(tmp_path / "grid" / "lat_torch_fp32.jsonl")
    with pytest.raises(SystemExit):
        run_cli(latency_predictor.main, ["--lat_dataset_path", path, "--ckpt_path", str(tmp_path / "p" / "p.pt"),
                                         "--max_steps", "30", "--quiet"])
    predictor = load_predictor(str(tmp_path / "p" / "p.pt"))
    unit = units.unit_of_predictor(predictor)
    assert unit == units.unit_of_table(path) and predictor.metadata["unit"] == unit.describe()
    metrics = json.load(open(tmp_path / "p" / "p.pt.metrics.json"))
    assert metrics["unit"] == unit.describe() and os.path.getsize(tmp_path / "p" / "p.pt.png") > 10_000


# --------------------------------------------------------------------------------------
# The report: the same measurement chooses and says "of budget"
# --------------------------------------------------------------------------------------


def _finalist_measurement(root, name, entries, message=None):
    unit = {"backend": "torch_dynamic_int8", "text": "ms at the table's start: torch_dynamic_int8 reference "
                                                     "L2/H256/F768/Q256/A4 = 3.5 ms (lat_torch_dynamic_int8.jsonl)"}
    measured = [{"arch": arch, "arch_key": arch_key(arch), "arch_summary": "", "fitness": 0.6, "predicted_ms": 4.5,
                 "measured_ms": ms, "raw_ms": ms * 1.1, "budget_fraction": ms / 5.0, "within_budget": ms <= 5.0,
                 "predictor_error_pct": 100 * (4.5 / ms - 1), "ratio_se_pct": 0.4} for arch, ms in entries]
    data = {"budget_ms": 5.0, "unit": unit, "measured": measured, "none_fit": all(ms > 5.0 for _, ms in entries),
            "message": message, "finalists": [e["arch_key"] for e in measured if e["within_budget"]]}
    (root / "cands" / f"{name}.final.latency.json").write_text(json.dumps(data))


def test_the_report_chooses_within_budget_by_the_searchs_own_measurement(run):  # noqa: F811
    _finalist_measurement(run, "kd_ptq_5", [(BIG, 5.3), (MID, 4.6)])  # BIG, the fittest, measured over
    assert report_main(run) == 0
    summary = json.load(open(run / "report" / "summary.json"))
    row = summary["budgets"][0]["methods"]["bigger_and_faster_int8"]
    assert row["arch"] == MID and row["excluded_over_budget"] == ["L3/H320/F1024/Q320/A4"]
    # "of budget" is the search's measurement (4.6 in the table's unit), not the re-measurement (3.9 raw)
    assert row["measured_latency_ms_deployed"] == 4.6 and row["budget_fraction"] == pytest.approx(0.92)
    assert row["latency_unit"] == "table" and row["measured_latency_raw_ms_deployed"] == pytest.approx(5.06)
    assert row["measured_latency_deployed"]["source"] == "the search's finalist measurement"
    other = summary["budgets"][0]["methods"]["autotinybert_fp32"]
    assert other["latency_unit"] == "raw" and other["measured_latency_deployed"]["source"] == "the report's re-measurement"
    text = (run / "report" / "report.md").read_text()
    assert "/ 4.60 table unit (raw 5.06) | 92 % |" in text and "/ 4.80 raw | 96 % |" in text
    assert "- torch_dynamic_int8: ms at the table's start: torch_dynamic_int8 reference L2/H256/F768/Q256/A4" in text
    assert ("finalists measured over the budget, so they could not win: L3/H320/F1024/Q320/A4." in text)
    assert "measures 4.60 ms in torch dynamic int8 in the table's unit (raw 5.06 ms), the search's finalist" in text


def test_the_report_names_no_winner_when_none_fits(run):  # noqa: F811
    message = "none of the 2 measured finalists fits the 5 ms budget (...): the closest ... no winner can be named"
    _finalist_measurement(run, "kd_ptq_5", [(BIG, 5.3), (MID, 5.2)], message)
    assert report_main(run) == 0
    row = json.load(open(run / "report" / "summary.json"))["budgets"][0]["methods"]["bigger_and_faster_int8"]
    assert row["none_fit"] is True and row["within_budget"] is False and row["none_fit_message"] == message
    text = (run / "report" / "report.md").read_text()
    assert "(no finalist fits: no winner)" in text and f"Bigger&Faster (int8): **no winner**: {message}" in text
    # the report's first lines say it, and no comparison with that side is a claim
    first = text.split("\n\n")[1]
    assert "- 5 ms, Bigger&Faster (int8 search, deployed int8): no winner, none of its measured finalists fits" in first
    compared = [line for line in text.splitlines() if line.startswith("- 5 ms, Bigger&Faster (int8) vs ")]
    assert compared and all("**not a claim: Bigger&Faster (int8) has no winner within the budget**" in line
                            for line in compared)
    summary = json.load(open(run / "report" / "summary.json"))
    verdicts = {(c["a"], c["b"]): c["verdict"] for c in summary["budgets"][0]["comparisons"]}
    assert verdicts and all(v == "no winner" for (a, b), v in verdicts.items() if "bigger_and_faster_int8" in (a, b))


# --------------------------------------------------------------------------------------
# One writer per predictor directory, never while a search reads it
# --------------------------------------------------------------------------------------


READER = ("import sys, time\nfrom latency.predictor.lock import reading\nwith reading([sys.argv[1]]):\n"
          "    print('held', flush=True)\n    time.sleep(30)\n")
WRITER = ("import sys, time\nfrom utils import output_lock\nwith output_lock(sys.argv[1]):\n"
          "    print('held', flush=True)\n    time.sleep(30)\n")


def _hold(code, path):
    process = subprocess.Popen([sys.executable, "-c", code, str(path)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "held"
    return process


def test_predictors_are_not_rewritten_while_a_search_reads_them(tmp_path, monkeypatch, capsys):
    import latency_predictor
    from latency.predictor.lock import reading, writing

    FakeMachine().install(monkeypatch)
    stage(["--save_dir", str(tmp_path / "lat")] + GRID + PAIRED)
    out = tmp_path / "conf"
    out.mkdir()
    ckpt = out / "lat_predictor.pt"
    reader = _hold(READER, ckpt)
    try:
        with reading([ckpt]):  # another search reads them too: fine
            pass
        capsys.readouterr()
        with pytest.raises(SystemExit) as info:
            run_cli(latency_predictor.main, ["--lat_dataset_path", str(tmp_path / "lat" / "lat_torch_fp32.jsonl"),
                                             "--ckpt_path", str(ckpt), "--max_steps", "5", "--quiet"])
        err = capsys.readouterr().err.strip()
        assert info.value.code == 2 and len(err.splitlines()) == 1 and not ckpt.exists()
        assert f"{out}: the latency predictor directory is in use (searches are reading its predictors)" in err
    finally:
        reader.kill()
        reader.wait()
    writer = _hold(WRITER, out)
    try:
        with pytest.raises(UserError, match=f"{out}: the latency predictor directory is being written by pid "
                                            f"{writer.pid}"):
            with reading([ckpt]):
                pass
    finally:
        writer.kill()
        writer.wait()
    with writing(out):  # free again
        pass


def test_run_search_holds_its_predictor_for_the_whole_search(tmp_path, monkeypatch):
    import run_search
    from latency.predictor.lock import writing
    from tests.evaluation_fixtures import make_supernet_dir

    predictor = tmp_path / "conf" / "lat_predictor_quant.pt"
    predictor.parent.mkdir()
    predictor.write_bytes(b"x")
    held = []

    def step(plan, op):
        with pytest.raises(UserError, match="in use"):
            with writing(predictor.parent):
                pass
        held.append(op)

    class Run:  # the search's steps, replaced by the check above (the lock is what is tested)
        def __init__(self, plan):
            self.plan = plan

        def check(self, ops):
            pass

        def step(self, op, generation=None):
            step(self.plan, op)

        def run(self, whole):
            for op in ("cand", "fast", "eval", "evol", "eval", "final"):
                step(self.plan, op)

    monkeypatch.setattr(run_search, "SearchRun", Run)
    for name, value in (("PREDICTOR", str(predictor)), ("MODEL_DIR", make_supernet_dir(str(tmp_path / "net"))),
                        ("CANDS_DIR", str(tmp_path / "cands")), ("OUTPUT_ROOT", str(tmp_path / "out")),
                        ("DATA_DIR", str(tmp_path)), ("GENERATIONS", "1")):
        monkeypatch.setenv(name, value)
    assert run_search.main(["cand"]) == 0 and run_search.main(["all"]) == 0
    assert held == ["cand", "cand", "fast", "eval", "evol", "eval", "final"]
    with writing(predictor.parent):  # released when the search ends
        pass
