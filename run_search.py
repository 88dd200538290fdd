#!/usr/bin/env python
"""A search's steps in one process: the command line behind ``script/search.sh`` (one step) and
``script/run_search.sh`` (the whole search). Settings come from the environment (see
``bash script/search.sh --help``); every input is checked before a step writes anything.

    python run_search.py cand|rand|fast|eval|evol|final [TYPE] [LATENCY_CONSTRAINT] [DATA_DIR] [TASK_NAME]
    python run_search.py all           # cand -> first generation -> eval -> GENERATIONS x (evol|rand, eval) -> final
    python run_search.py generations   # GENERATIONS x (evol|rand, eval), from FIRST_GENERATION_INDEX

Each step calls ``searcher.main`` or the evaluator's ``main`` with the arguments the step would
get on its own; running them in one process saves starting Python, torch and transformers for
every step (several seconds each, as much as a small fine-tune).
"""

from __future__ import annotations

import os
import shutil
import sys

import searcher
from evaluation import runner
from latency.predictor.lock import reading
from search.plan import OPS, SearchPlan, plan_from_env
from utils import UserError, get_logger, run_cli

logger = get_logger("run_search")
ROOT = os.path.dirname(os.path.abspath(__file__))


def _exists(path: str, plan: SearchPlan) -> bool:
    """A step's output is there and FORCE is not set: skip the step (a re-run resumes)."""
    if os.path.isfile(path) and os.path.getsize(path) and not plan.force:
        print(f"run_search: {path} exists; skipping (FORCE=1 to redo)", flush=True)
        return True
    return False


def _search(*argv: str) -> None:
    code = searcher.main(list(argv))
    if code:
        raise SystemExit(code)


def _evaluate(plan: SearchPlan, arches: str, seeds: list[int], *extra: str) -> None:
    code = runner.main(plan.evaluator_argv(arches, seeds, *extra), quantize=plan.evaluator == "ptq",
                       description=runner.__doc__)
    if code:
        raise SystemExit(code)


def step(plan: SearchPlan, op: str) -> None:
    os.makedirs(plan.cands_dir, exist_ok=True)
    os.makedirs(plan.output_dir, exist_ok=True)
    generation = plan.generation
    if op == "cand":
        if not _exists(plan.candidate_file, plan):
            _search(*plan.searcher_argv("--method", "Candidate", "--gen_size", str(plan.gen_size)))
    elif op in ("rand", "fast") and generation is None:
        if not _exists(plan.first_generation_file, plan):
            method = "Random" if op == "rand" else "Fast"
            _search(*plan.searcher_argv("--method", method, "--gen_size", str(plan.gen_size), "--output_file",
                                        plan.first_generation_file))
    elif op in ("rand", "evol"):  # a later generation: evolved, or drawn at random (the random baseline)
        target = plan.generation_file(generation) if generation is not None else plan.evo_file
        if not _exists(target, plan):
            number = ["--generation", str(generation)] if generation is not None else []
            if op == "rand":
                _search(*plan.searcher_argv("--method", "Random", "--gen_size", str(plan.population),
                                            "--arch_perfs_file", plan.results, "--output_file", target, *number))
            else:
                _search(*plan.searcher_argv("--method", "Evolved", "--population", str(plan.population),
                                            "--arch_perfs_file", plan.results, "--output_file", target, *number))
        if target != plan.evo_file:
            shutil.copyfile(target, plan.evo_file)  # the original's artefact name holds the latest generation
    elif op == "eval":
        default = plan.generation_file(generation) if generation is not None else plan.first_generation_file
        _evaluate(plan, plan.arches_file or default, [plan.seed])
    elif op == "final":
        if not _exists(plan.final_file, plan):
            _search(*plan.searcher_argv("--method", "TopK", "--top_k", str(plan.top_k), "--arch_perfs_file",
                                        plan.results, "--output_file", plan.final_file))
        _evaluate(plan, plan.final_file, plan.seeds, *plan.save_argv())
    else:
        raise UserError(f"OP must be one of {', '.join(OPS)}, got {op!r}")


def _generations(env: dict) -> tuple[int, int]:
    from search.plan import _int

    return _int(env, "GENERATIONS", 3, 0), _int(env, "FIRST_GENERATION_INDEX", 1, 1)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 2
    op, positional = argv[0], argv[1:5]
    env = dict(os.environ)
    if op in ("all", "generations"):
        plan = plan_from_env(env, ROOT, None, positional)
        with reading([plan.predictor]):  # nobody rewrites the predictor while the search reads it
            _all(plan, op, env, positional)
        return 0
    if op not in OPS:
        raise UserError(f"OP must be one of {', '.join(OPS)}, all or generations, got {op!r} (see --help)")
    plan = plan_from_env(env, ROOT, op, positional)
    with reading([plan.predictor]):
        step(plan, op)
    return 0


def _all(plan: SearchPlan, op: str, env: dict, positional: list[str]) -> None:
    generations, first = _generations(env)
    if op == "all":
        first_op = env.get("FIRST_GENERATION") or ("rand" if plan.strategy == "random" else "fast")
        if first_op not in ("fast", "rand"):
            raise UserError(f"FIRST_GENERATION must be fast or rand, got {first_op!r}")
        for current in ("cand", first_op, "eval"):
            step(plan, current)
    later = "rand" if plan.strategy == "random" else "evol"
    for index in range(first, first + generations):
        logger.info("generation %d of %s", index, plan.search_name)
        at = plan_from_env(dict(env, GENERATION=str(index)), ROOT, None, positional)
        step(at, later)
        step(at, "eval")
    if op == "all" and (env.get("FINAL") or "1") == "1":
        step(plan, "final")


if __name__ == "__main__":
    run_cli(main)
