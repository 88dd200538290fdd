"""Did a fine-tune learn? One verdict per (fine-tune, scheme, dev split), computed where the dev
split is scored (``evaluation.finetune.evaluate``) and stored in the record.

The rule: a fine-tune **did not learn** when

* classification: its predictions are (almost) one class -- the most-predicted class covers at
  least ``ONE_CLASS_SHARE`` (95 %) of the split, and more than the majority-class rate plus its noise
  (so a task whose labels are themselves 95 % one class is judged by its score alone) -- or its
  primary metric is within noise of what a constant predictor scores on that split:

  - accuracy: the majority-class rate ``m``; noise ``Z * sqrt(m (1 - m) / n)`` (the binomial
    spread of an accuracy of ``m`` on ``n`` examples, ``Z`` = 1.96: one-sided 97.5 %);
  - a correlation-like metric (CoLA's Matthews correlation): a constant predictor scores 0; noise
    ``Z / sqrt(n)`` (the spread of a correlation of unrelated variables);
  - any other metric (an F1): the best score of a constant prediction of one class, computed with
    the task's own metric; noise as for a proportion of that size;

* regression (STS-B): its predictions are (almost) constant -- their std at most
  ``CONSTANT_STD_RATIO`` (1 %) of the labels' std: a collapsed output whose correlation is float
  noise; deliberately tight, since a correlation does not depend on the scale and a model whose
  scores vary little but rank well has learned -- or the correlation is within noise of 0
  (``Z / sqrt(n)``).

"Within noise" includes equal: a score at or below ``constant score + noise`` did not learn.

A record (``evaluation.candidate.evaluate_candidate``) holds ``learning_by_scheme`` ({scheme: {split:
verdict}}) and, for its fitness scheme on its primary split, ``learned`` and ``not_learned_reason``.
Records from before this verdict have neither: ``learned(record)`` is then None (unknown), which every
consumer treats as learned.
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter

import numpy as np

from glue.metrics import compute_metrics, primary_name

ONE_CLASS_SHARE = 0.95
CONSTANT_STD_RATIO = 0.01
Z = 1.96
CORRELATIONS = ("mcc", "corr", "pearson", "spearman")  # a constant predictor scores 0
METRIC_WORDS = {"acc": "accuracy", "mcc": "MCC", "corr": "correlation", "f1": "F1", "acc_and_f1": "acc-and-F1"}
KINDS = {"majority_class": "predicted the majority class", "one_class": "predicted (almost) one class",
         "within_noise": "scored within noise of a constant predictor", "constant": "predicted a constant"}


@dataclasses.dataclass(frozen=True)
class LearningVerdict:
    """Whether one fine-tune learned, and the figures the rule used (metric values as fractions)."""

    learned: bool
    kind: str | None  # why not: one of KINDS; None when it learned
    metric: str  # the primary metric judged (acc, mcc, corr, ...)
    score: float  # its value
    constant_score: float  # what a constant predictor scores on the split (acc: the majority-class rate)
    noise: float  # Z x the constant score's spread at n
    n: int
    majority_rate: float | None = None  # classification: share of the most frequent label
    top_class: str | None = None  # classification: the most-predicted class
    top_class_share: float | None = None  # ... and its share of the predictions
    top_class_is_majority: bool | None = None
    prediction_std_ratio: float | None = None  # regression: std(predictions) / std(labels)
    split: str | None = None

    @property
    def threshold(self) -> float:
        """At or below it the score is within noise of the constant predictor."""
        return self.constant_score + self.noise

    @property
    def reason(self) -> str | None:
        """One line saying why it did not learn (None when it learned)."""
        if self.learned:
            return None
        where = f"of {self.split}" if self.split else "of the dev split"
        score = f"{METRIC_WORDS.get(self.metric, self.metric)} {_fmt(self.metric, self.score)}"
        if self.kind == "constant":
            return (f"predicted an (almost) constant score: std {100 * self.prediction_std_ratio:.1f} % of the "
                    f"labels' ({score}, n={self.n})")
        if self.kind in ("majority_class", "one_class"):
            who = "the majority class" if self.kind == "majority_class" else f"class {self.top_class}"
            share = "every example" if self.top_class_share >= 1 else f"{100 * self.top_class_share:.1f} % of the examples"
            rate = _fmt("acc", self.majority_rate)
            if self.metric == "acc" and abs(self.score - self.majority_rate) < 0.5 / max(self.n, 1):
                return f"predicted {who} for {share} ({score} = the majority-class rate {where}, n={self.n})"
            return f"predicted {who} for {share} ({score}; the majority-class rate {where} is {rate}, n={self.n})"
        baseline = (f"the majority-class rate {where}, {_fmt(self.metric, self.constant_score)}"
                    if self.metric == "acc" else f"a constant predictor's {_fmt(self.metric, self.constant_score)}")
        return (f"{score} is within noise of {baseline} (at most {_fmt(self.metric, self.threshold)} = "
                f"{_fmt(self.metric, self.constant_score)} + {_fmt(self.metric, self.noise)} at n={self.n})")

    def to_dict(self) -> dict:
        return dict(dataclasses.asdict(self), threshold=self.threshold, reason=self.reason)

    @classmethod
    def from_dict(cls, data: dict) -> "LearningVerdict":
        fields = {field.name for field in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in fields})


def _fmt(metric: str, value: float) -> str:
    """Accuracies and F1 in points (37.0), correlations as they are (0.021)."""
    return f"{value:.3f}" if metric in CORRELATIONS else f"{100 * value:.1f}"


def _proportion_noise(rate: float, n: int) -> float:
    return Z * math.sqrt(max(rate * (1 - rate), 0.0) / max(n, 1))


def judge(task, predictions, labels, score: float | None = None, split: str | None = None) -> LearningVerdict:
    """The verdict on one scored split: ``task`` a ``glue.tasks.TaskSpec``; ``predictions`` class ids
    (scores for regression) and ``labels`` in the same order; ``score`` the primary metric (computed
    when not given)."""
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    n = int(labels.size)
    metric = primary_name(task.name)
    if score is None:
        score = compute_metrics(task.name, predictions, labels)[metric]
    score = float(score)
    if task.is_regression:
        label_std = float(np.std(labels))
        ratio = float(np.std(predictions)) / label_std if label_std > 0 else 0.0
        noise = Z / math.sqrt(max(n, 1))
        kind = "constant" if ratio <= CONSTANT_STD_RATIO else ("within_noise" if score <= noise else None)
        return LearningVerdict(kind is None, kind, metric, score, 0.0, noise, n, prediction_std_ratio=ratio,
                               split=split)
    classes = np.arange(task.num_labels)
    label_counts = np.bincount(labels.astype(np.int64), minlength=len(classes))
    predicted_counts = np.bincount(predictions.astype(np.int64), minlength=len(classes))
    majority = float(label_counts.max()) / max(n, 1)
    top = int(predicted_counts.argmax())
    share = float(predicted_counts[top]) / max(n, 1)
    if metric == "acc":
        constant, noise = majority, _proportion_noise(majority, n)
    elif metric in CORRELATIONS:
        constant, noise = 0.0, Z / math.sqrt(max(n, 1))
    else:  # the best one-class prediction, scored with the task's own metric
        constant = max(compute_metrics(task.name, np.full(n, c), labels)[metric] for c in classes)
        noise = _proportion_noise(constant, n)
    is_majority = bool(label_counts[top] == label_counts.max())
    if share >= max(ONE_CLASS_SHARE, majority + _proportion_noise(majority, n)):
        kind = "majority_class" if is_majority else "one_class"
    elif score <= constant + noise:
        kind = "within_noise"
    else:
        kind = None
    return LearningVerdict(kind is None, kind, metric, score, float(constant), noise, n, majority_rate=majority,
                           top_class=task.labels[top], top_class_share=share, top_class_is_majority=is_majority,
                           split=split)


# --------------------------------------------------------------------------------------
# The verdict in a record
# --------------------------------------------------------------------------------------


def split_verdicts(results: dict) -> dict[str, dict]:
    """``{split: verdict dict}`` of ``{split: EvalResult}``, each verdict naming its split."""
    return {name: dataclasses.replace(result.verdict, split=name).to_dict()
            for name, result in results.items() if result.verdict is not None}


def set_learned(record: dict) -> dict:
    """``learned`` / ``not_learned_reason`` of the record's fitness scheme on its primary split, read
    from ``learning_by_scheme`` (which ``evaluate_candidate`` fills)."""
    verdict = (record.get("learning_by_scheme") or {}).get(record["scheme"], {}).get(record["primary_dev"])
    record["learned"] = None if verdict is None else bool(verdict["learned"])
    record["not_learned_reason"] = None if verdict is None else verdict.get("reason")
    return record


def verdict_of(record: dict, scheme: str | None = None, split: str | None = None) -> dict | None:
    """The verdict dict of ``record`` scored with ``scheme`` (default: its fitness scheme) on ``split``
    (default: its primary split); None for a record from before the verdict."""
    scheme = scheme or record.get("scheme")
    split = split or record.get("primary_dev")
    by_split = (record.get("learning_by_scheme") or {}).get(scheme) or {}
    if split in by_split:
        return by_split[split]
    return None


def learned(record: dict, scheme: str | None = None, split: str | None = None) -> bool | None:
    """True / False, or None (unknown: a record from before the verdict, or a scheme not judged)."""
    if scheme is None and split is None and "learned" in record:
        return record["learned"]
    verdict = verdict_of(record, scheme, split)
    return None if verdict is None else bool(verdict["learned"])


def did_not_learn(record: dict, scheme: str | None = None, split: str | None = None) -> bool:
    """Known not to have learned (unknown counts as learned)."""
    return learned(record, scheme, split) is False


def not_learned_reason(record: dict, scheme: str | None = None, split: str | None = None) -> str | None:
    if scheme is None and split is None and record.get("not_learned_reason"):
        return record["not_learned_reason"]
    verdict = verdict_of(record, scheme, split)
    return None if verdict is None else verdict.get("reason")


def kinds_text(verdicts: list[dict]) -> str:
    """How many of ``verdicts`` did what: "2 predicted the majority class, 1 scored within noise of a
    constant predictor"."""
    kinds = Counter(v.get("kind") for v in verdicts)
    return ", ".join(f"{count} {KINDS.get(kind, 'did not learn')}" for kind, count in kinds.most_common())


def describe(verdicts: list[dict]) -> str:
    """What a group of not-learned verdicts (dicts) share, in words: "predicted the majority class
    (accuracy 37.0 = the majority-class rate of matched, n=300)" when they all did that, else how many
    did what."""
    if not verdicts:
        return "learned"
    if any("metric" not in v for v in verdicts):  # a bare learned=False (no figures recorded)
        return f"did not learn ({verdicts[0].get('reason') or 'no reason recorded'})"
    if len(Counter(v["kind"] for v in verdicts)) > 1:
        return f"did not learn ({kinds_text(verdicts)})"
    first = verdicts[0]
    scores = sorted(v["score"] for v in verdicts)
    metric = first["metric"]
    score = _fmt(metric, scores[0]) if scores[0] == scores[-1] else f"{_fmt(metric, scores[0])} to {_fmt(metric, scores[-1])}"
    score = f"{METRIC_WORDS.get(metric, metric)} {score}"
    where = f"of {first['split']}" if first.get("split") else "of the dev split"
    kind = first["kind"]
    if kind in ("majority_class", "one_class"):
        rate = first["majority_rate"]
        exact = metric == "acc" and all(abs(v["score"] - rate) < 0.5 / max(v["n"], 1) for v in verdicts)
        what = "predicted the majority class" if kind == "majority_class" else "predicted (almost) one class"
        if exact:
            return f"{what} ({score} = the majority-class rate {where}, n={first['n']})"
        return f"{what} ({score}; the majority-class rate {where} is {_fmt('acc', rate)}, n={first['n']})"
    if kind == "constant":
        return f"predicted an (almost) constant score ({score}, n={first['n']})"
    baseline = (f"the majority-class rate {where}, {_fmt(metric, first['constant_score'])}" if metric == "acc"
                else f"a constant predictor's {_fmt(metric, first['constant_score'])}")
    return (f"scored within noise of {baseline} ({score}; at most {_fmt(metric, first['threshold'])} is noise at "
            f"n={first['n']})")


def failed_archs(fitness_file: str, task: str | None = None, recipe: str | None = None) -> dict[str, list[dict]]:
    """``{arch_key: [verdict dicts]}`` of the archs none of whose fine-tunes (of ``task``; of the recipe
    ``recipe``, a ``recipe_id``, when given: the search's candidates') learned, from the JSONL record
    ``evaluation.results.load_fitness`` reads for ``fitness_file``. An arch with a fine-tune that learned,
    or with no verdict (an older record, the original's text blocks), is not in it."""
    import os

    from evaluation.results import JSONL_NAME, RESULTS_NAME, record_recipe
    from utils import arch_key, read_jsonl

    jsonl = fitness_file if fitness_file.endswith(".jsonl") else os.path.join(os.path.dirname(fitness_file) or ".",
                                                                              JSONL_NAME)
    if not os.path.isfile(jsonl) or (jsonl != fitness_file and os.path.basename(fitness_file) != RESULTS_NAME):
        return {}
    verdicts: dict[str, list[dict | None]] = {}
    for record in read_jsonl(jsonl):
        if (task is None or record.get("task_name") == task) and (recipe is None or record_recipe(record) == recipe):
            verdict = None
            if did_not_learn(record):
                verdict = verdict_of(record) or {"learned": False, "reason": not_learned_reason(record)}
            verdicts.setdefault(arch_key(record["arch"]), []).append(verdict)
    return {key: found for key, found in verdicts.items() if all(v is not None for v in found)}
