"""The typed search call: ``run_method(config, method, ...)`` runs one method of a search
(``SearchConfig``) and writes its file.

* ``Candidate``: every grid arch of the space whose predicted latency is in the window -> the
  candidate file;
* ``Random`` / ``Fast``: ``gen_size`` archs drawn from the candidates (Fast: the original's fast
  shapes first); with a results file, a later generation of unevaluated candidates (the random-search
  baseline spends the same evaluations as evolution);
* ``Evolved``: ``population`` new archs bred from the best evaluated ones;
* ``TopK``: the ``top_k`` fittest evaluated archs that learned (``evaluation.learning``), for the final
  re-evaluation with several seeds; archs re-scored with more seeds first (``rank_by_rung``: the
  chain's ``rescore`` step, successive halving); ``<name>.final.learning.json`` says how many did not, and when none
  did the fittest are taken anyway (the chain finishes) and the report names no winner.

Every generation is logged (``search.history``); the search's identity is checked before anything is
written (``search.identity``).
"""

from __future__ import annotations

import json
import os
import random
import time

import numpy as np

from evaluation.learning import describe, failed_archs
from evaluation.results import fitness_scores, load_fitness
from search.config import SearchConfig, logger
from search.evolution import METHODS, evolve, filter_by_window, first_generation, generate_candidates, rule_archs
from search.history import fitness_by_generation, read_search_log, record_generation
from search.identity import check_identity
from utils import UserError, arch_key, arch_summary, atomic_write, read_arch_file, write_arch_file

ALL_METHODS = METHODS + ("TopK",)
LEARNING_SUFFIX = ".learning.json"


def run_method(config: SearchConfig, method: str, output_file: str | None = None, fitness_file: str | None = None,
               generation: int | None = None) -> list[dict]:
    """Run ``method`` (``ALL_METHODS``) of the search ``config``; returns the archs it wrote
    (``Candidate``: to the candidate file, the others: to ``output_file``). ``fitness_file``: the
    search's ``subbert.results`` (needed by Evolved and TopK; Random with it draws a later generation)."""
    check_method(method, output_file, fitness_file)
    metadata = config.predictor.metadata
    logger.info("predictor %s (%s); window %s; space %s (from %s)", config.predictor.path,
                ", ".join(f"{k}={metadata[k]}" for k in sorted(metadata) if not isinstance(metadata[k], (dict, list))),
                config.window.describe(), config.space.name, config.space_source)
    check_identity(config.identity_path, config.identity())
    if method == "Candidate":
        return write_candidates(config)
    candidates = read_candidates(config)
    if method == "TopK":
        return write_top_k(config, fitness_file, output_file)
    fitness = load_fitness(fitness_file, config.task, config.scheme.name if config.scheme else None,
                           config.fitness_recipe) \
        if fitness_file else None
    record = {"method": method, "output_file": os.path.realpath(output_file), "strategy": config.strategy,
              "latency_constraint": config.window.constraint, "window_ms": list(config.window.bounds),
              "seed": config.seed, "space": config.space.name, "model": config.model, "candidates": len(candidates),
              "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
    if method in ("Random", "Fast"):
        archs = _draw(config, method, candidates, fitness, record)
    else:
        archs = _evolve(config, candidates, fitness, fitness_file, record)
    write_arch_file(output_file, archs)
    number = record_generation(config.log_path, record, generation)
    logger.info("generation %d: wrote %d archs to %s (log %s)", number, len(archs), output_file, config.log_path)
    for arch, latency in zip(archs, record["pred_latency_ms"]):
        logger.debug("  %s  %.3f ms", arch_summary(arch), latency)
    return archs


def check_method(method: str, output_file: str | None, fitness_file: str | None) -> None:
    """The files a method needs, named (before any work)."""
    if method not in ALL_METHODS:
        raise UserError(f"--method: unknown method {method!r}; choose one of {', '.join(ALL_METHODS)}")
    if method == "Evolved" and not fitness_file:
        raise UserError("--arch_perfs_file: required by --method Evolved")
    if method == "TopK" and not fitness_file:
        raise UserError("--method TopK needs --arch_perfs_file and --top_k >= 1")
    if method != "Candidate" and not output_file:
        raise UserError(f"--output_file: required by --method {method}")


def write_candidates(config: SearchConfig) -> list[dict]:
    """``Candidate``: every grid arch whose predicted latency fits the window."""
    archs, latencies = generate_candidates(config.space, config.predictor.predict, config.window, config.rule())
    if len(archs) < 2 * config.sizes.gen_size:
        logger.warning("only %d candidates inside %s (first generation %d): the search has little to choose "
                       "from; widen the window or use a finer space", len(archs), config.window.describe(),
                       config.sizes.gen_size)
    write_arch_file(config.candidate_file, archs)
    logger.info("wrote %d candidates to %s (predicted %.3f..%.3f ms)", len(archs), config.candidate_file,
                float(latencies.min()), float(latencies.max()))
    return archs


def read_candidates(config: SearchConfig) -> list[dict]:
    """The candidate file, validated, ruled and re-checked against the window (a file made for
    another budget loses its out-of-window archs, with a warning)."""
    path, space, window = config.candidate_file, config.space, config.window
    if not os.path.isfile(path):
        raise UserError(f"--candidate_file: {path}: no such file (run --method Candidate first)")
    archs = rule_archs(read_arch_file(path, space), config.rule())
    if not archs:
        raise UserError(f"--candidate_file: {path} holds no arch of the {space.name} space")
    kept, _ = filter_by_window(archs, config.predictor.predict, window, f"--candidate_file {path}")
    if len(kept) < len(archs):
        logger.warning("%d of %d candidates are outside %s and were dropped", len(archs) - len(kept), len(archs),
                       window.describe())
    return kept


def _no_result(fitness_file: str, task: str | None) -> UserError:
    return UserError(f"--arch_perfs_file: {fitness_file} holds no result" + (f" for task {task}" if task else ""))


def write_top_k(config: SearchConfig, fitness_file: str, output_file: str) -> list[dict]:
    """``TopK``: the ``top_k`` fittest evaluated archs of the search's task that learned
    (``rank_learned``) and measure within the budget (``latency.finalists``: measured with the
    predictor's table protocol, in its unit)."""
    from latency.finalists import keep_within_budget

    evaluated = rank_by_rung(config, fitness_file)
    if not evaluated:
        raise _no_result(fitness_file, config.task)
    fitness = dict(evaluated)
    ranked = rank_learned(evaluated, failed_archs(fitness_file, config.task, config.fitness_recipe), output_file)
    archs = keep_within_budget([(json.loads(key), value) for key, value in ranked], config.predictor.predict,
                               config.predictor.metadata, config.window.constraint, config.sizes.top_k, output_file,
                               config.predictor.path)
    write_arch_file(output_file, archs)
    logger.info("wrote %d finalists of %d evaluated archs to %s: %s", len(archs), len(fitness), output_file,
                ", ".join(f"{arch_summary(a)} {fitness[arch_key(a)]:.4f}" for a in archs))
    return archs


def rank_by_rung(config: SearchConfig, fitness_file: str) -> list[tuple[str, float]]:
    """The search's evaluated archs as ``[(arch_key, mean fitness)]``, best first. An arch scored with
    more seeds (promoted to a higher rung by ``select_rescored``) ranks before every arch scored with
    fewer: successive halving compares the survivors of a rung with each other, never a survivor's mean
    with the lucky single score of an arch that was not promoted. Without re-scoring every arch has one
    seed and this is the plain order of fitness."""
    scores = fitness_scores(fitness_file, config.task, config.scheme.name if config.scheme else None,
                            config.fitness_recipe)
    means = {key: sum(values) / len(values) for key, values in scores.items()}
    return [(key, means[key]) for key in sorted(scores, key=lambda key: (-len(scores[key]), -means[key], key))]


def select_rescored(config: SearchConfig, fitness_file: str, output_file: str, size: int, seeds: list[int]) -> list[dict]:
    """The ``size`` fittest evaluated archs that learned (by their one-seed fitness: ``rank_by_rung``),
    written to ``output_file`` to be fine-tuned again with ``seeds`` (the chain's ``rescore`` step); the
    finalists are then chosen among them by their mean (``write_top_k``). Every candidate is inside the
    budget's window by prediction; the measured budget check stays with the finalists (``write_top_k``)."""
    ranked = rank_by_rung(config, fitness_file)
    if not ranked:
        raise _no_result(fitness_file, config.task)
    failed = failed_archs(fitness_file, config.task, config.fitness_recipe)
    learned = [item for item in ranked if item[0] not in failed] or ranked  # none learned: TopK says so
    chosen = learned[:size]
    archs = [json.loads(key) for key, _ in chosen]
    write_arch_file(output_file, archs)
    logger.info("re-scoring the %d fittest of %d evaluated archs with seeds %s: %s", len(archs), len(ranked),
                " ".join(map(str, seeds)), ", ".join(f"{arch_summary(a)} {value:.4f}" for a, (_, value) in
                                                     zip(archs, chosen)))
    return archs


def learning_summary_path(final_file: str) -> str:
    """``<name>.final.learning.json``: how many of the search's archs learned, next to its final file."""
    from latency.finalists import final_stem

    return final_stem(final_file) + LEARNING_SUFFIX


def rank_learned(ranked: list[tuple[str, float]], failed: dict[str, list[dict]], final_file: str) -> list[tuple[str, float]]:
    """``ranked`` ([(arch_key, fitness)], best first) without the archs none of whose fine-tunes learned
    (``failed``: ``evaluation.learning.failed_archs``); what was left out is written to
    ``learning_summary_path(final_file)``. When none learned: one warning line, and ``ranked`` whole
    (the final step still runs, so the chain finishes; the report names no winner)."""
    learned = [item for item in ranked if item[0] not in failed]
    name = os.path.basename(final_file).removesuffix(".cands").removesuffix(".final")
    message = None
    if not learned:
        message = (f"NOTHING LEARNED: every fine-tune of search {name} ({len(ranked)} archs) "
                   f"{describe([v for found in failed.values() for v in found])}; its finalists are the fittest "
                   "anyway, so the chain finishes, and no winner can be named")
        logger.warning("%s", message)
    elif failed:
        logger.info("%d of %d evaluated archs did not learn and cannot be finalists", len(failed), len(ranked))
    summary = {"evaluated": len(ranked), "learned": len(learned), "not_learned": len(failed),
               "none_learned": not learned, "message": message,
               "excluded": [{"arch_key": key, "arch_summary": arch_summary(json.loads(key)), "fitness": value,
                             "reasons": [v.get("reason") for v in failed[key]]} for key, value in ranked if key in failed]}
    with atomic_write(learning_summary_path(final_file)) as handle:
        json.dump(summary, handle, indent=2, sort_keys=True)
        handle.write("\n")
    return learned or ranked


def _draw(config: SearchConfig, method: str, candidates: list[dict], fitness: dict | None, record: dict) -> list[dict]:
    """Random / Fast: a first generation, or (with fitness) a later one of unevaluated candidates."""
    rng = random.Random(f"{method}:{config.seed}" + (f":{len(fitness)}" if fitness else ""))
    pool = [arch for arch in candidates if not fitness or arch_key(arch) not in fitness]
    if not pool:
        raise UserError(f"every candidate inside {config.window.describe()} is evaluated; nothing new to draw")
    archs, origins = first_generation(pool, config.sizes.gen_size, method, rng, with_origins=True)
    latencies = [float(x) for x in config.predictor.predict(archs)]
    record.update(archs=[arch_key(a) for a in archs], pred_latency_ms=latencies, origins=origins)
    if fitness:
        record.update(evaluated=len(fitness), best_fitness=max(fitness.values()),
                      mean_fitness=float(np.mean(list(fitness.values()))))
    return archs


def _evolve(config: SearchConfig, candidates: list[dict], fitness: dict | None, fitness_file: str,
            record: dict) -> list[dict]:
    """Evolved: ``population`` children of the best evaluated archs (see ``search.evolution.evolve``)."""
    if not fitness:
        raise _no_result(fitness_file, config.task)
    # The seed mixes in how much has been evaluated, so each generation draws differently
    # while a re-run on the same results reproduces the same generation.
    rng = random.Random(f"Evolved:{config.seed}:{len(fitness)}")
    outcome = evolve(config.space, fitness, candidates, config.predictor.predict, config.window, rng,
                     config.evolution, config.rule())
    history = fitness_by_generation(read_search_log(config.log_path), fitness)
    for row in history:
        if row["evaluated"]:
            logger.info("generation %d (%s): %d/%d evaluated, best %.4f, mean %.4f", row["generation"],
                        row["method"], row["evaluated"], row["proposed"], row["best"], row["mean"])
    record.update(archs=[arch_key(a) for a in outcome.archs], pred_latency_ms=outcome.latencies,
                  origins=outcome.origins, evaluated=len(fitness), best_fitness=max(fitness.values()),
                  mean_fitness=float(np.mean(list(fitness.values()))), previous_generations=history,
                  **outcome.summary())
    if not outcome.archs:
        raise UserError(f"no new arch could be found inside {config.window.describe()}: all candidates are "
                        "evaluated and mutation finds nothing new; widen the window or the space")
    return outcome.archs
