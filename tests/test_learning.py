"""Fine-tunes that did not learn are named (evaluation.learning): the verdict on fixtures -- a
constant predictor, the majority class, a score within noise, a learned one, CoLA's MCC, a constant
and a learned regression -- computed where a split is scored (evaluation.finetune.evaluate) and
stored in the candidate's record (evaluation.candidate.evaluate_candidate)."""

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from evaluation.data import EncodedSplit
from evaluation.finetune import evaluate
from evaluation.learning import LearningVerdict, describe, did_not_learn, judge, learned, not_learned_reason
from glue.tasks import get_task

MNLI, COLA, STSB = get_task("mnli"), get_task("cola"), get_task("sts-b")
# 100 dev labels: 33 contradiction (0), 37 entailment (1, the majority), 30 neutral (2)
LABELS = np.array([0] * 33 + [1] * 37 + [2] * 30)
NOISE = 1.96 * math.sqrt(0.37 * 0.63 / 100)  # 0.0946: an accuracy up to 46.5 is within noise


def _with_accuracy(correct: int) -> np.ndarray:
    """Predictions right on the first ``correct`` labels, wrong (the next class) on the others."""
    predictions = (LABELS + 1) % 3
    predictions[:correct] = LABELS[:correct]
    return predictions


def test_the_majority_class_did_not_learn():
    verdict = judge(MNLI, np.ones(100, dtype=int), LABELS, split="matched")
    assert not verdict.learned and verdict.kind == "majority_class"
    assert verdict.score == pytest.approx(0.37) and verdict.majority_rate == pytest.approx(0.37)
    assert verdict.top_class == "entailment" and verdict.top_class_share == 1.0 and verdict.top_class_is_majority
    assert verdict.n == 100 and verdict.noise == pytest.approx(NOISE) and verdict.threshold == pytest.approx(0.37 + NOISE)
    assert verdict.reason == ("predicted the majority class for every example (accuracy 37.0 = the majority-class "
                              "rate of matched, n=100)")


def test_a_constant_predictor_of_another_class_did_not_learn():
    verdict = judge(MNLI, np.full(100, 2), LABELS, split="matched")
    assert not verdict.learned and verdict.kind == "one_class" and verdict.score == pytest.approx(0.30)
    assert verdict.reason == ("predicted class neutral for every example (accuracy 30.0; the majority-class rate of "
                              "matched is 37.0, n=100)")
    # 96 % one class is "almost one class", even with the other 4 right
    almost = np.full(100, 2)
    almost[:4] = 0
    verdict = judge(MNLI, almost, LABELS)
    assert verdict.kind == "one_class" and verdict.top_class_share == pytest.approx(0.96)
    assert "for 96.0 % of the examples" in verdict.reason


def test_a_score_within_noise_of_the_majority_rate_did_not_learn_and_one_beyond_it_did():
    within = judge(MNLI, _with_accuracy(46), LABELS, split="matched")  # 46.0 <= 37.0 + 9.46
    assert within.score == pytest.approx(0.46) and within.top_class_share < 0.95
    assert not within.learned and within.kind == "within_noise"
    assert within.reason == ("accuracy 46.0 is within noise of the majority-class rate of matched, 37.0 (at most "
                             "46.5 = 37.0 + 9.5 at n=100)")
    beyond = judge(MNLI, _with_accuracy(47), LABELS)
    assert beyond.learned and beyond.kind is None and beyond.reason is None
    good = judge(MNLI, _with_accuracy(85), LABELS)
    assert good.learned and good.score == pytest.approx(0.85)


def test_an_imbalanced_task_is_judged_by_its_score_not_by_its_one_class_share():
    labels = np.array([1] * 970 + [0] * 30)
    right = judge(get_task("sst-2"), labels.copy(), labels)  # perfect, and 97 % one class
    assert right.learned and right.top_class_share == pytest.approx(0.97)
    assert right.threshold == pytest.approx(0.97 + 1.96 * math.sqrt(0.97 * 0.03 / 1000))
    assert not judge(get_task("sst-2"), np.ones(1000, dtype=int), labels).learned
    # at n = 100 even a perfect score is within noise of a 97 % majority: nothing can be told
    assert judge(get_task("sst-2"), labels[::10].copy(), labels[::10]).kind == "within_noise"


def test_cola_mcc_is_judged_against_zero_with_its_noise():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 400)
    chance = judge(COLA, rng.integers(0, 2, 400), labels)  # unrelated predictions: MCC about 0
    assert chance.metric == "mcc" and chance.constant_score == 0.0 and chance.noise == pytest.approx(1.96 / 20)
    assert not chance.learned and chance.kind == "within_noise" and abs(chance.score) < chance.noise
    assert chance.reason.startswith(f"MCC {chance.score:.3f} is within noise of a constant predictor's 0.000 "
                                    "(at most 0.098 = 0.000 + 0.098 at n=400)")
    signal = labels.copy()
    signal[:100] = 1 - signal[:100]  # 75 % right: MCC about 0.5
    assert judge(COLA, signal, labels).learned


def test_regression_constant_within_noise_and_learned():
    rng = np.random.default_rng(1)
    labels = rng.uniform(0, 5, 500).astype(np.float32)
    constant = judge(STSB, 2.5 + 1e-3 * rng.standard_normal(500), labels, split="dev")
    assert not constant.learned and constant.kind == "constant" and constant.prediction_std_ratio < 0.01
    assert constant.reason.startswith("predicted an (almost) constant score: std 0.1 % of the labels' (correlation ")
    unrelated = judge(STSB, rng.uniform(0, 5, 500), labels)
    assert not unrelated.learned and unrelated.kind == "within_noise" and unrelated.noise == pytest.approx(1.96 / math.sqrt(500))
    fitted = judge(STSB, labels + rng.normal(0, 0.7, 500), labels)
    assert fitted.learned and fitted.score > 0.8 and fitted.prediction_std_ratio > 0.9


class _Constant(torch.nn.Module):
    """A model whose logits ignore the input: a constant predictor."""

    def __init__(self, logits):
        super().__init__()
        self.register_buffer("row", torch.tensor(logits, dtype=torch.float32))

    def forward(self, input_ids, attention_mask, token_type_ids):
        return SimpleNamespace(logits=self.row.expand(input_ids.shape[0], -1))


class _ReadsLabel(torch.nn.Module):
    """A model that reads its answer off the second token (the fixture puts the label there)."""

    def __init__(self, num_labels, scale=1.0):
        super().__init__()
        self.num_labels, self.scale = num_labels, scale

    def forward(self, input_ids, attention_mask, token_type_ids):
        token = input_ids[:, 1].float()
        if self.num_labels == 1:
            return SimpleNamespace(logits=self.scale * token[:, None])
        return SimpleNamespace(logits=torch.nn.functional.one_hot(input_ids[:, 1], self.num_labels).float())


def _split(labels, token) -> EncodedSplit:
    n = len(labels)
    lengths = torch.tensor([3 + i % 4 for i in range(n)])  # eval batches come in length order
    ids = torch.zeros(n, 8, dtype=torch.long)
    ids[:, 1] = torch.as_tensor(token)
    return EncodedSplit(ids, torch.zeros_like(ids), lengths, torch.as_tensor(labels))


def test_evaluate_gives_each_scored_split_its_verdict():
    split = _split(LABELS, LABELS)
    majority = evaluate(_Constant([0.0, 1.0, 0.0]), split, MNLI, 16)
    assert majority.primary == pytest.approx(0.37) and majority.verdict.kind == "majority_class"
    assert evaluate(_ReadsLabel(3), split, MNLI, 16).verdict.learned  # every prediction right
    scores = torch.linspace(0, 5, 120)
    regression = _split(scores, (scores * 10).long())
    assert evaluate(_ReadsLabel(1), regression, STSB, 16).verdict.learned
    flat = evaluate(_Constant([2.5]), regression, STSB, 16).verdict
    assert not flat.learned and flat.kind == "constant" and flat.prediction_std_ratio == 0.0


def test_a_records_verdict_and_old_records():
    verdict = judge(MNLI, np.ones(100, dtype=int), LABELS, split="matched").to_dict()
    assert LearningVerdict.from_dict(verdict).reason == verdict["reason"]
    record = {"scheme": "torch_dynamic_int8", "primary_dev": "matched", "learned": False,
              "not_learned_reason": verdict["reason"],
              "learning_by_scheme": {"torch_dynamic_int8": {"matched": verdict},
                                     "torch_fp32": {"matched": dict(verdict, learned=True, reason=None)}}}
    assert did_not_learn(record) and not_learned_reason(record) == verdict["reason"]
    assert learned(record, "torch_fp32") is True and learned(record, "ort_dynamic_int8") is None
    old = {"scheme": "torch_fp32", "primary_dev": "matched", "best_acc": 0.4}
    assert learned(old) is None and not did_not_learn(old) and not_learned_reason(old) is None
    assert describe([verdict, verdict]) == ("predicted the majority class (accuracy 37.0 = the majority-class rate "
                                            "of matched, n=100)")
    within = judge(MNLI, _with_accuracy(46), LABELS, split="matched").to_dict()
    assert describe([verdict, within]) == ("did not learn (1 predicted the majority class, 1 scored within noise "
                                           "of a constant predictor)")


def test_a_candidates_record_says_whether_it_learned(tmp_path, caplog):
    """The record of a real (tiny) fine-tune: the cue task learned in 100 steps; untrained, it did not."""
    import logging

    from evaluation.candidate import evaluate_candidate
    from evaluation.finetune import FinetuneConfig
    from tests.evaluation_fixtures import mnli_task
    from utils import make_arch

    torch.set_num_threads(1)
    supernet, data = mnli_task(str(tmp_path), n_train=400, n_dev=90)
    arch = make_arch(2, 64, 128, 4)
    trained = evaluate_candidate(supernet, arch, data, FinetuneConfig(2e-3, 4.0, 16, 32, 10), "cpu",
                                 "torch_dynamic_int8")
    assert trained["best_acc"] >= 0.9 and trained["learned"] is True and trained["not_learned_reason"] is None
    assert set(trained["learning_by_scheme"]) == {"torch_fp32", "torch_dynamic_int8"}
    for scheme, by_split in trained["learning_by_scheme"].items():
        assert set(by_split) == {"matched", "mismatched"}
        for split, verdict in by_split.items():
            assert verdict["split"] == split and verdict["n"] == 90 and verdict["learned"]
            assert verdict["score"] == pytest.approx(trained["metrics_by_scheme"][scheme][split]["primary"])
    with caplog.at_level(logging.WARNING, logger="evaluation.candidate"):
        untrained = evaluate_candidate(supernet, arch, data, FinetuneConfig(2e-3, 0.0, 16, 32, 10), "cpu",
                                       "torch_dynamic_int8")
    verdict = untrained["learning_by_scheme"]["torch_dynamic_int8"]["matched"]
    assert untrained["learned"] is False and untrained["not_learned_reason"] == verdict["reason"]
    assert verdict["kind"] in ("majority_class", "one_class", "within_noise")
    assert verdict["score"] <= verdict["majority_rate"] + verdict["noise"] or verdict["top_class_share"] >= 0.95
    (line,) = [r.getMessage() for r in caplog.records if r.name == "evaluation.candidate"]
    assert line == f"mnli seed 42 L2/H64/F128/Q64/A4 did not learn: {verdict['reason']}"


# --------------------------------------------------------------------------------------
# The search's TopK ranks only archs that learned
# --------------------------------------------------------------------------------------

from tests.test_search_identity import _results, args as search_args, predictor, run as search_run, supernet  # noqa: E402,F401


def _majority_verdict(split="matched"):
    return judge(MNLI, np.ones(100, dtype=int), LABELS, split=split).to_dict()


def _mark_not_learned(results, keys):
    """Rewrite the JSONL record of ``results`` so that the archs ``keys`` predicted the majority class."""
    from utils import arch_key

    path = str(results) + ".jsonl"
    records = [json.loads(line) for line in open(path)]
    for record in records:
        if arch_key(record["arch"]) in keys:
            verdict = _majority_verdict()
            record.update(primary_dev="matched", learned=False, not_learned_reason=verdict["reason"],
                          learning_by_scheme={record["scheme"]: {"matched": verdict}})
        else:
            record.update(primary_dev="matched", learned=True, not_learned_reason=None)
    with open(path, "w") as handle:
        handle.writelines(json.dumps(record) + "\n" for record in records)
    return records


def test_top_k_never_picks_an_arch_that_did_not_learn(tmp_path, supernet, predictor, caplog):  # noqa: F811
    import logging

    from utils import arch_key, read_arch_file

    base = search_args(tmp_path, supernet)
    assert search_run(base + ["--method", "Candidate"]) == 0
    archs = read_arch_file(tmp_path / "kd_ptq_6.cands")[:6]
    results = tmp_path / "out" / "subbert.results"
    results.parent.mkdir()
    ranked = sorted(_results(results, archs), key=lambda r: -r["best_acc"])
    failed = {arch_key(r["arch"]) for r in ranked[:2]}  # the two fittest predicted the majority class
    _mark_not_learned(results, failed)
    final = tmp_path / "kd_ptq_6.final.cands"
    top_k = ["--method", "TopK", "--top_k", "3", "--arch_perfs_file", str(results), "--output_file", str(final)]
    assert search_run(base + top_k) == 0
    assert read_arch_file(final) == [r["arch"] for r in ranked[2:5]]
    summary = json.load(open(tmp_path / "kd_ptq_6.final.learning.json"))
    assert summary["evaluated"] == 6 and summary["learned"] == 4 and summary["not_learned"] == 2
    assert summary["none_learned"] is False and summary["message"] is None
    assert [e["arch_key"] for e in summary["excluded"]] == [arch_key(r["arch"]) for r in ranked[:2]]
    assert summary["excluded"][0]["reasons"] == [_majority_verdict()["reason"]]

    # nothing learned: one warning line, the fittest are the finalists anyway, and the file says so
    _mark_not_learned(results, {arch_key(a) for a in archs})
    final.unlink()
    with caplog.at_level(logging.WARNING, logger="searcher"):
        assert search_run(base + top_k) == 0
    assert read_arch_file(final) == [r["arch"] for r in ranked[:3]]
    summary = json.load(open(tmp_path / "kd_ptq_6.final.learning.json"))
    assert summary["none_learned"] is True and summary["learned"] == 0 and summary["not_learned"] == 6
    message = ("NOTHING LEARNED: every fine-tune of search kd_ptq_6 (6 archs) predicted the majority class (accuracy "
               "37.0 = the majority-class rate of matched, n=100); its finalists are the fittest anyway, so the chain "
               "finishes, and no winner can be named")
    assert summary["message"] == message
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "LEARNED" in r.getMessage()] == [message]


def test_the_documented_thresholds_are_the_applied_ones():
    import os

    from evaluation import learning

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    text = open(os.path.join(root, "docs", "search-and-report.md"), encoding="utf-8").read()
    assert f"covers ≥ {100 * learning.ONE_CLASS_SHARE:.0f} % of the split" in text
    assert f"std ≤ {100 * learning.CONSTANT_STD_RATIO:.0f} % of the labels' std" in text
    assert f"Z = {learning.Z:g}" in text
