"""The latency protocol (SPEC section 6) and the one measurement loop every backend goes through.

Protocol ``baf-latency-2``: batch ``batch_size`` x ``seq_len`` tokens, ``threads`` intra-op threads
(inter-op 1), ``warmup`` untimed forward passes, then ``runs`` timed ones; each run is timed with
``time.perf_counter`` (wall clock) and, alongside, ``time.thread_time`` (CPU time of the calling
thread). The Python garbage collector is off while timing and there is no sleep anywhere. ``timer``
picks which clock the headline figure uses: ``wall`` (default, what a user waits) or ``cpu`` (for
single-thread runs on a shared machine: time spent descheduled does not count; a job busy on a
neighbouring core still slows the runs). ``disturbed_runs`` counts the runs that were descheduled,
and every record carries the 1-minute load average, so a table says how quiet the machine was.

The runs of an arch are spread over ``rounds`` rounds (default 4): a chunk of ``interleave`` archs
(times every backend of the run) plus the run's *anchor* (the first reference arch, kept built for
the whole run) is warmed up, then visited ``rounds`` times, each visit one untimed refresh run and
``runs / rounds`` timed runs (the visiting order rotates from round to round). The headline figure
of an arch (``latency.robust``) is the median over rounds of its round medians, each divided by the
anchor's median in the same round and multiplied by the anchor's latency at the start of the table
(``--drift_correction anchor``): a slow round, or a slow period that covers the whole chunk, moves
arch and anchor alike and cancels. ``latency.session`` adds the reference checkpoints (drift) and
the re-measurement of suspect archs.

No two latency jobs time at once on one machine: ``timing_slot`` holds a machine-wide lock while a
stage measures (``--timing_lock wait`` queues behind the holder, ``fail`` stops with one line naming
it, ``off`` allows concurrent timing).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import gc
import os
import platform
import tempfile
import time
from typing import Callable, Sequence

import numpy as np

from quantize_utils import LATENCY_BACKENDS as BACKENDS  # noqa: F401 (the registry owns the names)
from utils import OutputLocked, UserError, get_logger, output_lock

logger = get_logger("latency")

PROTOCOL_VERSION = "baf-latency-2"
TIMERS = ("wall", "cpu")
DRIFT_CORRECTIONS = ("anchor", "none")
TIMING_LOCK_MODES = ("wait", "fail", "off")
# The original's input: every token is id 9333 (a plain word piece in the BERT uncased vocab).
ORIGINAL_TOKEN_ID = 9333
# CPU features that decide which int8/fp32 kernels run (recorded with every measurement).
ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_int8",
             "amx_bf16", "asimd", "sve")


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
    # drift control and re-measurement (latency.session)
    drift_correction: str = "anchor"
    reference_every: int = 50  # archs between two reference checkpoints
    max_round_spread_pct: float = 8.0  # a measurement whose rounds differ more is suspect
    max_residual_pct: float = 5.0  # an arch further from its FFN line's robust fit is suspect
    stable_pct: float = 2.0  # two measurements of an arch that agree this well settle it
    remeasure_cap: int = 2  # re-measurements per arch at most
    drift_threshold_pct: float = 5.0  # references drifting more flag the table

    def __post_init__(self):
        checks = (("--warmup", self.warmup, 0), ("--infer_cnt", self.runs, 1), ("--rounds", self.rounds, 1),
                  ("--interleave", self.interleave, 1), ("--threads", self.threads, 1),
                  ("--batch_size", self.batch_size, 1), ("--max_seq_length", self.seq_len, 1),
                  ("--vocab_size", self.vocab_size, 2), ("--reference_every", self.reference_every, 1),
                  ("--remeasure_cap", self.remeasure_cap, 0))
        for flag, value, low in checks:
            if value < low:
                raise UserError(f"{flag} must be >= {low}, got {value}")
        for flag, value in (("--max_round_spread_pct", self.max_round_spread_pct),
                            ("--max_residual_pct", self.max_residual_pct), ("--stable_pct", self.stable_pct),
                            ("--drift_threshold_pct", self.drift_threshold_pct)):
            if not value > 0:
                raise UserError(f"{flag} must be > 0, got {value}")
        if self.timer not in TIMERS:
            raise UserError(f"--timer: unknown timer {self.timer!r}; choose one of {', '.join(TIMERS)}")
        if self.drift_correction not in DRIFT_CORRECTIONS:
            raise UserError(f"--drift_correction: unknown mode {self.drift_correction!r}; "
                            f"choose one of {', '.join(DRIFT_CORRECTIONS)}")
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

    @property
    def runs_per_round(self) -> list[int]:
        base, extra = divmod(self.runs, self.rounds)
        return [base + (1 if index < extra else 0) for index in range(self.rounds)]

    def to_record(self) -> dict:
        record = dataclasses.asdict(self)
        record.update(protocol=PROTOCOL_VERSION, token_id=self.token_id, gc_during_timing="disabled",
                      clock_wall="time.perf_counter", clock_cpu="time.thread_time")
        return record


# --------------------------------------------------------------------------------------
# Environment
# --------------------------------------------------------------------------------------


def _cpuinfo_field(name: str) -> str | None:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.lower().startswith(name):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_model() -> str:
    """The CPU model name (``/proc/cpuinfo`` on Linux, ``platform`` elsewhere)."""
    return _cpuinfo_field("model name") or platform.processor() or platform.machine() or "unknown"


def cpu_flags() -> list[str]:
    """The CPU's vector/matrix features among ``ISA_FLAGS`` (``/proc/cpuinfo`` flags; [] elsewhere)."""
    flags = set((_cpuinfo_field("flags") or _cpuinfo_field("features") or "").split())
    return [flag for flag in ISA_FLAGS if flag in flags]


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
        "cpu_flags": cpu_flags(),
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


def warn_if_busy() -> float | None:
    """One warning line when other jobs keep the machine busy; returns the load average."""
    load, cpus = load_average(), os.cpu_count() or 1
    if load is not None and load > max(1.0, 0.5 * cpus):
        logger.warning("load average %.2f on %d CPUs: other jobs are running, so these timings will be noisy "
                       "(measure latency on an idle machine)", load, cpus)
    return load


def utc_now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


# --------------------------------------------------------------------------------------
# One latency job per machine
# --------------------------------------------------------------------------------------


def timing_slot_dir() -> str:
    """The machine-wide lock directory of latency jobs (``$BAF_TIMING_LOCK_DIR`` overrides)."""
    return os.environ.get("BAF_TIMING_LOCK_DIR") or os.path.join(tempfile.gettempdir(), "bigger_and_faster-timing")


@contextlib.contextmanager
def timing_slot(mode: str = "wait", poll_s: float = 2.0):
    """Hold the machine's one latency-timing slot while the block runs (``mode``: wait | fail | off).

    Two latency jobs on one machine slow each other down (shared cores, caches, memory bandwidth),
    so by default the second one waits for the first; ``fail`` stops it with one line naming the
    holder; ``off`` times concurrently (only where a benchmark showed that changes nothing)."""
    if mode not in TIMING_LOCK_MODES:
        raise UserError(f"--timing_lock: unknown mode {mode!r}; choose one of {', '.join(TIMING_LOCK_MODES)}")
    if mode == "off":
        yield
        return
    directory = timing_slot_dir()
    with contextlib.suppress(OSError):
        os.makedirs(directory, exist_ok=True)
        os.chmod(directory, 0o1777)  # every user's latency jobs share the one slot
    announced = False
    while True:
        lock = output_lock(directory, what="machine's latency timing slot")
        try:
            lock.__enter__()
        except OutputLocked as err:
            holder = str(err).split(" is in use by ", 1)[-1].split("; wait for it", 1)[0]
            if mode == "fail":
                raise UserError(f"another latency job is timing on this machine ({holder}); two latency jobs never "
                                "time at once (--timing_lock wait queues behind it)") from None
            if not announced:
                logger.warning("waiting for the machine's latency timing slot, held by %s", holder)
                announced = True
            time.sleep(poll_s)
            continue
        break
    try:
        yield
    finally:
        lock.__exit__(None, None, None)


# --------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------


class SystemClock:
    """The two clocks every run is timed with (tests substitute a synthetic clock)."""

    @staticmethod
    def wall() -> float:
        return time.perf_counter()

    @staticmethod
    def cpu() -> float:
        return time.thread_time()


CLOCK = SystemClock()


def time_runs(run: Callable[[], object], count: int) -> tuple[list[float], list[float]]:
    """``count`` timed calls of ``run``; returns (wall ms, cpu ms) per call. GC is off meanwhile."""
    clock = CLOCK
    wall, cpu = [], []
    enabled = gc.isenabled()
    gc.disable()
    try:
        for _ in range(count):
            start_cpu = clock.cpu()
            start = clock.wall()
            run()
            end = clock.wall()
            end_cpu = clock.cpu()
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
