#!/usr/bin/env python
"""The last search of a run and an idle core: what does the spare-core worker buy? (issue 21)

When every search of ``make demo`` has started and one ends, the search still running used to fine-tune
its finalist's seeds one after another beside an idle core. ``evaluation/spare.py`` puts a worker on that
core, fed by the orders the search posts. On a finished demo run (its supernet, data, finalists' recipe and
seeds; the arch: its largest int8 finalist), in one run, alternating ``--rounds`` times:

* alone (the baseline): one search's evaluator fine-tunes the finalist's seeds (one thread);
* with a spare core: the same, with ``python -m evaluation.spare`` running beside it on the same cache;

and prints the wall seconds of each, their ratio (ideal 0.5: both cores busy; 1.0: the worker helps
nothing), how many seeds the worker made, and whether both ways give the same scores (they must: the
worker makes an entry exactly as the search would). Run it on an idle machine; nothing it writes outlives
``--work_dir``.

    .venv/bin/python benchmarks/bench_spare_core.py --run_dir demo_run --work_dir /tmp/bench_spare
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from benchmarks.bench_shared_finalist import finalist_bench  # noqa: E402 (after the path)


def timed(command: list[str], cache_dir: str, spare: bool) -> tuple[float, dict]:
    helper = None
    if spare:
        helper = subprocess.Popen([sys.executable, "-m", "evaluation.spare", "--cache_dir", cache_dir,
                                   "--poll_seconds", "0.2"], cwd=REPO, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL, env=dict(os.environ, PYTHONPATH=REPO))
    started = time.perf_counter()
    result = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    wall = time.perf_counter() - started
    if helper is not None:
        helper.send_signal(signal.SIGTERM)
        helper.wait(timeout=30)
    if result.returncode:
        raise SystemExit(f"the search's evaluator failed (exit {result.returncode}): {' '.join(command)}")
    return wall, json.loads(result.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    args = finalist_bench(argv, __doc__, "/tmp/bench_spare_core", "alone / with-a-spare-core pairs, alternating")
    if args is None:
        return
    me = [sys.executable, os.path.abspath(__file__), "--run_dir", args.run_dir, "--worker"]
    ratios, same = [], True
    for index in range(args.rounds):
        shutil.rmtree(args.work_dir, ignore_errors=True)
        base = os.path.join(args.work_dir, f"round{index}")
        walls, outcomes = {}, {}
        for arm in ("alone", "spare"):
            cache = os.path.join(base, f"cache_{arm}")
            walls[arm], outcomes[arm] = timed(me + [os.path.join(base, arm), cache], cache, arm == "spare")
        same &= outcomes["alone"]["scores"] == outcomes["spare"]["scores"]
        ratios.append(walls["spare"] / walls["alone"])
        seeds = len(outcomes["alone"]["scores"])
        print(f"round {index + 1}: alone {walls['alone']:.1f} s; with a spare core {walls['spare']:.1f} s (the search "
              f"made {outcomes['spare']['made']} of {seeds}, the worker {seeds - outcomes['spare']['made']}): ratio "
              f"{ratios[-1]:.2f}; scores {'equal' if same else 'DIFFERENT'}", flush=True)
    shutil.rmtree(args.work_dir, ignore_errors=True)
    print(f"spare / alone: {' '.join(f'{r:.2f}' for r in ratios)} (ideal 0.50 with both cores busy; 1.00: no help); "
          f"scores of both ways {'equal in every round' if same else 'DIFFER'}")
    if not same:
        raise SystemExit(1)


if __name__ == "__main__":
    from utils import run_cli

    run_cli(main)
