#!/usr/bin/env python
"""Does the search's fitness rank archs the way the accurate evaluation does? (issue 21)

On the archs of a finished demo run's search windows (``cands/<search>.cands``: at least 12, spread over
every window from its smallest to its largest encoder), in one run:

* the reference: each arch fine-tuned with the run's finalists' recipe (its ``cands/*.final.json``: all
  training examples) with ``--ref_seeds`` seeds, scored on every example of dev_matched (2,000 in the
  demo, none of them a training example) -- the mean over seeds;
* the fitness the searches used: one fine-tune with the run's candidates' recipe and the search seed
  (``--fitness_seeds``: also other seeds, each one's tau and the tau of their mean, what averaging would buy;
  ``--fitness_dev``: the same fine-tunes scored on more dev examples, what a larger dev set alone would buy;
  ``--ref_epochs``: a longer reference, whether the finalists' recipe is converged; ``--sandwich_epochs``: the
  weight-sharing fitness, the supernet fine-tuned once per seed on the task and every arch scored from its
  slice, ``evaluation.task_supernet``);
* the baseline, measured in the same run: the former demo's fitness (1,000 examples, batch 8, lr 3e-4,
  the supernet's dropout, 125 steps, 300 dev examples); and the trivial predictor, the number of layers alone;

and prints Kendall's tau of each fitness against the reference, the reference's own consistency (one
of its seeds against the mean of the others: about what one fine-tune can reach), the seed spread of every arch,
and the CPU seconds of each recipe. Then what any fitness could reach on these archs: a parametric bootstrap from
the reference's own seeds (``benchmarks/_tau_ceiling.py``) gives the mean tau of a fitness of k fine-tunes of the
reference's recipe, k = 1, 2, 4 and infinity, against a fresh reference; with four or more reference seeds
(``--ref_seeds``) the same is measured: the mean of k seeds against the mean of the other three or more, over
every split. Last, the pairs of archs the reference itself tells apart (Welch's test over its seeds) and the share
of them each fitness, the number of layers and (with four or more seeds) one held-out reference seed order as the
reference does: the part of a ranking no seed noise excuses. Results are kept in ``--work_dir`` (a re-run
resumes; the evaluation cache makes each (arch, seed, recipe) once).

    .venv/bin/python benchmarks/bench_fitness_rank.py --run_dir demo_run --work_dir /tmp/bench_fitness
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


def window_archs(cands_dir: str, per_window: int) -> list[tuple[str, dict]]:
    """``per_window`` archs of every search window, from its smallest to its largest encoder."""
    from utils import arch_key, read_arch_file

    chosen, seen = [], set()
    for name in sorted(os.listdir(cands_dir)):
        if not name.endswith(".cands") or not os.path.isfile(os.path.join(cands_dir, name[:-len(".cands")] + ".search.json")) \
                or name[:-len(".cands")].endswith("_random"):  # a search's candidates (random shares its window)
            continue
        archs = sorted(read_arch_file(os.path.join(cands_dir, name)), key=encoder_size)
        picks = [archs[round(i * (len(archs) - 1) / max(1, per_window - 1))] for i in range(per_window)]
        for arch in picks:
            if arch_key(arch) not in seen:
                seen.add(arch_key(arch))
                chosen.append((name[:-len(".cands")], arch))
    return chosen


def encoder_size(arch: dict) -> int:
    hidden = arch["sample_hidden_size"]
    return sum(4 * hidden * qkv + 2 * hidden * ffn for qkv, ffn in zip(arch["sample_qkv_sizes"],
                                                                        arch["sample_intermediate_sizes"]))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run_dir", default=os.path.join(REPO, "demo_run"), help="a finished make demo run")
    parser.add_argument("--work_dir", default="/tmp/bench_fitness_rank")
    parser.add_argument("--per_window", type=int, default=4, help="archs per search window")
    parser.add_argument("--ref_seeds", default=None,
                        help="comma-separated seeds of the reference (default: the first three of the run's final seeds, "
                             "from its cands/*.final.json)")
    parser.add_argument("--search_seed", type=int, default=None,
                        help="the fitness' seed (default: the run's search seed, from its cands/*.final.json)")
    parser.add_argument("--fitness_seeds", default=None,
                        help="comma-separated seeds of the fitness (default: the search seed alone); the first is "
                             "the one the table shows")
    parser.add_argument("--fitness_dev", type=int, default=None,
                        help="score the fitness' fine-tunes on this many dev examples (default: the run's candidates' "
                             "own; the same fine-tunes, so what a larger dev set alone buys)")
    parser.add_argument("--fitness_train", type=int, default=None,
                        help="fine-tune the fitness on the first N training examples (default: the run's candidates' "
                             "own FIT_TRAIN): what fewer (cheaper) candidate steps cost in ranking")
    parser.add_argument("--fitness_set", action="append", default=[], metavar="FIELD=VALUE",
                        help="another value of one field of the candidates' recipe (repeatable; a field of "
                             "evaluation.recipe.RecipeSettings, e.g. train_batch_size=8, learning_rate=1e-3): what "
                             "another fitness recipe ranks like, at what cost")
    parser.add_argument("--ref_set", action="append", default=[], metavar="FIELD=VALUE",
                        help="another value of one field of the reference's recipe (repeatable, as --fitness_set): "
                             "is the finalists' recipe converged, does another rank the archs otherwise?")
    parser.add_argument("--ref_epochs", type=float, default=None,
                        help="train the reference this many epochs (default: the run's finalists' recipe's): is the "
                             "finalists' recipe converged, and does a longer reference rank the archs otherwise?")
    parser.add_argument("--sandwich_epochs", type=float, default=None,
                        help="also the weight-sharing fitness: the supernet fine-tuned this many epochs on all "
                             "training examples (sandwich rule), each arch scored from its slice on the fitness' "
                             "dev examples, for every seed of --sandwich_seeds")
    parser.add_argument("--sandwich_seeds", default=None,
                        help="comma-separated seeds of the weight-sharing fitness (default: the search seed)")
    parser.add_argument("--no_baseline", action="store_true", help="skip the former demo's fitness")
    parser.add_argument("--cache_dir", default=None,
                        help="evaluation cache (default: <work_dir>/cache; the run's own output/evaluation_cache "
                             "reuses its fine-tunes of the same recipes)")
    args = parser.parse_args(argv)

    import numpy as np
    from scipy.stats import kendalltau

    from benchmarks._tau_ceiling import (
        held_out_seed_shares,
        reference_splits,
        separated_pairs,
        share_ordered,
        tau_ceiling,
    )
    from evaluation.config import EvaluationConfig, TaskInput
    from evaluation.evaluate import Evaluator
    from evaluation.recipe import RecipeSettings
    from evaluation.runner import parse_seeds
    from glue.tasks import get_task
    from quantize_utils import resolve_scheme
    from utils import UserError, arch_summary

    task = get_task("mnli")
    cands_dir = os.path.join(args.run_dir, "cands")
    finals = [name for name in sorted(os.listdir(cands_dir)) if name.endswith(".final.json")]
    if not finals:
        raise UserError(f"--run_dir: no *.final.json in {cands_dir} (a finished make demo run)")
    final_record = json.load(open(os.path.join(cands_dir, finals[0]), encoding="utf-8"))
    data_dir = os.path.join(args.run_dir, "data", "MNLI")
    model_dir = os.path.join(args.run_dir, "supernet", "final")
    recipes = {"reference": RecipeSettings.from_values(final_record["recipe"]),  # the run's own two recipes
               "fitness": RecipeSettings.from_values(final_record["search_recipe"]),
        "former_fitness": RecipeSettings(learning_rate=3e-4, train_batch_size=8, max_seq_length=32, eval_step=100000,
                                         max_train_examples=1000, max_eval_examples=300),
    }
    out_dirs = {name: os.path.join(args.work_dir, name) for name in recipes}
    if args.fitness_dev is not None:
        if args.fitness_dev < 1:
            raise UserError(f"--fitness_dev: must be >= 1, got {args.fitness_dev}")
        recipes["fitness"] = dataclasses.replace(recipes["fitness"], max_eval_examples=args.fitness_dev)
        out_dirs["fitness"] += f"_dev{args.fitness_dev:g}"  # another recipe: its own results, never the default's
    if args.fitness_train is not None:
        if args.fitness_train < 1:
            raise UserError(f"--fitness_train: must be >= 1, got {args.fitness_train}")
        recipes["fitness"] = dataclasses.replace(recipes["fitness"], max_train_examples=args.fitness_train)
        out_dirs["fitness"] += f"_train{args.fitness_train:g}"
    for name, flag, assignments in (("fitness", "--fitness_set", args.fitness_set),
                                    ("reference", "--ref_set", args.ref_set)):
        for assignment in assignments:
            field, value = parse_recipe_assignment(assignment, flag)
            recipes[name] = dataclasses.replace(recipes[name], **{field: value})
            out_dirs[name] += f"_{field}{value:g}"  # another recipe: its own results, never the default's
    if args.ref_epochs is not None:
        if not (math.isfinite(args.ref_epochs) and args.ref_epochs > 0):
            raise UserError(f"--ref_epochs: must be a finite number > 0, got {args.ref_epochs}")
        recipes["reference"] = dataclasses.replace(recipes["reference"], num_train_epochs=args.ref_epochs)
        out_dirs["reference"] += f"_epochs{args.ref_epochs:g}"
    if args.no_baseline:
        del recipes["former_fitness"]
    if args.sandwich_epochs is not None:
        if not (math.isfinite(args.sandwich_epochs) and args.sandwich_epochs > 0):
            raise UserError(f"--sandwich_epochs: must be a finite number > 0, got {args.sandwich_epochs}")
        # the finalists' training data, the candidates' dev examples; no fine-tune of its own per arch
        recipes["sandwich_fitness"] = dataclasses.replace(
            recipes["fitness"], sandwich_epochs=args.sandwich_epochs, num_train_epochs=0.0,
            max_train_examples=recipes["reference"].max_train_examples)
        out_dirs["sandwich_fitness"] = os.path.join(args.work_dir, f"sandwich_fitness_epochs{args.sandwich_epochs:g}")
    archs = window_archs(cands_dir, args.per_window)
    if args.search_seed is None:  # the run's own seeds: its final record says what made it
        args.search_seed = int(final_record.get("search_seed", 42))
    if args.ref_seeds is None:
        args.ref_seeds = ",".join(str(seed) for seed in final_record["seeds"][:3])
    fitness_seeds = (parse_seeds(args.fitness_seeds.split(","), "--fitness_seeds") if args.fitness_seeds
                     else [args.search_seed])
    seeds = {"reference": parse_seeds(args.ref_seeds.split(","), "--ref_seeds"), "fitness": fitness_seeds,
             "former_fitness": [args.search_seed],
             "sandwich_fitness": (parse_seeds(args.sandwich_seeds.split(","), "--sandwich_seeds")
                                  if args.sandwich_seeds else [args.search_seed])}
    check_seeds_apart(recipes["fitness"], recipes["reference"], seeds["fitness"], seeds["reference"])
    print(f"{len(archs)} archs from the search windows of {args.run_dir}:", flush=True)
    for window, arch in archs:
        print(f"  {window}: {arch_summary(arch)} ({encoder_size(arch) / 1e6:.2f} M encoder)")
    scores, seconds = {}, {}
    for name, recipe in recipes.items():
        config = EvaluationConfig(model_dir=model_dir, tasks=(TaskInput(task, data_dir),),
                                  scheme=resolve_scheme("torch_fp32"), output_dir=out_dirs[name],
                                  recipe=recipe, do_lower_case=True, num_threads=1,
                                  rung="final" if name == "reference" else "search",
                                  cache_dir=args.cache_dir or os.path.join(args.work_dir, "cache"))
        started = time.process_time()
        records = Evaluator(config).evaluate([arch for _, arch in archs], seeds[name])
        seconds[name] = time.process_time() - started
        per_arch = {}
        for record in records:
            per_arch.setdefault(record["arch_key"], []).append(100.0 * record["best_acc"])
        scores[name] = per_arch
    keys = [record_key(arch) for _, arch in archs]
    reference = np.array([np.mean(scores["reference"][k]) for k in keys])
    baseline, sandwich = "former_fitness" in scores, "sandwich_fitness" in scores
    print("\n| arch | window | encoder M | reference mean ± std (n) | fitness |" + (" former fitness |" if baseline else "")
          + (" sandwich fitness |" if sandwich else ""))
    print("|---|---|---:|---:|---:|" + ("---:|" if baseline else "") + ("---:|" if sandwich else ""))
    for (window, arch), key, ref in zip(archs, keys, reference):
        values = scores["reference"][key]
        print(f"| {arch_summary(arch)} | {window} | {encoder_size(arch) / 1e6:.2f} | {ref:.1f} ± "
              f"{np.std(values, ddof=1) if len(values) > 1 else 0:.1f} ({len(values)}) | "
              f"{scores['fitness'][key][0]:.1f} |" + (f" {scores['former_fitness'][key][0]:.1f} |" if baseline else "")
              + (f" {scores['sandwich_fitness'][key][0]:.1f} |" if sandwich else ""))
    out = {}
    for name in [n for n in recipes if n != "reference"]:
        fit = [scores[name][k][0] for k in keys]
        out[name] = float(kendalltau(fit, reference).statistic)
    # what more seeds of a fitness would buy (at that many times the cost): each seed's tau and their mean's
    for name in [n for n in ("fitness", "sandwich_fitness") if n in scores and len(seeds[n]) > 1]:
        label = name.replace("_", " ")
        for index, seed in enumerate(seeds[name]):
            one = [scores[name][k][index] for k in keys]
            out[f"{label} seed {seed}"] = float(kendalltau(one, reference).statistic)
        mean = [np.mean(scores[name][k]) for k in keys]
        out[f"{label} mean of {len(seeds[name])} seeds"] = float(kendalltau(mean, reference).statistic)
    # the trivial predictor: within the demo's windows the archs differ mostly by their number of layers
    depth = [arch["sample_layer_num"] for _, arch in archs]
    out["depth alone (layers, ties kept)"] = float(kendalltau(depth, reference).statistic)
    ref_matrix = np.array([scores["reference"][k] for k in keys])
    consistency = reference_splits(ref_matrix, keep_aside=1).get(1, [])  # each seed against the others' mean
    spreads = [np.std(scores["reference"][k], ddof=1) for k in keys if len(scores["reference"][k]) > 1]
    print(f"\nKendall tau against the reference ({len(keys)} archs, mean of {len(seeds['reference'])} seeds): "
          + ", ".join(f"{name} {value:+.2f}" for name, value in out.items()))
    print(f"the reference's own consistency (one seed against the mean of the others): "
          + ", ".join(f"{value:+.2f}" for value in consistency))
    print(f"reference seed std: median {np.median(spreads):.1f}, max {np.max(spreads):.1f} points; "
          f"reference range {reference.min():.1f}..{reference.max():.1f}")
    depth_groups = [min(layers, 2) for layers in depth]  # one layer against more: the windows' one split
    ceilings = {model: tau_ceiling(ref_matrix, depth_groups, (1, 2, 4, math.inf), model) for model in ("observed", "shrunk")}
    for model, figures in ceilings.items():
        print(f"what a fitness of k fine-tunes of the reference's recipe can reach against a fresh {ref_matrix.shape[1]}-seed "
              f"reference ({model} true accuracies; mean tau, share of draws >= 0.6): " + ", ".join(
                  f"k={'inf' if math.isinf(k) else k} {tau:+.2f} ({share:.0%})" for k, (tau, share) in figures.items()))
    pairs = separated_pairs({k: scores["reference"][k] for k in keys})
    rankers = {name.replace("_", " "): {k: scores[name][k][0] for k in keys} for name in recipes if name != "reference"}
    rankers["depth alone"] = {k: arch["sample_layer_num"] for k, (_, arch) in zip(keys, archs)}
    ordered = {name: share_ordered(values, pairs) for name, values in rankers.items()}
    print(f"pairs the reference tells apart (Welch p < 0.05 over its seeds): {len(pairs)} of "
          f"{len(keys) * (len(keys) - 1) // 2}; ordered as the reference: " + ", ".join(
              f"{name} {same:.0%}" + (f" ({tied:.0%} tied)" if tied else "") for name, (same, tied) in ordered.items()))
    if ref_matrix.shape[1] >= 4:  # one fine-tune of the reference's recipe as the fitness, on the pairs the rest tell apart
        held_out = held_out_seed_shares({k: scores["reference"][k] for k in keys})
        print(f"one seed of the reference's recipe orders, of the pairs its other {ref_matrix.shape[1] - 1} seeds tell "
              f"apart: median {np.median(held_out):.0%} (each seed: " + ", ".join(f"{v:.0%}" for v in held_out) + ")")
    splits = reference_splits(ref_matrix, keep_aside=3)
    for k, taus in splits.items():
        print(f"measured: the mean of {k} reference seed(s) against the mean of the other {ref_matrix.shape[1] - k} "
              f"(every split): tau {np.mean(taus):+.2f} (range {min(taus):+.2f}..{max(taus):+.2f}, {len(taus)} splits)")
    print("CPU seconds per fine-tune: " + ", ".join(
        f"{name} {seconds[name] / max(1, len(keys) * len(seeds[name])):.1f}" for name in recipes)
          + " (a re-run reads the cache: 0; the sandwich fitness' includes its share of the task supernet's training)")
    variant = "".join(os.path.basename(out_dirs[name])[len(name):] for name in ("fitness", "reference"))
    if "sandwich_fitness" in recipes:
        variant += "_sandwich" + os.path.basename(out_dirs["sandwich_fitness"])[len("sandwich_fitness_"):]
    with open(os.path.join(args.work_dir, f"figures{variant}.json"), "w", encoding="utf-8") as handle:
        json.dump({"tau": out, "reference_consistency": consistency, "scores": scores, "seconds": seconds,
                   "tau_ceiling": {model: {("inf" if math.isinf(k) else str(k)): list(value) for k, value in figures.items()}
                                   for model, figures in ceilings.items()},
                   "reference_splits": {str(k): taus for k, taus in splits.items()},
                   "separated_pairs": {"count": len(pairs), "ordered": {name: list(v) for name, v in ordered.items()}},
                   "archs": [arch_summary(a) for _, a in archs]}, handle, indent=2)


def check_seeds_apart(fitness_recipe, reference_recipe, fitness_seeds, reference_seeds) -> None:
    """A run whose candidates' recipe is its finalists' own (the demo's since the tenth pass of issue 21): a fitness
    seed among the reference's would rank the reference with one of its own fine-tunes (one line naming the flag)."""
    from utils import UserError

    shared = sorted(set(fitness_seeds) & set(reference_seeds))
    if fitness_recipe == reference_recipe and shared:
        raise UserError(f"--ref_seeds: the run's candidates' recipe is its finalists' own, so the fitness seed(s) "
                        f"{', '.join(map(str, shared))} would be part of the reference; give --ref_seeds without them "
                        f"(e.g. the run's final seeds)")


def parse_recipe_assignment(text: str, flag: str) -> tuple[str, float | int]:
    """``FIELD=VALUE`` of --fitness_set / --ref_set: the field's value, typed as the field is (one line naming the
    flag)."""
    from evaluation.recipe import RecipeSettings, recipe_number_fields
    from utils import UserError

    field, _, raw = text.partition("=")
    numeric = recipe_number_fields()
    if field not in numeric:
        raise UserError(f"{flag} {text!r}: FIELD must be one of {', '.join(sorted(numeric))}")
    try:
        value = numeric[field](raw)
    except ValueError:
        raise UserError(f"{flag} {text!r}: {raw!r} is not a {numeric[field].__name__}") from None
    try:
        RecipeSettings(**{field: value})  # the recipe's own range check
    except UserError as error:
        raise UserError(f"{flag} {text!r}: {error}") from None
    return field, value


def record_key(arch: dict) -> str:
    from utils import arch_key

    return arch_key(arch)


if __name__ == "__main__":
    from utils import run_cli

    run_cli(main)
