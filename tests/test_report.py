"""report.py (the paper's comparison table and plots), demo budgets and the evaluated-arch collector."""

import csv
import json

import pytest

import report
from demo.budgets import suggest_budgets
from evaluation.results import JSONL_NAME, evaluated_archs
from utils import UserError, arch_key, make_arch


def _record(arch, acc_fp32, acc_int8=None, params=1_000_000):
    record = {"task_name": "mnli", "arch": arch, "seed": 42, "best_acc": acc_int8 if acc_int8 is not None else acc_fp32,
              "parameter_size": params, "size_mb_fp32": params * 4 / 2**20,
              "metrics_fp32": {"dev_matched": {"primary": acc_fp32}, "dev_mismatched": {"primary": acc_fp32 - 0.01}}}
    if acc_int8 is not None:
        record["metrics_int8"] = {"dev_matched": {"primary": acc_int8}, "dev_mismatched": {"primary": acc_int8 - 0.01}}
        record["size_mb_int8"] = params / 2**20
    return record


def _table(path, backend, latencies):
    with open(path, "w") as handle:
        for arch, ms in latencies:
            handle.write(json.dumps({"arch": arch, "arch_key": arch_key(arch), "backend": backend, "median_ms": ms,
                                     "threads": 1, "batch_size": 1, "seq_len": 128}, sort_keys=True) + "\n")


@pytest.fixture
def run(tmp_path):
    small, mid, big = make_arch(1, 192, 512, 4), make_arch(2, 256, 768, 4), make_arch(3, 320, 1024, 4)
    searches = {
        "kd_fp_5": [_record(small, 0.55, params=900_000), _record(mid, 0.60, params=1_800_000)],
        "kd_ptq_5": [_record(mid, 0.61, 0.60, params=1_800_000), _record(big, 0.66, 0.65, params=3_000_000)],
    }
    for name, records in searches.items():
        (tmp_path / "output" / name).mkdir(parents=True)
        (tmp_path / "output" / name / JSONL_NAME).write_text("".join(json.dumps(r) + "\n" for r in records))
    _table(tmp_path / "fp32.jsonl", "torch_fp32", [(small, 3.0), (mid, 4.8), (big, 7.5)])
    _table(tmp_path / "int8.jsonl", "torch_dynamic_int8", [(small, 3.2), (mid, 3.9), (big, 4.9)])
    return tmp_path, small, mid, big


def test_report_table_claims_and_plots(run):
    root, small, mid, big = run
    out = root / "report"
    code = report.main(["--output_root", str(root / "output"), "--cands_dir", str(root / "cands"),
                        "--fp_predictor", "", "--int8_predictor", "",
                        "--measured", str(root / "fp32.jsonl"), str(root / "int8.jsonl"), "--report_dir", str(out)])
    assert code == 0
    rows = list(csv.DictReader(open(out / "report.csv")))
    assert [(r["type"], r["arch"]) for r in rows] == [("fp", "L2/H256/F768/Q256/A4"), ("ptq", "L3/H320/F1024/Q320/A4")]
    fp, ptq = rows
    assert float(fp["measured_ms_fp32"]) == 4.8 and fp["within_budget"] == "True"
    assert float(ptq["measured_ms_int8"]) == 4.9 and ptq["within_budget"] == "True"
    assert float(ptq["dev_int8_dev_matched"]) == 0.65 and float(ptq["size_mb_int8"]) == pytest.approx(3e6 / 2**20)
    text = (out / "report.md").read_text()
    assert "The int8 choice is bigger (1.67x the parameters)" in text
    assert "measures 4.90 ms in int8, within the 5 ms budget" in text
    assert "| 5 | Bigger&Faster (int8 search) | L3/H320/F1024/Q320/A4 | 3.00 |" in text
    for png in ("accuracy_vs_latency.png", "predicted_vs_measured.png", "fitness_per_generation.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_flags_an_int8_choice_over_budget(run):
    root, small, mid, big = run
    _table(root / "int8.jsonl", "torch_dynamic_int8", [(small, 3.2), (mid, 3.9), (big, 5.6)])
    rows = report.table_rows(report.find_searches(str(root / "output")), {},
                             report.load_measured([str(root / "fp32.jsonl"), str(root / "int8.jsonl")]))
    assert rows[1]["within_budget"] is False
    assert "OVER the 5 ms budget" in "\n".join(report.claims(rows))


def test_report_bad_input_is_one_line(tmp_path):
    (tmp_path / "output").mkdir()
    with pytest.raises(UserError, match="no kd_<fp|ptq>_<ms>"):
        report.main(["--output_root", str(tmp_path / "output"), "--fp_predictor", "", "--int8_predictor", ""])
    with pytest.raises(UserError, match="is not a directory"):
        report.main(["--output_root", str(tmp_path / "missing")])


def test_demo_budgets_and_evaluated_archs(run):
    root, small, mid, big = run
    assert suggest_budgets([1.0, 2.0, 3.0, 4.0, 5.0], [25, 75]) == [2.0, 4.0]
    assert suggest_budgets([2.0, 2.0, 2.0], [35, 65]) == [2.0]  # duplicates collapse
    with pytest.raises(UserError):
        suggest_budgets([], [50])
    assert [arch_key(a) for a in evaluated_archs(str(root / "output"))] == [arch_key(a) for a in (small, mid, big)]
