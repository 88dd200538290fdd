"""The machine's one latency-timing slot: where its lock lives, and how other work keeps out of its way.

A latency job holds the slot while it times (``latency.environment.timing_slot``). A fine-tune that
runs beside it would change what it measures, and not by a common factor that the reference pairs
cancel: a search's finalist check timed beside a fine-tune on the other core once measured two
three-layer archs at 109 % and 101 % of their budget that measure 97 % and 94 % alone (BENCHMARKS.md).
So fine-tunes call ``wait_while_timing`` between optimizer steps: while another process holds the
slot they sleep, and they go on when it is released (a few seconds for a search's finalists).
"""

from __future__ import annotations

import os
import tempfile
import time

from utils.cli import get_logger
from utils.files import lock_held_by_another

__all__ = ["timing_slot_dir", "wait_while_timing"]

logger = get_logger("timing_slot")


def timing_slot_dir() -> str:
    """The machine-wide lock directory of latency jobs (``$BAF_TIMING_LOCK_DIR`` overrides)."""
    return os.environ.get("BAF_TIMING_LOCK_DIR") or os.path.join(tempfile.gettempdir(), "bigger_and_faster-timing")


def wait_while_timing(poll_s: float = 0.05) -> float:
    """Sleep while another process holds the machine's latency-timing slot; the seconds slept (0.0
    when it is free, the common case: one non-blocking lock probe)."""
    holder = lock_held_by_another(timing_slot_dir())
    if holder is None:
        return 0.0
    start = time.perf_counter()
    logger.info("pausing while a latency job times on this machine (%s)", holder)
    while lock_held_by_another(timing_slot_dir()) is not None:
        time.sleep(poll_s)
    waited = time.perf_counter() - start
    logger.info("resumed after %.1f s", waited)
    return waited
