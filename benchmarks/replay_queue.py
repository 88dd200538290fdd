#!/usr/bin/env python
"""Replay a finished demo run's searches through the queue: how long would they take, with or without a
spare core, in another order? (issue 21)

Reads ``RUN_DIR/output/<search>/subbert.results.jsonl`` (each search's fine-tunes in order: its generations,
then its final step's seeds) and the run's evaluation cache (every fine-tune's seconds), and replays them on
``--slots`` cores: each search's generation (``--generation_size`` candidates) and its final step are worked
through one entry at a time, an entry another search has made or is making is not made twice (a search
makes the others of its group first, then waits), and ``--spare`` lets a slot with no search left to start
take entries of the running searches' current groups (``evaluation/spare.py``). It prints the replayed wall
of each order asked for, with and without a spare core, beside the ideal (the fine-tunes' CPU seconds / the
slots) and, when the run recorded it, the searches stage's measured seconds. No fine-tune is run.

    python benchmarks/replay_queue.py --run_dir demo_run                       # the pipeline's order
    python benchmarks/replay_queue.py --run_dir demo_run --order kd_fp_5.2,kd_ptq_5.2,...
"""

from __future__ import annotations

import argparse
import glob
import heapq
import json
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


def fine_tune_seconds(run_dir: str) -> dict[tuple, float]:
    """(arch key, seed, dev examples) -> the fine-tune's seconds, from the run's evaluation cache."""
    seconds = {}
    for path in glob.glob(os.path.join(run_dir, "output", "evaluation_cache", "*", "*.json")):
        record = json.load(open(path, encoding="utf-8")).get("record", {})
        if "elapsed_seconds" in record:
            key = (record["arch_key"], record["hparams"]["seed"], record["dev_examples"]["matched"])
            seconds[key] = record["elapsed_seconds"]
    return seconds


def search_groups(run_dir: str, name: str, generation_size: int) -> list[list[tuple]]:
    """A search's fine-tunes as the groups it works through: its generations, then its final step."""
    path = os.path.join(run_dir, "output", name, "subbert.results.jsonl")
    records = [json.loads(line) for line in open(path, encoding="utf-8") if line.strip()]
    keys = [(r["arch_key"], r["hparams"]["seed"], r["dev_examples"]["matched"]) for r in records]
    search = [k for k, r in zip(keys, records) if r.get("rung", "search") == "search"]
    final = [k for k, r in zip(keys, records) if r.get("rung", "search") == "final"]
    groups = [search[i:i + generation_size] for i in range(0, len(search), generation_size)]
    return groups + ([final] if final else [])


def replay(order: list[str], groups: dict, seconds: dict, slots: int, spare: bool, start_seconds: float) -> float:
    """The replayed wall seconds of the searches in ``order`` (see the module docstring)."""
    done_at: dict[tuple, float] = {}  # entry -> when it is (or will be) made
    queue, state, events, end = list(order), {}, [], 0.0

    def start(slot: int, now: float) -> None:
        if queue:
            state[slot] = [groups[queue.pop(0)], 0]
            heapq.heappush(events, (now + start_seconds, slot))

    def take(slot: int, now: float, group: list) -> bool:
        for key in group:
            if key not in done_at:
                done_at[key] = now + seconds[key]
                heapq.heappush(events, (done_at[key], slot))
                return True
        return False

    for slot in range(slots):
        start(slot, 0.0)
    while events:
        now, slot = heapq.heappop(events)
        own, index = state.get(slot, [[], 0])
        if index >= len(own):  # this slot's search is done
            end = max(end, now)
            if queue:
                start(slot, now)
            elif spare:
                running = [g[i] for s, (g, i) in state.items() if s != slot and i < len(g)]
                if not any(take(slot, now, group) for group in running) and running:
                    heapq.heappush(events, (now + 0.5, slot))  # look again shortly
            continue
        group = own[index]
        if take(slot, now, group):
            continue
        pending = [done_at[key] for key in group if done_at[key] > now]
        if pending:
            heapq.heappush(events, (max(pending), slot))
            continue
        state[slot][1] += 1
        heapq.heappush(events, (now, slot))
    return end


def pipeline_order(run_dir: str) -> list[str]:
    """The pipeline's queue order: per budget (ascending), fp32, int8, random."""
    names = os.listdir(os.path.join(run_dir, "output"))
    budgets = sorted({float(n[len("kd_fp_"):]) for n in names if n.startswith("kd_fp_")})
    order = []
    for budget in budgets:
        text = f"{budget:g}"
        order += [n for n in (f"kd_fp_{text}", f"kd_ptq_{text}", f"kd_ptq_{text}_random") if n in names]
    return order


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run_dir", default=os.path.join(REPO, "demo_run"), help="a finished make demo run")
    parser.add_argument("--order", action="append", default=[],
                        help="searches in queue order, comma-separated (repeatable; default: the pipeline's)")
    parser.add_argument("--slots", type=int, default=2, help="searches at a time (the demo's JOBS)")
    parser.add_argument("--generation_size", type=int, default=3, help="candidates per generation (GEN_SIZE)")
    parser.add_argument("--start_seconds", type=float, default=3.0, help="a search process's start-up")
    args = parser.parse_args(argv)
    from utils import UserError

    if not os.path.isdir(os.path.join(args.run_dir, "output")):
        raise UserError(f"--run_dir: {args.run_dir} holds no output/ (a finished make demo run)")
    if args.slots < 1 or args.generation_size < 1:
        raise UserError("--slots and --generation_size must be >= 1")
    seconds = fine_tune_seconds(args.run_dir)
    orders = [o.split(",") for o in args.order] or [pipeline_order(args.run_dir)]
    groups = {name: search_groups(args.run_dir, name, args.generation_size) for order in orders for name in order}
    missing = {key for g in groups.values() for group in g for key in group} - set(seconds)
    if missing:
        raise UserError(f"--run_dir: {len(missing)} fine-tune(s) of the searches are not in its evaluation cache")
    measured = ""
    stages = os.path.join(args.run_dir, "stage_seconds.tsv")
    for path in (stages, stages + ".new"):
        if os.path.isfile(path):
            for line in open(path, encoding="utf-8"):
                if line.startswith("searches\t"):
                    measured = f"; measured searches stage {line.split()[1]} s"
    print(f"{args.run_dir}: {len(seconds)} fine-tunes, {sum(seconds.values()):.0f} CPU s; ideal "
          f"{sum(seconds.values()) / args.slots:.0f} s on {args.slots} slots{measured}")
    for order in orders:
        alone = replay(order, groups, seconds, args.slots, False, args.start_seconds)
        helped = replay(order, groups, seconds, args.slots, True, args.start_seconds)
        print(f"{','.join(order)}: {alone:.0f} s without a spare core, {helped:.0f} s with one "
              f"(ratio {helped / alone:.2f})")


if __name__ == "__main__":
    from utils import run_cli

    run_cli(main)
