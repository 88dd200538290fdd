"""The latency protocol (SPEC section 6) and the one measurement loop every backend goes through.

Protocol: batch ``batch_size`` x ``seq_len`` tokens, ``threads`` intra-op threads (inter-op 1),
``warmup`` untimed forward passes, then ``runs`` timed ones; each run is timed with
``time.perf_counter`` (wall clock) and, alongside, ``time.thread_time`` (CPU time of the calling
thread). The Python garbage collector is off while timing and there is no sleep anywhere.
``timer`` picks which clock the headline statistics (``median_ms``, ``p10_ms``, ...) use: ``wall``
(default, what a user waits) or ``cpu`` (for single-thread runs on a machine shared with other
jobs: time spent descheduled does not count). CPU time does not remove everything other jobs do:
on a VM whose vCPUs share a physical core, or with caches flushed by the job that ran in between, a
run still takes longer. ``disturbed_runs`` counts the runs that were descheduled, and every record
carries the 1-minute load average, so a table says how quiet the machine was.

``rounds > 1`` interleaves a chunk of ``interleave`` models (default 4 rounds over 8 archs): every
model is warmed up, then the chunk is visited ``rounds`` times, each visit doing one untimed refresh
run and ``runs / rounds`` timed runs, so a slow drift of the machine (another job starting on the
other core) is shared by the chunk instead of biasing one arch. On the shared development VM this
cut the second-difference noise of an int8 grid from 10.6 % to 4.2 % (BENCHMARKS.md).
"""

from __future__ import annotations

import dataclasses
import datetime
import gc
import os
import platform
import time
from typing import Callable, Sequence

import numpy as np

from utils import UserError

PROTOCOL_VERSION = "baf-latency-1"
TIMERS = ("wall", "cpu")
from quantize_utils import LATENCY_BACKENDS as BACKENDS  # the registry owns the names
# The original's input: every token is id 9333 (a plain word piece in the BERT uncased vocab).
ORIGINAL_TOKEN_ID = 9333


@dataclasses.dataclass(frozen=True)
class Protocol:
    """How one latency is measured; every field is written into every record."""

    warmup: int = 5
    runs: int = 20
    rounds: int = 4
    interleave: int = 8
    timer: str = "wall"
    threads: int = 1
    batch_size: int = 1
    seq_len: int = 128
    vocab_size: int = 30522
    max_position_embeddings: int = 512
    seed: int = 0

    def __post_init__(self):
        checks = (("--warmup", self.warmup, 0), ("--infer_cnt", self.runs, 1), ("--rounds", self.rounds, 1),
                  ("--interleave", self.interleave, 1), ("--threads", self.threads, 1),
                  ("--batch_size", self.batch_size, 1), ("--max_seq_length", self.seq_len, 1),
                  ("--vocab_size", self.vocab_size, 2))
        for flag, value, low in checks:
            if value < low:
                raise UserError(f"{flag} must be >= {low}, got {value}")
        if self.timer not in TIMERS:
            raise UserError(f"--timer: unknown timer {self.timer!r}; choose one of {', '.join(TIMERS)}")
        if self.timer == "cpu" and self.threads != 1:
            raise UserError("--timer cpu measures the calling thread only; it needs --threads 1")
        if self.rounds > self.runs:
            raise UserError(f"--rounds {self.rounds} is more than --infer_cnt {self.runs} timed runs")
        if self.seq_len > self.max_position_embeddings:
            raise UserError(f"--max_seq_length {self.seq_len} exceeds --max_position_embeddings "
                            f"{self.max_position_embeddings}")

    @property
    def token_id(self) -> int:
        """The input token: the original's id 9333, or the last id of a smaller (demo) vocab."""
        return ORIGINAL_TOKEN_ID if ORIGINAL_TOKEN_ID < self.vocab_size else self.vocab_size - 1

    def to_record(self) -> dict:
        record = dataclasses.asdict(self)
        record.update(protocol=PROTOCOL_VERSION, token_id=self.token_id, gc_during_timing="disabled",
                      clock_wall="time.perf_counter", clock_cpu="time.thread_time")
        return record


# --------------------------------------------------------------------------------------
# Environment
# --------------------------------------------------------------------------------------


def cpu_model() -> str:
    """The CPU model name (``/proc/cpuinfo`` on Linux, ``platform`` elsewhere)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def apply_threads(threads: int) -> None:
    """Pin torch's intra-op threads, and inter-op threads to 1 (settable once per process)."""
    import torch

    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set (or inter-op work started) in this process
        pass


def set_cpu_affinity(spec: str | None) -> list[int] | None:
    """``--cpu_affinity 0`` or ``0,1``: pin this process to those CPUs (as ``taskset`` does)."""
    if not spec:
        return None
    try:
        cpus = sorted({int(part) for part in spec.split(",") if part.strip()})
    except ValueError:
        raise UserError(f"--cpu_affinity: expected CPU ids like 0 or 0,1, got {spec!r}") from None
    if not hasattr(os, "sched_setaffinity"):
        raise UserError("--cpu_affinity is not supported on this platform")
    try:
        os.sched_setaffinity(0, cpus)
    except (OSError, ValueError) as err:
        raise UserError(f"--cpu_affinity {spec}: {err}") from None
    return cpus


def environment(backend: str) -> dict:
    """Machine and library versions recorded with every measurement."""
    import torch
    import transformers

    try:
        import onnxruntime
        ort_version = onnxruntime.__version__
    except ImportError:  # pragma: no cover - onnxruntime is in requirements.txt
        ort_version = None
    if backend == "ort_dynamic_int8":
        engine = "onnxruntime-cpu"
    elif backend == "torch_dynamic_int8":
        from quantize_utils import select_quantized_engine
        engine = select_quantized_engine()
    else:
        engine = None  # fp32 runs no quantized kernel
    affinity = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return {
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_affinity": affinity,
        "hostname": platform.node(),
        "platform": platform.platform(),
        "python_version": platform.python_version(),
        "torch_version": torch.__version__,
        "transformers_version": transformers.__version__,
        "onnxruntime_version": ort_version,
        "quant_engine": engine,
        "interop_threads": torch.get_num_interop_threads(),
    }


def load_average() -> float | None:
    """The 1-minute load average (how busy the machine was around a measurement)."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def utc_now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


# --------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------


def time_runs(run: Callable[[], object], count: int) -> tuple[list[float], list[float]]:
    """``count`` timed calls of ``run``; returns (wall ms, cpu ms) per call. GC is off meanwhile."""
    wall, cpu = [], []
    enabled = gc.isenabled()
    gc.disable()
    try:
        for _ in range(count):
            start_cpu = time.thread_time()
            start = time.perf_counter()
            run()
            end = time.perf_counter()
            end_cpu = time.thread_time()
            wall.append((end - start) * 1e3)
            cpu.append((end_cpu - start_cpu) * 1e3)
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
    wall_ms: list[float]
    cpu_ms: list[float]

    def statistics(self, timer: str) -> dict:
        """The record's timing fields: headline stats from ``timer``, both medians, the raw runs."""
        primary = self.wall_ms if timer == "wall" else self.cpu_ms
        stats = summarize(primary)
        wall, cpu = np.asarray(self.wall_ms), np.asarray(self.cpu_ms)
        # a run whose wall time clearly exceeds its CPU time was descheduled (another job had the CPU)
        disturbed = int(np.sum(wall > 1.05 * cpu + 0.05))
        stats.update(wall_median_ms=float(np.median(wall)), cpu_median_ms=float(np.median(cpu)),
                     disturbed_runs=disturbed, times_ms=[round(value, 4) for value in primary])
        return stats


def measure(runners: Sequence[Callable[[], object]], protocol: Protocol) -> list[Timing]:
    """Time every runner of a chunk with the protocol (interleaved when ``rounds > 1``)."""
    timings = [Timing([], []) for _ in runners]
    base, extra = divmod(protocol.runs, protocol.rounds)
    for round_index in range(protocol.rounds):
        count = base + (1 if round_index < extra else 0)
        for runner, timing in zip(runners, timings):
            warm = protocol.warmup if round_index == 0 else 1
            for _ in range(warm):
                runner()
            wall, cpu = time_runs(runner, count)
            timing.wall_ms.extend(wall)
            timing.cpu_ms.extend(cpu)
    return timings
