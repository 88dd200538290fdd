"""search.evolution / search.history with a latency formula instead of a predictor."""

import json
import random

import numpy as np
import pytest

from search.evolution import (
    EvolutionSettings,
    LatencyWindow,
    NoArchInBudget,
    arch_rule,
    evolve,
    first_generation,
    generate_candidates,
    is_fast,
    roulette_weights,
    select_parents,
)
from search.history import default_log_path, fitness_by_generation, read_search_log, record_generation
from utils import SPACES, Grid, SearchSpace, UserError, arch_key, make_arch

SPACE = SPACES["paper_search"]


def latency_ms(archs):
    """A smooth stand-in for the predictor: ~0.1 ms (L1/H144/F128) .. ~11 ms (L5/H528/F1024)."""
    return np.array([a["sample_layer_num"] * (4 * a["sample_hidden_size"] ** 2
                     + 2 * a["sample_hidden_size"] * a["sample_intermediate_sizes"][0]) * 1e-6 for a in archs])


WINDOW = LatencyWindow(5.0, 0.85, 1.1)  # [4.25, 5.5] ms: the original's window (the default ends at 1.0 c)


def fitness_of(arch):
    """A made-up accuracy that prefers deep, wide models."""
    return 0.5 + 0.05 * arch["sample_layer_num"] + arch["sample_hidden_size"] / 5000


def test_window_bounds_and_bad_values():
    assert WINDOW.bounds == pytest.approx((4.25, 5.5))
    assert WINDOW.contains(4.25) and WINDOW.contains(5.5) and not WINDOW.contains(5.51)
    assert LatencyWindow(10, 0.9, 1.0).bounds == pytest.approx((9.0, 10.0))
    for bad in (lambda: LatencyWindow(0), lambda: LatencyWindow(5, 1.2, 1.1)):
        with pytest.raises(UserError):
            bad()


def test_candidates_are_exactly_the_grid_inside_the_window():
    archs, latencies = generate_candidates(SPACE, latency_ms, WINDOW, arch_rule("KD", SPACE))
    grid = list(SPACE.grid())
    expected = [a for a, ms in zip(grid, latency_ms(grid)) if 4.25 <= ms <= 5.5]
    assert archs == expected and 50 < len(archs) < len(grid)
    assert np.all((latencies >= 4.25) & (latencies <= 5.5))
    assert all(SPACE.contains(a) for a in archs)


def test_no_arch_in_budget_names_smallest_and_largest_prediction():
    with pytest.raises(NoArchInBudget) as info:
        generate_candidates(SPACE, latency_ms, LatencyWindow(0.05))
    text = str(info.value)
    assert "\n" not in text and "no arch of the paper_search space (4785 archs)" in text
    smallest, largest = latency_ms([SPACE.smallest()])[0], latency_ms([SPACE.largest()])[0]
    assert f"from {smallest:.3f} ms (L1/H144/F128/Q144/A12)" in text
    assert f"to {largest:.3f} ms (L5/H528/F1024/Q528/A12)" in text


def test_mlm_rule_ties_qkv_to_heads():
    mlm_space = SearchSpace("mlm", Grid(1, 2), Grid(128, 256, 128), Grid(256, 512, 256), Grid(2, 4, 2),
                            Grid(64, 256, 64))
    rule = arch_rule("MLM", mlm_space)
    archs, _ = generate_candidates(mlm_space, lambda a: np.ones(len(a)), LatencyWindow(1.0), rule)
    assert {(a["sample_num_attention_heads"][0], a["sample_qkv_sizes"][0]) for a in archs} == {(2, 128), (4, 256)}
    assert len(archs) == 2 * 2 * 2 * 2  # layers x hidden x ffn x heads
    with pytest.raises(UserError, match="MLM"):
        generate_candidates(SPACE, latency_ms, WINDOW, arch_rule("MLM", SPACE))  # qkv tied to hidden


def test_fast_rule_and_first_generation():
    assert is_fast(make_arch(2, 320, 544, 12)) and not is_fast(make_arch(2, 320, 640, 12))
    candidates, _ = generate_candidates(SPACE, latency_ms, WINDOW)
    fast = [a for a in candidates if is_fast(a)]
    assert 5 <= len(fast) < len(candidates)
    picks = first_generation(candidates, 5, "Fast", random.Random(1))
    assert len(picks) == 5 and all(is_fast(a) for a in picks)
    assert picks == first_generation(candidates, 5, "Fast", random.Random(1))  # seeded
    # more than the fast ones: every fast one plus random others, no duplicates
    many = first_generation(candidates, len(fast) + 7, "Fast", random.Random(2))
    assert len({arch_key(a) for a in many}) == len(fast) + 7
    assert {arch_key(a) for a in fast} <= {arch_key(a) for a in many}
    rand = first_generation(candidates, 10, "Random", random.Random(3))
    assert len({arch_key(a) for a in rand}) == 10
    assert len(first_generation(candidates[:4], 10, "Random", random.Random(3))) == 4  # fewer: all, no crash


def test_roulette_and_parent_selection():
    assert roulette_weights([("a", 0.9), ("b", 0.7), ("c", 0.6)]) == pytest.approx([0.3, 0.1, 0.0])
    assert roulette_weights([("a", 0.5), ("b", 0.5)]) == [1.0, 1.0]
    fitness = {arch_key(make_arch(1, 144 + 12 * i, 128, 12)): 0.1 * (i % 4) for i in range(8)}
    parents = select_parents(fitness, 3)
    assert [value for _, value in parents] == pytest.approx([0.3, 0.3, 0.2])
    off_space = {arch_key(make_arch(1, 150, 128, 10)): 1.0, **fitness}
    assert select_parents(off_space, 3, SPACE) == parents  # parents must be mutable within the space


def _first_generation():
    candidates, _ = generate_candidates(SPACE, latency_ms, WINDOW)
    first = first_generation(candidates, 10, "Fast", random.Random(0))
    return candidates, {arch_key(a): fitness_of(a) for a in first}


@pytest.mark.parametrize("settings", [EvolutionSettings(), EvolutionSettings(explore_rate=0.0),
                                      EvolutionSettings(explore_rate=0.2, crossover_prob=0.5)])
def test_evolved_children_are_new_unique_and_inside_the_window(settings):
    candidates, fitness = _first_generation()
    for generation in range(3):
        outcome = evolve(SPACE, fitness, candidates, latency_ms, WINDOW, random.Random(generation), settings)
        keys = [arch_key(a) for a in outcome.archs]
        assert len(keys) == settings.population == len(set(keys))
        assert not set(keys) & set(fitness)  # never an evaluated arch
        assert np.all((latency_ms(outcome.archs) >= 4.25) & (latency_ms(outcome.archs) <= 5.5))
        assert outcome.latencies == pytest.approx(list(latency_ms(outcome.archs)))
        assert all(SPACE.contains(a) for a in outcome.archs)
        fitness.update({key: fitness_of(a) for key, a in zip(keys, outcome.archs)})
    if settings.explore_rate == 0.0:
        assert set(outcome.origins) <= {"mutation", "fallback_exploration"}
    if settings.crossover_prob:
        assert "crossover" in outcome.origins and "exploration" in outcome.origins


def test_evolved_is_seeded():
    candidates, fitness = _first_generation()
    run = lambda seed: evolve(SPACE, fitness, candidates, latency_ms, WINDOW, random.Random(seed)).archs  # noqa: E731
    assert run(5) == run(5) and run(5) != run(6)


def test_exhausted_neighbourhood_falls_back_then_stops():
    # every candidate evaluated and a window so narrow that mutation rarely lands in it:
    # retries are bounded, the population is partly filled, and the call returns quickly
    narrow = LatencyWindow(5.0, 0.999, 1.001)
    candidates, _ = generate_candidates(SPACE, latency_ms, narrow)
    fitness = {arch_key(a): fitness_of(a) for a in candidates}
    outcome = evolve(SPACE, fitness, candidates, latency_ms, narrow, random.Random(0),
                     EvolutionSettings(population=5, max_retries=20))
    assert outcome.shortfall == 5 - len(outcome.archs) > 0
    assert outcome.retries_exhausted >= 1
    assert not {arch_key(a) for a in outcome.archs} & set(fitness)


def test_search_log_numbers_generations_and_reports_fitness(tmp_path):
    log = default_log_path(str(tmp_path / "kd_ptq_10.cands"))
    assert log.endswith("kd_ptq_10.search_log.jsonl")
    a, b, c = make_arch(1, 144, 128, 12), make_arch(2, 144, 128, 12), make_arch(3, 144, 128, 12)
    assert record_generation(log, {"method": "Fast", "archs": [arch_key(a), arch_key(b)]}) == 0
    assert record_generation(log, {"method": "Evolved", "archs": [arch_key(c)]}) == 1
    assert record_generation(log, {"method": "Evolved", "archs": [arch_key(c)]}) == 2
    assert record_generation(log, {"method": "Evolved", "archs": []}, generation=2) == 2  # a re-run replaces
    assert [r["generation"] for r in read_search_log(log)] == [0, 1, 2]
    rows = fitness_by_generation(read_search_log(log), {arch_key(a): 0.5, arch_key(b): 0.7, arch_key(c): 0.6})
    assert [(r["best"], r["mean"], r["best_so_far"]) for r in rows[:2]] == [(0.7, pytest.approx(0.6), 0.7),
                                                                            (0.6, 0.6, 0.7)]
    assert rows[2]["evaluated"] == 0 and rows[2]["best"] is None
    assert json.loads(open(log).readline())["method"] == "Fast"
