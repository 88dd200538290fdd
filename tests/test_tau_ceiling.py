"""The tau ceiling of benchmarks/bench_fitness_rank.py: what a fitness can reach against a noisy reference."""

import math
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks._tau_ceiling import (  # noqa: E402
    held_out_seed_shares,
    reference_splits,
    separated_pairs,
    share_ordered,
    tau_ceiling,
    true_accuracies,
)


def _scores(truth, noise, seeds, seed=0):
    rng = np.random.default_rng(seed)
    return np.asarray(truth, float)[:, None] + rng.normal(0.0, noise, (len(truth), seeds))


def test_archs_far_apart_are_ranked_perfectly():
    """True accuracies 10 points apart, seed noise 0.1: any fitness ranks the reference exactly (tau 1 in every draw)."""
    scores = _scores(np.arange(12) * 10.0, 0.1, 3)
    ceiling = tau_ceiling(scores, [0] * 12, (1, math.inf), draws=200)
    for tau, share in ceiling.values():
        assert tau == pytest.approx(1.0, abs=1e-9) and share == 1.0


def test_archs_alike_leave_nothing_to_rank():
    """Twelve archs whose means differ less than their seed noise explains: the shrunk model sees no true difference
    (all pulled to the group mean), so even a perfect fitness ranks a fresh reference at chance (mean tau within 0.05
    of 0, almost no draw at 0.6)."""
    noise = _scores([0.0] * 12, 2.0, 3, seed=1)
    scores = 90.0 + noise - noise.mean(axis=1, keepdims=True) + np.linspace(-0.1, 0.1, 12)[:, None]
    truth = true_accuracies(scores, [0] * 12, "shrunk")
    assert np.ptp(truth) == pytest.approx(0.0, abs=1e-9)
    tau, share = tau_ceiling(scores, [0] * 12, (math.inf,), "shrunk", draws=1000)[math.inf]
    assert abs(tau) < 0.05 and share < 0.02


def test_observed_model_is_the_optimistic_one_and_more_seeds_help():
    """Two depth groups 4 points apart, noise 2: the observed means as truth give a higher ceiling than the shrunk
    ones, and a fitness of more fine-tunes ranks better than one of fewer."""
    truth = [86.0] * 6 + [90.0] * 8
    scores = _scores(truth, 2.0, 3, seed=2)
    groups = [1] * 6 + [2] * 8
    observed = tau_ceiling(scores, groups, (1, 4), "observed", draws=1500)
    shrunk = tau_ceiling(scores, groups, (1, 4), "shrunk", draws=1500)
    assert observed[1][0] > shrunk[1][0]
    assert observed[4][0] > observed[1][0] and shrunk[4][0] > shrunk[1][0]
    with pytest.raises(ValueError):
        true_accuracies(scores, groups, "best")


def test_reference_splits_use_every_split_and_keep_three_seeds_aside():
    """Five seeds: one or two of them against the mean of the rest (5 and 10 splits); identical seeds rank alike; the
    reference's own consistency is each seed against the others, in seed order."""
    scores = np.tile(np.arange(8.0)[:, None], (1, 5))
    splits = reference_splits(scores, keep_aside=3)
    assert sorted(splits) == [1, 2]
    assert len(splits[1]) == 5 and len(splits[2]) == 10
    assert all(tau == pytest.approx(1.0) for taus in splits.values() for tau in taus)
    assert reference_splits(scores[:, :3], keep_aside=3) == {}  # three seeds: no split keeps three aside
    noisy = scores + np.random.default_rng(4).normal(0.0, 3.0, scores.shape)
    consistency = reference_splits(noisy[:, :3], keep_aside=1)[1]
    rest = noisy[:, [1, 2]].mean(axis=1)
    from scipy.stats import kendalltau

    assert consistency[0] == pytest.approx(kendalltau(noisy[:, 0], rest).statistic)  # seed 0 against seeds 1, 2


def test_separated_pairs_and_the_share_a_fitness_orders():
    """Three archs: two far apart with tight seeds, one overlapping both: only the far pair is told apart (as
    (lower, higher)); a fitness that swaps it orders 0 %, one that ties it ties 100 %."""
    scores = {"low": [80.0, 80.5, 79.5], "high": [90.0, 90.5, 89.5], "wide": [78.0, 92.0, 85.0]}
    pairs = separated_pairs(scores)
    assert pairs == [("low", "high")]
    assert share_ordered({"low": 1.0, "high": 2.0, "wide": 0.0}, pairs) == (1.0, 0.0)
    assert share_ordered({"low": 2.0, "high": 1.0, "wide": 0.0}, pairs) == (0.0, 0.0)
    assert share_ordered({"low": 1.0, "high": 1.0, "wide": 0.0}, pairs) == (0.0, 1.0)
    assert all(math.isnan(value) for value in share_ordered({}, []))


def test_a_fitness_seed_is_never_part_of_the_reference_of_the_same_recipe():
    """The demo's candidates now use the finalists' recipe: the fitness seed among the reference seeds is refused in
    one line naming --ref_seeds; other recipes, or disjoint seeds, pass."""
    from benchmarks.bench_fitness_rank import check_seeds_apart
    from evaluation.recipe import RecipeSettings
    from utils import UserError

    final = RecipeSettings(max_train_examples=8000, max_eval_examples=2000)
    with pytest.raises(UserError, match=r"^--ref_seeds: .*fitness seed\(s\) 42 would be part of the reference"):
        check_seeds_apart(final, final, [42], [42, 43, 44])
    check_seeds_apart(final, final, [42], [43, 44, 45])
    check_seeds_apart(RecipeSettings(max_train_examples=3000), final, [42], [42, 43, 44])


def test_a_held_out_seed_is_scored_on_the_pairs_the_other_seeds_tell_apart():
    """Five seeds of two archs: four put low 10 points under high, seed 4 alone swaps them by a point: held out, it
    orders 0 % of the pair the other four tell apart; each other seed, held out, orders it 100 %."""
    scores = {"low": [80.0, 80.4, 79.6, 80.2, 85.5], "high": [90.0, 90.4, 89.6, 90.2, 84.5]}
    shares = held_out_seed_shares(scores)
    assert shares == [1.0, 1.0, 1.0, 1.0, 0.0]
