"""Each task's default fine-tune recipe as text, and the check that a data set is big enough for it.

The per-task values live in ``glue.tasks.TASKS`` (``HyperParams``: the original evaluator's
table); what is common to every task (epochs, warm-up, weight decay) is the evaluator's command
line. ``small_data_warning`` is the one check, called before any training: a fine-tune of fewer
than ``MIN_FINETUNE_STEPS`` optimizer steps barely leaves its initial weights (the demo task
separates sub-model sizes after ~100 steps at batch 8 and shows nothing after 25, see
docs/fine-tuning.md), so such a run gets one warning line with a recipe that reaches the threshold.
"""

from __future__ import annotations

import math

from glue.tasks import TASKS
from utils import UserError

__all__ = ["MIN_FINETUNE_STEPS", "SMALL_DATA_BATCH_SIZE", "check_steps", "finetune_steps", "small_data_recipe",
           "small_data_warning", "recipes_help"]

MIN_FINETUNE_STEPS = 100  # fewer optimizer steps than this: one warning line before the work
SMALL_DATA_BATCH_SIZE = 8  # the batch the advice falls back to (the demo's)


def finetune_steps(train_examples: int, batch_size: int, epochs: float) -> int:
    """Optimizer steps of a fine-tune, counted as ``evaluation.finetune`` counts them (the last
    batch of an epoch may be short)."""
    return int(round(-(-train_examples // batch_size) * epochs))


def check_steps(task_name: str, train_examples: int, finetune) -> None:
    """A recipe that asks for training (epochs > 0) but makes no optimizer step on this data is refused
    in one line (it would silently score the untrained head)."""
    if finetune.num_train_epochs > 0 and finetune_steps(train_examples, finetune.train_batch_size,
                                                        finetune.num_train_epochs) < 1:
        raise UserError(f"{task_name}: {train_examples} training examples at batch {finetune.train_batch_size} x "
                        f"{finetune.num_train_epochs:g} epoch(s) make no optimizer step; raise --num_train_epochs or "
                        "give more training examples (0 epochs: evaluate only, on purpose)")


def small_data_recipe(train_examples: int, batch_size: int, epochs: float,
                      min_steps: int = MIN_FINETUNE_STEPS) -> tuple[int, int, int] | None:
    """``(batch_size, epochs, steps)`` that reach ``min_steps`` on this data, or None when the
    given recipe already does (or trains nothing on purpose: 0 epochs, no data)."""
    if epochs <= 0 or train_examples <= 0 or finetune_steps(train_examples, batch_size, epochs) >= min_steps:
        return None
    batch = min(batch_size, SMALL_DATA_BATCH_SIZE)
    per_epoch = -(-train_examples // batch)
    new_epochs = max(1, math.ceil(min_steps / per_epoch))
    return batch, new_epochs, finetune_steps(train_examples, batch, new_epochs)


def small_data_warning(task_name: str, train_examples: int, batch_size: int, epochs: float,
                       min_steps: int = MIN_FINETUNE_STEPS) -> str | None:
    """One line when this fine-tune is shorter than ``min_steps`` optimizer steps, naming the
    recipe to use instead (evaluator flags and the search scripts' variables); else None."""
    advice = small_data_recipe(train_examples, batch_size, epochs, min_steps)
    if advice is None:
        return None
    batch, new_epochs, steps = advice
    return (f"{task_name}: {train_examples} training examples at batch {batch_size} x {epochs:g} epoch(s) = "
            f"{finetune_steps(train_examples, batch_size, epochs)} optimizer steps, fewer than the {min_steps} a "
            f"fine-tune needs to learn; use --train_batch_size {batch} --num_train_epochs {new_epochs} ({steps} "
            f"steps; search scripts: NUM_TRAIN_EPOCHS={new_epochs} EVAL_ARGS=\"--train_batch_size {batch}\"), "
            "see docs/fine-tuning.md")


def recipes_help(num_train_epochs: float, warmup_proportion: float, weight_decay: float) -> str:
    """The per-task default recipes as a table for ``--help`` (values from ``glue.tasks.TASKS``)."""
    lines = ["default fine-tune recipe per task (the flags above override it; every task also has",
             f"--num_train_epochs {num_train_epochs:g}, --warmup_proportion {warmup_proportion:g}, "
             f"--weight_decay {weight_decay:g}):",
             f"  {'task':<8} {'lr':>6} {'batch':>5} {'max_seq':>7} {'eval_step':>9}"]
    for name, task in TASKS.items():
        hp = task.hparams
        lines.append(f"  {name:<8} {hp.learning_rate:>6g} {hp.train_batch_size:>5} {hp.max_seq_length:>7} "
                     f"{hp.eval_step:>9}")
    lines.append(f"a fine-tune of fewer than {MIN_FINETUNE_STEPS} optimizer steps (training examples / batch x "
                 "epochs)\ngets one warning line with a recipe that reaches them; see docs/fine-tuning.md")
    return "\n".join(lines)
