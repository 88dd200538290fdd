"""What Kendall tau a fitness can reach against a reference that is itself a mean of a few noisy fine-tunes.

The reference of ``bench_fitness_rank.py`` is the mean of a few seeds per arch; a fitness is ranked against
it. Even a fitness that knew every arch's true accuracy would not rank that mean perfectly: archs whose
true accuracies differ by less than the reference's seed noise come out in the seed's order. This module
estimates that ceiling from the reference's own seeds, by a parametric bootstrap:

* the seed noise: each arch's scores are its true accuracy plus independent noise of one pooled variance
  (the mean of the archs' seed variances);
* the true accuracies, two ways: ``observed`` takes the reference means themselves (optimistic: their
  spread still holds the noise, so true differences look larger than they are); ``shrunk`` (empirical
  Bayes) pulls every mean towards its group's mean (groups: the number of layers, one layer against
  more) by the share of the group's spread that the noise does not explain;
* each draw makes a fresh reference (the same number of seeds) and a fitness that averages ``k`` fine-tunes
  of the reference's recipe (``k`` = infinity: the true accuracies, untied), and takes their tau.

The figures say how many fine-tunes of the reference's recipe a candidate would need for a tau goal, and
whether a goal is within reach of any fitness on these archs. ``separated_pairs`` / ``share_ordered`` look at
the pairs the reference itself can tell apart (Welch's test over its seeds): how many of those a fitness
orders as the reference does, the part of a ranking no seed noise excuses; ``held_out_seed_shares`` does so for
each reference seed against the others, and ``reference_splits`` gives the tau of the mean of k seeds against the
mean of the rest: the reference's recipe itself as a fitness, measured.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np


def true_accuracies(scores: np.ndarray, groups: Sequence[int], model: str) -> np.ndarray:
    """Per arch (rows of ``scores``: archs x seeds) the assumed true accuracy (``observed`` or ``shrunk``)."""
    means = scores.mean(axis=1)
    if model == "observed":
        return means
    if model != "shrunk":
        raise ValueError(f"model must be observed or shrunk, got {model!r}")
    noise_of_mean = pooled_seed_variance(scores) / scores.shape[1]
    groups = np.asarray(groups)
    truth = np.empty_like(means)
    for group in np.unique(groups):
        members = groups == group
        centre = means[members].mean()
        if members.sum() < 2:
            truth[members] = centre
            continue
        between = max(0.0, float(means[members].var(ddof=1)) - noise_of_mean)
        share = between / (between + noise_of_mean) if between + noise_of_mean > 0 else 0.0
        truth[members] = centre + share * (means[members] - centre)
    return truth


def pooled_seed_variance(scores: np.ndarray) -> float:
    """The mean over archs of the seed variance (ddof 1)."""
    if scores.shape[1] < 2:
        raise ValueError("the ceiling needs at least two reference seeds per arch")
    return float(scores.var(axis=1, ddof=1).mean())


def tau_ceiling(scores: np.ndarray, groups: Sequence[int], fitness_seeds: Sequence[float], model: str = "shrunk",
                draws: int = 2000, seed: int = 0, goal: float = 0.6) -> dict[float, tuple[float, float]]:
    """For each ``k`` of ``fitness_seeds`` (``math.inf``: the true accuracies): the mean tau of a ``k``-seed
    fitness against a fresh reference of ``scores.shape[1]`` seeds, and the share of draws reaching ``goal``."""
    from scipy.stats import kendalltau

    rng = np.random.default_rng(seed)
    truth = true_accuracies(scores, groups, model)
    noise = math.sqrt(pooled_seed_variance(scores))
    per_reference = noise / math.sqrt(scores.shape[1])
    result = {}
    for k in fitness_seeds:
        per_fitness = 0.0 if math.isinf(k) else noise / math.sqrt(k)
        taus = np.empty(draws)
        for index in range(draws):
            reference = truth + rng.normal(0.0, per_reference, truth.shape)
            # a continuous fitness never ties: the true accuracies are untied by a vanishing jitter
            fitness = truth + rng.normal(0.0, per_fitness if per_fitness else 1e-9, truth.shape)
            taus[index] = kendalltau(fitness, reference).statistic
        result[k] = (float(taus.mean()), float((taus >= goal).mean()))
    return result


def separated_pairs(scores: dict[str, Sequence[float]], alpha: float = 0.05) -> list[tuple[str, str]]:
    """The pairs of archs (keys of ``scores``: arch -> its reference seeds) whose reference means differ by
    Welch's t-test at ``alpha``, each as (lower, higher)."""
    import itertools

    from scipy.stats import ttest_ind

    pairs = []
    for first, second in itertools.combinations(scores, 2):
        test = ttest_ind(scores[first], scores[second], equal_var=False)
        if test.pvalue < alpha:
            lower_first = np.mean(scores[first]) < np.mean(scores[second])
            pairs.append((first, second) if lower_first else (second, first))
    return pairs


def share_ordered(fitness: dict[str, float], pairs: Sequence[tuple[str, str]]) -> tuple[float, float]:
    """Of ``pairs`` (lower, higher): the share a fitness orders the same way, and the share it ties."""
    if not pairs:
        return math.nan, math.nan
    same = sum(fitness[lower] < fitness[higher] for lower, higher in pairs)
    tied = sum(fitness[lower] == fitness[higher] for lower, higher in pairs)
    return same / len(pairs), tied / len(pairs)


def reference_splits(ref_matrix, keep_aside: int) -> dict[int, list[float]]:
    """Tau of the mean of ``k`` reference seeds (columns of ``ref_matrix``) against the mean of the others, at least
    ``keep_aside`` of them, over every split, for each ``k`` that leaves that many: the reference's recipe itself used
    as a fitness of ``k`` fine-tunes, measured (``keep_aside=1``, ``k=1``: the reference's own consistency)."""
    import itertools

    from scipy.stats import kendalltau

    seeds = ref_matrix.shape[1]
    result = {}
    for k in range(1, seeds - keep_aside + 1):
        taus = []
        for chosen in itertools.combinations(range(seeds), k):
            rest = [index for index in range(seeds) if index not in chosen]
            taus.append(float(kendalltau(ref_matrix[:, list(chosen)].mean(axis=1),
                                         ref_matrix[:, rest].mean(axis=1)).statistic))
        result[k] = taus
    return result


def held_out_seed_shares(scores: dict[str, Sequence[float]]) -> list[float]:
    """For each reference seed (position in every arch's list of ``scores``): the share of the pairs the other seeds
    tell apart (``separated_pairs``) that this one seed orders as they do -- one fine-tune of the reference's recipe
    used as the fitness, on the part of the ranking no seed noise excuses."""
    seeds = len(next(iter(scores.values())))
    shares = []
    for index in range(seeds):
        rest = {arch: [value for j, value in enumerate(values) if j != index] for arch, values in scores.items()}
        shares.append(share_ordered({arch: values[index] for arch, values in scores.items()}, separated_pairs(rest))[0])
    return shares
