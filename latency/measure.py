"""Timing: the clocks, the timed runs of one model, their statistics, and the two ways archs are
timed -- ``time_pairs`` (protocol ``baf-latency-3``: an arch and its reference alternating, pair by
pair) and ``measure`` (protocol ``baf-latency-2``: rounds over a chunk of models).

Each run is timed with ``time.perf_counter`` (wall clock) and ``time.thread_time`` (CPU time of the
calling thread); the protocol's ``timer`` picks which clock the headline uses. ``disturbed_runs``
counts the runs that were descheduled (wall clearly above CPU time). The garbage collector is off
while timing. The protocol itself (settings, defaults, versions) is ``latency.protocol``; the
machine and its timing slot ``latency.environment`` (both re-exported here).
"""

from __future__ import annotations

import dataclasses
import gc
import time
from typing import Callable, Sequence

import numpy as np

from latency.environment import (  # noqa: F401 (re-exported: where a measurement is made)
    ISA_FLAGS,
    TIMING_LOCK_MODES,
    apply_threads,
    cpu_flags,
    cpu_model,
    environment,
    load_average,
    set_cpu_affinity,
    timing_slot,
    timing_slot_dir,
    utc_now,
    warn_if_busy,
)
from latency.protocol import (  # noqa: F401 (re-exported: how a measurement is made)
    DRIFT_CORRECTIONS,
    ORIGINAL_TOKEN_ID,
    PROTOCOL_VERSION,
    TIMERS,
    Protocol,
)
from quantize_utils import LATENCY_BACKENDS as BACKENDS  # noqa: F401 (the registry owns the names)
from utils import UserError, get_logger  # noqa: F401 (UserError: tests match it here)

logger = get_logger("latency")

# the standard error of a median is ~1.2533 x that of a mean; 1.4826 x MAD estimates a Gaussian sigma
MEDIAN_SE_FACTOR = 1.2533 * 1.4826


class SystemClock:
    """The two clocks every run is timed with (tests substitute a synthetic clock)."""

    @staticmethod
    def wall() -> float:
        return time.perf_counter()

    @staticmethod
    def cpu() -> float:
        return time.thread_time()


CLOCK = SystemClock()


def _time_one(run: Callable[[], object], clock) -> tuple[float, float]:
    """One timed call: (wall ms, cpu ms)."""
    start_cpu = clock.cpu()
    start = clock.wall()
    run()
    end = clock.wall()
    end_cpu = clock.cpu()
    return (end - start) * 1e3, (end_cpu - start_cpu) * 1e3


def time_runs(run: Callable[[], object], count: int) -> tuple[list[float], list[float]]:
    """``count`` timed calls of ``run``; returns (wall ms, cpu ms) per call. GC is off meanwhile."""
    clock = CLOCK
    wall, cpu = [], []
    enabled = gc.isenabled()
    gc.disable()
    try:
        for _ in range(count):
            one_wall, one_cpu = _time_one(run, clock)
            wall.append(one_wall)
            cpu.append(one_cpu)
    finally:
        if enabled:
            gc.enable()
    return wall, cpu


def summarize(times_ms: Sequence[float]) -> dict:
    """Median and spread of one arch's timed runs (ms)."""
    values = np.asarray(times_ms, dtype=np.float64)
    return {
        "median_ms": float(np.median(values)),
        "p10_ms": float(np.percentile(values, 10)),
        "p90_ms": float(np.percentile(values, 90)),
        "mean_ms": float(values.mean()),
        "std_ms": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
        "min_ms": float(values.min()),
    }


@dataclasses.dataclass
class Timing:
    """The timed runs of one model in one chunk, round by round."""

    round_wall_ms: list[list[float]] = dataclasses.field(default_factory=list)
    round_cpu_ms: list[list[float]] = dataclasses.field(default_factory=list)
    seconds: float = 0.0  # wall time spent running this model (warm-up and refresh runs included)

    @property
    def wall_ms(self) -> list[float]:
        return [value for values in self.round_wall_ms for value in values]

    @property
    def cpu_ms(self) -> list[float]:
        return [value for values in self.round_cpu_ms for value in values]

    def rounds(self, timer: str) -> list[list[float]]:
        return self.round_wall_ms if timer == "wall" else self.round_cpu_ms

    def round_medians(self, timer: str) -> np.ndarray:
        """The median of each round's timed runs (ms), in the ``timer`` clock."""
        return np.asarray([np.median(values) for values in self.rounds(timer)], dtype=np.float64)

    def statistics(self, timer: str) -> dict:
        """Statistics over all timed runs: ``raw_median_ms`` (the median of every timed run, the
        protocol-1 headline), p10/p90/mean/std/min, both clocks' medians, the raw runs."""
        primary = self.wall_ms if timer == "wall" else self.cpu_ms
        stats = summarize(primary)
        stats["raw_median_ms"] = stats.pop("median_ms")
        wall, cpu = np.asarray(self.wall_ms), np.asarray(self.cpu_ms)
        # a run whose wall time clearly exceeds its CPU time was descheduled (another job had the CPU)
        disturbed = int(np.sum(wall > 1.05 * cpu + 0.05))
        stats.update(wall_median_ms=float(np.median(wall)), cpu_median_ms=float(np.median(cpu)),
                     disturbed_runs=disturbed, times_ms=[round(value, 4) for value in primary],
                     round_medians_ms=[round(float(v), 5) for v in self.round_medians(timer)],
                     timing_s=round(self.seconds, 4))
        return stats


def measure(runners: Sequence[Callable[[], object]], protocol: Protocol,
            warm: Sequence[bool] | None = None) -> list[Timing]:
    """Time every runner of a chunk with the protocol: ``protocol.rounds`` rounds, each visiting
    every runner (one untimed refresh run, then its share of the timed runs); the order rotates by
    one place per round. A runner is warmed up with ``protocol.warmup`` runs before its first
    round unless ``warm`` says it already was (the anchor, kept for the whole run)."""
    count = len(runners)
    warm = list(warm) if warm is not None else [False] * count
    timings = [Timing() for _ in runners]
    clock = CLOCK
    for round_index, runs in enumerate(protocol.runs_per_round):
        for step in range(count):
            index = (step + round_index) % count
            runner, timing = runners[index], timings[index]
            start = clock.wall()
            # warm-up before the first round; later (and for a model already warm) one refresh run,
            # because the caches hold the model visited just before
            untimed = (1 if warm[index] else protocol.warmup) if round_index == 0 else 1
            for _ in range(untimed):
                runner()
            wall, cpu = time_runs(runner, runs)
            timing.round_wall_ms.append(wall)
            timing.round_cpu_ms.append(cpu)
            timing.seconds += clock.wall() - start
    return timings


# --------------------------------------------------------------------------------------
# Paired runs (protocol baf-latency-3)
# --------------------------------------------------------------------------------------


@dataclasses.dataclass
class PairTiming:
    """The timed runs of one arch and of its reference, pair by pair (ms, both clocks)."""

    arch_wall_ms: list[float] = dataclasses.field(default_factory=list)
    arch_cpu_ms: list[float] = dataclasses.field(default_factory=list)
    ref_wall_ms: list[float] = dataclasses.field(default_factory=list)
    ref_cpu_ms: list[float] = dataclasses.field(default_factory=list)
    seconds: float = 0.0  # wall time of the whole measurement (warm-up included)

    def arch_ms(self, timer: str) -> np.ndarray:
        return np.asarray(self.arch_wall_ms if timer == "wall" else self.arch_cpu_ms, dtype=np.float64)

    def ref_ms(self, timer: str) -> np.ndarray:
        return np.asarray(self.ref_wall_ms if timer == "wall" else self.ref_cpu_ms, dtype=np.float64)

    def ratios(self, timer: str) -> np.ndarray:
        """arch / reference of each pair."""
        return self.arch_ms(timer) / self.ref_ms(timer)

    def statistics(self, timer: str, base_ms: float) -> dict:
        """The record fields of one paired measurement: ``median_ms`` = median of the per-pair ratios
        x ``base_ms`` (the reference's latency at the table's start: the table's unit), the ratio and
        its spread, and the raw figures of arch and reference in the ``timer`` clock."""
        return paired_statistics(self.arch_ms(timer), self.ref_ms(timer), base_ms, self.arch_wall_ms,
                                 self.arch_cpu_ms, self.seconds)


def paired_statistics(arch_ms, ref_ms, base_ms: float, arch_wall_ms=None, arch_cpu_ms=None,
                      seconds: float = 0.0) -> dict:
    """See ``PairTiming.statistics`` (also used on the first ``k`` pairs of a record by the benchmark)."""
    arch, ref = np.asarray(arch_ms, dtype=np.float64), np.asarray(ref_ms, dtype=np.float64)
    ratios = arch / ref
    ratio = float(np.median(ratios))
    q25, q75 = np.percentile(ratios, [25, 75])
    mad = float(np.median(np.abs(ratios - ratio)))
    stats = summarize(arch)
    stats["raw_median_ms"] = stats.pop("median_ms")
    reference_raw = float(np.median(ref))
    stats.update(
        median_ms=ratio * float(base_ms), ratio=ratio, pairs_timed=int(len(ratios)),
        ratio_spread_pct=float(100 * (q75 - q25) / ratio),
        ratio_se_pct=float(100 * MEDIAN_SE_FACTOR * mad / np.sqrt(len(ratios)) / ratio),
        pair_ratios=[round(float(value), 6) for value in ratios], times_ms=[round(float(v), 4) for v in arch],
        reference_times_ms=[round(float(v), 4) for v in ref], reference_raw_ms=reference_raw,
        reference_base_ms=float(base_ms), reference_slowdown_pct=float(100 * (reference_raw / float(base_ms) - 1)),
        timing_s=round(seconds, 4))
    if arch_wall_ms is not None and arch_cpu_ms is not None:
        wall, cpu = np.asarray(arch_wall_ms), np.asarray(arch_cpu_ms)
        stats.update(wall_median_ms=float(np.median(wall)), cpu_median_ms=float(np.median(cpu)),
                     disturbed_runs=int(np.sum(wall > 1.05 * cpu + 0.05)))
    return stats


def time_pairs(arch_run: Callable[[], object], ref_run: Callable[[], object], pairs: int, warmup: int) -> PairTiming:
    """``warmup`` untimed runs of the arch, then ``pairs`` pairs (arch, reference), the order
    alternating pair by pair (A R, R A, A R, ...) so that neither side always runs first. The
    reference is already warm (built once for the whole run). GC is off while timing."""
    clock = CLOCK
    timing = PairTiming()
    start = clock.wall()
    for _ in range(warmup):
        arch_run()
    enabled = gc.isenabled()
    gc.disable()
    try:
        for index in range(pairs):
            for which in (("arch", "ref") if index % 2 == 0 else ("ref", "arch")):
                wall, cpu = _time_one(arch_run if which == "arch" else ref_run, clock)
                getattr(timing, f"{which}_wall_ms").append(wall)
                getattr(timing, f"{which}_cpu_ms").append(cpu)
    finally:
        if enabled:
            gc.enable()
    timing.seconds = clock.wall() - start
    return timing
