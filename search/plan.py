"""One search's settings, read once from the environment the search scripts document (``script/search.sh
--help``), every one checked -- type, range, finiteness, names that stay inside their directory --
before anything is written, and turned into the typed configurations of the search
(``search_config``) and of its evaluations (``evaluation_config``).

``run_search.py`` runs the steps in one process (``search.chain``); ``script/search.sh`` and
``script/run_search.sh`` are its shell faces. Every setting is an environment variable with a
default relative to the repository root; one-line errors name the variable. ``SEARCH_ARGS`` and
``EVAL_ARGS`` (extra flags of searcher.py and of the evaluator) are parsed here, once.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import re

from quantize_utils import Scheme, describe_short_names, resolve_scheme
from search.config import (
    DEFAULT_BUDGET_MS,
    Predictor,
    SearchConfig,
    SearchSizes,
    Supernet,
    build_search_config,
    search_settings,
)
from search.evolution import EvolutionSettings, LatencyWindow
from search.identity import STRATEGIES
from utils import RANGE_FLAGS, UserError

OPS = ("cand", "rand", "fast", "eval", "evol", "rescore", "final")
# A name from the settings names files inside CANDS_DIR and OUTPUT_ROOT: no separator, no "..".
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")


@dataclasses.dataclass(frozen=True)
class SearchPlan:
    root: str
    scheme: Scheme
    budget_ms: float
    budget_text: str  # LATENCY_CONSTRAINT as typed: it names the search (kd_<short>_<budget_text>)
    task_name: str
    data_dir: str
    predictor: str
    model_dir: str
    space: str  # SPACE: a name, family or JSON space file; empty = the one the supernet records
    gen_size: int
    population: int
    seed: int
    seeds: tuple[int, ...]
    top_k: int
    strategy: str
    num_train_epochs: float
    num_threads: int
    do_lower_case: bool
    extra_schemes: tuple[Scheme, ...]
    cands_dir: str
    output_root: str
    search_name: str
    generation: int | None
    arches_file: str | None
    search_args: dict  # the searcher flags SEARCH_ARGS gives (dest -> value)
    eval_args: dict  # the evaluator flags EVAL_ARGS gives (dest -> value)
    final_eval_args: dict  # FINAL_EVAL_ARGS: the finalists' recipe flags over EVAL_ARGS (dest -> value)
    cache_dir: str | None  # EVAL_CACHE: the run's evaluation cache (None: off)
    force: bool
    save_models: bool
    generations: int = 3
    first_generation_index: int = 1
    first_generation: str = "fast"  # fast | rand
    final: bool = True
    rescore_top: int = 0  # RESCORE_TOP: after the generations, the fittest this many get more seeds (0: off)
    rescore_seeds: int = 2  # RESCORE_SEEDS: how many seeds each of them then has, the search seed included

    @property
    def type(self) -> str:
        return self.scheme.short

    # ---- files
    @property
    def candidate_file(self) -> str:
        return os.path.join(self.cands_dir, f"{self.search_name}.cands")

    @property
    def first_generation_file(self) -> str:
        return os.path.join(self.cands_dir, f"1st_generation_{self.search_name}.cands")

    @property
    def evo_file(self) -> str:
        return os.path.join(self.cands_dir, f"1st_generation_{self.search_name}.evo.cands")

    def generation_file(self, generation: int) -> str:
        return os.path.join(self.cands_dir, f"1st_generation_{self.search_name}.gen{generation}.evo.cands")

    @property
    def rescore_file(self) -> str:
        """The archs the ``rescore`` step fine-tunes again (``search.methods.select_rescored``)."""
        return os.path.join(self.cands_dir, f"{self.search_name}.rescore.cands")

    def rescore_seed_list(self) -> list[int]:
        """The seeds of a re-scored arch: the search seed and the ones after it."""
        return [self.seed + offset for offset in range(self.rescore_seeds)]

    @property
    def final_file(self) -> str:
        return os.path.join(self.cands_dir, f"{self.search_name}.final.cands")

    @property
    def final_record(self) -> str:
        """What the final step is (seeds, recipe), written before it evaluates: the report reads it."""
        return os.path.join(self.cands_dir, f"{self.search_name}.final.json")

    @property
    def output_dir(self) -> str:
        return os.path.join(self.output_root, self.search_name)

    @property
    def results(self) -> str:
        return os.path.join(self.output_dir, "subbert.results")

    def at_generation(self, generation: int | None) -> "SearchPlan":
        return dataclasses.replace(self, generation=generation)

    # ---- the typed configurations
    def search_settings(self) -> tuple[LatencyWindow, dict]:
        """The window and the other ``SearchConfig`` fields: SEARCH_ARGS over the plan's sizes and seed."""
        values = {"gen_size": self.gen_size, "population": self.population, "top_k": self.top_k, "seed": self.seed,
                  **self.search_args}
        settings = search_settings(values)
        return LatencyWindow(self.budget_ms, *settings.pop("window")), settings

    def search_config(self, predictor: Predictor, supernet: Supernet | None) -> SearchConfig:
        """The search's ``SearchConfig``."""
        window, settings = self.search_settings()
        space_args = argparse.Namespace(space=self.search_args.get("space") or self.space or None,
                                        **{flag: self.search_args.get(flag) for flag, _ in RANGE_FLAGS})
        from glue.tasks import get_task

        fitness_recipe = self.evaluation_config().recipe_for(get_task(self.task_name)).identity()
        return build_search_config(predictor, window, self.candidate_file, space_args, scheme=self.scheme,
                                   supernet=supernet, task=self.task_name, strategy=self.strategy,
                                   results_dir=self.output_dir, fitness_recipe=fitness_recipe, **settings)

    def evaluation_config(self, final: bool = False):
        """The ``EvaluationConfig`` of the search's evaluations (EVAL_ARGS over the plan's settings); with
        ``final``, of its finalists' (FINAL_EVAL_ARGS over those: the final recipe, rung ``final``)."""
        from evaluation.config import EvaluationConfig, TaskInput
        from evaluation.recipe import RecipeSettings
        from glue.tasks import get_task
        from utils import resolve_space

        given = self.eval_args
        recipe = {"num_train_epochs": self.num_train_epochs, **given, **(self.final_eval_args if final else {})}
        space = given.get("space") or self.space
        return EvaluationConfig(
            model_dir=self.model_dir, tasks=(TaskInput(get_task(self.task_name), self.data_dir),), scheme=self.scheme,
            output_dir=self.output_dir, recipe=RecipeSettings.from_values(recipe),
            extra_schemes=tuple(given.get("extra_schemes", self.extra_schemes)),
            do_lower_case=self.do_lower_case or bool(given.get("do_lower_case")),
            space=resolve_space(space, "search", flag="SPACE") if space else None,
            num_threads=given.get("num_threads", self.num_threads), no_cuda=bool(given.get("no_cuda")),
            restart=bool(given.get("restart")), rung="final" if final else "search", cache_dir=self.cache_dir)

    def reused_selection_seeds(self) -> list[int]:
        """The final seeds whose fine-tune also chose the finalist: the search seed (and the rescore seeds) when the
        candidates' recipe is the finalists' own, so that the final step is served the very fine-tune that picked
        the arch (its mean then leans towards that seed's luck). Empty when the recipes differ."""
        from glue.tasks import get_task

        task = get_task(self.task_name)
        if self.evaluation_config().recipe_for(task).identity() != \
                self.evaluation_config(final=True).recipe_for(task).identity():
            return []
        chose = {self.seed, *(self.rescore_seed_list() if self.rescore_top else ())}
        return sorted(seed for seed in set(self.seeds) if seed in chose)

    def final_save_seeds(self) -> tuple[int, ...]:
        """The final step keeps the models of one newly trained seed (the search seed's exist)."""
        fresh = [seed for seed in self.seeds if seed != self.seed]
        return (fresh[0],) if self.save_models and fresh else ()


# --------------------------------------------------------------------------------------
# Reading and checking the settings
# --------------------------------------------------------------------------------------


def _int(env: dict, name: str, default: int, low: int) -> int:
    text = env.get(name) or str(default)
    if not re.fullmatch(r"-?[0-9]+", text.strip()):
        raise UserError(f"{name} must be an integer, got {text!r}")
    value = int(text)
    if value < low:
        raise UserError(f"{name} must be >= {low}, got {value}")
    return value


def _float(env: dict, name: str, default: float, low: float, what: str) -> float:
    text = env.get(name) or str(default)
    try:
        value = float(text)
    except ValueError:
        raise UserError(f"{name} must be {what}, got {text!r}") from None
    if not math.isfinite(value) or value < low:
        raise UserError(f"{name} must be {what} (finite, >= {low:g}), got {text!r}")
    return value


def _choice(env: dict, name: str, default: str, choices) -> str:
    value = env.get(name) or default
    if value not in choices:
        raise UserError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return value


def _path(env: dict, name: str, default: str, root: str) -> str:
    """``$name`` as given (relative to the working directory, as in the shell), else ``default``
    relative to the repository root."""
    return env.get(name) or os.path.join(root, default)


def _name(env: dict, name: str, default: str) -> str:
    value = env.get(name) or default
    if not SAFE_NAME.fullmatch(value) or ".." in value:
        raise UserError(f"{name} must be a plain name (letters, digits, '.', '_', '+', '-'; no '/' or '..'): it "
                        f"names files inside CANDS_DIR and OUTPUT_ROOT; got {value!r}")
    return value


def _seeds(env: dict) -> tuple[int, ...]:
    text = env.get("SEEDS") or "42 43 44"
    try:
        seeds = tuple(int(token) for token in text.split())
    except ValueError:
        raise UserError(f"SEEDS must be integers, got {text!r}") from None
    if not seeds:
        raise UserError('SEEDS is empty; give the final step\'s seeds, e.g. SEEDS="42 43 44"')
    return seeds


def _scheme(env: dict) -> Scheme:
    typed = env.get("TYPE") or "ptq"
    try:
        return resolve_scheme(typed, "TYPE")
    except UserError:
        raise UserError(f"TYPE must be {describe_short_names()} (a scheme of quantize_utils.SCHEMES), "
                        f"got {typed!r}") from None


def _budget(env: dict) -> tuple[float, str]:
    text = env.get("LATENCY_CONSTRAINT") or f"{DEFAULT_BUDGET_MS:g}"
    if not re.fullmatch(r"[0-9]+(\.[0-9]+)?", text) or float(text) <= 0:
        raise UserError(f"LATENCY_CONSTRAINT must be a positive number of ms, got {text!r}")
    return float(text), text


def _default_model(root: str) -> str:
    model = os.path.join("model", "SUPER-KD-S1", "epoch_3")
    if not os.path.isdir(os.path.join(root, model)) and os.path.isdir(os.path.join(root, "model", "SUPER-KD-S1",
                                                                                   "final")):
        model = os.path.join("model", "SUPER-KD-S1", "final")  # a step-limited pre-training writes final/ only
    return model


def _extra_args(env: dict) -> tuple[dict, dict]:
    """SEARCH_ARGS and EVAL_ARGS as the flags they give, checked now."""
    from evaluation.runner import parse_overrides as eval_overrides
    from search.cli import parse_overrides as search_overrides

    search = vars(search_overrides(env.get("SEARCH_ARGS") or ""))
    search.pop("_space_role", None)
    return search, eval_overrides(env.get("EVAL_ARGS") or "")


def _final_args(env: dict) -> dict:
    """FINAL_EVAL_ARGS: recipe flags only (the finalists are fine-tuned otherwise like the candidates)."""
    from evaluation.recipe import RECIPE_FIELDS
    from evaluation.runner import parse_overrides

    given = parse_overrides(env.get("FINAL_EVAL_ARGS") or "", "FINAL_EVAL_ARGS")
    for dest in given:
        if dest not in RECIPE_FIELDS:
            raise UserError(f"FINAL_EVAL_ARGS: --{dest} is not a fine-tune recipe flag; the finalists differ from the "
                            f"candidates only in their recipe ({', '.join('--' + f for f in RECIPE_FIELDS)})")
    return given


def _cache_dir(env: dict, output_root: str) -> str | None:
    """EVAL_CACHE: a directory (default: OUTPUT_ROOT/evaluation_cache, shared by the searches that write
    there), or ``off``."""
    value = env.get("EVAL_CACHE") or os.path.join(output_root, "evaluation_cache")
    if value == "off":
        return None
    if os.path.exists(value) and not os.path.isdir(value):
        raise UserError(f"EVAL_CACHE={value} exists and is not a directory (or set EVAL_CACHE=off)")
    return value


def plan_from_env(env: dict, root: str, op: str | None = None, positional: list[str] | None = None) -> SearchPlan:
    """The settings of one search from the environment (positional TYPE LAT DATA_DIR TASK win),
    checked in the order a user would fix them; nothing is written."""
    from evaluation.recipe import RecipeSettings
    from glue.tasks import TASKS

    env = dict(env)
    for name, value in zip(("TYPE", "LATENCY_CONSTRAINT", "DATA_DIR", "TASK_NAME"), positional or []):
        if value:
            env[name] = value
    scheme = _scheme(env)
    budget, budget_text = _budget(env)
    task = (env.get("TASK_NAME") or "rte").lower()
    if task not in TASKS:
        raise UserError(f"TASK_NAME={task} is not a GLUE task; choose one of {', '.join(TASKS)}")
    strategy = _choice(env, "STRATEGY", "evolution", STRATEGIES)
    generation_text = env.get("GENERATION") or ""
    if generation_text and not generation_text.isdigit():
        raise UserError(f"GENERATION must be a generation number, got {generation_text!r}")
    extra_default = "torch_dynamic_int8" if not scheme.quantized else ""
    extra = (env["EXTRA_SCHEMES"] if "EXTRA_SCHEMES" in env else extra_default).split()
    search_args, eval_args = _extra_args(env)
    output_root = _path(env, "OUTPUT_ROOT", "output", root)
    plan = SearchPlan(
        root=root, scheme=scheme, budget_ms=budget, budget_text=budget_text, task_name=task,
        data_dir=_path(env, "DATA_DIR", os.path.join("data", "glue", TASKS[task].directory), root),
        predictor=env.get("PREDICTOR") or os.path.join(_path(env, "PREDICTOR_DIR", "conf_datasets", root),
                                                       scheme.predictor_file),
        model_dir=_path(env, "MODEL_DIR", _default_model(root), root), space=env.get("SPACE") or "",
        gen_size=_int(env, "GEN_SIZE", SearchSizes.gen_size, 1),
        population=_int(env, "POPULATION", EvolutionSettings.population, 1),
        seed=_int(env, "SEED", SearchConfig.seed, 0), seeds=_seeds(env), top_k=_int(env, "TOP_K", SearchSizes.top_k, 1),
        strategy=strategy, num_train_epochs=_float(env, "NUM_TRAIN_EPOCHS", RecipeSettings.num_train_epochs, 0,
                                                   "a number of epochs"),
        num_threads=_int(env, "NUM_THREADS", 0, 0),
        do_lower_case=_choice(env, "DO_LOWER_CASE", "1", ("0", "1")) == "1",
        extra_schemes=tuple(resolve_scheme(name, "EXTRA_SCHEMES") for name in extra),
        cands_dir=_path(env, "CANDS_DIR", "cands", root), output_root=output_root,
        search_name=_name(env, "SEARCH_NAME", f"kd_{scheme.short}_{budget_text}"
                          + ("_random" if strategy == "random" else "")),
        generation=int(generation_text) if generation_text else None, arches_file=env.get("ARCHES_FILE") or None,
        search_args=search_args, eval_args=eval_args, final_eval_args=_final_args(env),
        cache_dir=_cache_dir(env, output_root),
        force=_choice(env, "FORCE", "0", ("0", "1")) == "1",
        save_models=_choice(env, "SAVE_MODELS", "0", ("0", "1")) == "1",
        generations=_int(env, "GENERATIONS", 3, 0), first_generation_index=_int(env, "FIRST_GENERATION_INDEX", 1, 1),
        first_generation=_choice(env, "FIRST_GENERATION", "rand" if strategy == "random" else "fast", ("fast", "rand")),
        final=_choice(env, "FINAL", "1", ("0", "1")) == "1", rescore_top=_int(env, "RESCORE_TOP", SearchPlan.rescore_top, 0),
        rescore_seeds=_int(env, "RESCORE_SEEDS", SearchPlan.rescore_seeds, 2))
    plan.search_settings()  # the window and the evolution's numbers, checked now
    plan.evaluation_config()  # the recipe, the extra schemes and the evaluation's space, checked now
    plan.evaluation_config(final=True)  # and the finalists' recipe
    check(plan, op)
    return plan


def check(plan: SearchPlan, op: str | None) -> None:
    """Every input of the step (or of the whole search, ``op=None``) before anything is written."""
    if not os.path.isfile(plan.predictor):
        raise UserError(f"PREDICTOR={plan.predictor}: no such latency predictor checkpoint "
                        "(script/train_lat_predictor.sh writes it)")
    if not os.path.isfile(os.path.join(plan.model_dir, "config.json")):
        raise UserError(f"MODEL_DIR={plan.model_dir}: no supernet directory (config.json) there; set MODEL_DIR to the "
                        "supernet (pre-training writes <OUTPUT_DIR>/final/ and epoch_<e>/)")
    if plan.space and plan.space.endswith(".json") and not os.path.isfile(plan.space):
        raise UserError(f"SPACE={plan.space}: no such space file")
    if op in (None, "eval", "rescore", "final") and not os.path.isdir(plan.data_dir):
        raise UserError(f"DATA_DIR={plan.data_dir}: no such GLUE task directory of TASK_NAME={plan.task_name}")
    for name, path in (("CANDS_DIR", plan.cands_dir), ("OUTPUT_ROOT", plan.output_root)):
        if os.path.exists(path) and not os.path.isdir(path):
            raise UserError(f"{name}={path} exists and is not a directory")
    if op == "eval" and not os.path.isfile(plan.arches_file or _default_arches(plan, op)):
        raise UserError(f"ARCHES_FILE={plan.arches_file or _default_arches(plan, op)}: no such file "
                        "(run the step that writes it first)")
    if (op in ("evol", "rescore", "final") or (op == "rand" and plan.generation is not None)) and not os.path.isfile(plan.results):
        raise UserError(f"{plan.results}: no results yet; evaluate the first generation first (OP=eval)")
    if op in ("fast",) and plan.generation is not None:
        raise UserError("GENERATION is set: only OP=rand draws later generations (OP=evol evolves)")


def _default_arches(plan: SearchPlan, op: str) -> str:
    if op == "final":
        return plan.final_file
    return plan.generation_file(plan.generation) if plan.generation is not None else plan.first_generation_file
