"""GLUE metrics from scikit-learn / scipy, and each task's primary metric (the search fitness).

Primary metrics follow the original evaluator: accuracy for every classification task except
CoLA (Matthews correlation); STS-B uses ``corr = (pearson + spearman) / 2``. MRPC and QQP also
report F1 (the GLUE leaderboard's figure) without it becoming the fitness.
"""

from __future__ import annotations

import math

import numpy as np

PRIMARY = {"cola": "mcc", "sts-b": "corr"}


def _finite(value: float) -> float:
    """Correlations of a constant prediction are undefined; score them 0 (no signal)."""
    value = float(value)
    return value if math.isfinite(value) else 0.0


def compute_metrics(task_name: str, predictions, labels) -> dict[str, float]:
    """``predictions``: class ids (or scores for STS-B); ``labels``: the same kind."""
    from scipy.stats import pearsonr, spearmanr
    from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

    predictions, labels = np.asarray(predictions), np.asarray(labels)
    if predictions.shape != labels.shape or predictions.size == 0:
        raise ValueError(f"compute_metrics: {predictions.shape} predictions for {labels.shape} labels")
    if task_name == "sts-b":
        if np.ptp(predictions) == 0 or np.ptp(labels) == 0:
            pearson = spearman = 0.0
        else:
            pearson = _finite(pearsonr(predictions, labels)[0])
            spearman = _finite(spearmanr(predictions, labels)[0])
        return {"pearson": pearson, "spearman": spearman, "corr": (pearson + spearman) / 2}
    metrics = {"acc": float(accuracy_score(labels, predictions))}
    if task_name == "cola":
        metrics["mcc"] = _finite(matthews_corrcoef(labels, predictions))
    if task_name in ("mrpc", "qqp"):
        metrics["f1"] = float(f1_score(labels, predictions, zero_division=0))
        metrics["acc_and_f1"] = (metrics["acc"] + metrics["f1"]) / 2
    return metrics


def primary_name(task_name: str) -> str:
    """The name of the task's primary metric (``acc``, ``mcc`` or ``corr``)."""
    return PRIMARY.get(task_name, "acc")


def primary_metric(task_name: str, metrics: dict[str, float]) -> float:
    return metrics[primary_name(task_name)]
