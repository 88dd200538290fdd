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
optional crossover, exploration of unevaluated candidates). Output: JSON arch lines. Every
generation is logged to --search_log (default: next to the candidate file).
"""

from __future__ import annotations

import argparse
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
from utils import (
    UserError,
    add_space_arguments,
    arch_key,
    arch_summary,
    get_logger,
    read_arch_file,
    run_cli,
    space_from_args,
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
    parser.add_argument("--method", choices=METHODS, default="Random")
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
    parser.add_argument("--fitness_task", default=None, help="Evolved: use only this task's results")
    parser.add_argument("--seed", type=int, default=42, help="seed of every random draw")
    parser.add_argument("--search_log", default=None,
                        help="per-generation JSONL log (default: <candidate_file stem>.search_log.jsonl)")
    parser.add_argument("--generation", type=int, default=None,
                        help="generation number to log (default: 0 for Random/Fast, last + 1 for Evolved)")
    add_space_arguments(parser, default="paper_search")
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


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    space = space_from_args(args)
    window = LatencyWindow(args.latency_constraint, args.latency_window_low, args.latency_window_high)
    rule = arch_rule(args.model, space, args.mlm_head_dim)
    settings = EvolutionSettings(args.population, args.explore_rate, args.mutation_prob, args.crossover_prob,
                                 args.max_retries)
    if args.method == "Evolved" and not args.arch_perfs_file:
        raise UserError("--arch_perfs_file: required by --method Evolved")
    latency_fn, metadata = load_latency_fn(args.ckpt_path)
    logger.info("predictor %s (%s); window %s; space %s", args.ckpt_path,
                ", ".join(f"{k}={metadata[k]}" for k in sorted(metadata) if not isinstance(metadata[k], (dict, list))),
                window.describe(), space.name)

    if args.method == "Candidate":
        archs, latencies = generate_candidates(space, latency_fn, window, rule)
        write_arch_file(args.candidate_file, archs)
        logger.info("wrote %d candidates to %s (predicted %.3f..%.3f ms)", len(archs), args.candidate_file,
                    float(latencies.min()), float(latencies.max()))
        return 0

    candidates = read_candidates(args, space, rule, latency_fn, window)
    log_path = args.search_log or default_log_path(args.candidate_file)
    record = {"method": args.method, "output_file": args.output_file, "latency_constraint": args.latency_constraint,
              "window_ms": list(window.bounds), "seed": args.seed, "space": space.name, "model": args.model,
              "candidates": len(candidates), "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
    if args.method in ("Random", "Fast"):
        rng = random.Random(f"{args.method}:{args.seed}")
        archs = first_generation(candidates, args.gen_size, args.method, rng)
        latencies = [float(x) for x in latency_fn(archs)]
        record.update(archs=[arch_key(a) for a in archs], pred_latency_ms=latencies,
                      origins=[args.method.lower()] * len(archs))
    else:
        fitness = load_fitness(args.arch_perfs_file, args.fitness_task)
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
