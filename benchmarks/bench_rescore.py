#!/usr/bin/env python
"""Successive halving (``RESCORE_TOP``) against the searches of a finished demo run, paired on the same
candidates (issue 21, BENCHMARKS.md "successive halving").

For each setting, the run's searches are re-run from the same data, supernet, tables, budgets and
generations, without their final steps and report (and, with ``GENERATIONS=g`` below the run's, without the
later generations): only the ``rescore`` and ``final`` steps and the report run again, and every fine-tune
the run already made is served by its evaluation cache. Printed per setting: each search's finalist (mean ±
std over the final seeds), the Bigger&Faster − AutoTinyBERT comparisons, the CPU seconds of the fine-tunes
the six searches used (each (arch, seed, recipe) once) with their ratio to the run's own, and how the
candidates' two-seed mean ranks the finalists' four-seed means against one seed (Kendall tau over the archs
that have both).

    python benchmarks/bench_rescore.py --run_dir demo_run --work_dir /tmp/bench_rescore \\
        --setting "RESCORE_TOP=3" --setting "GENERATIONS=1 RESCORE_TOP=3"

``FINAL_SEEDS=n`` re-runs the final steps with n finalist seeds (the run's own, extended by the next integers):
what a fifth seed does to the comparisons' half-widths, at what cost.

The records hold the run's absolute paths (the cache's keys include them), so each variant runs *at the
run's own path*: the run is renamed to ``<run_dir>.base`` for the variant's time, the variant is made at
``<run_dir>`` and then moved to ``<work_dir>/<n>/``, and the run is renamed back, also when the variant
fails or is interrupted. Run it alone on an idle machine; its seconds are fine-tune seconds, not timings.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from evaluation.results import record_recipe, write_results  # noqa: E402
from utils import UserError, run_cli  # noqa: E402


def parse_setting(text: str) -> dict[str, str]:
    """The pipeline's environment for one variant (``FINAL_SEEDS=n`` is turned into ``SEEDS`` by ``final_seeds``)."""
    values = {}
    for item in text.split():
        name, _, value = item.partition("=")
        if name not in ("RESCORE_TOP", "RESCORE_SEEDS", "GENERATIONS", "FINAL_SEEDS") or not value.isdigit():
            raise UserError(f"--setting: {item!r} is not RESCORE_TOP=n, RESCORE_SEEDS=n, GENERATIONS=n or FINAL_SEEDS=n")
        if name == "FINAL_SEEDS" and int(value) < 2:
            raise UserError(f"--setting: {item!r}: a comparison needs at least 2 final seeds")
        values[name] = value
    return values


def final_seeds(run_dir: str, count: int) -> str:
    """``SEEDS`` for ``FINAL_SEEDS=count``: the run's own final seeds (its ``cands/*.final.json``), cut or extended
    by the next integers, so every seed the run made is served by its cache."""
    seeds = json.load(open(sorted(glob.glob(os.path.join(run_dir, "cands", "*.final.json")))[0]))["seeds"]
    while len(seeds) < count:
        seeds.append(max(seeds) + 1)
    return " ".join(str(seed) for seed in seeds[:count])


def _rewrite_results(jsonl: str, keep) -> None:
    records = [json.loads(line) for line in open(jsonl)]
    kept = [record for record in records if keep(record)]
    with open(jsonl, "w") as handle:
        handle.writelines(json.dumps(record) + "\n" for record in kept)
    text = jsonl[:-len(".jsonl")]
    if os.path.exists(text):
        os.remove(text)
    write_results(text, kept)


def strip_run(base: str, variant: str, generations: int | None) -> None:
    """``variant``: a copy of ``base`` (times kept: the supernet's identity holds them) without its final steps,
    rescore steps, report and, with ``generations``, the generations after it."""
    shutil.copytree(base, variant, symlinks=True)
    made_by_the_final_steps = glob.glob(f"{variant}/cands/*.final*") + glob.glob(f"{variant}/cands/*.rescore*") + [
        os.path.join(variant, name) for name in ("report", "latency_evaluated", "stage_seconds.tsv", ".pipeline.lock")]
    for path in made_by_the_final_steps:
        if os.path.isdir(path):
            shutil.rmtree(path)
        elif os.path.exists(path):
            os.remove(path)
    for jsonl in glob.glob(f"{variant}/output/*/subbert.results.jsonl"):
        search = os.path.basename(os.path.dirname(jsonl))
        final = json.load(open(f"{base}/cands/{search}.final.json"))
        dropped: set[str] = set()
        if generations is not None:
            for path in glob.glob(f"{variant}/cands/1st_generation_{search}.gen*.evo.cands"):
                if int(path.rsplit(".gen", 1)[1].split(".")[0]) > generations:
                    dropped |= {json.dumps(json.loads(line), sort_keys=True) for line in open(path) if line.strip()}
                    os.remove(path)
            latest = f"{variant}/cands/1st_generation_{search}.gen{generations}.evo.cands"
            if os.path.exists(latest):
                shutil.copyfile(latest, f"{variant}/cands/1st_generation_{search}.evo.cands")
            log = f"{variant}/cands/{search}.search_log.jsonl"
            lines = [line for line in open(log) if json.loads(line).get("generation", 0) <= generations]
            with open(log, "w") as handle:
                handle.writelines(lines)
        _rewrite_results(jsonl, lambda r, f=final, d=dropped: record_recipe(r) == f["search_recipe_id"]
                         and r["seed"] == f["search_seed"] and json.dumps(r["arch"], sort_keys=True) not in d)


def fine_tune_seconds(run: str) -> tuple[int, int, float]:
    """(candidates' fine-tunes, finalists', their CPU seconds) the run's searches used, each once."""
    seen = {}
    for jsonl in glob.glob(f"{run}/output/*/subbert.results.jsonl"):
        for line in open(jsonl):
            record = json.loads(line)
            seen[(json.dumps(record["arch"], sort_keys=True), record["seed"], record_recipe(record))] = record
    rungs = [record.get("rung", "search") for record in seen.values()]
    return rungs.count("search"), rungs.count("final"), sum(r["elapsed_seconds"] for r in seen.values())


def rung_signal(run: str) -> str:
    """Kendall tau of one seed and of the two-seed mean of the candidates' recipe against the finalists'
    mean, over the archs that have a finalists' mean and two candidate seeds."""
    from scipy.stats import kendalltau

    candidates, finalists = {}, {}
    for path in glob.glob(f"{run}/output/evaluation_cache/*/*.json"):
        record = json.load(open(path)).get("record")
        if record:
            into = finalists if record.get("rung") == "final" else candidates
            into.setdefault(record["arch_summary"], {})[record["seed"]] = 100 * record["best_acc"]
    archs = sorted(a for a in finalists if len(candidates.get(a, {})) >= 2)
    if len(archs) < 3:
        return f"{len(archs)} archs with both: too few for tau"
    final = [sum(finalists[a].values()) / len(finalists[a]) for a in archs]
    one = [candidates[a][min(candidates[a])] for a in archs]
    two = [sum(score for _, score in sorted(candidates[a].items())[:2]) / 2 for a in archs]
    return (f"tau against the finalists' mean over {len(archs)} archs: two seeds {kendalltau(two, final)[0]:+.2f}, "
            f"one seed {kendalltau(one, final)[0]:+.2f}")


def describe(run: str) -> list[str]:
    summary = json.load(open(f"{run}/report/summary.json"))
    lines = []
    for budget in summary["budgets"]:
        parts = []
        for method, values in budget["methods"].items():
            acc = values["accuracy_points"]
            parts.append(f"{method} {values['arch_summary']} {acc['mean']:.1f} ± {acc['std']:.1f}")
        lines.append(f"  {budget['budget_ms']:g} ms: " + "; ".join(parts))
        for comparison in budget["comparisons"]:
            if comparison["a"] == "bigger_and_faster_int8" and comparison["b"] == "autotinybert_fp32":
                lines.append(f"    B&F - AutoTinyBERT {comparison['text']}: {comparison['verdict']}")
    return lines


def generations_of(run: str) -> int:
    """How many generations after the first the run's searches made (``….gen<i>.evo.cands``)."""
    numbers = [int(path.rsplit(".gen", 1)[1].split(".")[0]) for path in glob.glob(f"{run}/cands/*.gen*.evo.cands")]
    return max(numbers, default=0)


def run_variant(run_dir: str, work_dir: str, number: int, setting: dict[str, str], seed: str) -> str:
    base, target = f"{run_dir}.base", os.path.join(work_dir, str(number))
    if os.path.exists(base) or os.path.exists(target):
        raise UserError(f"{base if os.path.exists(base) else target} exists: move it away first")
    os.rename(run_dir, base)
    try:
        strip_run(base, run_dir, int(setting["GENERATIONS"]) if "GENERATIONS" in setting else None)
        # the run's own generations unless the setting has fewer (the demo's default may differ from the run's)
        env = dict(os.environ, RUN_DIR=run_dir, SEED=seed, GENERATIONS=str(generations_of(base)), RESCORE_TOP="0")
        env.update(setting)
        with open(os.path.join(work_dir, f"{number}.log"), "w") as log:
            subprocess.run(["bash", os.path.join(ROOT, "script", "run_pipeline.sh")], env=env, check=True, stdout=log,
                           stderr=subprocess.STDOUT)
        shutil.move(run_dir, target)
    finally:
        if os.path.exists(run_dir) and not os.path.exists(target):
            shutil.move(run_dir, target + ".failed")
        os.rename(base, run_dir)
    return target


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run_dir", required=True, help="a finished demo run (its report written)")
    parser.add_argument("--work_dir", required=True, help="where each variant is kept, as <work_dir>/<n>/")
    parser.add_argument("--setting", action="append", required=True,
                        help='e.g. "RESCORE_TOP=3", "GENERATIONS=1 RESCORE_TOP=3" or "RESCORE_TOP=3 FINAL_SEEDS=5"; '
                             'repeat for several')
    return parser


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    run_dir = os.path.realpath(args.run_dir.rstrip("/"))
    if not os.path.isfile(os.path.join(run_dir, "report", "summary.json")):
        raise UserError(f"--run_dir {args.run_dir}: not a finished demo run (no report/summary.json)")
    settings = [parse_setting(text) for text in args.setting]
    for setting in settings:
        if "FINAL_SEEDS" in setting:
            setting["SEEDS"] = final_seeds(run_dir, int(setting.pop("FINAL_SEEDS")))
    os.makedirs(args.work_dir, exist_ok=True)
    seed = str(json.load(open(os.path.join(run_dir, "data", "demo_manifest.json")))["params"]["seed"])
    base_counts = fine_tune_seconds(run_dir)
    print(f"the run ({run_dir}, SEED {seed}): {base_counts[0]} + {base_counts[1]} fine-tunes, {base_counts[2]:.0f} CPU s")
    print("\n".join(describe(run_dir)))
    for number, setting in enumerate(settings, 1):
        target = run_variant(run_dir, os.path.realpath(args.work_dir), number, setting, seed)
        counts = fine_tune_seconds(target)
        print(f"\n{' '.join(f'{k}={v}' for k, v in setting.items())} ({target}): {counts[0]} + {counts[1]} fine-tunes, "
              f"{counts[2]:.0f} CPU s = {counts[2] / base_counts[2]:.2f}x the run's")
        print("\n".join(describe(target)))
        print("  " + rung_signal(target))


if __name__ == "__main__":
    run_cli(main)
