"""The predictor's data: one point per arch, the seeded 80/10/10 split, and the metrics a split is
scored with (RMSE, MAPD, Kendall tau, Spearman rho)."""

from __future__ import annotations

import dataclasses
import math
from collections import defaultdict

import numpy as np

from utils import UserError, get_logger

logger = get_logger("latency.predictor")

# fewer test archs than this measure nothing (a 30-arch table split 24/3/3 looked perfect on train)
MIN_TEST_ARCHS = 30


@dataclasses.dataclass
class Dataset:
    archs: list[dict]
    ms: np.ndarray
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray


def make_dataset(records: list[dict], seed: int) -> Dataset:
    """One point per arch (repeated archs: the median of their measurements), ordered by
    ``arch_key`` and split 80/10/10 by a seeded permutation, so the split depends only on the set
    of archs and the seed, not on the order of the table."""
    by_key: dict[str, list[float]] = defaultdict(list)
    archs: dict[str, dict] = {}
    for record in records:
        key = record["arch_key"]
        by_key[key].append(float(record["median_ms"]))
        archs.setdefault(key, record["arch"])
    repeated = sum(1 for values in by_key.values() if len(values) > 1)
    if repeated:
        logger.warning("%d archs appear more than once; each is one point at the median of its measurements", repeated)
    keys = sorted(by_key)
    n = len(keys)
    if n < 10:
        raise UserError(f"the latency table has {n} distinct archs; a train/validation/test split needs at least 10")
    order = np.random.default_rng(seed).permutation(n)
    n_train, n_val = int(0.8 * n), int(0.9 * n) - int(0.8 * n)
    return Dataset(archs=[archs[key] for key in keys], ms=np.asarray([np.median(by_key[k]) for k in keys]),
                   train=order[:n_train], val=order[n_train:n_train + n_val], test=order[n_train + n_val:])


def regression_metrics(measured: np.ndarray, predicted: np.ndarray) -> dict:
    """RMSE (ms), MAPD (%), Kendall tau and Spearman rho of predictions against measurements."""
    from scipy.stats import kendalltau, spearmanr

    measured, predicted = np.asarray(measured, np.float64), np.asarray(predicted, np.float64)
    ape = np.abs(predicted - measured) / measured
    tau = kendalltau(measured, predicted)[0] if len(measured) > 1 else float("nan")
    rho = spearmanr(measured, predicted)[0] if len(measured) > 1 else float("nan")
    return {"rmse_ms": float(np.sqrt(np.mean((predicted - measured) ** 2))), "mapd_pct": float(100 * ape.mean()),
            "median_ape_pct": float(100 * np.median(ape)), "max_ape_pct": float(100 * ape.max()),
            "kendall_tau": float(tau), "spearman_rho": float(rho), "n": int(len(measured))}


def split_warning(metrics: dict) -> str | None:
    """One line when the test split is too small to measure the predictor (``None`` otherwise)."""
    n_train, n_val, n_test = metrics["split_sizes"]
    if n_test >= MIN_TEST_ARCHS:
        return None
    needed = math.ceil(MIN_TEST_ARCHS / 0.1)
    return (f"the test split has only {n_test} archs (split {n_train}/{n_val}/{n_test} of {metrics['n_archs']}; MAPD "
            f"train {metrics['train_mapd_pct']:.2f} %, val {metrics['val_mapd_pct']:.2f} %, test "
            f"{metrics['test_mapd_pct']:.2f} %): too few to measure the predictor; a table of at least {needed} archs "
            f"gives {MIN_TEST_ARCHS} test archs")
