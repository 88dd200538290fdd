"""GLUE readers (real samples from shared/data and GLUE-layout fixtures), bad input, metrics."""

import collections
import os

import numpy as np
import pytest

from glue import TASKS, compute_metrics, get_task, primary_metric, read_split, read_tsv_examples
from utils import UserError

SHARED = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "glue")
MNLI_MATCHED = os.path.join(SHARED, "MNLI", "textfooler_mnli_matched_1k.tsv")
MNLI_MISMATCHED = os.path.join(SHARED, "MNLI", "textfooler_mnli_mismatched_1k.tsv")
STSB = os.path.join(SHARED, "STS-B")


def need(path):
    if not os.path.exists(path):
        pytest.skip(f"{path} not available")


# --------------------------------------------------------------------------------------
# real samples
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("path, counts, premise, hypothesis", [
    (MNLI_MATCHED, {"entailment": 373, "neutral": 311, "contradiction": 316},
     "In Temple Bar , the bookshop at the Gallery of Photography", "There is a bookshop at the gallery ."),
    (MNLI_MISMATCHED, {"entailment": 346, "neutral": 319, "contradiction": 335},
     "You ca n't take it with you", "You are not able to bring it with you ."),
])
def test_headerless_mnli_samples(path, counts, premise, hypothesis):
    need(path)
    examples = read_tsv_examples("mnli", path)
    assert collections.Counter(e.label for e in examples) == counts  # SOURCES.md label counts
    first = examples[0]
    assert first.label == "entailment"
    assert first.text_a.startswith(premise) and first.text_b == hypothesis


def test_full_stsb_dev_and_train():
    need(STSB)
    dev = read_split("sts-b", STSB, "dev")
    train = read_split("sts-b", STSB, "train")
    assert (len(train), len(dev)) == (5749, 1500)  # the GLUE counts
    assert dev[0].text_a == "A man with a hard hat is dancing."
    assert dev[0].text_b == "A man wearing a hard hat is dancing."
    assert dev[0].label == 5.0 and dev[1].label == 4.75
    scores = np.array([e.label for e in train])
    assert scores.min() == 0.0 and scores.max() == 5.0
    assert get_task("sts-b").num_labels == 1


def test_max_examples_truncates():
    need(STSB)
    assert len(read_split("sts-b", STSB, "train", max_examples=7)) == 7


# --------------------------------------------------------------------------------------
# GLUE-layout fixtures for every task
# --------------------------------------------------------------------------------------

FIXTURES = {
    # task: (file name, text lines, expected (text_a, text_b, label) of the first example)
    "cola": ("dev.tsv", ["gj04\t1\t\tThe sailors rode the breeze clear of the rocks.",
                         "gj04\t0\t*\tThe more we study verbs, the crazier they get get."],
             ("The sailors rode the breeze clear of the rocks.", None, "1")),
    "sst-2": ("dev.tsv", ["sentence\tlabel", "it 's a charming and often affecting journey . \t1"],
              ("it 's a charming and often affecting journey . ", None, "1")),
    "mrpc": ("dev.tsv", ["Quality\t#1 ID\t#2 ID\t#1 String\t#2 String",
                         "1\t1355540\t1355592\tHe said the foodservice pie business\tThe foodservice pie business"],
             ("He said the foodservice pie business", "The foodservice pie business", "1")),
    "qqp": ("dev.tsv", ["id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate",
                        "201359\t303345\t303346\tWhy are African-Americans so beautiful?\tWhy are hispanics so beautiful?\t0",
                        "broken row"],
            ("Why are African-Americans so beautiful?", "Why are hispanics so beautiful?", "0")),
    "qnli": ("dev.tsv", ["index\tquestion\tsentence\tlabel",
                         "0\tWhat came into force after the new constitution was herald?\tAs of that day, the new "
                         "constitution heralding the Second Republic came into force.\tentailment"],
             ("What came into force after the new constitution was herald?",
              "As of that day, the new constitution heralding the Second Republic came into force.", "entailment")),
    "rte": ("dev.tsv", ["index\tsentence1\tsentence2\tlabel",
                        "0\tDana Reeve died of lung cancer.\tChristopher Reeve had an accident.\tnot_entailment"],
            ("Dana Reeve died of lung cancer.", "Christopher Reeve had an accident.", "not_entailment")),
    "wnli": ("dev.tsv", ["index\tsentence1\tsentence2\tlabel",
                         "0\tThe drain is clogged with hair. It has to be cleaned.\tThe hair has to be cleaned.\t0"],
             ("The drain is clogged with hair. It has to be cleaned.", "The hair has to be cleaned.", "0")),
    "sts-b": ("dev.tsv", ["index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore",
                          "0\tmain-captions\tMSRvid\t2012test\t0000\tnone\tnone\tA man is dancing.\tA man dances.\t4.750"],
              ("A man is dancing.", "A man dances.", 4.75)),
    "mnli": ("dev_matched.tsv", [
        "index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\tsentence1_parse\t"
        "sentence2_parse\tsentence1\tsentence2\tlabel1\tlabel2\tlabel3\tlabel4\tlabel5\tgold_label",
        "0\t63735\t63735n\tslate\t( ( The ) )\t( ( The ) )\t(ROOT)\t(ROOT)\tThe new rights are nice enough\t"
        "Everyone really likes the newest benefits \tneutral\tentailment\tneutral\tneutral\tneutral\tneutral"],
        ("The new rights are nice enough", "Everyone really likes the newest benefits ", "neutral")),
}


def _write(directory, name, lines):
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, name)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("task", sorted(FIXTURES))
def test_glue_layouts(tmp_path, task):
    name, lines, (text_a, text_b, label) = FIXTURES[task]
    path = _write(tmp_path, name, lines)
    examples = read_tsv_examples(task, path)
    assert (examples[0].text_a, examples[0].text_b, examples[0].label) == (text_a, text_b, label)
    expected_count = sum(1 for line in lines[1:] if "\t" in line) if task != "cola" else len(lines)
    assert len(examples) == expected_count  # QQP's malformed row is skipped, as GLUE's readers do


def test_every_task_has_a_fixture_and_the_original_table():
    assert set(FIXTURES) | {"mnli-mm"} == set(TASKS)
    table = {name: (t.hparams.max_seq_length, t.hparams.learning_rate, t.hparams.eval_step) for name, t in TASKS.items()}
    assert table["cola"] == (64, 1e-5, 50) and table["mnli"] == (128, 3e-5, 500)
    assert table["mrpc"] == (128, 2e-5, 10) and table["sst-2"] == (64, 2e-5, 100)
    assert table["sts-b"] == (128, 3e-5, 10) and table["qqp"] == (128, 2e-5, 500)
    assert table["qnli"] == (128, 2e-5, 500) and table["rte"] == (128, 2e-5, 10)


def test_mnli_directory_has_matched_and_mismatched(tmp_path):
    _, lines, _ = FIXTURES["mnli"]
    for name in ("train.tsv", "dev_matched.tsv", "dev_mismatched.tsv"):
        _write(tmp_path, name, lines)
    assert list(get_task("mnli").dev_files) == ["matched", "mismatched"]
    assert read_split("mnli", str(tmp_path), "mismatched")[0].label == "neutral"
    assert read_split("mnli-mm", str(tmp_path), "mismatched")[0].label == "neutral"


# --------------------------------------------------------------------------------------
# bad input: one line naming file and line
# --------------------------------------------------------------------------------------


def _error(call):
    with pytest.raises(UserError) as info:
        call()
    text = str(info.value)
    assert "\n" not in text
    return text


def test_missing_file_names_the_files_needed(tmp_path):
    text = _error(lambda: read_split("mnli", str(tmp_path), "matched"))
    assert "dev_matched.tsv: no such file" in text and "train.tsv" in text and "dev_mismatched.tsv" in text
    assert "no such directory" in _error(lambda: read_split("rte", str(tmp_path / "nope"), "dev"))


def test_missing_column_names_file_and_column(tmp_path):
    path = _write(tmp_path, "dev.tsv", ["index\tsentence1\tlabel", "0\tA man.\tentailment"])
    text = _error(lambda: read_tsv_examples("rte", path))
    assert text.startswith(f"{path}:1: header lacks column 'sentence2'")


def test_unknown_label_names_file_and_line(tmp_path):
    path = _write(tmp_path, "dev.tsv", ["index\tsentence1\tsentence2\tlabel", "0\ta\tb\tentailment",
                                        "1\ta\tb\tmaybe"])
    text = _error(lambda: read_tsv_examples("rte", path))
    assert text.startswith(f"{path}:3: unknown label 'maybe' for task rte")
    headerless = _write(tmp_path, "mm.tsv", ["neutral\ta\tb", "neutrall\ta\tb"])
    assert _error(lambda: read_tsv_examples("mnli", headerless)).startswith(f"{headerless}:2: unknown label 'neutrall'")


def test_short_row_and_bad_score(tmp_path):
    path = _write(tmp_path, "dev.tsv", ["index\tsentence1\tsentence2\tlabel", "0\tonly one column"])
    assert _error(lambda: read_tsv_examples("rte", path)).startswith(f"{path}:2: expected at least 4")
    name, lines, _ = FIXTURES["sts-b"]
    bad = _write(tmp_path, "sts.tsv", lines + [lines[1].replace("4.750", "high")])
    assert _error(lambda: read_tsv_examples("sts-b", bad)).startswith(f"{bad}:3: score 'high' is not a number")


@pytest.mark.parametrize("score", ["7.5", "-2", "nan", "inf", "5.0001"])
def test_a_score_outside_the_tasks_range_names_file_and_line(tmp_path, score):
    """STS-B scores are similarity ratings in [0, 5]; anything else (or NaN) is refused before training."""
    name, lines, _ = FIXTURES["sts-b"]
    bad = _write(tmp_path, "sts.tsv", lines + [lines[1].replace("4.750", score)])
    message = _error(lambda: read_tsv_examples("sts-b", bad))
    assert message == f"{bad}:3: score {score!r} is outside [0, 5] (task sts-b)"
    edges = _write(tmp_path, "edges.tsv", lines + [lines[1].replace("4.750", "0"), lines[1].replace("4.750", "5.000")])
    assert [example.label for example in read_tsv_examples("sts-b", edges)][-2:] == [0.0, 5.0]


def test_empty_file_and_unknown_task(tmp_path):
    path = _write(tmp_path, "dev.tsv", ["index\tsentence1\tsentence2\tlabel"])
    assert "no examples" in _error(lambda: read_tsv_examples("rte", path))
    assert "unknown task 'squad'" in _error(lambda: get_task("squad"))


# --------------------------------------------------------------------------------------
# metrics
# --------------------------------------------------------------------------------------


def test_metrics_match_hand_computed_values():
    labels = [1, 0, 1, 1, 0, 0]
    preds = [1, 0, 0, 1, 1, 0]
    metrics = compute_metrics("mrpc", preds, labels)
    assert metrics["acc"] == pytest.approx(4 / 6)
    assert metrics["f1"] == pytest.approx(2 / 3)  # tp 2, fp 1, fn 1
    assert primary_metric("mrpc", metrics) == metrics["acc"]
    cola = compute_metrics("cola", preds, labels)
    assert primary_metric("cola", cola) == pytest.approx(1 / 3)  # (tp*tn - fp*fn)/sqrt(...) = (4-1)/9
    sts = compute_metrics("sts-b", [0.1, 0.4, 0.2, 0.9], [0.0, 2.0, 1.0, 5.0])
    assert sts["spearman"] == pytest.approx(1.0)
    assert sts["corr"] == pytest.approx((sts["pearson"] + 1.0) / 2)
    assert 0.9 < sts["pearson"] < 1.0


def test_constant_predictions_score_zero_correlation():
    assert compute_metrics("sts-b", [2.0, 2.0, 2.0], [1.0, 2.0, 3.0])["corr"] == 0.0
    assert compute_metrics("cola", [1, 1, 1], [0, 1, 1])["mcc"] == 0.0
