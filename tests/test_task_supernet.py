"""Issue 21, the weight-sharing fitness (``evaluation.task_supernet``): the supernet fine-tuned once on the
task with the sandwich rule, every arch scored from its slice; one task supernet per (task, seed, settings,
space) for every search of a run; a recipe without it keeps its name; bad settings refused in one line."""

from __future__ import annotations

import dataclasses
import json
import os

import pytest
import torch

from evaluation import task_supernet as task_supernet_module
from evaluation.candidate import TaskData
from evaluation.config import EvaluationConfig, TaskInput
from evaluation.data import encode_examples, load_tokenizer
from evaluation.evaluate import Evaluator
from evaluation.finetune import evaluate
from evaluation.recipe import RecipeSettings, recipe_id
from glue.tasks import get_task, read_split
from quantize_utils import resolve_scheme
from reporting.claims import _candidate_text
from tests.evaluation_fixtures import make_supernet_dir, write_mnli
from transformer.checkpoint import load_supernet
from transformer.hf_converter import to_hf_model
from transformer.modeling_super import SuperBertForSequenceClassification
from utils import Grid, SearchSpace, UserError, make_arch

SMALL, BIG, MID = make_arch(1, 32, 64, 4), make_arch(2, 64, 128, 4), make_arch(2, 32, 128, 4)
SPACE = SearchSpace(name="tiny", layer_num=Grid(1, 2, 1), hidden_size=Grid(32, 64, 32),
                    intermediate_size=Grid(64, 128, 64), num_attention_heads=Grid(4, 4, 1))
SANDWICH = RecipeSettings(learning_rate=2e-3, max_seq_length=32, train_batch_size=16, eval_step=100000,
                          max_train_examples=64, max_eval_examples=32, num_train_epochs=0.0, sandwich_epochs=2.0,
                          dropout=0.0)
MNLI = get_task("mnli")


@pytest.fixture(scope="module")
def task_inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("task_supernet")
    return {"supernet": make_supernet_dir(str(root / "supernet")),
            "data": write_mnli(str(root / "MNLI"), n_train=64, n_dev=32)}


def config(task_inputs, output_dir, scheme="ptq", cache=None, recipe=SANDWICH, space=SPACE):
    return EvaluationConfig(model_dir=task_inputs["supernet"], tasks=(TaskInput(MNLI, task_inputs["data"]),),
                            scheme=resolve_scheme(scheme), output_dir=str(output_dir), recipe=recipe, num_threads=1,
                            cache_dir=None if cache is None else str(cache), space=space)


@pytest.fixture
def trainings(monkeypatch):
    """Every task supernet trained in the test, as its seed."""
    made = []
    real = task_supernet_module.train_task_supernet

    def counting(supernet, train, space, recipe, seed, *args, **kwargs):
        made.append(seed)
        return real(supernet, train, space, recipe, seed, *args, **kwargs)
    monkeypatch.setattr(task_supernet_module, "train_task_supernet", counting)
    return made


def _task_data(task_inputs) -> TaskData:
    tokenizer = load_tokenizer(task_inputs["supernet"], True)
    encode = lambda split, n: encode_examples(tokenizer, read_split(MNLI, task_inputs["data"], split, n), MNLI, 32)
    return TaskData(MNLI, encode("train", 64), {"matched": encode("matched", 32), "mismatched": encode("mismatched", 32)})


def test_sandwich_training_is_seeded_and_trains_every_slice(task_inputs):
    """Same seed, same weights (bit for bit); another seed, other weights; the weights every arch of the
    space slices (the smallest included) moved away from the pre-trained ones."""
    data, recipe = _task_data(task_inputs), SANDWICH.recipe_for(MNLI)
    models = []
    for seed in (42, 42, 43):
        model = load_supernet(task_inputs["supernet"], SuperBertForSequenceClassification, num_labels=3)
        seconds = task_supernet_module.train_task_supernet(model, data.train, SPACE, recipe, seed, MNLI)
        assert seconds > 0 and not model.training
        models.append(model.state_dict())
    before = load_supernet(task_inputs["supernet"], SuperBertForSequenceClassification, num_labels=3).state_dict()
    assert all(torch.equal(models[0][key], models[1][key]) for key in models[0])
    assert not all(torch.equal(models[0][key], models[2][key]) for key in models[0])
    corner = "bert.encoder.layer.0.attention.self.query.weight"  # rows and columns of the smallest arch
    assert not torch.equal(models[0][corner][:32, :32], before[corner][:32, :32])


def test_one_task_supernet_serves_every_search_and_each_arch_is_its_slice(task_inputs, tmp_path, trainings):
    """The fp32 search, the int8 search and a later search that asks for a new arch share one task supernet
    per seed (trained once; the last one reads it back from the cache); no arch is fine-tuned (0 steps), and
    each score is exactly the accuracy of the arch sliced from the task supernet, classifier included."""
    cache = tmp_path / "cache"
    first = Evaluator(config(task_inputs, tmp_path / "fp", "fp", cache))
    fp32 = first.evaluate([SMALL, BIG], [42])
    int8 = Evaluator(config(task_inputs, tmp_path / "ptq", "ptq", cache)).evaluate([SMALL, BIG], [42])
    later = Evaluator(config(task_inputs, tmp_path / "late", "fp", cache)).evaluate([MID], [42])
    assert trainings == [42]
    assert [r["train_steps"] for r in fp32 + int8 + later] == [0] * 5
    for a, b in zip(fp32, int8):  # the int8 search re-scored each slice (its scheme was new) from the cached weights
        assert a["best_by_scheme"]["torch_fp32"] == b["best_by_scheme"]["torch_fp32"]
        assert "torch_dynamic_int8" in b["best_by_scheme"]
    assert {r["settings"]["sandwich_epochs"] for r in fp32 + int8 + later} == {2.0}
    trained = first._task_supernets["mnli", 42]
    dev = _task_data(task_inputs).dev["matched"]
    for arch, record in zip([SMALL, BIG], fp32):
        sliced = evaluate(to_hf_model(trained, arch, head="cls"), dev, MNLI, 32).primary
        assert record["best_fp32"] == pytest.approx(sliced, abs=0)
    reread = evaluate(to_hf_model(trained, MID, head="cls"), dev, MNLI, 32).primary
    assert later[0]["best_fp32"] == pytest.approx(reread, abs=0)  # the cached weights are the trained ones
    Evaluator(config(task_inputs, tmp_path / "seed43", "fp", cache)).evaluate([SMALL], [43])
    assert trainings == [42, 43]


def test_a_recipe_without_the_sandwich_keeps_its_name_and_zero_switches_it_off():
    plain = RecipeSettings(learning_rate=2e-3).recipe_for(MNLI)
    off = RecipeSettings(learning_rate=2e-3, sandwich_epochs=0.0).recipe_for(MNLI)
    on = RecipeSettings(learning_rate=2e-3, sandwich_epochs=1.0).recipe_for(MNLI)
    assert off.sandwich_epochs is None and "sandwich_epochs" not in plain.settings()
    assert plain.identity() == off.identity() == recipe_id(dict(plain.settings(), sandwich_epochs=None))
    assert on.identity() != plain.identity() and on.settings()["sandwich_epochs"] == 1.0
    for bad in (-1.0, float("nan"), "2"):
        with pytest.raises(UserError, match="^--sandwich_epochs: must be"):
            RecipeSettings(sandwich_epochs=bad)


def test_no_space_to_sample_and_a_task_supernet_of_other_settings_are_refused(task_inputs, tmp_path):
    """Without a space (none given, none recorded by the supernet) one line before anything is written; a
    cached task supernet whose entry records other settings: one line naming it, the entry kept."""
    with pytest.raises(UserError, match="^--sandwich_epochs: no search space to sample"):
        Evaluator(config(task_inputs, tmp_path / "nospace", space=None)).evaluate([SMALL], [42])
    assert not os.path.exists(tmp_path / "nospace")
    cache = tmp_path / "cache"
    Evaluator(config(task_inputs, tmp_path / "a", "fp", cache)).evaluate([SMALL], [42])
    entries = [p for p in (cache / "mnli").iterdir() if p.suffix == ".json"
               and json.loads(p.read_text()).get("kind") == "task_supernet"]
    assert len(entries) == 1 and entries[0].with_suffix(".safetensors").is_file()
    entry = json.loads(entries[0].read_text())
    entry["settings"]["learning_rate"] = 1.0
    entries[0].write_text(json.dumps(entry))
    with pytest.raises(UserError, match=f"^{entries[0]}: a task supernet made with learning_rate=1.0, asked for with "
                                        "learning_rate=0.002"):
        Evaluator(config(task_inputs, tmp_path / "b", "fp", cache)).evaluate([BIG], [42])
    assert json.loads(entries[0].read_text())["settings"]["learning_rate"] == 1.0


def test_the_report_names_the_fitness():
    tune = {"learning_rate": 5e-4, "num_train_epochs": 0.0, "train_batch_size": 16, "max_seq_length": 32,
            "dropout": 0.0, "sandwich_epochs": 1.0, "eval_step": 100000}
    text = _candidate_text({"fine_tune": tune, "train_examples": 8000, "train_steps": 0})
    assert text == ("- Fitness of a candidate: its slice of the supernet fine-tuned once on the task, 1 epoch(s) with "
                    "the sandwich rule, 8000 training examples (lr 0.0005, batch 16, max_seq_length 32, dropout 0.0), "
                    "then scored as it is.")
    plain = dict(tune, sandwich_epochs=None, num_train_epochs=1.0)
    assert _candidate_text({"fine_tune": plain, "train_examples": 4000, "train_steps": 250}).startswith(
        "- Fine-tune per candidate: lr 0.0005, 1.0 epoch(s)")


def test_another_sampled_space_is_another_task_supernet(task_inputs, tmp_path, trainings):
    """The space the sandwich samples is part of the settings: a search over another space in the same run
    trains its own task supernet and never reads the other's scores."""
    cache = tmp_path / "cache"
    one_layer = dataclasses.replace(SPACE, name="tiny_l1", layer_num=Grid(1, 1, 1))
    full = Evaluator(config(task_inputs, tmp_path / "full", "fp", cache)).evaluate([SMALL], [42])
    narrow = Evaluator(config(task_inputs, tmp_path / "narrow", "fp", cache, space=one_layer)).evaluate([SMALL], [42])
    assert trainings == [42, 42]
    assert "from_cache" not in narrow[0] and full[0]["recipe_id"] == narrow[0]["recipe_id"]
    assert full[0]["settings"]["sandwich_space"]["name"] == "tiny"
    assert narrow[0]["settings"]["sandwich_space"]["name"] == "tiny_l1"


def test_the_finalists_of_a_sandwich_search_are_fine_tuned_alone_in_the_same_output(task_inputs, tmp_path, trainings):
    """A search's candidates scored from the task supernet and its finalists fine-tuned alone (the demo's
    FITNESS=sandwich) share one output directory: the two rungs' recipes and the sampled space never clash,
    and the finalists' results name no sandwich."""
    search = Evaluator(config(task_inputs, tmp_path / "run", "ptq")).evaluate([SMALL], [42])
    final_recipe = dataclasses.replace(SANDWICH, sandwich_epochs=0.0, num_train_epochs=1.0)
    final = Evaluator(dataclasses.replace(config(task_inputs, tmp_path / "run", "ptq", recipe=final_recipe),
                                          rung="final")).evaluate([SMALL], [42, 43])
    assert trainings == [42]
    assert search[0]["train_steps"] == 0 and [r["train_steps"] for r in final] == [4, 4]
    assert all("sandwich_epochs" not in r["settings"] and "sandwich_space" not in r["settings"] for r in final)
    assert final[0]["recipe_id"] != search[0]["recipe_id"]
