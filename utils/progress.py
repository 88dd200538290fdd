"""Progress output: a tqdm bar on a terminal, a plain line every N steps in a log file.

A bar redraws itself with carriage returns; written to a redirected log it leaves hundreds of
updates on one line. Every stage therefore asks ``progress(...)`` for its bar: on a terminal it is
tqdm, elsewhere a ``PlainProgress`` that prints one ordinary line every ``every`` units (by default
about every tenth of the total) and at the end. ``quiet_library_bars`` does the same for the bars
of transformers / huggingface_hub ("Loading weights", "Writing model shards").
"""

from __future__ import annotations

import math
import os
import sys
import time
from typing import Any, Iterable, TextIO

__all__ = ["on_terminal", "progress", "PlainProgress", "quiet_library_bars", "format_duration"]


def on_terminal(stream: TextIO | None = None) -> bool:
    """Whether ``stream`` (default: stderr, where bars go) is an interactive terminal."""
    stream = sys.stderr if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # a closed or replaced stream
        return False


def quiet_library_bars(stream: TextIO | None = None) -> None:
    """Turn off transformers' and huggingface_hub's progress bars unless ``stream`` is a terminal."""
    if on_terminal(stream):
        return
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # read when they are first imported
    if "transformers" in sys.modules:  # already imported: switch its flag
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()


def format_duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def _amount(value: float, unit: str, unit_scale: bool) -> str:
    if not unit_scale:
        return f"{int(value)}" if float(value).is_integer() else f"{value:.1f}"
    for prefix in ("", "k", "M", "G", "T"):
        if abs(value) < 1000:
            return f"{value:.0f}" if prefix == "" else f"{value:.1f}{prefix}"
        value /= 1000
    return f"{value:.1f}P"


class PlainProgress:
    """The part of tqdm's interface the stages use, printing plain lines instead of a bar.

    A line is printed when the count reaches the next multiple of ``every`` (``every=0``: only
    the closing line) and when the bar closes, e.g.
    ``predictor (v2): 300/1000 step (30 %), 4s elapsed, ~9s left, val MAPD 3.10%``.
    """

    def __init__(self, iterable: Iterable | None = None, total: float | None = None, desc: str = "",
                 unit: str = "it", initial: float = 0, every: float | None = None, unit_scale: bool = False,
                 file: TextIO | None = None, silent: bool = False):
        if total is None and iterable is not None:
            try:
                total = len(iterable)  # type: ignore[arg-type]
            except TypeError:
                total = None
        self.iterable, self.total, self.desc, self.unit = iterable, total, desc, unit
        self.n = self.initial = initial
        self.unit_scale = unit_scale
        if every is None:
            every = max(1, math.ceil(total / 10)) if total else 100
        self.every = every
        self.file, self.silent = file, silent
        self.postfix = ""
        self.started = time.perf_counter()
        self._next = (math.floor(initial / every) + 1) * every if every else math.inf
        self._printed_at = initial
        self.closed = False

    # --- tqdm's interface
    def __iter__(self):
        for item in self.iterable:  # type: ignore[union-attr]
            yield item
            self.update(1)
        self.close()

    def __enter__(self) -> "PlainProgress":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def update(self, n: float = 1) -> None:
        self.n += n
        if self.n >= self._next:
            self._line()
            while self._next <= self.n:
                self._next += self.every

    def set_postfix_str(self, text: str = "", refresh: bool = True) -> None:
        self.postfix = str(text)

    def set_postfix(self, ordered_dict: dict | None = None, refresh: bool = True, **kwargs: Any) -> None:
        items = dict(ordered_dict or {}, **kwargs)
        self.postfix = ", ".join(f"{key}={value}" for key, value in items.items())

    def set_description(self, desc: str | None = None, refresh: bool = True) -> None:
        self.desc = desc or ""

    def refresh(self) -> None:
        pass

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.n != self._printed_at:
            self._line()

    # --- the line
    def _line(self) -> None:
        self._printed_at = self.n
        if self.silent:
            return
        elapsed = time.perf_counter() - self.started
        done = _amount(self.n, self.unit, self.unit_scale)
        parts = [f"{self.desc}: " if self.desc else ""]
        if self.total:
            parts.append(f"{done}/{_amount(self.total, self.unit, self.unit_scale)} {self.unit} "
                         f"({100 * self.n / self.total:.0f} %)")
        else:
            parts.append(f"{done} {self.unit}")
        parts.append(f", {format_duration(elapsed)} elapsed")
        progressed = self.n - self.initial
        if self.total and 0 < progressed and self.n < self.total:
            parts.append(f", ~{format_duration(elapsed / progressed * (self.total - self.n))} left")
        if self.postfix:
            parts.append(f", {self.postfix}")
        print("".join(parts), file=self.file if self.file is not None else sys.stderr, flush=True)


def progress(iterable: Iterable | None = None, *, total: float | None = None, desc: str = "", unit: str = "it",
             initial: float = 0, every: float | None = None, unit_scale: bool = False, enabled: bool = True,
             file: TextIO | None = None):
    """A progress bar for a loop: tqdm on a terminal, ``PlainProgress`` lines otherwise.

    ``enabled=False`` shows nothing at all (a ``--quiet`` flag, a non-main rank): the object still
    iterates and accepts ``update``. ``every`` is the plain line's period in units (None: a tenth of
    the total, 0: only the closing line).
    """
    if enabled and on_terminal(file):
        from tqdm import tqdm

        return tqdm(iterable, total=total, desc=desc, unit=unit, initial=initial, unit_scale=unit_scale,
                    dynamic_ncols=True, file=file)
    return PlainProgress(iterable, total=total, desc=desc, unit=unit, initial=initial,
                         every=every if enabled else 0, unit_scale=unit_scale, file=file, silent=not enabled)
