"""One search's settings, read from the environment the search scripts document (``script/search.sh
--help``), checked before anything is written, and turned into the command lines of its steps.

``run_search.py`` runs the steps in one process (a fine-tune costs seconds; starting Python with
torch and transformers for every step cost about as much again), ``script/search.sh`` and
``script/run_search.sh`` are its shell faces. Every setting is an environment variable with a
default relative to the repository root; one-line errors name the variable.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shlex

from quantize_utils import describe_short_names, resolve_scheme
from utils import UserError

OPS = ("cand", "rand", "fast", "eval", "evol", "final")


def _int(env: dict, name: str, default: int, low: int) -> int:
    text = env.get(name) or str(default)
    if not re.fullmatch(r"-?[0-9]+", text.strip()):
        raise UserError(f"{name} must be an integer, got {text!r}")
    value = int(text)
    if value < low:
        raise UserError(f"{name} must be >= {low}, got {value}")
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


@dataclasses.dataclass
class SearchPlan:
    root: str
    type: str  # fp | ptq | ort | fakequant
    evaluator: str  # fp | ptq
    latency_constraint: str
    task_name: str
    data_dir: str
    predictor: str
    model_dir: str
    space: str
    gen_size: int
    population: int
    seed: int
    seeds: list[int]
    top_k: int
    strategy: str
    num_train_epochs: str
    num_threads: int
    do_lower_case: bool
    extra_schemes: list[str]
    cands_dir: str
    output_root: str
    search_name: str
    generation: int | None
    arches_file: str | None
    search_args: list[str]
    eval_args: list[str]
    force: bool
    save_models: bool

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
    def final_file(self) -> str:
        return os.path.join(self.cands_dir, f"{self.search_name}.final.cands")

    @property
    def output_dir(self) -> str:
        return os.path.join(self.output_root, self.search_name)

    @property
    def results(self) -> str:
        return os.path.join(self.output_dir, "subbert.results")

    # ---- command lines
    def searcher_argv(self, *extra: str) -> list[str]:
        argv = ["--ckpt_path", self.predictor, "--latency_constraint", self.latency_constraint, "--candidate_file",
                self.candidate_file, "--model", "KD", "--supernet", self.model_dir, "--scheme", self.type,
                "--task_name", self.task_name, "--strategy", self.strategy, "--results_dir", self.output_dir,
                "--seed", str(self.seed)]
        if self.space:
            argv += ["--space", self.space]
        return argv + list(extra) + self.search_args

    def evaluator_argv(self, arches: str, seeds: list[int], *extra: str) -> list[str]:
        argv = ["--model", self.model_dir, "--data_dir", self.data_dir, "--task_name", self.task_name,
                "--arches_file", arches, "--output_dir", self.output_dir, "--num_train_epochs", self.num_train_epochs,
                "--seed", *[str(seed) for seed in seeds], "--num_threads", str(self.num_threads)]
        if self.evaluator == "ptq":
            argv += ["--scheme", self.type]
        if self.extra_schemes:
            argv += ["--extra_schemes", *self.extra_schemes]
        if self.space:
            argv += ["--space", self.space]
        if self.do_lower_case:
            argv.append("--do_lower_case")
        return argv + list(extra) + self.eval_args

    def save_argv(self) -> list[str]:
        """The final step keeps the models of one newly trained seed (the search seed's exist)."""
        if not self.save_models:
            return []
        fresh = [seed for seed in self.seeds if seed != self.seed]
        return ["--save_model_flag", "1", "--save_seeds", str(fresh[0])] if fresh else []


def plan_from_env(env: dict, root: str, op: str | None = None, positional: list[str] | None = None) -> SearchPlan:
    """The settings of one search from the environment (positional TYPE LAT DATA_DIR TASK win),
    checked in the order a user would fix them; nothing is written."""
    from glue.tasks import TASKS

    env = dict(env)
    for name, value in zip(("TYPE", "LATENCY_CONSTRAINT", "DATA_DIR", "TASK_NAME"), positional or []):
        if value:
            env[name] = value
    typed = env.get("TYPE") or "ptq"
    try:
        scheme = resolve_scheme(typed, "TYPE")
    except UserError:
        raise UserError(f"TYPE must be {describe_short_names()} (a scheme of quantize_utils.SCHEMES), "
                        f"got {typed!r}") from None
    short, evaluator = scheme.short, scheme.evaluator
    latency = env.get("LATENCY_CONSTRAINT") or "10"
    if not re.fullmatch(r"[0-9]+(\.[0-9]+)?", latency):
        raise UserError(f"LATENCY_CONSTRAINT must be a number of ms, got {latency!r}")
    task = (env.get("TASK_NAME") or "rte").lower()
    if task not in TASKS:
        raise UserError(f"TASK_NAME={task} is not a GLUE task; choose one of {', '.join(TASKS)}")
    strategy = _choice(env, "STRATEGY", "evolution", ("evolution", "random"))
    default_model = os.path.join("model", "SUPER-KD-S1", "epoch_3")
    if not os.path.isdir(os.path.join(root, default_model)) and os.path.isdir(os.path.join(root, "model", "SUPER-KD-S1",
                                                                                         "final")):
        default_model = os.path.join("model", "SUPER-KD-S1", "final")  # a step-limited pre-training writes final/ only
    seeds_text = env.get("SEEDS") or "42 43 44"
    try:
        seeds = [int(token) for token in seeds_text.split()]
    except ValueError:
        raise UserError(f"SEEDS must be integers, got {seeds_text!r}") from None
    if not seeds:
        raise UserError('SEEDS is empty; give the final step\'s seeds, e.g. SEEDS="42 43 44"')
    generation_text = env.get("GENERATION") or ""
    if generation_text and not generation_text.isdigit():
        raise UserError(f"GENERATION must be a generation number, got {generation_text!r}")
    default_name = f"kd_{short}_{latency}" + ("_random" if strategy == "random" else "")
    extra_default = "torch_dynamic_int8" if short == "fp" else ""
    plan = SearchPlan(
        root=root, type=short, evaluator=evaluator, latency_constraint=latency, task_name=task,
        data_dir=_path(env, "DATA_DIR", os.path.join("data", "glue", TASKS[task].directory), root),
        predictor=env.get("PREDICTOR") or os.path.join(_path(env, "PREDICTOR_DIR", "conf_datasets", root),
                                                       scheme.predictor_file),
        model_dir=_path(env, "MODEL_DIR", default_model, root), space=env.get("SPACE") or "",
        gen_size=_int(env, "GEN_SIZE", 10, 1), population=_int(env, "POPULATION", 25, 1), seed=_int(env, "SEED", 42, 0),
        seeds=seeds, top_k=_int(env, "TOP_K", 3, 1), strategy=strategy,
        num_train_epochs=env.get("NUM_TRAIN_EPOCHS") or "1", num_threads=_int(env, "NUM_THREADS", 0, 0),
        do_lower_case=_choice(env, "DO_LOWER_CASE", "1", ("0", "1")) == "1",
        extra_schemes=(env["EXTRA_SCHEMES"] if "EXTRA_SCHEMES" in env else extra_default).split(),
        cands_dir=_path(env, "CANDS_DIR", "cands", root), output_root=_path(env, "OUTPUT_ROOT", "output", root),
        search_name=env.get("SEARCH_NAME") or default_name,
        generation=int(generation_text) if generation_text else None, arches_file=env.get("ARCHES_FILE") or None,
        search_args=shlex.split(env.get("SEARCH_ARGS") or ""), eval_args=shlex.split(env.get("EVAL_ARGS") or ""),
        force=_choice(env, "FORCE", "0", ("0", "1")) == "1", save_models=_choice(env, "SAVE_MODELS", "1", ("0", "1")) == "1")
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
    if op in (None, "eval", "final") and not os.path.isdir(plan.data_dir):
        raise UserError(f"DATA_DIR={plan.data_dir}: no such GLUE task directory of TASK_NAME={plan.task_name}")
    for name, path in (("CANDS_DIR", plan.cands_dir), ("OUTPUT_ROOT", plan.output_root)):
        if os.path.exists(path) and not os.path.isdir(path):
            raise UserError(f"{name}={path} exists and is not a directory")
    if op == "eval" and not os.path.isfile(plan.arches_file or _default_arches(plan, op)):
        raise UserError(f"ARCHES_FILE={plan.arches_file or _default_arches(plan, op)}: no such file "
                        "(run the step that writes it first)")
    if (op in ("evol", "final") or (op == "rand" and plan.generation is not None)) and not os.path.isfile(plan.results):
        raise UserError(f"{plan.results}: no results yet; evaluate the first generation first (OP=eval)")
    if op in ("fast",) and plan.generation is not None:
        raise UserError("GENERATION is set: only OP=rand draws later generations (OP=evol evolves)")


def _default_arches(plan: SearchPlan, op: str) -> str:
    if op == "final":
        return plan.final_file
    return plan.generation_file(plan.generation) if plan.generation is not None else plan.first_generation_file
