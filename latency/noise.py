"""How noisy is a latency table? Two estimates that need no ground truth.

* ``second_difference_noise``: along the FFN axis latency is (nearly) linear, so for three
  neighbouring archs ``d2 = y[i-1] - 2 y[i] + y[i+1]`` is pure noise: with independent per-point
  errors e, ``d2`` has 6x their variance. ``median(|d2| / y) / sqrt(6)`` estimates the typical
  (median absolute) relative error of one point; ``sigma`` multiplies by 1.4826 for a Gaussian
  standard deviation. On the authors' tables this gives 2.3 % (int8) and 0.6 % (fp32).
* ``repeat_difference``: the same archs measured twice; the median relative difference.
"""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np

from latency.lines import ffn_line, ffn_size

SQRT6 = math.sqrt(6.0)


def second_difference_noise(pairs: list[tuple[dict, float]]) -> dict:
    """Noise per point from second differences along the FFN axis of ``[(arch, ms)]``.

    Only archs with one FFN size, on evenly spaced neighbours of their FFN line (``latency.lines``), count (the grid's step, per line).
    Returns ``median_abs_pct``, ``sigma_pct`` and ``triples`` (the number of second differences).
    """
    lines: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for arch, ms in pairs:
        ffn = ffn_size(arch)
        if ffn is not None:
            lines[ffn_line(arch)][ffn].append(float(ms))
    ratios = []
    for points in lines.values():
        sizes = sorted(points)
        values = {size: float(np.median(points[size])) for size in sizes}
        for left, mid, right in zip(sizes, sizes[1:], sizes[2:]):
            if mid - left == right - mid:
                ratios.append((values[left] - 2 * values[mid] + values[right]) / values[mid])
    if not ratios:
        return {"median_abs_pct": None, "sigma_pct": None, "triples": 0}
    median_abs = float(np.median(np.abs(ratios))) / SQRT6
    return {"median_abs_pct": 100 * median_abs, "sigma_pct": 100 * 1.4826 * median_abs, "triples": len(ratios)}


def repeat_difference(first: list[float], second: list[float]) -> dict:
    """Relative difference of two measurements of the same archs: ``|a - b| / mean(a, b)``."""
    a, b = np.asarray(first, dtype=np.float64), np.asarray(second, dtype=np.float64)
    rel = np.abs(a - b) / ((a + b) / 2)
    return {"median_pct": float(100 * np.median(rel)), "p90_pct": float(100 * np.percentile(rel, 90)),
            "max_pct": float(100 * rel.max()), "archs": int(len(rel))}
