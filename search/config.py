"""What one search is, as a typed value: ``SearchConfig`` (scheme, budget window, resolved space,
latency predictor, supernet, strategy, sizes, files), built once by a command line
(``searcher.py``, ``run_search.py``) and handed to ``search.methods.run_method``.

Building it checks what the search's artefacts say of each other before any file is written: the
space (``--space``, else the one the supernet records, else the predictor's; see
``utils.stage_space``) must fit the supernet, stay inside the slices its sampler trained and inside
the predictor's latency grid; the scheme must be timed on the predictor's backend.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import numpy as np

from quantize_utils import Scheme, resolve_scheme
from search.evolution import MODELS, EvolutionSettings, LatencyFn, LatencyWindow, arch_rule
from search.history import default_log_path
from search.identity import STRATEGIES, identity_path
from utils import (
    SearchSpace,
    UserError,
    get_logger,
    predictor_space,
    read_space_record,
    stage_space,
    uncovered_dimensions,
)

logger = get_logger("searcher")

DEFAULT_BUDGET_MS = 10.0  # the scripts' LATENCY_CONSTRAINT and searcher.py's --latency_constraint


@dataclasses.dataclass(frozen=True)
class Predictor:
    """A latency predictor as the search uses it: ``predict(archs) -> ms`` and what it records."""

    path: str
    predict: LatencyFn
    metadata: dict

    @property
    def backend(self) -> str | None:
        return self.metadata.get("backend")

    def trained_space(self) -> SearchSpace | None:
        return predictor_space(self.metadata)


def load_predictor(path: str) -> Predictor:
    """The predictor checkpoint at ``path`` (one-line error when absent)."""
    if not os.path.isfile(path):
        raise UserError(f"--ckpt_path: {path}: no such predictor checkpoint (train one with latency_predictor.py)")
    from latency.predictor import LatencyPredictor

    model = LatencyPredictor.load(path)
    return Predictor(path, lambda archs: np.asarray(model.predict_many(list(archs)), dtype=np.float64),
                     dict(model.metadata))


@dataclasses.dataclass(frozen=True)
class Supernet:
    """The supernet the candidates are evaluated on: its shape and the spaces it records."""

    path: str
    config: Any  # transformer.config.SuperBertConfig
    spaces: dict[str, SearchSpace]


def load_supernet_record(path: str) -> Supernet:
    from transformer.config import SuperBertConfig

    config = SuperBertConfig.load(path)  # one-line error for a missing / non-BERT dir
    return Supernet(path, config, read_space_record(path))


@dataclasses.dataclass(frozen=True)
class SearchSizes:
    gen_size: int = 10  # Random / Fast: size of the first generation
    top_k: int = 3  # TopK: how many of the fittest archs the final step re-evaluates

    def __post_init__(self):
        for name in ("gen_size", "top_k"):
            if getattr(self, name) < 1:
                raise UserError(f"--{name}: must be at least 1, got {getattr(self, name)}")


@dataclasses.dataclass(frozen=True)
class SearchConfig:
    """One search: every value typed and checked (see ``build_search_config``)."""

    predictor: Predictor
    window: LatencyWindow
    space: SearchSpace
    candidate_file: str  # Candidate writes it; the other methods read it; it names the search's files
    scheme: Scheme | None = None
    supernet: Supernet | None = None
    task: str | None = None  # the search's task: fitness comes from its results only
    strategy: str = "evolution"
    model: str = "KD"  # KD: qkv = hidden (the paper); MLM: qkv = mlm_head_dim x heads
    mlm_head_dim: int = 64
    sizes: SearchSizes = SearchSizes()
    evolution: EvolutionSettings = EvolutionSettings()
    seed: int = 42
    results_dir: str | None = None  # where the evaluator writes this search's results
    fitness_recipe: str | None = None  # the recipe_id of the search's fine-tunes (None: every result counts)
    search_log: str | None = None  # default: <candidate_file stem>.search_log.jsonl
    space_source: str = ""  # where the space came from, for the log

    def __post_init__(self):
        if self.strategy not in STRATEGIES:
            raise UserError(f"--strategy: must be one of {', '.join(STRATEGIES)}, got {self.strategy!r}")
        if self.model not in MODELS:
            raise UserError(f"--model: unknown model {self.model!r}; choose one of {', '.join(MODELS)}")

    @property
    def log_path(self) -> str:
        return self.search_log or default_log_path(self.candidate_file)

    @property
    def identity_path(self) -> str:
        return identity_path(self.candidate_file)

    def rule(self):
        return arch_rule(self.model, self.space, self.mlm_head_dim)

    def identity(self) -> dict:
        """What the search is (``search.identity``): a later step that differs is refused."""
        return {"task_name": self.task, "scheme": self.scheme.name if self.scheme else None,
                "latency_constraint": self.window.constraint,
                "window_ms": [round(bound, 6) for bound in self.window.bounds], "space": self.space.to_dict(),
                "predictor": os.path.realpath(self.predictor.path),
                "supernet": os.path.realpath(self.supernet.path) if self.supernet else None,
                "strategy": self.strategy,
                "results_dir": os.path.realpath(self.results_dir) if self.results_dir else None,
                "candidate_file": os.path.realpath(self.candidate_file)}


def check_scheme(scheme: Scheme | str | None, predictor: Predictor) -> Scheme | None:
    """The search's scheme, refused unless the predictor was trained on its latency backend."""
    if scheme is None:
        return None
    scheme = scheme if isinstance(scheme, Scheme) else resolve_scheme(scheme, "--scheme")
    if predictor.backend in (None, "unknown"):
        logger.warning("the predictor %s does not say which latency backend it was trained on; assuming %s",
                       predictor.path, scheme.latency_backend)
    elif predictor.backend != scheme.latency_backend:
        raise UserError(f"--scheme {scheme.name} is timed as {scheme.latency_backend}, but the predictor "
                        f"{predictor.path} was trained on a {predictor.backend} table; use that scheme's predictor")
    return scheme


def resolve_search_space(space_args, predictor: Predictor, supernet: Supernet | None) -> tuple[SearchSpace, str]:
    """``(space, source)``: the search space by the one rule (``utils.stage_space``), checked against
    the supernet (shape, trained slices) and the predictor's latency grid."""
    space, source = stage_space("search", space_args, supernet=supernet.spaces if supernet else None,
                                supernet_name=supernet.path if supernet else None, predictor=predictor.metadata,
                                predictor_name=predictor.path)
    if space is None:
        raise UserError("--space: no search space given and none recorded by the supernet (--supernet) or the "
                        "predictor; pass --space NAME or a JSON space file")
    if supernet is not None:
        from transformer.modeling_super import check_arch_fits

        check_arch_fits(space.largest(), supernet.config, where=f"the {space.name} space's largest arch (from {source})")
        sampler = supernet.spaces.get("supernet")
        outside = uncovered_dimensions(space, sampler) if sampler is not None else []
        if outside:
            raise UserError(f"the {space.name} space (from {source}) selects slices the supernet {supernet.path} "
                            f"never trained ({'; '.join(outside)} of its sampler {sampler.name})")
    trained_on = predictor.trained_space()
    if trained_on is not None:
        # a predictor extrapolates at most one grid step beyond the sizes it was trained on
        outside = uncovered_dimensions(space, trained_on, slack_steps=1)
        if outside:
            raise UserError(f"the {space.name} space (from {source}) reaches outside the latency grid the predictor "
                            f"{predictor.path} was trained on ({'; '.join(outside)} of {trained_on.name}, "
                            "more than one grid step)")
    return space, source


def build_search_config(predictor: Predictor, window: LatencyWindow, candidate_file: str, space_args=None,
                        scheme: Scheme | str | None = None, supernet: Supernet | None = None,
                        **settings) -> SearchConfig:
    """The search's configuration, every cross-check done (see the module doc). ``space_args``: the
    ``--space`` and range flags (``utils.add_space_arguments``) or None; ``settings``: the other
    fields of ``SearchConfig``."""
    scheme = check_scheme(scheme, predictor)
    space, source = resolve_search_space(space_args, predictor, supernet)
    return SearchConfig(predictor=predictor, window=window, space=space, candidate_file=candidate_file,
                        scheme=scheme, supernet=supernet, space_source=source, **settings)


def search_settings(values: dict) -> dict:
    """The ``SearchConfig`` fields and window factors named by flag (``searcher.py``'s dests, a search's
    ``SEARCH_ARGS``); an absent one takes its default. Returns ``{"window": (low, high), **fields}``."""
    def get(name, default):
        value = values.get(name)
        return default if value is None else value

    evolution = EvolutionSettings(get("population", EvolutionSettings.population),
                                  get("explore_rate", EvolutionSettings.explore_rate),
                                  get("mutation_prob", EvolutionSettings.mutation_prob),
                                  get("crossover_prob", EvolutionSettings.crossover_prob),
                                  get("max_retries", EvolutionSettings.max_retries))
    return {"window": (get("latency_window_low", LatencyWindow.low), get("latency_window_high", LatencyWindow.high)),
            "evolution": evolution, "sizes": SearchSizes(get("gen_size", SearchSizes.gen_size),
                                                         get("top_k", SearchSizes.top_k)),
            "model": get("model", SearchConfig.model), "mlm_head_dim": get("mlm_head_dim", SearchConfig.mlm_head_dim),
            "seed": get("seed", SearchConfig.seed)}
