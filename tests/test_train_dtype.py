"""The recipe's training precision (--train_dtype): bf16 runs the training forward under bfloat16 autocast
(weights, gradients, optimizer and evaluation stay fp32), it is part of the recipe's name (fp32 keeps the
name recipes always had), and auto resolves on the machine before anything is named."""

from __future__ import annotations

import pytest
import torch

from evaluation.finetune import FinetuneConfig, finetune
from evaluation.recipe import RecipeSettings
from evaluation.runner import parse_overrides
from glue.tasks import get_task
from utils import UserError, make_arch

MNLI = get_task("mnli")


def test_fp32_keeps_the_recipes_name_bf16_gets_its_own_and_auto_follows_the_cpu(monkeypatch):
    plain = RecipeSettings(learning_rate=2e-3).recipe_for(MNLI)
    fp32 = RecipeSettings(learning_rate=2e-3, train_dtype="fp32").recipe_for(MNLI)
    bf16 = RecipeSettings(learning_rate=2e-3, train_dtype="bf16").recipe_for(MNLI)
    assert "train_dtype" not in plain.settings() and plain.identity() == fp32.identity()
    assert bf16.settings()["train_dtype"] == "bf16" and bf16.identity() != plain.identity()
    assert bf16.for_seed(7).train_dtype == "bf16" and plain.for_seed(7).train_dtype == "fp32"
    for native, expected in ((True, bf16), (False, plain)):
        monkeypatch.setattr("evaluation.recipe.native_bf16", lambda native=native: native)
        auto = RecipeSettings(learning_rate=2e-3, train_dtype="auto").recipe_for(MNLI)
        assert auto.identity() == expected.identity() and auto.finetune == expected.finetune


def test_a_bad_train_dtype_is_one_line():
    with pytest.raises(UserError, match=r"^--train_dtype: must be one of fp32, bf16, auto, got 'fp16'$"):
        RecipeSettings(train_dtype="fp16")
    assert parse_overrides("--train_dtype bf16 --learning_rate 1e-3") == {"train_dtype": "bf16", "learning_rate": 1e-3}


def _fine_tune(tmp_path, train_dtype: str):
    """A real 100-step fine-tune of a tiny sub-model; the dtypes its Linear layers computed in while training."""
    from tests.evaluation_fixtures import mnli_task
    from transformer.hf_converter import to_hf_model

    torch.set_num_threads(1)
    supernet, data = mnli_task(str(tmp_path), n_train=400, n_dev=90)
    torch.manual_seed(0)  # the classifier head to_hf_model draws: the same for both dtypes
    model = to_hf_model(supernet, make_arch(2, 64, 128, 4), head="cls")
    seen = set()
    for module in model.modules():
        if isinstance(module, torch.nn.Linear):
            module.register_forward_hook(lambda mod, args, out: seen.add((mod.training, out.dtype)))
    outcome = finetune(model, data.train, data.primary_dev[1], MNLI, FinetuneConfig(2e-3, 4.0, 16, 32, 100000, train_dtype=train_dtype))
    return model, outcome, seen


def test_a_bf16_fine_tune_computes_in_bf16_keeps_fp32_weights_and_learns(tmp_path):
    model, bf16, seen = _fine_tune(tmp_path / "bf16", "bf16")
    assert seen == {(True, torch.bfloat16), (False, torch.float32)}  # training forward bf16, evaluation fp32
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert {t.dtype for t in bf16.best_state.values() if t.is_floating_point()} == {torch.float32}
    _, fp32, seen32 = _fine_tune(tmp_path / "fp32", "fp32")
    assert seen32 == {(True, torch.float32), (False, torch.float32)}
    assert bf16.steps == fp32.steps == 100
    # the cue task is learned either way (majority class ~0.4); the weights differ by bf16's rounding
    assert bf16.best.primary >= 0.8 and fp32.best.primary >= 0.8
    assert any(not torch.equal(bf16.best_state[k], fp32.best_state[k]) for k in fp32.best_state)


def test_the_report_states_a_bf16_recipe_and_says_nothing_for_fp32():
    from reporting.claims import _candidate_text

    tune = {"learning_rate": 5e-4, "num_train_epochs": 1.0, "train_batch_size": 16, "max_seq_length": 32,
            "warmup_proportion": 0.1, "weight_decay": 0.01, "dropout": 0.0, "eval_step": 100000}
    settings = {"train_examples": 4000, "train_steps": 250}
    fp32 = _candidate_text(dict(settings, fine_tune=dict(tune, train_dtype="fp32")))
    bf16 = _candidate_text(dict(settings, fine_tune=dict(tune, train_dtype="bf16")))
    assert fp32 == ("- Fine-tune per candidate: lr 0.0005, 1.0 epoch(s), batch 16, max_seq_length 32, warm-up 0.1, "
                    "weight decay 0.01, dropout 0.0, dev evaluated once, at the end of training.")
    assert bf16 == fp32.replace("dropout 0.0,", "dropout 0.0, training forward in bf16 (autocast),")
    assert _candidate_text(dict(settings, fine_tune=tune)) == fp32  # results made before the setting existed
