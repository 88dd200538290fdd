"""Issue 21: one fine-tune per (task, arch, seed, recipe) for every search of a run (the evaluation
cache), a search's candidates and its finalists each with their own recipe (rungs), and the inputs
such a run refuses before any work (a dev set that repeats training, a recipe that trains nothing,
a cache entry of other settings)."""

from __future__ import annotations

import dataclasses
import json
import os
import threading
import time

import pytest

from evaluation import candidate as candidate_module
from evaluation.config import EvaluationConfig, TaskInput
from evaluation.evaluate import Evaluator
from evaluation.recipe import RecipeSettings
from evaluation.results import load_fitness
from glue.tasks import get_task
from quantize_utils import resolve_scheme
from search.chain import SearchRun
from tests.evaluation_fixtures import make_supernet_dir, write_mnli
from tests.test_search_core import REPO, environment, formula_predictor, inputs  # noqa: F401 (fixture)
from utils import UserError, make_arch, read_arch_file, run_cli

ARCH = make_arch(1, 32, 64, 4)
OTHER = make_arch(2, 64, 128, 4)
RECIPE = RecipeSettings(learning_rate=2e-3, max_seq_length=32, train_batch_size=16, eval_step=100,
                        max_train_examples=48, max_eval_examples=24)


@pytest.fixture(scope="module")
def task_inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("cache")
    return {"supernet": make_supernet_dir(str(root / "supernet")),
            "data": write_mnli(str(root / "MNLI"), n_train=48, n_dev=24)}


def config(task_inputs, output_dir, scheme="ptq", cache=None, recipe=RECIPE, extra=(), rung="search"):
    return EvaluationConfig(model_dir=task_inputs["supernet"], tasks=(TaskInput(get_task("mnli"), task_inputs["data"]),),
                            scheme=resolve_scheme(scheme), output_dir=str(output_dir), recipe=recipe,
                            extra_schemes=tuple(resolve_scheme(name) for name in extra), num_threads=1,
                            cache_dir=None if cache is None else str(cache), rung=rung)


@pytest.fixture
def fine_tunes(monkeypatch):
    """Every real fine-tune of the test, as (arch summary, seed, learning rate)."""
    made = []
    real = candidate_module.evaluate_candidate

    def counting(supernet, arch, data, finetune, *args, **kwargs):
        made.append((candidate_module.arch_summary(arch), finetune.seed, finetune.learning_rate))
        return real(supernet, arch, data, finetune, *args, **kwargs)
    monkeypatch.setattr(candidate_module, "evaluate_candidate", counting)
    return made


def test_an_arch_seed_and_recipe_is_fine_tuned_once_for_every_search(task_inputs, tmp_path, fine_tunes):
    """The fp32 search (scoring int8 too), the int8 search and the random baseline of one run ask for the
    same (arch, seed, recipe): one fine-tune, and each search's results hold its own scheme's score."""
    cache = tmp_path / "cache"
    fp32 = Evaluator(config(task_inputs, tmp_path / "fp", "fp", cache, extra=("int8",))).evaluate([ARCH, OTHER], [42])
    int8 = Evaluator(config(task_inputs, tmp_path / "ptq", "ptq", cache)).evaluate([ARCH, OTHER], [42])
    rand = Evaluator(config(task_inputs, tmp_path / "rand", "ptq", cache)).evaluate([OTHER], [42, 43])
    assert sorted(fine_tunes) == sorted([("L1/H32/F64/Q32/A4", 42, 2e-3), ("L2/H64/F128/Q64/A4", 42, 2e-3),
                                         ("L2/H64/F128/Q64/A4", 43, 2e-3)])  # seed 43 is new; nothing else is
    for a, b in zip(fp32, int8):
        assert a["best_by_scheme"] == b["best_by_scheme"]  # the same fine-tune, both scorings
        assert a["scheme"] == "torch_fp32" and a["best_acc"] == a["best_by_scheme"]["torch_fp32"]
        assert b["scheme"] == "torch_dynamic_int8" and b["best_acc"] == b["best_by_scheme"]["torch_dynamic_int8"]
        assert b["from_cache"].startswith(str(cache))
    assert rand[0]["best_by_scheme"] == int8[1]["best_by_scheme"]
    for name in ("fp", "ptq", "rand"):  # each search's own results file, in its own settings
        records = [json.loads(line) for line in open(tmp_path / name / "subbert.results.jsonl")]
        assert {r["settings"]["extra_schemes"] == (["torch_dynamic_int8"] if name == "fp" else []) for r in records} \
            == {True}


def test_two_recipes_never_mix(task_inputs, tmp_path, fine_tunes):
    cache = tmp_path / "cache"
    first = Evaluator(config(task_inputs, tmp_path / "a", cache=cache)).evaluate([ARCH], [42])[0]
    longer = dataclasses.replace(RECIPE, learning_rate=1e-3)
    second = Evaluator(config(task_inputs, tmp_path / "b", cache=cache, recipe=longer)).evaluate([ARCH], [42])[0]
    assert fine_tunes == [("L1/H32/F64/Q32/A4", 42, 2e-3), ("L1/H32/F64/Q32/A4", 42, 1e-3)]
    assert first["recipe_id"] != second["recipe_id"] and "from_cache" not in second


def test_a_cache_entry_of_other_settings_is_one_line_and_nothing_is_lost(task_inputs, tmp_path, fine_tunes):
    cache = tmp_path / "cache"
    Evaluator(config(task_inputs, tmp_path / "a", cache=cache)).evaluate([ARCH], [42])
    entry = next(path for path in (cache / "mnli").iterdir() if path.suffix == ".json")
    data = json.loads(entry.read_text())
    data["settings"]["learning_rate"] = 0.5  # an entry whose settings are not its key's
    entry.write_text(json.dumps(data))
    kept = (tmp_path / "a" / "subbert.results.jsonl").read_text()
    with pytest.raises(UserError, match=rf"{entry}: a cache entry made with learning_rate=0.5, asked for with "
                                        r"learning_rate=0.002; the cache never mixes settings"):
        Evaluator(config(task_inputs, tmp_path / "b", cache=cache)).evaluate([ARCH], [42])
    assert (tmp_path / "a" / "subbert.results.jsonl").read_text() == kept and len(fine_tunes) == 1


def test_two_searches_asking_at_once_share_one_fine_tune(task_inputs, tmp_path, fine_tunes, monkeypatch):
    """The second search waits on the entry's lock, then reads the first one's result."""
    real = candidate_module.evaluate_candidate

    def slow(*args, **kwargs):
        time.sleep(1.0)
        return real(*args, **kwargs)
    monkeypatch.setattr(candidate_module, "evaluate_candidate", slow)
    counted = []
    monkeypatch.setattr(candidate_module, "evaluate_candidate",
                        lambda *a, **k: counted.append(1) or slow(*a, **k))
    cache, results = tmp_path / "cache", {}

    def search(name):
        results[name] = Evaluator(config(task_inputs, tmp_path / name, cache=cache)).evaluate([ARCH], [42])[0]
    threads = [threading.Thread(target=search, args=(name,)) for name in ("one", "two")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(counted) == 1
    assert results["one"]["best_by_scheme"] == results["two"]["best_by_scheme"]


def test_a_search_makes_what_nobody_holds_before_waiting(task_inputs, tmp_path, fine_tunes):
    """Two searches that chose the same finalist need the same (arch, seed) fine-tunes: while another
    search holds seed 42's entry, this one makes seed 43 instead of waiting (it waited before, one core
    idle), then waits for 42; its results keep the order asked for."""
    import fcntl

    from evaluation.cache import EvaluationCache

    cache = tmp_path / "cache"
    evaluation = config(task_inputs, tmp_path / "search", cache=cache)
    key = EvaluationCache(str(cache)).key("mnli", ARCH, 42, evaluation.settings(evaluation.tasks[0]))
    lock_path = cache / "mnli" / f"{key}.json.lock"
    lock_path.parent.mkdir(parents=True)
    held = os.open(lock_path, os.O_RDWR | os.O_CREAT)
    fcntl.flock(held, fcntl.LOCK_EX)  # "another search" is making seed 42
    results = []
    search = threading.Thread(target=lambda: results.extend(Evaluator(evaluation).evaluate([ARCH], [42, 43])))
    search.start()
    try:
        deadline = time.monotonic() + 20
        while not fine_tunes and search.is_alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert [seed for _, seed, _ in fine_tunes] == [43]  # made while 42 was held
    finally:
        os.close(held)  # the other search "stops" without a result: this one makes 42 itself
        search.join()
    assert [seed for _, seed, _ in fine_tunes] == [43, 42]
    assert [record["seed"] for record in results] == [42, 43]


def test_a_search_ranks_by_its_candidates_recipe_and_reports_its_finalists_recipe(inputs, tmp_path):  # noqa: F811
    """FINAL_EVAL_ARGS: the finalists are fine-tuned with their own recipe; the results file holds both rungs,
    the fitness reads the candidates' recipe only, and <name>.final.json says which is which."""
    env = environment(inputs, tmp_path, FINAL_EVAL_ARGS="--max_train_examples 40 --learning_rate 1e-3",
                      FIRST_GENERATION="rand")
    from search.plan import plan_from_env

    SearchRun(plan_from_env(env, REPO, None), load=formula_predictor).run("all")
    out = tmp_path / "output" / "kd_ptq_6"
    records = [json.loads(line) for line in open(out / "subbert.results.jsonl")]
    search = [r for r in records if r["rung"] == "search"]
    final = [r for r in records if r["rung"] == "final"]
    assert len(search) == 4 and len(final) == 2  # the finalist with both seeds: nothing of the search reused
    assert {r["settings"]["max_train_examples"] for r in search} == {48}
    assert {r["settings"]["max_train_examples"] for r in final} == {40}
    assert {r["settings"]["learning_rate"] for r in final} == {1e-3}
    record = json.loads((tmp_path / "cands" / "kd_ptq_6.final.json").read_text())
    assert record["seeds"] == [42, 43] and record["recipe_id"] == final[0]["recipe_id"]
    assert record["search_recipe_id"] == search[0]["recipe_id"] != record["recipe_id"]
    fitness = load_fitness(str(out / "subbert.results"), "mnli", "ptq", record["search_recipe_id"])
    assert len(fitness) == 4 and all(len(json.loads(k)) for k in fitness)
    assert read_arch_file(tmp_path / "cands" / "kd_ptq_6.final.cands")[0] == final[0]["arch"]
    # the final step's evaluator records what it was asked (arch file, seeds, archs), which the report reads
    run_args = json.loads((out / "run_args.json").read_text())
    assert run_args["arches_file"] == str(tmp_path / "cands" / "kd_ptq_6.final.cands")
    assert run_args["seeds"] == [42, 43] and run_args["archs"] == [final[0]["arch_summary"]]
    from reporting.inputs import recorded_final_seeds

    assert recorded_final_seeds(str(out), "kd_ptq_6") == [42, 43]


@pytest.mark.parametrize("change, message", [
    ({"FINAL_EVAL_ARGS": "--extra_schemes ort"}, "FINAL_EVAL_ARGS: --extra_schemes is not a fine-tune recipe flag"),
    ({"FINAL_EVAL_ARGS": "--learning_rate inf"}, "--learning_rate: must be a finite number, got inf"),
    ({"EVAL_ARGS": "--dropout 1.5"}, "--dropout: must be a number in [0, 1), got 1.5"),
    ({"EVAL_CACHE": "{file}"}, "EVAL_CACHE={file} exists and is not a directory"),
])
def test_final_recipe_and_cache_settings_are_checked_before_any_file(inputs, tmp_path, capsys, change,  # noqa: F811
                                                                      message):
    from search.plan import plan_from_env

    existing = tmp_path / "a_file"
    existing.write_text("x")
    change = {key: value.replace("{file}", str(existing)) for key, value in change.items()}
    with pytest.raises(SystemExit) as info:
        run_cli(lambda _argv: plan_from_env(environment(inputs, tmp_path, **change), REPO, "cand"), [])
    lines = capsys.readouterr().err.strip().splitlines()
    assert info.value.code == 2 and len(lines) == 1 and message.replace("{file}", str(existing)) in lines[0], lines
    assert not (tmp_path / "cands").exists() and not (tmp_path / "output").exists()


def test_a_dev_set_that_repeats_training_is_refused_before_training(task_inputs, tmp_path, fine_tunes):
    data = tmp_path / "MNLI"
    write_mnli(str(data), n_train=48, n_dev=24)
    train = (data / "train.tsv").read_text().splitlines()
    dev = (data / "dev_matched.tsv").read_text().splitlines()
    # the dev file keeps its 16 columns; five of its 24 examples take a training example's sentences
    for row in range(1, 6):
        cells, source = dev[row].split("\t"), train[row].split("\t")
        cells[8], cells[9] = source[8], source[9]
        dev[row] = "\t".join(cells)
    (data / "dev_matched.tsv").write_text("\n".join(dev) + "\n")
    settings = dataclasses.replace(config(task_inputs, tmp_path / "out"),
                                   tasks=(TaskInput(get_task("mnli"), str(data)),))
    with pytest.raises(UserError, match=r"dev_matched.tsv: 5 of its 24 examples \(20.8 %\) are also training examples"):
        Evaluator(settings).evaluate([ARCH], [42])
    assert fine_tunes == [] and not (tmp_path / "out").exists()


def test_a_recipe_that_makes_no_step_is_refused(task_inputs, tmp_path, fine_tunes):
    recipe = dataclasses.replace(RECIPE, num_train_epochs=0.01)
    with pytest.raises(UserError, match=r"mnli: 48 training examples at batch 16 x 0.01 epoch\(s\) make no optimizer "
                                        "step"):
        Evaluator(config(task_inputs, tmp_path / "out", recipe=recipe)).evaluate([ARCH], [42])
    assert fine_tunes == []


def test_demo_splits_share_no_example():
    import random

    from demo.nli import TASK_LEVELS, make_splits

    splits = make_splits(random.Random(3), 3000, 2000, TASK_LEVELS[1], num_dev_mismatched=500)
    assert [len(v) for v in splits.values()] == [3000, 2000, 500]
    pairs = [(e.premise, e.hypothesis) for examples in splits.values() for e in examples]
    assert len(set(pairs)) == len(pairs)


def test_every_numeric_recipe_field_is_named_and_checked():
    """A FIELD=VALUE recipe setting (benchmarks/bench_fitness_rank.py --fitness_set) reaches every numeric field of
    RecipeSettings, typed as the field is, and a value out of range is the recipe's own one-line error."""
    from evaluation.recipe import recipe_number_fields

    numeric = recipe_number_fields()
    assert set(numeric) == set(RecipeSettings.__dataclass_fields__) - {"train_dtype"}
    for field, kind in numeric.items():
        valid = kind("1" if kind is int else "0.5")  # in range for every field (a dropout must stay below 1)
        assert getattr(RecipeSettings(**{field: valid}), field) == valid
        with pytest.raises(UserError, match=f"--{field}"):
            RecipeSettings(**{field: kind("-1")})
