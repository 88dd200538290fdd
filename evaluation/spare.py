"""A spare core's worker: it makes the cache entries the running searches of a run still wait for.

A run's searches share one evaluation cache (``evaluation.cache``), and each works through its own list of
(arch, seed) fine-tunes one at a time. When the queue of searches is empty and a core falls idle, the last
search would otherwise fine-tune its finalists' seeds one after another beside an idle core. So every
evaluator posts what it still needs as an *order* -- ``<cache_dir>/<task>/orders/<pid>-<n>.json``: its
config (``EvaluationConfig.to_order``) and its (arch, seed) list -- while it works through it, and a worker
started on the idle core (``python -m evaluation.spare --cache_dir DIR``; ``script/run_pipeline.sh`` does it
when ``SPARE_CORES=1``) takes from the live orders the entries nobody holds, through the same claim
(``claim(..., wait=False)``) and the same code path (``Evaluator.make_entry``): the search finds them made,
exactly as if another search had made them. An order whose process is gone is ignored; the worker writes
only cache entries and is stopped by a signal when the searches are done.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import itertools
import json
import os
import signal
import socket
import tempfile
import time

from evaluation.config import EvaluationConfig, check_archs
from utils import UserError, arch_summary, atomic_write, get_logger, run_cli

logger = get_logger("evaluation.spare")

ORDER_FORMAT = 1
_NUMBERS = itertools.count()


def orders_dir(cache_dir: str, task: str) -> str:
    return os.path.join(cache_dir, task, "orders")


@contextlib.contextmanager
def post_order(config: EvaluationConfig, task: str, todo: list[tuple[dict, int]]):
    """Post ``todo`` (the (arch, seed) pairs ``config``'s evaluator still needs) for a spare core while
    the block runs; the order is removed when it ends, however it ends."""
    directory = orders_dir(config.cache_dir, task)
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, f"{os.getpid()}-{next(_NUMBERS)}.json")
    order = {"format": ORDER_FORMAT, "host": socket.gethostname(), "pid": os.getpid(), "task": task,
             "config": config.to_order(),
             "entries": [[arch, int(seed)] for arch, seed in todo]}
    with atomic_write(path) as handle:
        json.dump(order, handle)
    try:
        yield path
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)


def _alive(pid: int) -> bool:
    if pid <= 0:  # os.kill(0, ...) would ask about this process's whole group
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def live_orders(cache_dir: str) -> list[tuple[str, dict]]:
    """The orders of processes still running on this machine, oldest first (an unreadable one, or one whose
    process has ended or runs elsewhere -- a cache on a shared file system -- is skipped)."""
    found = []
    for path in glob.glob(os.path.join(cache_dir, "*", "orders", "*.json")):
        try:
            with open(path) as handle:
                order = json.load(handle)
            mtime = os.path.getmtime(path)
        except (OSError, ValueError):
            continue  # removed while read, or not ours
        if (order.get("format") == ORDER_FORMAT and order.get("host") == socket.gethostname()
                and _alive(int(order.get("pid", 0)))):
            found.append((mtime, path, order))
    return [(path, order) for _, path, order in sorted(found, key=lambda item: item[:2])]


class SpareWorker:
    """Makes the missing, unheld entries of the live orders of one cache, one at a time."""

    def __init__(self, cache_dir: str, scratch: str):
        self.cache_dir = cache_dir
        self.scratch = scratch  # the evaluators' output_dir: a worker writes no results, only cache entries
        self._evaluators: dict[str, object] = {}
        self._checked: dict[str, list] = {}  # an order (file and content) -> its entries, checked
        self.made = 0

    def _evaluator(self, order: dict):
        from evaluation.evaluate import Evaluator

        key = json.dumps(order["config"], sort_keys=True)
        if key not in self._evaluators:
            config = EvaluationConfig.from_order(order["config"], self.scratch)
            if config.cache_dir is None or os.path.realpath(config.cache_dir) != os.path.realpath(self.cache_dir):
                raise UserError(f"an order of cache {config.cache_dir} found under --cache_dir {self.cache_dir}")
            self._evaluators[key] = Evaluator(config)
        return self._evaluators[key]

    def _entries(self, path: str, order: dict, evaluator) -> list[tuple[dict, int]]:
        """An order's (arch, seed) pairs, each arch checked once where it enters this process."""
        key = json.dumps([path, order["config"], order["entries"]], sort_keys=True)  # a reused pid: another order
        if key not in self._checked:
            supernet = evaluator.check_inputs().supernet_config
            self._checked[key] = [(check_archs([arch], [path], supernet, evaluator.config.space)[0], int(seed))
                                  for arch, seed in order["entries"]]
        return self._checked[key]

    def work_once(self) -> bool:
        """Make one entry some live order needs; False when there is none to make now."""
        for path, order in live_orders(self.cache_dir):
            evaluator = self._evaluator(order)
            item = next(t for t in evaluator.config.tasks if t.task.name == order["task"])
            for arch, seed in self._entries(path, order, evaluator):
                if evaluator.make_entry(item, arch, seed):
                    self.made += 1
                    logger.info("spare core: made %s seed %d for the %s of process %s (%d so far)", arch_summary(arch),
                                seed, evaluator.config.rung, order["pid"], self.made)
                    return True
        return False

    def run(self, poll_seconds: float, idle_exit_seconds: float | None = None) -> int:
        """Work until stopped (or idle for ``idle_exit_seconds``); returns how many entries it made."""
        idle_since = time.monotonic()
        while True:
            if self.work_once():
                idle_since = time.monotonic()
                continue
            if idle_exit_seconds is not None and time.monotonic() - idle_since >= idle_exit_seconds:
                return self.made
            time.sleep(poll_seconds)


def _stop(signum, frame):
    raise KeyboardInterrupt


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache_dir", required=True, help="the run's evaluation cache (OUTPUT_ROOT/evaluation_cache)")
    parser.add_argument("--poll_seconds", type=float, default=1.0, help="how often to look for new orders")
    parser.add_argument("--idle_exit_seconds", type=float, default=None,
                        help="exit after this long without an entry to make (default: run until stopped)")
    args = parser.parse_args(argv)
    if args.poll_seconds <= 0:
        raise UserError(f"--poll_seconds: must be > 0, got {args.poll_seconds}")
    if os.path.exists(args.cache_dir) and not os.path.isdir(args.cache_dir):
        raise UserError(f"--cache_dir: {args.cache_dir} exists and is not a directory")
    # stopped by the pipeline when its searches are done: a clean exit, an entry being made is left unwritten
    signal.signal(signal.SIGTERM, _stop)
    with tempfile.TemporaryDirectory(prefix="spare-") as scratch:
        worker = SpareWorker(args.cache_dir, scratch)
        try:
            worker.run(args.poll_seconds, args.idle_exit_seconds)
        except KeyboardInterrupt:
            pass
    logger.info("spare core: %d entr%s made", worker.made, "y" if worker.made == 1 else "ies")
    return 0


if __name__ == "__main__":
    run_cli(main)
