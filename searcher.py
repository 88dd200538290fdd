#!/usr/bin/env python
"""Evolutionary search for the most accurate sub-model under a latency budget.

    python searcher.py --method Candidate --ckpt_path conf_datasets/lat_predictor_quant.pt \\
        --latency_constraint 10 --candidate_file cands/kd_ptq_10.cands
    python searcher.py --method Fast --ckpt_path ... --latency_constraint 10 \\
        --candidate_file cands/kd_ptq_10.cands --output_file cands/1st_generation_kd_ptq_10.cands
    python searcher.py --method Evolved --ckpt_path ... --latency_constraint 10 \\
        --candidate_file cands/kd_ptq_10.cands --arch_perfs_file output/kd_ptq_10/subbert.results \\
        --output_file cands/1st_generation_kd_ptq_10.evo.cands

Methods (the original's): Candidate enumerates the search space and writes every arch whose
predicted latency is in [0.85c, 1.1c] to --candidate_file; Random / Fast draw --gen_size archs
from the candidates (Fast: 1.6h <= ffn <= 1.9h and 0.7h <= qkv <= h, topped up at random);
Evolved breeds --population new archs from the best evaluated ones (roulette + mutation,
optional crossover, exploration of unevaluated candidates). Added: Random with --arch_perfs_file
draws a later generation of unevaluated candidates (the random-search baseline spends the same
evaluations as evolution), and TopK writes the --top_k fittest evaluated archs for the final
re-evaluation with several seeds. Output: JSON arch lines. Every generation is logged to
--search_log (default: next to the candidate file).

The search space defaults to the one the supernet (--supernet) records, else the predictor's;
a space the supernet cannot run, whose slices its sampler never trained, or that reaches outside
the predictor's latency grid is refused before any file is written, and so is a --scheme whose
latency backend is not the predictor's. Each search records what it is (task, scheme, budget,
space, predictor, supernet, strategy) in <candidate stem>.search.json; a later step that differs
is refused in one line.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time

import numpy as np

from evaluation.results import load_fitness
from search.evolution import (
    METHODS,
    MODELS,
    EvolutionSettings,
    LatencyWindow,
    arch_rule,
    evolve,
    filter_by_window,
    first_generation,
    generate_candidates,
    rule_archs,
)
from search.history import default_log_path, fitness_by_generation, read_search_log, record_generation
from search.identity import STRATEGIES, check_identity, identity_path
from utils import (
    SearchSpace,
    UserError,
    add_space_arguments,
    arch_key,
    arch_summary,
    family_of,
    get_logger,
    get_space,
    read_arch_file,
    read_space_record,
    run_cli,
    space_from_args,
    uncovered_dimensions,
    write_arch_file,
)

logger = get_logger("searcher")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt_path", required=True, help="latency predictor checkpoint (latency_predictor.py)")
    parser.add_argument("--candidate_file", default="cands/candidates.cands",
                        help="Candidate writes it; the other methods read it")
    parser.add_argument("--arch_perfs_file", default=None,
                        help="Evolved: subbert.results (or its .jsonl twin) of the evaluated archs")
    parser.add_argument("--output_file", default="cands/archs.txt", help="Random/Fast/Evolved: the new archs")
    parser.add_argument("--latency_constraint", type=float, default=7.0, help="latency budget c in ms")
    parser.add_argument("--latency_window_low", type=float, default=0.85, help="window starts at low x c")
    parser.add_argument("--latency_window_high", type=float, default=1.1, help="window ends at high x c")
    parser.add_argument("--method", choices=METHODS + ("TopK",), default="Random")
    parser.add_argument("--model", choices=MODELS, default="KD",
                        help="KD: qkv = hidden (the paper); MLM: qkv = --mlm_head_dim x heads")
    parser.add_argument("--mlm_head_dim", type=int, default=64, help="head size of the MLM rule")
    parser.add_argument("--gen_size", type=int, default=10, help="Random/Fast: size of the first generation")
    parser.add_argument("--population", type=int, default=25,
                        help="Evolved: parents kept and children produced per generation")
    parser.add_argument("--explore_rate", type=float, default=0.5,
                        help="Evolved: chance that a slot takes a random unevaluated candidate")
    parser.add_argument("--mutation_prob", type=float, default=0.25, help="Evolved: mutation probability")
    parser.add_argument("--crossover_prob", type=float, default=0.0,
                        help="Evolved: chance that a child is bred from two parents (0 = the original)")
    parser.add_argument("--max_retries", type=int, default=200,
                        help="Evolved: mutation attempts per slot before falling back to exploration")
    parser.add_argument("--fitness_task", "--task_name", dest="fitness_task", default=None,
                        help="the search's task: Evolved/Random/TopK use only its results (recorded in the identity)")
    parser.add_argument("--supernet", default=None,
                        help="the supernet the candidates will be evaluated on: its recorded space is the default "
                             "--space, and archs it cannot run (or never trained) are refused")
    parser.add_argument("--scheme", default=None,
                        help="the search's scheme (quantize_utils.SCHEMES: fp, ptq, ort, ...): refused unless the "
                             "predictor was trained on that scheme's latency table; fitness must be scored with it")
    parser.add_argument("--strategy", choices=STRATEGIES, default="evolution",
                        help="recorded in the search identity: evolution or the random-search baseline")
    parser.add_argument("--results_dir", default=None,
                        help="where the evaluator writes this search's results (recorded for the report)")
    parser.add_argument("--top_k", type=int, default=3, help="TopK: how many of the fittest archs to write")
    parser.add_argument("--seed", type=int, default=42, help="seed of every random draw")
    parser.add_argument("--search_log", default=None,
                        help="per-generation JSONL log (default: <candidate_file stem>.search_log.jsonl)")
    parser.add_argument("--generation", type=int, default=None,
                        help="generation number to log (default: 0 for Random/Fast, last + 1 for Evolved)")
    add_space_arguments(parser, default=None, role="search")
    legacy = parser.add_argument_group("original flags, accepted and ignored (the predictor checkpoint "
                                       "stores its own features, norms and sizes)")
    for flag, nargs in (("--feature_norm", "+"), ("--lat_norm", None), ("--feature_dim", None),
                        ("--hidden_dim", None), ("--hidden_layer_num", None)):
        legacy.add_argument(flag, nargs=nargs, default=None, help=argparse.SUPPRESS)
    return parser


def load_latency_fn(path: str):
    """The predictor as a plain callable ``archs -> ms array`` plus its metadata."""
    if not os.path.isfile(path):
        raise UserError(f"--ckpt_path: {path}: no such predictor checkpoint (train one with latency_predictor.py)")
    from latency_predictor import LatencyPredictor

    predictor = LatencyPredictor.load(path)
    return (lambda archs: np.asarray(predictor.predict_many(list(archs)), dtype=np.float64)), dict(predictor.metadata)


def read_candidates(args, space, rule, latency_fn, window) -> list[dict]:
    """The candidate file, validated, ruled and re-checked against the window (a file made for
    another budget loses its out-of-window archs, with a warning)."""
    if not os.path.isfile(args.candidate_file):
        raise UserError(f"--candidate_file: {args.candidate_file}: no such file (run --method Candidate first)")
    archs = rule_archs(read_arch_file(args.candidate_file, space), rule)
    if not archs:
        raise UserError(f"--candidate_file: {args.candidate_file} holds no arch of the {space.name} space")
    kept, _ = filter_by_window(archs, latency_fn, window, f"--candidate_file {args.candidate_file}")
    if len(kept) < len(archs):
        logger.warning("%d of %d candidates are outside %s and were dropped", len(archs) - len(kept), len(archs),
                       window.describe())
    return kept


def predictor_space(metadata: dict) -> SearchSpace | None:
    """The latency space a predictor was trained on, as its metadata records it."""
    definition = metadata.get("space_definition")
    if isinstance(definition, dict):
        return SearchSpace.from_dict(definition)
    name = metadata.get("space")
    return get_space(name) if isinstance(name, str) and name in _named_spaces() else None


def _named_spaces():
    from utils import SPACES

    return SPACES


def resolve_search_space(args, metadata: dict):
    """``(space, supernet config or None, supernet sampler space or None)``, checked (see module doc)."""
    recorded, config = {}, None
    if args.supernet:
        from transformer.config import SuperBertConfig

        config = SuperBertConfig.load(args.supernet)  # one-line error for a missing / non-BERT dir
        recorded = read_space_record(args.supernet)
    trained_on = predictor_space(metadata)
    base, source = recorded.get("search"), f"the supernet {args.supernet}"
    if base is None:
        family = metadata.get("space_family")
        if isinstance(family, dict) and isinstance(family.get("search"), dict):
            base, source = SearchSpace.from_dict(family["search"]), f"the predictor {args.ckpt_path}"
        elif (family_of(trained_on) or {}).get("search") is not None:
            base, source = family_of(trained_on)["search"], f"the predictor's {trained_on.name} family"
    space = space_from_args(args, base)
    if space is None:
        raise UserError("--space: no search space given and none recorded by the supernet (--supernet) or the "
                        "predictor; pass --space NAME or a JSON space file")
    if args.space:
        source = f"--space {args.space}"
    if config is not None:
        from transformer.modeling_super import check_arch_fits

        check_arch_fits(space.largest(), config, where=f"the {space.name} space's largest arch (from {source})")
        sampler = recorded.get("supernet")
        outside = uncovered_dimensions(space, sampler) if sampler is not None else []
        if outside:
            raise UserError(f"the {space.name} space (from {source}) selects slices the supernet {args.supernet} "
                            f"never trained ({'; '.join(outside)} of its sampler {sampler.name})")
    if trained_on is not None:
        # a predictor extrapolates at most one grid step beyond the sizes it was trained on
        outside = uncovered_dimensions(space, trained_on, slack_steps=1)
        if outside:
            raise UserError(f"the {space.name} space (from {source}) reaches outside the latency grid the predictor "
                            f"{args.ckpt_path} was trained on ({'; '.join(outside)} of {trained_on.name}, "
                            "more than one grid step)")
    return space, source


def check_scheme(args, metadata: dict):
    """The search's scheme, refused unless the predictor was trained on its latency backend."""
    if not args.scheme:
        return None
    from quantize_utils import resolve_scheme

    scheme = resolve_scheme(args.scheme, "--scheme")
    backend = metadata.get("backend")
    if backend in (None, "unknown"):
        logger.warning("the predictor %s does not say which latency backend it was trained on; assuming %s",
                       args.ckpt_path, scheme.latency_backend)
    elif backend != scheme.latency_backend:
        raise UserError(f"--scheme {scheme.name} is timed as {scheme.latency_backend}, but the predictor "
                        f"{args.ckpt_path} was trained on a {backend} table; use that scheme's predictor")
    return scheme


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    window = LatencyWindow(args.latency_constraint, args.latency_window_low, args.latency_window_high)
    settings = EvolutionSettings(args.population, args.explore_rate, args.mutation_prob, args.crossover_prob,
                                 args.max_retries)
    if args.method == "Evolved" and not args.arch_perfs_file:
        raise UserError("--arch_perfs_file: required by --method Evolved")
    if args.method == "TopK" and (not args.arch_perfs_file or args.top_k < 1):
        raise UserError("--method TopK needs --arch_perfs_file and --top_k >= 1")
    latency_fn, metadata = load_latency_fn(args.ckpt_path)
    scheme = check_scheme(args, metadata)
    space, source = resolve_search_space(args, metadata)
    rule = arch_rule(args.model, space, args.mlm_head_dim)
    logger.info("predictor %s (%s); window %s; space %s (from %s)", args.ckpt_path,
                ", ".join(f"{k}={metadata[k]}" for k in sorted(metadata) if not isinstance(metadata[k], (dict, list))),
                window.describe(), space.name, source)
    check_identity(identity_path(args.candidate_file), {
        "task_name": args.fitness_task, "scheme": scheme.name if scheme else None,
        "latency_constraint": args.latency_constraint, "window_ms": [round(b, 6) for b in window.bounds],
        "space": space.to_dict(), "predictor": os.path.realpath(args.ckpt_path),
        "supernet": os.path.realpath(args.supernet) if args.supernet else None, "strategy": args.strategy,
        "results_dir": os.path.realpath(args.results_dir) if args.results_dir else None,
        "candidate_file": os.path.realpath(args.candidate_file)})
    if args.method == "Candidate":
        archs, latencies = generate_candidates(space, latency_fn, window, rule)
        if len(archs) < 2 * args.gen_size:
            logger.warning("only %d candidates inside %s (first generation %d): the search has little to choose "
                           "from; widen the window or use a finer space", len(archs), window.describe(), args.gen_size)
        write_arch_file(args.candidate_file, archs)
        logger.info("wrote %d candidates to %s (predicted %.3f..%.3f ms)", len(archs), args.candidate_file,
                    float(latencies.min()), float(latencies.max()))
        return 0

    candidates = read_candidates(args, space, rule, latency_fn, window)
    log_path = args.search_log or default_log_path(args.candidate_file)
    record = {"method": args.method, "output_file": os.path.realpath(args.output_file), "strategy": args.strategy, "latency_constraint": args.latency_constraint,
              "window_ms": list(window.bounds), "seed": args.seed, "space": space.name, "model": args.model,
              "candidates": len(candidates), "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
    fitness = None
    if args.arch_perfs_file:
        fitness = load_fitness(args.arch_perfs_file, args.fitness_task, scheme.name if scheme else None)
    if args.method == "TopK":
        if not fitness:
            raise UserError(f"--arch_perfs_file: {args.arch_perfs_file} holds no result"
                            + (f" for task {args.fitness_task}" if args.fitness_task else ""))
        from latency.finalists import keep_within_budget

        ranked = sorted(fitness.items(), key=lambda item: (-item[1], item[0]))
        # the budget kept by measurement: the fittest archs that measure within it, in the table's unit
        archs = keep_within_budget([(json.loads(key), value) for key, value in ranked], latency_fn, metadata,
                                   args.latency_constraint, args.top_k, args.output_file, args.ckpt_path)
        write_arch_file(args.output_file, archs)
        logger.info("wrote %d finalists of %d evaluated archs to %s: %s", len(archs), len(fitness), args.output_file,
                    ", ".join(f"{arch_summary(a)} {fitness[arch_key(a)]:.4f}" for a in archs))
        return 0
    if args.method in ("Random", "Fast"):
        rng = random.Random(f"{args.method}:{args.seed}" + (f":{len(fitness)}" if fitness else ""))
        pool = [arch for arch in candidates if not fitness or arch_key(arch) not in fitness]
        if not pool:
            raise UserError(f"every candidate inside {window.describe()} is evaluated; nothing new to draw")
        archs, origins = first_generation(pool, args.gen_size, args.method, rng, with_origins=True)
        latencies = [float(x) for x in latency_fn(archs)]
        record.update(archs=[arch_key(a) for a in archs], pred_latency_ms=latencies, origins=origins)
        if fitness:
            record.update(evaluated=len(fitness), best_fitness=max(fitness.values()),
                          mean_fitness=float(np.mean(list(fitness.values()))))
    else:
        if not fitness:
            raise UserError(f"--arch_perfs_file: {args.arch_perfs_file} holds no result"
                            + (f" for task {args.fitness_task}" if args.fitness_task else ""))
        # The seed mixes in how much has been evaluated, so each generation draws differently
        # while a re-run on the same results reproduces the same generation.
        rng = random.Random(f"Evolved:{args.seed}:{len(fitness)}")
        outcome = evolve(space, fitness, candidates, latency_fn, window, rng, settings, rule)
        archs = outcome.archs
        history = fitness_by_generation(read_search_log(log_path), fitness)
        for row in history:
            if row["evaluated"]:
                logger.info("generation %d (%s): %d/%d evaluated, best %.4f, mean %.4f", row["generation"],
                            row["method"], row["evaluated"], row["proposed"], row["best"], row["mean"])
        record.update(archs=[arch_key(a) for a in archs], pred_latency_ms=outcome.latencies,
                      origins=outcome.origins, evaluated=len(fitness), best_fitness=max(fitness.values()),
                      mean_fitness=float(np.mean(list(fitness.values()))), previous_generations=history,
                      **outcome.summary())
        if not archs:
            raise UserError(f"no new arch could be found inside {window.describe()}: all candidates are evaluated "
                            "and mutation finds nothing new; widen the window or the space")
    write_arch_file(args.output_file, archs)
    generation = record_generation(log_path, record, args.generation)
    logger.info("generation %d: wrote %d archs to %s (log %s)", generation, len(archs), args.output_file, log_path)
    for arch, latency in zip(archs, record["pred_latency_ms"]):
        logger.debug("  %s  %.3f ms", arch_summary(arch), latency)
    return 0


if __name__ == "__main__":
    run_cli(main)
