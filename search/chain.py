"""A search's steps in one process, over typed values only: the ``SearchPlan`` (settings), its
``SearchConfig`` (built once: predictor, supernet, space, window) and its evaluator (inputs read once).
Each step calls ``search.methods.run_method`` or ``evaluation.evaluate.Evaluator.evaluate``.

    cand  -> cands/<name>.cands                        (Candidate)
    fast  -> cands/1st_generation_<name>.cands          (Fast; rand: Random)
    eval  -> output/<name>/subbert.results              (the first generation, or GENERATION's file)
    evol  -> cands/1st_generation_<name>.gen<i>.evo.cands, copied to .evo.cands (Evolved; with
             GENERATION=i and STRATEGY=random, rand draws it at random: the random-search baseline)
    rescore -> cands/<name>.rescore.cands: with RESCORE_TOP=n, the n fittest fine-tuned again with the
             candidates' recipe until each has RESCORE_SEEDS seeds; TopK then ranks them first, by their
             mean (successive halving: one lucky seed no longer makes a finalist)
    final -> cands/<name>.final.cands (TopK), evaluated with every seed of SEEDS

A step whose output file exists is skipped (a re-run resumes; FORCE=1 redoes it); evaluation skips
what is evaluated.
"""

from __future__ import annotations

import dataclasses
import os
import shutil

from search.config import load_predictor, load_supernet_record
from search.methods import run_method, select_rescored
from search.plan import OPS, SearchPlan
from utils import UserError, get_logger

logger = get_logger("run_search")


class SearchRun:
    """One search: its plan, its configuration and its evaluator, each made once."""

    def __init__(self, plan: SearchPlan, load=load_predictor):
        from evaluation.evaluate import Evaluator

        self.plan = plan
        self.config = plan.search_config(load(plan.predictor), load_supernet_record(plan.model_dir))
        self.evaluator = Evaluator(plan.evaluation_config())
        self._final_evaluator = None

    @property
    def final_evaluator(self):
        """The finalists' evaluator: the final recipe (FINAL_EVAL_ARGS), rung ``final``."""
        if self._final_evaluator is None:
            from evaluation.evaluate import Evaluator

            self._final_evaluator = Evaluator(self.plan.evaluation_config(final=True))
        return self._final_evaluator

    def check(self, ops) -> None:
        """The evaluation's inputs (tokenizer, every TSV) read and checked before the first step writes."""
        if {"eval", "rescore", "final"} & set(ops):
            self.evaluator.check_inputs()
        if "final" in ops:
            self.final_evaluator.check_inputs()

    def step(self, op: str, generation: int | None = None) -> None:
        plan = self.plan.at_generation(generation) if generation is not None else self.plan
        if op not in OPS:
            raise UserError(f"OP must be one of {', '.join(OPS)}, got {op!r}")
        for name, directory in (("CANDS_DIR", plan.cands_dir), ("OUTPUT_ROOT", plan.output_dir)):
            try:
                os.makedirs(directory, exist_ok=True)
            except OSError as err:
                raise UserError(f"{name}={directory}: cannot create it ({err.strerror})") from None
        getattr(self, f"_{op}")(plan)

    def run(self, whole: str) -> None:
        """``all``: cand -> first generation -> eval -> generations -> final; ``generations``: just those."""
        plan = self.plan
        later = "rand" if plan.strategy == "random" else "evol"
        self.check(("eval", "final") if whole == "all" else ("eval",))
        if whole == "all":
            for op in ("cand", plan.first_generation, "eval"):
                self.step(op)
        for index in range(plan.first_generation_index, plan.first_generation_index + plan.generations):
            logger.info("generation %d of %s", index, plan.search_name)
            self.step(later, index)
            self.step("eval", index)
        if whole == "all" and plan.rescore_top:
            self.step("rescore")
        if whole == "all" and plan.final:
            self.step("final")

    # ---- the steps
    def _cand(self, plan: SearchPlan) -> None:
        if not _exists(plan.candidate_file, plan):
            run_method(self.config, "Candidate")

    def _fast(self, plan: SearchPlan) -> None:
        if not _exists(plan.first_generation_file, plan):
            run_method(self.config, "Fast", plan.first_generation_file)

    def _rand(self, plan: SearchPlan) -> None:
        if plan.generation is None:  # the first generation, drawn at random
            if not _exists(plan.first_generation_file, plan):
                run_method(self.config, "Random", plan.first_generation_file)
            return
        # a later generation of the random baseline: as many archs as evolution breeds (POPULATION)
        sizes = self.config.sizes
        if "gen_size" not in plan.search_args:
            sizes = dataclasses.replace(sizes, gen_size=self.config.evolution.population)
        self._later(plan, "Random", dataclasses.replace(self.config, sizes=sizes))

    def _evol(self, plan: SearchPlan) -> None:
        self._later(plan, "Evolved", self.config)

    def _later(self, plan: SearchPlan, method: str, config) -> None:
        target = plan.generation_file(plan.generation) if plan.generation is not None else plan.evo_file
        if not _exists(target, plan):
            run_method(config, method, target, plan.results, plan.generation)
        if target != plan.evo_file:
            shutil.copyfile(target, plan.evo_file)  # the original's artefact name holds the latest generation

    def _eval(self, plan: SearchPlan) -> None:
        default = plan.generation_file(plan.generation) if plan.generation is not None else plan.first_generation_file
        self._evaluate(plan.arches_file or default, [plan.seed])

    def _rescore(self, plan: SearchPlan) -> None:
        if not plan.rescore_top:
            raise UserError("OP=rescore needs RESCORE_TOP >= 1 (how many of the fittest archs get more seeds)")
        seeds = plan.rescore_seed_list()
        if not _exists(plan.rescore_file, plan):
            select_rescored(self.config, plan.results, plan.rescore_file, plan.rescore_top, seeds)
        self._evaluate(plan.rescore_file, seeds)

    def _final(self, plan: SearchPlan) -> None:
        reused = plan.reused_selection_seeds()
        if reused:  # the paper's protocol (one recipe, the search seed among SEEDS) does so on purpose: said, not refused
            logger.info("SEEDS=%s holds %s, whose fine-tune with the finalists' own recipe chose the finalist: the final "
                        "step reuses it, and the finalist's mean leans towards that seed's luck; final seeds other than "
                        "the search's (e.g. the integers after SEED) score it without that lean",
                        " ".join(map(str, plan.seeds)), ", ".join(map(str, reused)))
        if not _exists(plan.final_file, plan):
            run_method(self.config, "TopK", plan.final_file, plan.results)
        evaluator = self.final_evaluator
        write_final_record(plan, evaluator.config)
        self._evaluate(plan.final_file, list(plan.seeds), save_seeds=plan.final_save_seeds(), evaluator=evaluator)

    def _evaluate(self, path: str, seeds: list[int], save_seeds: tuple[int, ...] = (), evaluator=None) -> None:
        from evaluation.config import read_arch_lines

        archs, origins = read_arch_lines(path)
        if not archs:
            raise UserError(f"ARCHES_FILE={path} holds no arch")
        (evaluator or self.evaluator).evaluate(archs, seeds, origins, save_seeds=save_seeds, arches_file=path)


def write_final_record(plan: SearchPlan, config) -> None:
    """``<name>.final.json``: the final step's seeds and recipe (the report's finalists are the results
    of that recipe), written before it evaluates, atomically."""
    import json

    from glue.tasks import get_task
    from utils import atomic_write

    recipe = config.recipe_for(get_task(plan.task_name))
    search_recipe = plan.evaluation_config().recipe_for(get_task(plan.task_name))
    with atomic_write(plan.final_record) as handle:
        json.dump({"seeds": list(plan.seeds), "search_seed": plan.seed, "recipe": recipe.settings(),
                   "recipe_id": recipe.identity(), "search_recipe": search_recipe.settings(),
                   "search_recipe_id": search_recipe.identity(), "top_k": plan.top_k,
                   "rescore": {"top": plan.rescore_top, "seeds": plan.rescore_seed_list()} if plan.rescore_top else None},
                  handle, indent=2, sort_keys=True)
        handle.write("\n")


def _exists(path: str, plan: SearchPlan) -> bool:
    """A step's output is there and FORCE is not set: skip the step (a re-run resumes)."""
    if os.path.isfile(path) and os.path.getsize(path) and not plan.force:
        print(f"run_search: {path} exists; skipping (FORCE=1 to redo)", flush=True)
        return True
    return False
