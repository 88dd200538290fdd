"""Where a latency is measured: the machine and library versions recorded with every
measurement, thread and CPU pinning, the load average, and the machine's one latency-timing slot.

No two latency jobs time at once on one machine: ``timing_slot`` holds a machine-wide lock while a
stage measures (``--timing_lock wait`` queues behind the holder, ``fail`` stops with one line naming
it, ``off`` allows concurrent timing); fine-tunes pause while it is held (``utils.timing_slot``).
"""

from __future__ import annotations

import contextlib
import datetime
import os
import platform
import time

from utils import OutputLocked, UserError, get_logger, output_lock, timing_slot_dir
from utils.cpu import ISA_FLAGS, cpu_flags, cpu_model  # noqa: F401 (re-exported: latency.measure)

logger = get_logger("latency")

TIMING_LOCK_MODES = ("wait", "fail", "off")
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


# ----- one latency job per machine


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


