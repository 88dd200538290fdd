"""The robust statistics of protocol ``baf-latency-2``: the headline figure of one measurement, how
re-measurements combine, and which archs are suspect.

* ``headline``: an arch's round medians, each divided by the anchor's median of the same round
  (``--drift_correction anchor``) and scaled by the anchor's base latency; the headline is the
  median over rounds, so one slow round cannot move it, and a slowdown shared by arch and anchor
  (a slow period covering the whole chunk) cancels. ``round_spread_pct`` = (max - min) / median of
  the (corrected) round values.
* ``combine``: the figure of an arch measured n times: the measurement itself (n = 1), the mean
  (n = 2), the median (n >= 3). ``stable``: two of the measurements agree within ``stable_pct``.
* ``line_residuals``: a robust (Theil-Sen) straight line of latency against FFN size through every
  FFN line (``latency.lines.ffn_line``) of homogeneous archs; an arch's residual is its relative
  distance from it.
* ``needs_remeasure``: why an arch should be measured again (a large round spread, a large
  residual, or measurements that do not yet agree), or ``[]``.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from latency.lines import ffn_line
from utils import is_homogeneous


def headline(rounds_ms, anchor_rounds_ms=None, base_ms: float | None = None) -> dict:
    """The headline of one measurement from its round medians (and the anchor's, when corrected).

    Returns ``value_ms`` (the headline), ``round_values_ms`` (the corrected round values),
    ``round_spread_pct`` and ``reference_ratio`` (median over rounds of arch / anchor; ``None``
    without an anchor)."""
    rounds = np.asarray(rounds_ms, dtype=np.float64)
    if anchor_rounds_ms is not None:
        anchor = np.asarray(anchor_rounds_ms, dtype=np.float64)
        if anchor.shape != rounds.shape:
            raise ValueError(f"{len(rounds)} arch rounds but {len(anchor)} anchor rounds")
        ratios = rounds / anchor
        values = ratios * float(base_ms)
        ratio = float(np.median(ratios))
    else:
        values, ratio = rounds, None
    value = float(np.median(values))
    spread = float(100 * (values.max() - values.min()) / value) if len(values) > 1 else 0.0
    return {"value_ms": value, "round_values_ms": [float(v) for v in values], "round_spread_pct": spread,
            "reference_ratio": ratio}


def combine(measurements) -> float:
    """One figure from n measurements of an arch: itself, the mean of two, the median of three or more."""
    values = np.asarray(measurements, dtype=np.float64)
    if len(values) == 0:
        raise ValueError("no measurement to combine")
    return float(values.mean()) if len(values) == 2 else float(np.median(values))


def relative_difference(a: float, b: float) -> float:
    """|a - b| / mean(a, b), in percent."""
    return float(100 * abs(a - b) / ((a + b) / 2))


def stable(measurements, stable_pct: float) -> bool:
    """Two of the measurements agree within ``stable_pct`` (one measurement is never "stable")."""
    values = list(measurements)
    return any(relative_difference(values[i], values[j]) <= stable_pct
               for i in range(len(values)) for j in range(i + 1, len(values)))


def line_residuals(points: dict[str, tuple[dict, float]]) -> dict[str, float]:
    """``{arch_key: residual %}`` against a Theil-Sen line of ms vs FFN size, per line of
    homogeneous archs that differ only in FFN size (lines with fewer than 3 FFN sizes: no residual)."""
    from scipy.stats import theilslopes

    lines: dict[str, list[tuple[str, float, float]]] = defaultdict(list)
    for key, (arch, ms) in points.items():
        if is_homogeneous(arch):
            lines[ffn_line(arch)].append((key, float(arch["sample_intermediate_sizes"][0]), float(ms)))
    residuals = {}
    for members in lines.values():
        if len({ffn for _, ffn, _ in members}) < 3:
            continue
        x = np.asarray([ffn for _, ffn, _ in members])
        y = np.asarray([ms for _, _, ms in members])
        slope = theilslopes(y, x)[0]
        intercept = float(np.median(y - slope * x))  # robust to the outlier itself (scipy's is not)
        fit = intercept + slope * x
        for (key, _, _), measured, fitted in zip(members, y, fit):
            if fitted > 0:
                residuals[key] = float(100 * (measured / fitted - 1))
    return residuals


def residual_threshold(residuals: dict[str, float], floor_pct: float) -> float:
    """The residual beyond which an arch is suspect: ``floor_pct``, or 4 robust standard
    deviations of the table's residuals when the table is noisier than that."""
    if len(residuals) < 8:
        return floor_pct
    values = np.asarray(list(residuals.values()))
    sigma = 1.4826 * float(np.median(np.abs(values - np.median(values))))
    return max(floor_pct, 4 * sigma)


def needs_remeasure(measurements: list[float], round_spread_pct: float, residual_pct: float | None,
                    residual_limit_pct: float, max_round_spread_pct: float, stable_pct: float) -> list[str]:
    """The reasons to measure an arch again (``[]``: none). Once two measurements agree the arch
    is settled: a residual that survives re-measurement is the arch's own (a kernel switch)."""
    if len(measurements) >= 2:
        if stable(measurements, stable_pct):
            return []
        return [f"its {len(measurements)} measurements disagree ("
                + ", ".join(f"{value:.4g}" for value in measurements) + f" ms; need two within {stable_pct:g} %)"]
    reasons = []
    if round_spread_pct > max_round_spread_pct:
        reasons.append(f"round spread {round_spread_pct:.1f} % > {max_round_spread_pct:g} %")
    if residual_pct is not None and abs(residual_pct) > residual_limit_pct:
        reasons.append(f"residual {residual_pct:+.1f} % against its FFN line > {residual_limit_pct:.3g} %")
    return reasons
