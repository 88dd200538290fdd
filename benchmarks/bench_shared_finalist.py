#!/usr/bin/env python
"""Two searches that chose the same finalist: how long do its seeds take? (issue 21)

In the demo, the int8 search and its random baseline often pick the same finalist at a budget, and both
then ask the run's evaluation cache for the same (arch, seed, recipe) fine-tunes at the same time. On a
finished demo run (its supernet, data, finalists' recipe and seeds; the arch: its largest int8 finalist),
in one run, alternating ``--rounds`` times:

* alone (the baseline): one search's evaluator fine-tunes the finalist's seeds;
* shared: two searches' evaluators (two processes, one thread each, one fresh evaluation cache) ask for
  the same seeds at once;

and prints the wall seconds of each, their ratio (ideal 0.5: both cores busy; 1.0: one waits through
every fine-tune of the other) and how many of the seeds each process fine-tuned itself. Run it on an
idle machine; nothing it writes outlives ``--work_dir``.

    .venv/bin/python benchmarks/bench_shared_finalist.py --run_dir demo_run --work_dir /tmp/bench_shared
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


def largest_int8_finalist(cands_dir: str) -> tuple[dict, dict]:
    """The largest finalist of the run's int8 searches and its search's final record (recipe, seeds)."""
    from utils import UserError, read_arch_file

    if not os.path.isdir(cands_dir):
        raise UserError(f"--run_dir: {os.path.dirname(cands_dir)} holds no cands/ (a finished make demo run)")
    best = None
    for name in sorted(os.listdir(cands_dir)):
        if not (name.startswith("kd_ptq_") and name.endswith(".final.cands")):
            continue
        record = json.load(open(os.path.join(cands_dir, name[:-len(".cands")] + ".json"), encoding="utf-8"))
        for arch in read_arch_file(os.path.join(cands_dir, name)):
            size = sum(arch["sample_intermediate_sizes"]) * arch["sample_hidden_size"]
            if best is None or size > best[0]:
                best = (size, arch, record)
    if best is None:
        raise UserError(f"--run_dir: no kd_ptq_*.final.cands in {cands_dir} (run make demo first)")
    return best[1], best[2]


def worker(run_dir: str, output_dir: str, cache_dir: str) -> None:
    """One search's final step: evaluate the finalist's seeds; prints how many it fine-tuned itself and
    the scores."""
    from evaluation.config import EvaluationConfig, TaskInput
    from evaluation.evaluate import Evaluator
    from evaluation.recipe import RecipeSettings
    from glue.tasks import get_task
    from quantize_utils import resolve_scheme

    arch, record = largest_int8_finalist(os.path.join(run_dir, "cands"))
    config = EvaluationConfig(model_dir=os.path.join(run_dir, "supernet", "final"),
                              tasks=(TaskInput(get_task("mnli"), os.path.join(run_dir, "data", "MNLI")),),
                              scheme=resolve_scheme("torch_dynamic_int8"), output_dir=output_dir,
                              recipe=RecipeSettings.from_values(record["recipe"]), do_lower_case=True, num_threads=1,
                              rung="final", cache_dir=cache_dir)
    results = Evaluator(config).evaluate([arch], record["seeds"])
    print(json.dumps({"made": sum("from_cache" not in r for r in results), "seeds": len(results),
                      "scores": [r["best_by_scheme"] for r in results]}))


def finalist_bench(argv, description: str, work_dir: str, rounds_help: str):
    """The command line both finalist benchmarks share: None when this process was a ``--worker`` (it ran);
    else the arguments, checked, after printing the finalist and the machine's load."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run_dir", default=os.path.join(REPO, "demo_run"), help="a finished make demo run")
    parser.add_argument("--work_dir", default=work_dir)
    parser.add_argument("--rounds", type=int, default=2, help=rounds_help)
    parser.add_argument("--worker", nargs=2, metavar=("OUTPUT_DIR", "CACHE_DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.run_dir, *args.worker)
        return None
    from utils import UserError, arch_summary

    if args.rounds < 1:
        raise UserError(f"--rounds must be >= 1, got {args.rounds}")
    arch, record = largest_int8_finalist(os.path.join(args.run_dir, "cands"))
    print(f"finalist {arch_summary(arch)}, seeds {record['seeds']}, finalists' recipe "
          f"{record['recipe']['max_train_examples']} examples, batch {record['recipe']['train_batch_size']}; "
          f"load {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs", flush=True)
    return args


def timed(commands: list[list[str]]) -> tuple[float, list[dict]]:
    started = time.perf_counter()
    processes = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
                 for command in commands]
    outputs = [process.communicate()[0] for process in processes]
    wall = time.perf_counter() - started
    for process in processes:
        if process.returncode:
            raise SystemExit(f"a worker failed (exit {process.returncode}): {' '.join(commands[0])}")
    return wall, [json.loads(output.strip().splitlines()[-1]) for output in outputs]


def main(argv=None) -> None:
    args = finalist_bench(argv, __doc__, "/tmp/bench_shared_finalist", "alone/shared pairs, alternating")
    if args is None:
        return
    me = [sys.executable, os.path.abspath(__file__), "--run_dir", args.run_dir, "--worker"]
    ratios = []
    for index in range(args.rounds):
        shutil.rmtree(args.work_dir, ignore_errors=True)
        base = os.path.join(args.work_dir, f"round{index}")
        alone, (solo,) = timed([me + [os.path.join(base, "alone"), os.path.join(base, "cache_alone")]])
        shared, pair = timed([me + [os.path.join(base, name), os.path.join(base, "cache_shared")]
                              for name in ("int8", "random")])
        ratios.append(shared / alone)
        print(f"round {index + 1}: alone {alone:.1f} s ({solo['made']} fine-tunes); two searches sharing them "
              f"{shared:.1f} s (fine-tuned {pair[0]['made']} + {pair[1]['made']} of {pair[0]['seeds']}): "
              f"ratio {shared / alone:.2f}", flush=True)
    shutil.rmtree(args.work_dir, ignore_errors=True)
    print(f"shared / alone: {' '.join(f'{r:.2f}' for r in ratios)} (ideal 0.50 with both cores; 1.00: one search "
          "waits through the other's fine-tunes)")


if __name__ == "__main__":
    from utils import run_cli

    run_cli(main)
