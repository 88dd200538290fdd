"""The per-task fine-tune recipes (issue 24): stated in --help, a data set too small for its recipe
gets one warning line with the recipe to use, and every fine-tune logs a line when it starts."""

from __future__ import annotations

import subprocess
import sys

import pytest

from evaluation import evaluate, runner
from evaluation_fixtures import make_supernet_dir, write_arches, write_mnli
from glue.recipes import MIN_FINETUNE_STEPS, finetune_steps, small_data_recipe, small_data_warning
from glue.tasks import TASKS
from test_progress import ROOT
from utils import make_arch, run_cli

SMALL = make_arch(1, 32, 64, 4)


def test_steps_are_counted_as_the_fine_tune_counts_them():
    assert finetune_steps(800, 32, 1) == 25
    assert finetune_steps(801, 32, 1) == 26  # the short last batch is a step
    assert finetune_steps(1000, 8, 1) == 125 and finetune_steps(600, 8, 1) == 75
    assert finetune_steps(2490, 32, 3) == 234 and finetune_steps(100, 32, 0.5) == 2


def test_warning_names_the_recipe_that_reaches_the_threshold():
    line = small_data_warning("mnli", 800, 32, 1.0)
    assert line == ("mnli: 800 training examples at batch 32 x 1 epoch(s) = 25 optimizer steps, fewer than the 100 "
                    "a fine-tune needs to learn; use --train_batch_size 8 --num_train_epochs 1 (100 steps; search "
                    "scripts: NUM_TRAIN_EPOCHS=1 EVAL_ARGS=\"--train_batch_size 8\"), see docs/fine-tuning.md")
    assert small_data_recipe(635, 32, 1) == (8, 2, 160)  # WNLI: 20 steps at its default
    assert small_data_recipe(50, 4, 1) == (4, 8, 104)  # a batch below 8 is kept
    for n, batch, epochs in ((800, 32, 1), (635, 32, 1), (50, 4, 1), (7, 32, 1)):
        new_batch, new_epochs, steps = small_data_recipe(n, batch, epochs)
        assert steps == finetune_steps(n, new_batch, new_epochs) >= MIN_FINETUNE_STEPS
        assert finetune_steps(n, new_batch, new_epochs - 1) < MIN_FINETUNE_STEPS  # no more epochs than needed
    assert small_data_warning("mnli", 3200, 32, 1) is None  # exactly 100 steps
    assert small_data_warning("mnli", 3169, 32, 1) is None  # ceil(3169 / 32) = 100
    assert small_data_warning("mnli", 3168, 32, 1) is not None  # 99 steps
    assert small_data_warning("mnli", 800, 32, 0) is None  # 0 epochs: evaluate only, on purpose


def test_help_states_every_task_recipe():
    text = subprocess.run([sys.executable, "superbert_run_en_classifier_ptq.py", "--help"], cwd=ROOT,
                          capture_output=True, text=True, check=True).stdout
    assert "--num_train_epochs 1, --warmup_proportion 0.1, --weight_decay 0.01" in text
    for name, task in TASKS.items():
        hp = task.hparams
        row = [line.split() for line in text.splitlines() if line.split()[:1] == [name]]
        assert row == [[name, f"{hp.learning_rate:g}", str(hp.train_batch_size), str(hp.max_seq_length),
                        str(hp.eval_step)]], name
    assert f"fewer than {MIN_FINETUNE_STEPS} optimizer steps" in text


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("recipes")
    return {"root": root, "model": make_supernet_dir(str(root / "supernet")),
            "mnli": write_mnli(str(root / "MNLI"), n_train=400, n_dev=30),
            "arches": write_arches(str(root / "one.cands"), [SMALL])}


def _evaluate(ws, output, *flags):
    argv = ["--model", ws["model"], "--data_dir", ws["mnli"], "--task_name", "mnli", "--arches_file", ws["arches"],
            "--output_dir", str(ws["root"] / output), "--max_seq_length", "32", "--num_threads", "1",
            "--seed", "1", "2", *flags]
    with pytest.raises(SystemExit) as info:
        run_cli(lambda args: runner.main(args, default_scheme="torch_fp32"), argv)
    assert info.value.code == 0


def test_evaluator_warns_once_before_training_and_logs_each_start(workspace, caplog):
    evaluate._WARNED.clear()
    with caplog.at_level("INFO"):
        _evaluate(workspace, "small")  # MNLI's recipe: batch 32 x 1 epoch on 400 examples = 13 steps
    messages = [r.getMessage() for r in caplog.records]
    warnings = [m for m in messages if "fewer than the 100" in m]
    assert warnings == [small_data_warning("mnli", 400, 32, 1.0)]
    assert "use --train_batch_size 8 --num_train_epochs 2 (100 steps" in warnings[0]
    starts = [i for i, m in enumerate(messages) if ": fine-tuning 13 steps (400 examples, batch 32, lr 3e-05" in m]
    assert len(starts) == 2 and messages.index(warnings[0]) < starts[0]
    # each start line comes before its own result line
    for seed, start in zip((1, 2), starts):
        assert messages[start].startswith(f"mnli seed {seed} L1/")
        done = next(i for i, m in enumerate(messages) if m.startswith(f"mnli seed {seed} L1/") and "(" in m
                    and "fine-tuning" not in m and i > start)
        assert done > start
    # a search runs its evaluation steps in one process: the next step does not repeat the line
    caplog.clear()
    with caplog.at_level("INFO"):
        _evaluate(workspace, "small_next_step", "--seed", "3")
    assert not [r for r in caplog.records if "fewer than the" in r.getMessage()]
    assert any(": fine-tuning 13 steps" in r.getMessage() for r in caplog.records)


def test_no_warning_when_the_recipe_is_long_enough(workspace, caplog):
    with caplog.at_level("INFO"):
        _evaluate(workspace, "enough", "--max_train_examples", "100", "--train_batch_size", "4",
                  "--num_train_epochs", "4", "--eval_step", "50")
    messages = [r.getMessage() for r in caplog.records]
    assert not [m for m in messages if "fewer than the" in m]
    assert sum(": fine-tuning 100 steps (100 examples, batch 4, lr 3e-05, 4 epoch(s))" in m for m in messages) == 2
