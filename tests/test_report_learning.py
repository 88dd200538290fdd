"""The report on fine-tunes that did not learn (evaluation.learning): its first lines say so per
search, a finalist that did not learn cannot win, a search none of whose fine-tunes learned has no
winner, a comparison with a side that did not learn is no gain and "bigger" is no win, ties within
noise are named; BERT-Tickets rounds likewise. Records are built by hand, as in test_report."""

import json

import numpy as np
import pytest

from evaluation.learning import judge
from glue.tasks import get_task
from tests.test_report import BIG, MID, SMALL, _search, _table, main, run  # noqa: F401 (run: the report's fixture)
from tests.test_bert_tickets import inputs  # noqa: F401 (a tiny BERT and a cue task, for a real ticket run)
from utils import arch_key

MNLI = get_task("mnli")
LABELS = np.array([0] * 100 + [1] * 111 + [2] * 89)  # matched, n = 300: the majority class is 37.0 %
NOTHING = ("NOTHING LEARNED: every fine-tune of kd_ptq_5 predicted the majority class (accuracy 37.0 = the "
           "majority-class rate of matched, n=300)")


def _verdicts(learned: bool) -> dict:
    predictions = np.ones(300, dtype=int) if not learned else LABELS
    return {split: judge(MNLI, predictions, LABELS, split=split).to_dict() for split in ("matched", "mismatched")}


def _judge(root, name, failed=lambda record: False):
    """Give every record of search ``name`` its verdicts: ``failed(record)`` ones predicted the majority class."""
    path = root / "output" / name / "subbert.results.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines()]
    for record in records:
        bad = failed(record)
        by_scheme = {scheme: _verdicts(not bad) for scheme in record["metrics_by_scheme"]}
        record.update(learning_by_scheme=by_scheme, learned=not bad,
                      not_learned_reason=by_scheme[record["scheme"]]["matched"]["reason"])
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def _summary(root):
    return json.load(open(root / "report" / "summary.json"))


def test_the_report_says_first_that_a_search_learned_nothing_and_names_no_winner(tmp_path):
    _search(tmp_path, "kd_fp_5", "torch_fp32", "evolution", 5.0, [(SMALL, 0.55), (MID, 0.60)],
            [(MID, [(43, 0.61, 0.58), (44, 0.59, 0.57)]), (SMALL, [(43, 0.55, 0.54), (44, 0.56, 0.55)])])
    _search(tmp_path, "kd_ptq_5", "torch_dynamic_int8", "evolution", 5.0, [(MID, 0.37), (BIG, 0.375)],
            [(BIG, [(43, 0.375, None), (44, 0.375, None)]), (MID, [(43, 0.37, None), (44, 0.37, None)])])
    _judge(tmp_path, "kd_fp_5")
    _judge(tmp_path, "kd_ptq_5", lambda record: True)
    _table(tmp_path / "fp32.jsonl", "torch_fp32", [(SMALL, 3.0), (MID, 4.8), (BIG, 7.5)])
    _table(tmp_path / "int8.jsonl", "torch_dynamic_int8", [(SMALL, 3.2), (MID, 3.9), (BIG, 4.9)])
    assert main(tmp_path) == 0
    text = (tmp_path / "report" / "report.md").read_text()
    lines = text.splitlines()
    assert lines[0].startswith("# ") and lines[1] == ""
    assert lines[2] == f"- {NOTHING}"
    assert lines[3] == "- kd_fp_5: every one of the 6 fine-tunes learned (each scored beyond a constant predictor plus its noise)"
    assert text.index(NOTHING) < text.index("| budget (ms) |")  # before the tables
    summary = _summary(tmp_path)
    assert NOTHING in summary["problems"]
    entries = {e["search"]: e for e in summary["learning"]["searches"]}
    assert entries["kd_ptq_5"] == {"search": "kd_ptq_5", "fine_tunes": 6, "not_learned": 6, "unknown": 0,
                                   "none_learned": True, "line": NOTHING}
    assert entries["kd_fp_5"]["not_learned"] == 0 and entries["kd_fp_5"]["line"] is None
    rows = summary["budgets"][0]["methods"]
    bf, fp = rows["bigger_and_faster_int8"], rows["autotinybert_fp32"]
    assert bf["none_learned"] is True and bf["learned"] is False and fp["learned"] is True and not fp["none_learned"]
    assert [e["arch"] for e in bf["excluded_not_learned"]] == ["L3/H320/F1024/Q320/A4", "L2/H256/F768/Q256/A4"]
    assert bf["arch"] == BIG  # shown, but no winner
    comparison = {(c["a"], c["b"]): c for c in summary["budgets"][0]["comparisons"]}
    vs_fp = comparison[("bigger_and_faster_int8", "autotinybert_fp32")]
    assert vs_fp["verdict"] == "did not learn" and vs_fp["not_learned"] == ["bigger_and_faster_int8"]
    assert vs_fp["encoder_params_ratio"] == pytest.approx(3 * 320 / (2 * 256))
    assert vs_fp["diff_points"] == pytest.approx(-22.5)  # a loss by the numbers, reported as "did not learn"
    reason = ("predicted the majority class for every example (accuracy 37.0 = the majority-class rate of matched, "
              "n=300)")
    assert f"- 5 ms, Bigger&Faster (int8): **no winner**: no finalist learned on every seed (L3/H320/F1024/Q320/A4: {reason})." in text
    assert "**not a gain: Bigger&Faster (int8) did not learn**" in text
    assert "1.88x the encoder parameters (bigger, but Bigger&Faster (int8) did not learn: no win)" in text
    assert "(bigger)" not in text and "a gain beyond the spread" not in text
    assert "37.5 ± 0.0 (n=3) **did not learn: no winner**" in text  # the table's accuracy cell
    assert text.count(NOTHING) == 1  # stated first, not repeated among the warnings


def test_a_finalist_that_did_not_learn_on_one_seed_cannot_win_and_ties_are_named(run):  # noqa: F811
    _judge(run, "kd_fp_5")
    _judge(run, "kd_ptq_5", lambda record: record["arch"] == BIG and record["seed"] == 44)
    _judge(run, "kd_ptq_5_random")
    assert main(run) == 0
    summary = _summary(run)
    rows = summary["budgets"][0]["methods"]
    bf = rows["bigger_and_faster_int8"]
    assert bf["arch"] == MID and bf["learned"] is True and bf["none_learned"] is False  # BIG was the fittest
    assert bf["excluded_not_learned"] == [{"arch": "L3/H320/F1024/Q320/A4", "reasons": [
        "predicted the majority class for every example (accuracy 37.0 = the majority-class rate of matched, n=300)"]}]
    line = "kd_ptq_5: 1 of 7 fine-tunes did not learn (1 predicted the majority class)"
    assert summary["learning"]["searches"][1]["line"] == line and line in summary["problems"]
    text = (run / "report" / "report.md").read_text()
    assert text.splitlines()[2] == f"- {line}"
    assert ("- 5 ms, Bigger&Faster (int8): finalists that did not learn, so they could not win: L3/H320/F1024/Q320/A4 "
            "(predicted the majority class for every example") in text
    # the fp32 search: MID (60.0 +- 1.0) over SMALL (55.7 +- 9.0), a gap inside the noise: chosen as before, said so
    fp = rows["autotinybert_fp32"]
    assert fp["arch"] == MID and fp["tie"]["decided_by"] == "the higher mean fitness"
    assert [r["arch"] for r in fp["tie"]["tied_with"]] == ["L1/H192/F512/Q192/A4"]
    assert "- 5 ms, AutoTinyBERT (fp32): tied within noise with L1/H192/F512/Q192/A4 (+4.3 ± " in text
    assert "; chosen by the higher mean fitness." in text


def test_old_records_without_a_verdict_count_as_learned(run):  # noqa: F811
    assert main(run) == 0
    summary = _summary(run)
    assert summary["problems"] == [] and summary["budgets"][0]["methods"]["bigger_and_faster_int8"]["learned"] is None
    assert summary["learning"]["lines"] == ["19 of 19 fine-tunes have no learning verdict (recorded before it): they "
                                            "count as learned"]


def test_an_exact_tie_is_decided_by_fewer_parameters_and_said_so(tmp_path):
    _search(tmp_path, "kd_ptq_5", "torch_dynamic_int8", "evolution", 5.0, [(MID, 0.60), (BIG, 0.60)],
            [(BIG, [(43, 0.62, None), (44, 0.58, None)]), (MID, [(43, 0.58, None), (44, 0.62, None)])])
    _judge(tmp_path, "kd_ptq_5")
    _table(tmp_path / "fp32.jsonl", "torch_fp32", [(MID, 4.8), (BIG, 7.5)])
    _table(tmp_path / "int8.jsonl", "torch_dynamic_int8", [(MID, 3.9), (BIG, 4.9)])
    assert main(tmp_path) == 0
    row = _summary(tmp_path)["budgets"][0]["methods"]["bigger_and_faster_int8"]
    assert row["arch"] == MID and row["tie"]["decided_by"] == "fewer parameters"
    assert "tied within noise with L3/H320/F1024/Q320/A4 (+0.0 ± " in (tmp_path / "report" / "report.md").read_text()


def test_bert_tickets_rounds_that_did_not_learn_are_marked_and_never_selected(run):  # noqa: F811
    from tickets.report import format_table, learning_lines, ticket_rows

    tickets = run / "tickets"
    tickets.mkdir()
    reason = _verdicts(False)["matched"]["reason"]
    records = []
    for round_index, sparsity, metric, learned in ((0, 0.0, 0.60, True), (1, 20.0, 0.595, True),
                                                  (2, 36.0, 0.598, False), (3, 49.0, 0.37, False)):
        records.append({"round": round_index, "sparsity_pct": sparsity, "arch_summary": "L4/H448/F1536/Q448/A4",
                        "dev_primary_fp32": metric, "dev_primary_fp32_std": None, "dev_primary_int8": metric - 0.005,
                        "dev_primary_int8_std": None, "n_seeds": 1, "seeds": [42], "pruned_params": int(sparsity * 1e4),
                        "nonzero_params": 2_000_000 - int(sparsity * 1e4), "total_params": 2_000_000,
                        "size_mb_dense_fp32": 7.6, "size_mb_sparse": 7.6 * (1 - sparsity / 150),
                        "latency_ms_fp32": 6.1, "latency_ms_int8": 4.4, "latency_spread_pct_int8": 1.0,
                        "learned": learned, "not_learned_seeds": [] if learned else [42],
                        "not_learned_reason": None if learned else reason})
    (tickets / "tickets.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    rows = ticket_rows(str(tickets))
    # round 2 is sparser and "matches" 0.60 within 0.01, but it did not learn: round 1 is selected
    assert [r["is_matching"] for r in rows] == [False, True, False, False]
    assert [r["is_selected"] for r in rows] == [False, True, False, False]
    first = [f"BERT-Tickets round 2 (sparsity 36.0 %) did not learn: {reason}; it cannot be selected",
             f"BERT-Tickets round 3 (sparsity 49.0 %) did not learn: {reason}; it cannot be selected"]
    assert learning_lines(rows) == first
    assert format_table(rows).splitlines()[:2] == first and "| 2 | 36.0 |" in format_table(rows)
    assert main(run, "--tickets", str(tickets)) == 0
    summary = _summary(run)
    assert summary["learning"]["tickets"] == first and all(line in summary["problems"] for line in first)
    text = (run / "report" / "report.md").read_text()
    assert text.index(first[0]) < text.index("| budget (ms) |")
    assert "| 2 | 36.0 |" in text and text.count("**did not learn**") == 2 and text.count("**selected**") == 1
    # every round failed: one NOTHING LEARNED line, nothing selected
    for record in records:
        record.update(learned=False, not_learned_reason=reason)
    (tickets / "tickets.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    rows = ticket_rows(str(tickets))
    assert not any(r["is_selected"] for r in rows)
    assert learning_lines(rows) == [f"NOTHING LEARNED: no BERT-Tickets round learned (round 0: {reason}); no round "
                                    "can be selected"]


def test_a_real_ticket_round_records_whether_its_fine_tunes_learned(inputs, tmp_path):  # noqa: F811
    import torch

    from tests.test_bert_tickets import options
    from tickets import imp
    from tickets.report import ticket_rows

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    ws = inputs
    for name in ("short", "long"):  # 6 steps at 2e-3 and 60 steps at 5e-3 on the cue task
        epochs, lr = (1.0, 2e-3) if name == "short" else (10.0, 5e-3)
        records = imp.run(options(ws, tmp_path / name, rounds=1, seeds=(3, 4), num_train_epochs=epochs,
                                  learning_rate=lr))
        for record in records:
            for seed in record["per_seed"]:
                verdict = seed["learning"]["fp32"]["matched"]
                assert verdict["score"] == pytest.approx(seed["dev_fp32"]["matched"]["primary"])
                assert set(seed["learning"]) == {"fp32", "int8"} and verdict["n"] == 32
                assert seed["learned"] == verdict["learned"]
                assert seed["not_learned_reason"] == verdict["reason"]
            assert record["learned"] == all(seed["learned"] for seed in record["per_seed"])
            assert record["not_learned_seeds"] == [s["seed"] for s in record["per_seed"] if not s["learned"]]
        rows = ticket_rows(str(tmp_path / name))
        assert [row["learned"] for row in rows] == [record["learned"] for record in records]
        assert not any(row["is_selected"] and row["learned"] is False for row in rows)
        # measured: the short recipe stays at chance (31.2 on 32 examples), the long one learns (81.2 and 64.1)
        assert [row["learned"] for row in rows] == ([False, False] if name == "short" else [True, True])
    torch.set_num_threads(threads)
