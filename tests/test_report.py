"""report.py on a fixture with known means and spreads: the winner is the best seed mean, every
compared number carries its spread, a gap inside the spread reads "within noise" and one outside
reads as a gain; summary.json has the fields and units the issue asks for; bad input is one line."""

import csv
import json
import os

import pytest

import report
from demo.budgets import suggest_budgets
from evaluation.results import JSONL_NAME, evaluated_archs
from reporting.stats import Estimate, difference
from utils import UserError, arch_key, make_arch, write_arch_file

SMALL, MID, BIG, HUGE = (make_arch(1, 192, 512, 4), make_arch(2, 256, 768, 4), make_arch(3, 320, 1024, 4),
                         make_arch(4, 448, 1536, 4))


def _record(arch, scheme, fitness, seed, int8=None, params=None):
    params = params or arch["sample_layer_num"] * arch["sample_hidden_size"] * 1000
    fp32 = fitness if scheme == "torch_fp32" else fitness + 0.002
    by = {"torch_fp32": {"matched": {"primary": fp32}, "mismatched": {"primary": fp32 - 0.01}}}
    best = {"torch_fp32": fp32}
    if scheme != "torch_fp32":
        by[scheme] = {"matched": {"primary": fitness}, "mismatched": {"primary": fitness - 0.01}}
        best[scheme] = fitness
    if int8 is not None:
        by["torch_dynamic_int8"] = {"matched": {"primary": int8}, "mismatched": {"primary": int8 - 0.01}}
        best["torch_dynamic_int8"] = int8
    return {"task_name": "mnli", "arch": arch, "arch_key": arch_key(arch), "seed": seed, "scheme": scheme,
            "best_acc": fitness, "parameter_size": params + 500_000, "encoder_parameter_size": params,
            "size_mb_fp32": (params + 500_000) * 4 / 2**20, "size_mb_by_scheme": {"torch_dynamic_int8": params / 2**20},
            "metrics_by_scheme": by, "best_by_scheme": best, "primary_dev": "matched",
            "dev_examples": {"matched": 500, "mismatched": 500}, "train_examples": 2000, "train_steps": 125,
            "max_seq_length": 32, "hparams": {"learning_rate": 3e-4, "num_train_epochs": 1.0, "train_batch_size": 16, "eval_step": 50,
                        "warmup_proportion": 0.1, "weight_decay": 0.01}}


def _search(root, name, scheme, strategy, budget, search_results, final_results, task="mnli"):
    """``search_results``: [(arch, fitness)] at seed 42 (fp32 searches also score int8 = fitness - 0.01);
    ``final_results``: [(arch, [(seed, fitness, int8)])] for the final step's new seeds."""
    cands, out = root / "cands", root / "output" / name
    cands.mkdir(exist_ok=True)
    out.mkdir(parents=True)
    extra = scheme == "torch_fp32"
    records = [_record(a, scheme, f, 42, int8=(f - 0.01 if extra else None)) for a, f in search_results]
    finals = []
    for arch, values in final_results:
        finals.append(arch)
        for seed, fitness, int8 in values:
            records.append(_record(arch, scheme, fitness, seed, int8=int8))
    for record in records:
        record["task_name"] = task
    (out / JSONL_NAME).write_text("".join(json.dumps(r) + "\n" for r in records))
    (cands / f"{name}.search.json").write_text(json.dumps({
        "task_name": task, "scheme": scheme, "latency_constraint": budget, "strategy": strategy,
        "results_dir": str(out)}))
    write_arch_file(str(cands / f"{name}.final.cands"), finals)
    log = [{"generation": 0, "method": "Fast" if strategy == "evolution" else "Random",
            "archs": [arch_key(a) for a, _ in search_results[:2]]},
           {"generation": 1, "method": "Evolved" if strategy == "evolution" else "Random",
            "archs": [arch_key(a) for a, _ in search_results[2:]]}]
    (cands / f"{name}.search_log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in log))


def _table(path, backend, latencies):
    with open(path, "w") as handle:
        for arch, ms in latencies:
            handle.write(json.dumps({"arch": arch, "arch_key": arch_key(arch), "backend": backend, "median_ms": ms,
                                     "threads": 1, "batch_size": 1, "seq_len": 128, "timer": "wall", "runs": 20},
                                    sort_keys=True) + "\n")


@pytest.fixture
def run(tmp_path):
    # fp32 search at 5 ms: MID wins on the seed mean (0.60 +- 0.01) though SMALL had the lucky search seed
    _search(tmp_path, "kd_fp_5", "torch_fp32", "evolution", 5.0,
            [(SMALL, 0.66), (MID, 0.60), (BIG, 0.50)],
            [(SMALL, [(43, 0.50, 0.49), (44, 0.51, 0.50)]), (MID, [(43, 0.61, 0.58), (44, 0.59, 0.57)])])
    # int8 search: BIG 0.62 +- 0.01 -> +2.0 points over the fp32 winner, inside the spread? (see tests)
    _search(tmp_path, "kd_ptq_5", "torch_dynamic_int8", "evolution", 5.0,
            [(MID, 0.59), (BIG, 0.62), (HUGE, 0.40)],
            [(BIG, [(43, 0.63, None), (44, 0.61, None)]), (MID, [(43, 0.58, None), (44, 0.60, None)])])
    _search(tmp_path, "kd_ptq_5_random", "torch_dynamic_int8", "random", 5.0,
            [(SMALL, 0.50), (MID, 0.58), (HUGE, 0.40)],
            [(MID, [(43, 0.57, None), (44, 0.59, None)])])
    _table(tmp_path / "fp32.jsonl", "torch_fp32", [(SMALL, 3.0), (MID, 4.8), (BIG, 7.5), (HUGE, 12.0)])
    _table(tmp_path / "int8.jsonl", "torch_dynamic_int8", [(SMALL, 3.2), (MID, 3.9), (BIG, 4.9), (HUGE, 8.0)])
    return tmp_path


def main(root, *extra):
    return report.main(["--cands_dir", str(root / "cands"), "--output_root", str(root / "output"),
                        "--measured", str(root / "fp32.jsonl"), str(root / "int8.jsonl"), "--seeds", "42", "43", "44",
                        "--report_dir", str(root / "report"), *extra])


def test_summary_rows_winners_and_units(run):
    assert main(run) == 0
    summary = json.load(open(run / "report" / "summary.json"))
    (budget,) = summary["budgets"]
    rows = budget["methods"]
    assert list(rows) == ["autotinybert_fp32", "autotinybert_int8_ptq", "bigger_and_faster_int8", "random_search_int8"]
    fp, ptq_row, bf, rnd = (rows[k] for k in rows)
    assert fp["arch"] == MID  # the best seed mean, not SMALL's lucky 0.66
    assert fp["accuracy_points"]["mean"] == pytest.approx(60.0) and fp["accuracy_points"]["n"] == 3
    assert fp["accuracy_points"]["std"] == pytest.approx(1.0)
    assert ptq_row["arch"] == MID and ptq_row["accuracy_points"]["mean"] == pytest.approx(58.0)
    assert ptq_row["deployed_scheme"] == "torch_dynamic_int8" and ptq_row["measured_latency_ms_deployed"] == 3.9
    assert fp["measured_latency_ms_deployed"] == 4.8 and fp["within_budget"] is True
    assert bf["arch"] == BIG and bf["measured_latency_ms_deployed"] == 4.9
    assert bf["budget_fraction"] == pytest.approx(0.98)
    assert bf["encoder_params"] == 3 * 320 * 1000 and bf["total_params"] == bf["encoder_params"] + 500_000
    assert rnd["arch"] == MID and rnd["evaluations_search"] == bf["evaluations_search"] == 3
    assert bf["evaluations_total"] == 3 + 4  # two finalists x two new seeds
    assert [f["arch"] for f in bf["finalists"]] == ["L3/H320/F1024/Q320/A4", "L2/H256/F768/Q256/A4"]
    settings = summary["settings"]
    assert settings["primary_dev"] == "matched" and settings["seeds"] == [42, 43, 44]
    assert settings["fine_tune"]["learning_rate"] == 3e-4 and settings["latency_protocol"]["torch_fp32"]["timer"] == "wall"
    rows_csv = list(csv.DictReader(open(run / "report" / "report.csv")))
    assert [r["method"] for r in rows_csv] == list(rows)
    for png in report.PLOTS:
        assert (run / "report" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_claims_follow_the_spread(run):
    assert main(run) == 0
    summary = json.load(open(run / "report" / "summary.json"))
    comparisons = {(c["a"], c["b"]): c for c in summary["budgets"][0]["comparisons"]}
    vs_fp = comparisons[("bigger_and_faster_int8", "autotinybert_fp32")]
    # 62 +- 1 vs 60 +- 1, n = 3 each: diff 2, Welch 95 % half-width 2.78 * sqrt(2/3) = 2.27 -> within noise
    assert vs_fp["diff_points"] == pytest.approx(2.0) and vs_fp["ci95_half_width_points"] == pytest.approx(2.267, abs=0.01)
    assert vs_fp["verdict"] == "within noise"
    vs_ptq = comparisons[("bigger_and_faster_int8", "autotinybert_int8_ptq")]
    assert vs_ptq["diff_points"] == pytest.approx(4.0) and vs_ptq["verdict"] == "gain"  # 4 > 2.27
    vs_random = comparisons[("bigger_and_faster_int8", "random_search_int8")]
    assert vs_random["verdict"] == "gain" and vs_random["diff_points"] == pytest.approx(4.0)
    text = (run / "report" / "report.md").read_text()
    assert "Bigger&Faster (int8) vs AutoTinyBERT (fp32)" in text and "**within noise**" in text
    assert "**a gain beyond the spread**" in text
    assert "62.0 ± 1.0 (n=3)" in text and "1.88x the encoder parameters (bigger)" in text
    assert "98 % of the 5 ms budget, within" in text
    assert "dev evaluated every 50 steps and at the end (best kept)" in text  # eval_step 50 < 125 steps


def test_settings_say_when_the_dev_set_was_scored():
    from reporting.claims import _evaluation_text

    once = {"train_steps": 125, "fine_tune": {"eval_step": 100000}}
    assert _evaluation_text(once) == "dev evaluated once, at the end of training"
    assert _evaluation_text(dict(once, train_steps=125, fine_tune={"eval_step": 125})).endswith("at the end of training")
    assert _evaluation_text(dict(once, fine_tune={"eval_step": 50})) == "dev evaluated every 50 steps and at the end (best kept)"
    assert "every 50 steps" in _evaluation_text({"fine_tune": {"eval_step": 50}})  # older records: no train_steps


def test_difference_rules():
    assert difference(Estimate.of([0.6, 0.6]), Estimate.of([0.5])).verdict == "within noise"  # n = 1: no spread
    assert difference(Estimate.of([0.7, 0.7]), Estimate.of([0.5, 0.5])).verdict == "gain"  # exact, no noise
    wide = difference(Estimate.of([0.5, 0.7, 0.6]), Estimate.of([0.55, 0.45, 0.5]))
    assert wide.verdict == "within noise" and wide.half_width > abs(wide.diff)
    assert difference(Estimate.of([0.40, 0.41, 0.42]), Estimate.of([0.60, 0.61, 0.62])).verdict == "loss"


def test_a_search_that_never_finished_or_lacks_seeds_is_refused(run, capsys):
    os.remove(run / "cands" / "kd_ptq_5_random.final.cands")
    with pytest.raises(UserError, match="search kd_ptq_5_random never finished: no kd_ptq_5_random.final.cands"):
        main(run)
    assert not (run / "report").exists()
    assert main(run, "--allow_partial") == 0
    summary = json.load(open(run / "report" / "summary.json"))
    assert "never finished" in summary["problems"][0]
    # a finalist with fewer seeds than asked
    path = run / "output" / "kd_ptq_5" / JSONL_NAME
    lines = path.read_text().splitlines()
    path.write_text("\n".join(line for line in lines if '"seed": 44' not in line) + "\n")
    with pytest.raises(UserError, match=r"search kd_ptq_5: finalist .* has seeds \[42, 43\], missing \[44\]"):
        report.main(["--cands_dir", str(run / "cands"), "--seeds", "42", "43", "44", "--report_dir", str(run / "r2")])


def _record_final_step(root, name, seeds):
    """What the evaluator writes when the final step starts: its arches file and seeds."""
    (root / "output" / name / "run_args.json").write_text(json.dumps(
        {"arches_file": str(root / "cands" / f"{name}.final.cands"), "seeds": seeds}))


def test_the_report_reads_the_seeds_and_window_the_searches_recorded(run):
    """Issue 24: report.sh needed SEEDS repeated; the final step records them (run_args.json)."""
    for name in ("kd_fp_5", "kd_ptq_5", "kd_ptq_5_random"):
        _record_final_step(run, name, [42, 43, 44])
        identity = json.loads((run / "cands" / f"{name}.search.json").read_text())
        (run / "cands" / f"{name}.search.json").write_text(json.dumps(dict(identity, window_ms=[4.25, 5.0])))
    assert report.main(["--cands_dir", str(run / "cands"), "--measured", str(run / "fp32.jsonl"),
                        str(run / "int8.jsonl"), "--report_dir", str(run / "report")]) == 0
    summary = json.load(open(run / "report" / "summary.json"))
    assert summary["settings"]["final_seeds"] == [42, 43, 44] and summary["settings"]["window_fractions"] == [[0.85, 1.0]]
    text = (run / "report" / "report.md").read_text()
    assert "re-evaluated with seeds [42, 43, 44] (as the searches recorded them)" in text
    assert "in the window [0.85c, 1c] of each budget c (recorded in each search's identity)" in text
    # a final step interrupted before its last seed: refused without being told the seeds
    path = run / "output" / "kd_ptq_5" / JSONL_NAME
    path.write_text("".join(line + "\n" for line in path.read_text().splitlines() if '"seed": 44' not in line))
    with pytest.raises(UserError, match=r"search kd_ptq_5: finalist .* has seeds \[42, 43\], missing \[44\]"):
        report.main(["--cands_dir", str(run / "cands"), "--report_dir", str(run / "r2")])
    # the latest evaluation there was another step's: the finalists' seeds are what the step ran
    (run / "output" / "kd_ptq_5" / "run_args.json").write_text(json.dumps(
        {"arches_file": str(run / "cands" / "1st_generation_kd_ptq_5.cands"), "seeds": [42]}))
    assert report.main(["--cands_dir", str(run / "cands"), "--report_dir", str(run / "r3")]) == 0


def test_other_seeds_than_the_default_need_no_flag(tmp_path):
    _search(tmp_path, "kd_ptq_5", "torch_dynamic_int8", "evolution", 5.0, [(MID, 0.59), (BIG, 0.62)],
            [(BIG, [(7, 0.63, None), (8, 0.61, None)])])
    for record_seed in (False, True):  # read off the finalists' results (older runs), or recorded
        if record_seed:
            _record_final_step(tmp_path, "kd_ptq_5", [7, 8, 42])
        out = tmp_path / f"report_{record_seed}"
        assert report.main(["--cands_dir", str(tmp_path / "cands"), "--report_dir", str(out)]) == 0
        summary = json.load(open(out / "summary.json"))
        assert summary["settings"]["final_seeds"] == [7, 8, 42]
        assert summary["budgets"][0]["methods"]["bigger_and_faster_int8"]["accuracy_points"]["n"] == 3


def test_a_finalist_counts_the_final_seeds_only_when_both_recipes_are_one(tmp_path):
    """Candidates fine-tuned with the finalists' own recipe (FIT_TRAIN=NUM_TRAIN, FIT_DEV=NUM_DEV): the finalist's
    search-seed result (0.62, the one that chose it) has the final recipe too; with SEEDS="43 44" recorded in
    <name>.final.json it is not one of the final seeds, so the finalist is the mean of 43 and 44 (n = 2)."""
    _search(tmp_path, "kd_ptq_5", "torch_dynamic_int8", "evolution", 5.0, [(MID, 0.59), (BIG, 0.62)],
            [(BIG, [(43, 0.58, None), (44, 0.60, None)])])
    (tmp_path / "cands" / "kd_ptq_5.final.json").write_text(json.dumps({"seeds": [43, 44], "search_seed": 42}))
    assert report.main(["--cands_dir", str(tmp_path / "cands"), "--report_dir", str(tmp_path / "report")]) == 0
    accuracy = json.load(open(tmp_path / "report" / "summary.json"))["budgets"][0]["methods"][
        "bigger_and_faster_int8"]["accuracy_points"]
    assert accuracy["n"] == 2 and accuracy["mean"] == pytest.approx(59.0)


def test_mixed_tasks_in_one_root_are_refused(run):
    _search(run, "kd_ptq_5_rte", "torch_dynamic_int8", "evolution", 5.0, [(MID, 0.55)], [(MID, [])], task="rte")
    with pytest.raises(UserError, match=r"searches of several tasks \(mnli, rte\)"):
        main(run)
    assert main(run, "--task", "mnli", "--allow_partial") == 0


def test_report_bad_input_is_one_line(tmp_path):
    (tmp_path / "cands").mkdir()
    with pytest.raises(UserError, match="no search found"):
        report.main(["--cands_dir", str(tmp_path / "cands"), "--output_root", str(tmp_path / "output")])
    with pytest.raises(UserError, match="no such latency table"):
        report.main(["--cands_dir", str(tmp_path / "cands"), "--measured", str(tmp_path / "nope.jsonl")])


def test_demo_budgets_and_evaluated_archs(run):
    assert suggest_budgets([1.0, 2.0, 3.0, 4.0, 5.0], [25, 75]) == [2.0, 4.0]
    assert suggest_budgets([2.0, 2.0, 2.0], [35, 65]) == [2.0]  # duplicates collapse
    with pytest.raises(UserError):
        suggest_budgets([], [50])
    keys = {arch_key(a) for a in evaluated_archs(str(run / "output"))}
    assert keys == {arch_key(a) for a in (SMALL, MID, BIG, HUGE)}


def test_bert_tickets_rows_join_the_report(run):
    tickets = run / "tickets"
    tickets.mkdir()
    records = []
    for round_index, sparsity, metric in ((0, 0.0, 0.60), (1, 20.0, 0.595), (2, 36.0, 0.55)):
        records.append({"round": round_index, "sparsity_pct": sparsity, "arch_summary": "L4/H448/F1536/Q448/A4",
                        "dev_primary_fp32": metric, "dev_primary_fp32_std": None, "dev_primary_int8": metric - 0.005,
                        "dev_primary_int8_std": None, "n_seeds": 1, "seeds": [42], "pruned_params": int(sparsity * 1e4),
                        "nonzero_params": 2_000_000 - int(sparsity * 1e4), "total_params": 2_000_000,
                        "size_mb_dense_fp32": 7.6, "size_mb_sparse": 7.6 * (1 - sparsity / 150),
                        "latency_ms_fp32": 6.1, "latency_ms_int8": 4.4, "latency_spread_pct_int8": 1.0})
    (tickets / "tickets.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    assert main(run, "--tickets", str(tickets)) == 0
    summary = json.load(open(run / "report" / "summary.json"))
    rows = summary["tickets"]
    assert [r["sparsity_pct"] for r in rows] == [0.0, 20.0, 36.0]
    assert rows[1]["is_selected"] and rows[1]["accuracy_points"] == pytest.approx(59.0)  # within 0.01 of 0.60
    text = (run / "report" / "report.md").read_text()
    assert "## BERT-Tickets" in text and "| 1 | 20.0 |" in text and "**selected**" in text
    assert "single seed" in text


def test_a_remeasurement_is_expressed_in_the_predictor_tables_unit(tmp_path):
    """The re-measured run was uniformly 20 % slower: sharing the table's reference archs cancels it."""
    from types import SimpleNamespace

    from reporting.inputs import load_measured

    ref_a, ref_b = make_arch(2, 256, 768, 4), make_arch(3, 320, 1024, 4)
    base = {"threads": 1, "batch_size": 1, "seq_len": 128, "backend": "torch_dynamic_int8", "runs": 20,
            "reference_keys": [arch_key(ref_a), arch_key(ref_b)]}
    lines = [dict(base, record_type="reference", arch=a, arch_key=arch_key(a), median_ms=ms * 1.2)
             for a, ms in ((ref_a, 4.0), (ref_b, 6.0))]
    lines += [dict(base, arch=a, arch_key=arch_key(a), median_ms=ms * 1.2) for a, ms in ((SMALL, 3.0), (BIG, 5.0))]
    path = tmp_path / "lat_torch_dynamic_int8.jsonl"
    path.write_text("".join(json.dumps(line, sort_keys=True) + "\n" for line in lines))
    predictor = SimpleNamespace(metadata={"table_references": {arch_key(ref_a): 4.0, arch_key(ref_b): 6.0}})
    measured, comparability = load_measured([str(path)], {"torch_dynamic_int8": predictor})
    assert measured["torch_dynamic_int8"][arch_key(SMALL)]["median_ms"] == pytest.approx(3.0)
    assert measured["torch_dynamic_int8"][arch_key(BIG)]["uncorrected_median_ms"] == pytest.approx(6.0)
    entry = comparability["torch_dynamic_int8"]
    assert entry["factor"] == pytest.approx(1 / 1.2) and entry["spread_pct"] == pytest.approx(0.0, abs=1e-9)
    assert entry["references"] == 2
