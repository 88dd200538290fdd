"""Candidate generation and evolution under a latency budget, as plain functions.

Everything here takes a *latency callable* ``latency_fn(archs) -> array of ms`` and, for the
evolution, a *fitness dict* ``{arch_key: fitness}`` (OFA's ``EvolutionFinder`` split): no
model, predictor or file is touched, so the logic is testable with a formula for latency.

The original searcher's semantics are kept (reference/original.md section 8):

* the latency window is ``[low c, high c]`` around the constraint ``c`` (ms); the original's
  ``[0.85 c, 1.1 c]`` lets a winner be predicted 10 % over budget, so the default here is
  ``[0.85 c, 1.0 c]`` (``LatencyWindow``; ``--latency_window_high 1.1`` restores the original);
* ``Candidate`` enumerates the space grid and keeps the archs whose predicted latency is inside;
* ``Random`` / ``Fast`` draw the first generation from the candidates; "fast" archs have
  ``1.6 h <= ffn <= 1.9 h`` and ``0.7 h <= qkv <= h``;
* ``Evolved`` takes the top ``population`` evaluated archs as parents and fills ``population``
  new slots: with probability ``explore_rate`` a random unevaluated candidate, otherwise a
  roulette-selected parent (weights ``fitness - min``) mutated by ``SearchSpace.mutate``.

and its bugs are fixed: every draw comes from a seeded ``random.Random``; identity is
``utils.arch_key`` (never ``str(dict)``); mutation retries are bounded and fall back to
exploration; fewer candidates than requested is a warning, not a crash; an empty window is a
``NoArchInBudget`` error naming the smallest and largest predicted latency. Crossover
(``SearchSpace.crossover``) is an added option (``crossover_prob``, 0 = the original).
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np

from utils import SearchSpace, UserError, arch_key, arch_summary, get_logger

logger = get_logger(__name__)

LatencyFn = Callable[[Sequence[dict]], "np.ndarray"]
ArchRule = Callable[[dict], "dict | None"]

METHODS = ("Candidate", "Random", "Fast", "Evolved")
MODELS = ("KD", "MLM")


class NoArchInBudget(UserError):
    """No arch of the space (or candidate file) has a predicted latency inside the window."""


# --------------------------------------------------------------------------------------
# The latency window
# --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class LatencyWindow:
    """``[low * constraint, high * constraint]`` in ms. The defaults keep chosen archs predicted within
    the budget (the original's high was 1.1: a winner could be predicted 10 % over it)."""

    constraint: float
    low: float = 0.85
    high: float = 1.0

    def __post_init__(self):
        if not (self.constraint > 0 and math.isfinite(self.constraint)):
            raise UserError(f"--latency_constraint: must be a positive number of ms, got {self.constraint}")
        if not (math.isfinite(self.low) and math.isfinite(self.high) and 0 <= self.low <= self.high):
            raise UserError(f"--latency_window_low/high: need 0 <= low <= high, got {self.low} and {self.high}")

    @property
    def bounds(self) -> tuple[float, float]:
        return self.low * self.constraint, self.high * self.constraint

    def contains(self, latency_ms: float) -> bool:
        lo, hi = self.bounds
        return lo <= latency_ms <= hi

    def mask(self, latencies: np.ndarray) -> np.ndarray:
        lo, hi = self.bounds
        return (latencies >= lo) & (latencies <= hi)

    def describe(self) -> str:
        lo, hi = self.bounds
        return f"[{lo:.3f}, {hi:.3f}] ms (constraint {self.constraint:g} ms x [{self.low:g}, {self.high:g}])"


def predict_latencies(latency_fn: LatencyFn, archs: Sequence[dict], batch_size: int = 4096) -> np.ndarray:
    """Predicted latency (ms) of every arch, in batches; checks the callable's answer."""
    out = []
    for start in range(0, len(archs), batch_size):
        chunk = archs[start:start + batch_size]
        values = np.asarray(latency_fn(chunk), dtype=np.float64).reshape(-1)
        if values.shape[0] != len(chunk):
            raise RuntimeError(f"latency_fn returned {values.shape[0]} values for {len(chunk)} archs")
        out.append(values)
    latencies = np.concatenate(out) if out else np.zeros(0)
    if not np.all(np.isfinite(latencies)):
        raise RuntimeError("the latency predictor returned non-finite latencies")
    return latencies


# --------------------------------------------------------------------------------------
# The KD / MLM arch rules
# --------------------------------------------------------------------------------------


def arch_rule(model: str, space: SearchSpace, mlm_head_dim: int = 64) -> ArchRule:
    """The original's ``--model`` rule as a repair function (None = not allowed).

    KD: qkv = hidden (the paper's setting). MLM: qkv = ``mlm_head_dim`` x heads (the original
    enumerated heads with a fixed head size of 64). The repaired arch must be in ``space``.
    """
    if model not in MODELS:
        raise UserError(f"--model: unknown model {model!r}; choose one of {', '.join(MODELS)}")

    def repair(arch: dict) -> dict | None:
        layers = arch["sample_layer_num"]
        heads = arch["sample_num_attention_heads"][0]
        qkv = arch["sample_hidden_size"] if model == "KD" else mlm_head_dim * heads
        fixed = dict(arch, sample_qkv_sizes=[qkv] * layers)
        return fixed if space.contains(fixed) else None

    return repair


def rule_archs(archs: Iterable[dict], rule: ArchRule | None) -> list[dict]:
    """Apply ``rule`` to ``archs``, dropping rejected ones and duplicates (first kept)."""
    seen, kept = set(), []
    for arch in archs:
        fixed = rule(arch) if rule is not None else arch
        if fixed is None:
            continue
        key = arch_key(fixed)
        if key not in seen:
            seen.add(key)
            kept.append(fixed)
    return kept


# --------------------------------------------------------------------------------------
# Candidate: the space grid filtered by the window
# --------------------------------------------------------------------------------------


def _range_message(archs: Sequence[dict], latencies: np.ndarray) -> str:
    low, high = int(np.argmin(latencies)), int(np.argmax(latencies))
    return (f"predicted latencies range from {latencies[low]:.3f} ms ({arch_summary(archs[low])}) "
            f"to {latencies[high]:.3f} ms ({arch_summary(archs[high])})")


def filter_by_window(archs: Sequence[dict], latency_fn: LatencyFn, window: LatencyWindow,
                     what: str) -> tuple[list[dict], np.ndarray]:
    """The archs whose predicted latency is inside ``window``, with their latencies.

    Raises ``NoArchInBudget`` (one line, naming the smallest and largest prediction) when none is.
    """
    if not archs:
        raise NoArchInBudget(f"{what} holds no arch")
    latencies = predict_latencies(latency_fn, archs)
    mask = window.mask(latencies)
    if not mask.any():
        raise NoArchInBudget(f"no arch of {what} has a predicted latency in {window.describe()}; "
                             f"{_range_message(archs, latencies)}")
    kept = [arch for arch, ok in zip(archs, mask) if ok]
    return kept, latencies[mask]


def generate_candidates(space: SearchSpace, latency_fn: LatencyFn, window: LatencyWindow,
                        rule: ArchRule | None = None) -> tuple[list[dict], np.ndarray]:
    """``Candidate``: every grid arch (after the KD/MLM rule) whose predicted latency fits."""
    grid = rule_archs(space.grid(), rule)
    if not grid:
        raise UserError(f"the {space.name} space has no arch that satisfies the --model rule "
                        "(KD: qkv = hidden; MLM: qkv = 64 x heads, which needs a searched qkv grid)")
    return filter_by_window(grid, latency_fn, window, f"the {space.name} space ({len(grid)} archs)")


# --------------------------------------------------------------------------------------
# Random / Fast: the first generation
# --------------------------------------------------------------------------------------


def is_fast(arch: dict) -> bool:
    """The original's "fast" shape: ``1.6 h <= ffn <= 1.9 h`` and ``0.7 h <= qkv <= h``."""
    hidden = arch["sample_hidden_size"]
    ffn = sum(arch["sample_intermediate_sizes"]) / arch["sample_layer_num"]
    qkv = sum(arch["sample_qkv_sizes"]) / arch["sample_layer_num"]
    return 1.6 * hidden <= ffn <= 1.9 * hidden and 0.7 * hidden <= qkv <= hidden


def first_generation(candidates: Sequence[dict], gen_size: int, method: str, rng: random.Random,
                     with_origins: bool = False):
    """``Random``: ``gen_size`` candidates drawn uniformly. ``Fast``: drawn from the fast ones,
    topped up with random other candidates when there are fewer fast ones than ``gen_size``.
    ``with_origins=True`` also returns each arch's true origin (``random``, ``fast`` or
    ``random_top_up``), which the search log records."""
    if gen_size < 1:
        raise UserError(f"--gen_size: must be at least 1, got {gen_size}")
    candidates = rule_archs(candidates, None)  # de-duplicate, keep order
    if method == "Random":
        pool, rest = list(candidates), []
    elif method == "Fast":
        pool = [arch for arch in candidates if is_fast(arch)]
        rest = [arch for arch in candidates if not is_fast(arch)]
    else:
        raise ValueError(f"first_generation: method {method!r} is not Random or Fast")
    picks = rng.sample(pool, min(gen_size, len(pool)))
    origins = [method.lower()] * len(picks)
    if method == "Fast" and len(picks) < gen_size:
        top_up = rng.sample(rest, min(gen_size - len(picks), len(rest)))
        logger.warning("only %d of %d candidates are fast (1.6h<=ffn<=1.9h, 0.7h<=qkv<=h); topped up with %d "
                       "random candidates", len(pool), len(candidates), len(top_up))
        picks += top_up
        origins += ["random_top_up"] * len(top_up)
    if len(picks) < gen_size:
        logger.warning("only %d candidate(s) available, fewer than --gen_size %d; writing all of them",
                       len(picks), gen_size)
    return (picks, origins) if with_origins else picks


# --------------------------------------------------------------------------------------
# Evolved
# --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class EvolutionSettings:
    population: int = 25  # parents kept and children produced (the original's hard-coded 25)
    explore_rate: float = 0.5
    mutation_prob: float = 0.25
    crossover_prob: float = 0.0  # 0 = the original (no crossover)
    max_retries: int = 200  # mutation attempts per slot before falling back to exploration

    def __post_init__(self):
        if self.population < 1:
            raise UserError(f"--population: must be at least 1, got {self.population}")
        for name in ("explore_rate", "mutation_prob", "crossover_prob"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise UserError(f"--{name}: must be in [0, 1], got {value}")
        if self.max_retries < 1:
            raise UserError(f"--max_retries: must be at least 1, got {self.max_retries}")


@dataclasses.dataclass
class EvolutionOutcome:
    archs: list[dict]
    origins: list[str]  # per arch: exploration | mutation | crossover | fallback_exploration
    latencies: list[float]  # predicted ms per arch
    parents: list[tuple[str, float]]  # (arch_key, fitness), best first
    retries_exhausted: int = 0
    shortfall: int = 0  # slots that could not be filled

    def summary(self) -> dict:
        counts = {origin: self.origins.count(origin) for origin in sorted(set(self.origins))}
        fitness = [f for _, f in self.parents]
        return {"children": len(self.archs), "origin_counts": counts, "retries_exhausted": self.retries_exhausted,
                "shortfall": self.shortfall, "parents": len(self.parents),
                "parents_best_fitness": max(fitness) if fitness else None,
                "parents_mean_fitness": float(np.mean(fitness)) if fitness else None}


def select_parents(fitness: Mapping[str, float], population: int,
                   space: SearchSpace | None = None) -> list[tuple[str, float]]:
    """The top ``population`` evaluated archs by fitness (ties broken by key, so deterministic).

    Archs outside ``space`` cannot be mutated within it and are skipped with a warning.
    """
    ranked = sorted(fitness.items(), key=lambda item: (-item[1], item[0]))
    if space is not None:
        inside = [(key, value) for key, value in ranked if space.contains(json.loads(key))]
        if len(inside) < len(ranked):
            logger.warning("%d evaluated arch(s) are outside the %s space and cannot be parents",
                           len(ranked) - len(inside), space.name)
        ranked = inside
    return ranked[:population]


def roulette_weights(parents: Sequence[tuple[str, float]]) -> list[float]:
    """The original's roulette: weight = fitness - min fitness; uniform when all are equal."""
    values = [value for _, value in parents]
    low = min(values)
    weights = [value - low for value in values]
    return weights if sum(weights) > 0 else [1.0] * len(values)


def evolve(space: SearchSpace, fitness: Mapping[str, float], candidates: Sequence[dict], latency_fn: LatencyFn,
           window: LatencyWindow, rng: random.Random, settings: EvolutionSettings = EvolutionSettings(),
           rule: ArchRule | None = None, size: int | None = None) -> EvolutionOutcome:
    """One ``Evolved`` generation: ``size`` (default ``population``) new archs, none of them
    already evaluated (``fitness`` keys) or repeated, every one inside ``window``."""
    size = settings.population if size is None else size
    evaluated = set(fitness)
    parents = select_parents(fitness, settings.population, space)
    parent_archs = [json.loads(key) for key, _ in parents]
    weights = roulette_weights(parents) if parents else []
    taken = set(evaluated)
    latency_cache: dict[str, float] = {}

    pool = [arch for arch in rule_archs(candidates, None) if arch_key(arch) not in evaluated]
    rng.shuffle(pool)

    def latency_of(arch: dict, key: str) -> float:
        if key not in latency_cache:
            latency_cache[key] = float(predict_latencies(latency_fn, [arch])[0])
        return latency_cache[key]

    def explore() -> dict | None:
        while pool:
            arch = pool.pop()
            key = arch_key(arch)
            if key not in taken and window.contains(latency_of(arch, key)):
                return arch
        return None

    def breed() -> tuple[dict | None, str]:
        first = rng.choices(parent_archs, weights)[0]
        origin = "mutation"
        if settings.crossover_prob > 0 and len(parent_archs) > 1 and rng.random() < settings.crossover_prob:
            second = rng.choices(parent_archs, weights)[0]
            first = space.crossover(first, second, rng)
            origin = "crossover"
        child = space.mutate(first, rng, settings.mutation_prob)
        return (rule(child) if rule is not None else child), origin

    outcome = EvolutionOutcome([], [], [], parents)
    for _slot in range(size):
        child, origin = None, ""
        if not parent_archs or rng.random() < settings.explore_rate:
            child, origin = explore(), "exploration"
        if child is None and parent_archs:
            for _attempt in range(settings.max_retries):
                candidate, origin = breed()
                if candidate is None:
                    continue
                key = arch_key(candidate)
                if key not in taken and window.contains(latency_of(candidate, key)):
                    child = candidate
                    break
            else:
                outcome.retries_exhausted += 1
                child, origin = explore(), "fallback_exploration"
        if child is None:
            outcome.shortfall = size - len(outcome.archs)
            logger.warning("could fill only %d of %d slots: no unevaluated candidate is left and %d mutation "
                           "attempts per slot found no new arch inside %s", len(outcome.archs), size,
                           settings.max_retries, window.describe())
            break
        key = arch_key(child)
        taken.add(key)
        outcome.archs.append(child)
        outcome.origins.append(origin)
        outcome.latencies.append(latency_of(child, key))
    return outcome
