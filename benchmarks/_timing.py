"""Shared timing helper for the benchmarks: interleaved repeats so that machine noise hits both
sides of a comparison alike; reports medians."""

from __future__ import annotations

import statistics
import time
from typing import Callable


def interleaved_medians(functions: dict[str, Callable[[], object]], repeats: int, warmup: int = 2) -> dict[str, float]:
    """Median seconds per call of each function, calls interleaved A, B, A, B, ..."""
    for _ in range(warmup):
        for function in functions.values():
            function()
    samples: dict[str, list[float]] = {name: [] for name in functions}
    for _ in range(repeats):
        for name, function in functions.items():
            start = time.perf_counter()
            function()
            samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in samples.items()}
