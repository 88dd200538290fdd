"""What one candidate evaluation run is, as a typed value (``EvaluationConfig``), and the gate every
arch passes where it enters the evaluator (``check_archs``).

The command line (``evaluation.runner``) and the search (``search.chain``) both build an
``EvaluationConfig`` once and call ``evaluation.evaluate.evaluate_archs`` with it; nothing is turned
back into flags in between.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from typing import Sequence

from evaluation.recipe import RECIPE_FIELDS, Recipe, RecipeSettings
from glue.tasks import TaskSpec, get_task
from quantize_utils import SCHEMES, Scheme, resolve_scheme
from transformer.config import SuperBertConfig
from transformer.hf_converter import check_hf_compatible
from transformer.modeling_super import check_arch_fits
from utils import (ArchError, SearchSpace, UserError, arch_key, arch_summary, iter_arch_lines, outside_ranges,
                   read_space_record)

INT8_SCHEME_NAMES = tuple(name for name, scheme in SCHEMES.items() if scheme.quantized)
# A search's two kinds of fine-tune: its candidates' (the fitness) and its finalists' (the answer),
# each with its own recipe (a results file holds both; the recipe is part of a result's key).
RUNGS = ("search", "final")


@dataclasses.dataclass(frozen=True)
class TaskInput:
    """A GLUE task and the directory holding its TSV files."""

    task: TaskSpec
    data_dir: str


@dataclasses.dataclass(frozen=True)
class EvaluationConfig:
    """One evaluation run: the supernet, the tasks, the fitness scheme (plus extra schemes scored on the
    same fine-tuned weights), the fine-tune recipe settings, and where results and models go."""

    model_dir: str
    tasks: tuple[TaskInput, ...]
    scheme: Scheme
    output_dir: str
    recipe: RecipeSettings = RecipeSettings()
    extra_schemes: tuple[Scheme, ...] = ()
    do_lower_case: bool = False
    save_models: bool = False  # save each fine-tuned sub-model (HF dir + tokenizer) and its int8 model
    save_seeds: tuple[int, ...] | None = None  # with save_models: only these seeds' models
    space: SearchSpace | None = None  # also require every arch to be in this search space
    num_threads: int = 0  # torch CPU threads (0 = torch's default)
    no_cuda: bool = False
    restart: bool = False  # move results of other settings aside and evaluate everything again
    rung: str = "search"  # search: the search's fine-tunes (its fitness); final: the finalists' (RUNGS)
    cache_dir: str | None = None  # the run's evaluation cache (evaluation.cache), shared by its searches

    def __post_init__(self):
        if self.rung not in RUNGS:
            raise ValueError(f"rung must be one of {RUNGS}, got {self.rung!r}")
        if self.num_threads < 0:
            raise UserError(f"--num_threads: must be >= 0, got {self.num_threads}")
        for extra in self.extra_schemes:
            if not extra.quantized or extra.needs_supernet:
                raise UserError(f"--extra_schemes {extra.name}: only int8 sub-model schemes "
                                f"({', '.join(n for n in INT8_SCHEME_NAMES if n != 'fakequant')}) can be extra")

    def recipe_for(self, task: TaskSpec) -> Recipe:
        return self.recipe.recipe_for(task)

    def extra_names(self) -> list[str]:
        """The extra schemes' names, the fitness scheme and repeats left out (as results record them)."""
        names = []
        for extra in self.extra_schemes:
            if extra.name != self.scheme.name and extra.name not in names:
                names.append(extra.name)
        return names

    def scheme_names(self) -> set[str]:
        """Every scheme a result of this config is scored with (a cache entry must hold them all)."""
        return {self.scheme.name, *self.extra_names()}

    def settings(self, task_input: TaskInput) -> dict:
        """Everything besides (task, seed, scheme, arch) that a result depends on: a result made with
        other settings is never reused."""
        recipe = self.recipe_for(task_input.task)
        sandwich = {"sandwich_space": self.sandwich_space().to_dict()} if recipe.sandwich_epochs is not None else {}
        return {"model": os.path.realpath(self.model_dir), "model_identity": model_identity(self.model_dir),
                "data_dir": os.path.realpath(task_input.data_dir), "do_lower_case": bool(self.do_lower_case),
                **recipe.settings(), **sandwich, "extra_schemes": sorted(self.extra_names())}

    def sandwich_space(self) -> SearchSpace:
        """The space a task supernet's sandwich steps sample (``evaluation.task_supernet``): the search's own,
        else the one the supernet records for its searches, else the one it was trained on."""
        recorded = read_space_record(self.model_dir) if os.path.isdir(self.model_dir) else {}
        space = self.space or recorded.get("search") or recorded.get("supernet")
        if space is None:
            raise UserError(f"--sandwich_epochs: no search space to sample; pass --space, or use a supernet whose "
                            f"space.json records one ({self.model_dir} has none)")
        return space

    def to_order(self) -> dict:
        """What a spare-core worker needs to make this evaluator's cache entries exactly as it would
        (``evaluation.spare``): everything a fine-tune and its scoring depend on, as JSON values."""
        return {"model_dir": self.model_dir, "tasks": [[t.task.name, t.data_dir] for t in self.tasks],
                "scheme": self.scheme.name, "extra_schemes": [s.name for s in self.extra_schemes],
                "recipe": dataclasses.asdict(self.recipe), "do_lower_case": self.do_lower_case,
                "space": self.space.to_dict() if self.space else None, "num_threads": self.num_threads,
                "no_cuda": self.no_cuda, "rung": self.rung, "cache_dir": self.cache_dir}

    @classmethod
    def from_order(cls, order: dict, output_dir: str) -> "EvaluationConfig":
        """The evaluator ``to_order`` described, writing nothing but cache entries (``output_dir`` unused)."""
        return cls(model_dir=order["model_dir"], tasks=tuple(TaskInput(get_task(name), data_dir)
                                                               for name, data_dir in order["tasks"]),
                   scheme=resolve_scheme(order["scheme"]), output_dir=output_dir,
                   recipe=RecipeSettings(**order["recipe"]), do_lower_case=order["do_lower_case"],
                   extra_schemes=tuple(resolve_scheme(name) for name in order["extra_schemes"]),
                   space=SearchSpace.from_dict(order["space"]) if order["space"] else None,
                   num_threads=order["num_threads"], no_cuda=order["no_cuda"], rung=order["rung"],
                   cache_dir=order["cache_dir"])

    def describe(self) -> dict:
        """What ``run_args.json`` records of the run."""
        return {"model": self.model_dir, "task_name": [t.task.name for t in self.tasks],
                "data_dir": [t.data_dir for t in self.tasks], "output_dir": self.output_dir,
                "scheme": self.scheme.name, "extra_schemes": self.extra_names(),
                "recipe": dataclasses.asdict(self.recipe), "do_lower_case": self.do_lower_case,
                "save_models": self.save_models, "save_seeds": list(self.save_seeds) if self.save_seeds else None,
                "space": self.space.to_dict() if self.space else None, "num_threads": self.num_threads,
                "no_cuda": self.no_cuda, "restart": self.restart, "rung": self.rung, "cache_dir": self.cache_dir,
                "recipe_id": {t.task.name: self.recipe_for(t.task).identity() for t in self.tasks}}


# The settings a result depends on besides (task, seed, scheme, arch), compared field by field.
SETTING_FIELDS = ("model", "data_dir", "do_lower_case", "learning_rate", "num_train_epochs", "train_batch_size",
                  "eval_batch_size", "eval_step", "warmup_proportion", "weight_decay", "max_seq_length",
                  "max_train_examples", "max_eval_examples", "dropout", "sandwich_epochs", "sandwich_space",
                  "extra_schemes")
# The settings that belong to a rung's recipe (a search's candidates and its finalists each have theirs): the
# recipe's fields and the space a task supernet sampled (derived from the candidates' --sandwich_epochs).
RUNG_RECIPE_FIELDS = RECIPE_FIELDS + ("sandwich_space",)


def model_identity(model_dir: str) -> str:
    """Where the supernet is and which weights it holds (path, size and mtime of its files)."""
    parts = [os.path.realpath(model_dir)]
    for name in sorted(os.listdir(model_dir)):
        if name.endswith((".safetensors", ".bin", ".json", ".txt")):
            stat = os.stat(os.path.join(model_dir, name))
            parts.append(f"{name}:{stat.st_size}:{stat.st_mtime_ns}")
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def check_evaluator_scheme(scheme: Scheme, default: Scheme, given: str) -> None:
    """An evaluator script scores its own precision: the ptq one int8, the fp one fp32."""
    if default.quantized and not scheme.quantized:
        raise UserError(f"--scheme {given}: the ptq evaluator scores an int8 scheme "
                        f"({', '.join(INT8_SCHEME_NAMES)}); use superbert_run_en_classifier_fp.py for fp32")
    if not default.quantized and scheme.quantized:
        raise UserError(f"--scheme {given}: the fp evaluator scores fp32; use "
                        "superbert_run_en_classifier_ptq.py for int8, or --extra_schemes to also score int8")


# --------------------------------------------------------------------------------------
# The arch gate: every arch checked once where it enters, before any work
# --------------------------------------------------------------------------------------


def read_arch_lines(path: str) -> tuple[list[dict], list[str]]:
    """The archs of an arch file and where each comes from (``file:line``, for messages)."""
    archs, origins = [], []
    for number, arch, _extra in iter_arch_lines(path):
        archs.append(arch)
        origins.append(f"{path}:{number}")
    return archs, origins


def check_archs(archs: Sequence[dict], origins: Sequence[str] | None, supernet: SuperBertConfig,
                space: SearchSpace | None, trained: SearchSpace | None = None) -> list[dict]:
    """Every arch checked against ``space`` (when given), the supernet's shape, the ranges its sampler
    trained (``trained``, when recorded) and a plain HF BERT's form; duplicates are kept once."""
    kept, seen = [], set()
    for index, arch in enumerate(archs):
        where = origins[index] if origins else f"arch {index + 1}"
        if space is not None:
            space.validate(arch, where=where)
        check_arch_fits(arch, supernet, where=where)
        if trained is not None:
            outside = outside_ranges(arch, trained)
            if outside:
                raise ArchError(f"{where}: {arch_summary(arch)} uses slices the supernet never trained "
                                f"({'; '.join(outside)} of its sampler {trained.name})")
        try:
            check_hf_compatible(arch)
        except ArchError as err:
            raise ArchError(f"{where}: {err}") from None
        key = arch_key(arch)
        if key not in seen:
            seen.add(key)
            kept.append(arch)
    return kept
