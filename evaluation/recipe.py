"""The fine-tune recipe of a candidate evaluation as one typed value, and where its defaults live.

A ``Recipe`` is everything besides (task, arch, seed, scheme) that a fine-tuned result depends on in
training: the optimiser settings (``FinetuneConfig`` without its seed), the sequence length and the
example caps. ``RecipeSettings`` holds what a user set (flags, ``EVAL_ARGS``); ``recipe_for(task)``
fills the rest from the task's original table (``glue.tasks``) and the defaults below. Every number
is checked -- type, range, finiteness -- before any work, naming its flag.
"""

from __future__ import annotations

import dataclasses
import math

from evaluation.finetune import TRAIN_DTYPES, FinetuneConfig
from glue.tasks import TaskSpec
from utils import UserError, native_bf16


@dataclasses.dataclass(frozen=True)
class Recipe:
    """How one (task, arch, seed) is fine-tuned; ``finetune.seed`` is replaced per seed (``for_seed``)."""

    finetune: FinetuneConfig
    max_seq_length: int
    max_train_examples: int | None = None
    max_eval_examples: int | None = None
    dropout: float | None = None  # hidden and attention dropout while fine-tuning (None: the supernet's)
    # the weight-sharing fitness (evaluation.task_supernet): the supernet is first fine-tuned on the task
    # for this many epochs with the sandwich rule, and every arch starts from its slice, head included
    sandwich_epochs: float | None = None

    def for_seed(self, seed: int) -> FinetuneConfig:
        return dataclasses.replace(self.finetune, seed=seed)

    def settings(self) -> dict:
        """The recipe's part of a result's ``settings`` (what ``check_settings`` compares)."""
        config = self.finetune
        return {"learning_rate": config.learning_rate, "num_train_epochs": config.num_train_epochs,
                "train_batch_size": config.train_batch_size, "eval_batch_size": config.eval_batch_size,
                "eval_step": config.eval_step, "warmup_proportion": config.warmup_proportion,
                "weight_decay": config.weight_decay, "max_seq_length": self.max_seq_length,
                "max_train_examples": self.max_train_examples, "max_eval_examples": self.max_eval_examples,
                "dropout": self.dropout, **({"sandwich_epochs": self.sandwich_epochs}
                                            if self.sandwich_epochs is not None else {}),
                **({"train_dtype": config.train_dtype} if config.train_dtype != "fp32" else {})}

    def identity(self) -> str:
        """A short name of the recipe (``recipe_id``): results of one (task, arch, seed, scheme) under two
        recipes -- a search's short fine-tune and its final one -- are two results."""
        return recipe_id(self.settings())

    def model_overrides(self) -> dict:
        """``BertConfig`` overrides of the fine-tuned sub-model (its dropout, when the recipe sets one)."""
        if self.dropout is None:
            return {}
        return {"hidden_dropout_prob": self.dropout, "attention_probs_dropout_prob": self.dropout}


RECIPE_FIELDS = ("learning_rate", "num_train_epochs", "train_batch_size", "eval_batch_size", "eval_step",
                 "warmup_proportion", "weight_decay", "max_seq_length", "max_train_examples", "max_eval_examples",
                 "dropout", "sandwich_epochs", "train_dtype")


def recipe_id(settings: dict) -> str:
    """The recipe's name from a result's ``settings`` (older results, without ``dropout``, read as the
    supernet's dropout: the same name they had; a recipe without a sandwich fine-tune, or training in fp32,
    keeps its name too)."""
    import hashlib
    import json

    values = {field: settings.get(field) for field in RECIPE_FIELDS}
    for optional in ("dropout", "sandwich_epochs", "train_dtype"):
        if values[optional] is None:
            del values[optional]
    text = json.dumps(values, sort_keys=True, default=float)
    return hashlib.sha256(text.encode()).hexdigest()[:10]


@dataclasses.dataclass(frozen=True)
class RecipeSettings:
    """What the user set; ``None`` takes the task's original value (learning rate, batch size,
    sequence length, evaluation interval). The other defaults are the original evaluator's."""

    num_train_epochs: float = 1.0
    learning_rate: float | None = None
    train_batch_size: int | None = None
    eval_batch_size: int = 32
    max_seq_length: int | None = None
    eval_step: int | None = None
    warmup_proportion: float = 0.1
    weight_decay: float = 0.01
    max_train_examples: int | None = None
    max_eval_examples: int | None = None
    dropout: float | None = None
    sandwich_epochs: float | None = None
    train_dtype: str = "fp32"  # or bf16, or auto: bf16 where the CPU has it natively (utils.native_bf16), else fp32

    def __post_init__(self):
        check_recipe_numbers(self)

    @classmethod
    def from_values(cls, values: dict) -> "RecipeSettings":
        """The recipe fields among ``values`` (flags by name; others ignored), absent ones at their defaults."""
        return cls(**{field: values[field] for field in cls.__dataclass_fields__ if field in values})

    def recipe_for(self, task: TaskSpec) -> Recipe:
        table = task.hparams
        config = FinetuneConfig(learning_rate=self.learning_rate or table.learning_rate,
                                num_train_epochs=self.num_train_epochs,
                                train_batch_size=self.train_batch_size or table.train_batch_size,
                                eval_batch_size=self.eval_batch_size, eval_step=self.eval_step or table.eval_step,
                                warmup_proportion=self.warmup_proportion, weight_decay=self.weight_decay, seed=0,
                                train_dtype=resolve_train_dtype(self.train_dtype))
        return Recipe(config, self.max_seq_length or table.max_seq_length, self.max_train_examples,
                      self.max_eval_examples, self.dropout, self.sandwich_epochs or None)  # 0: off


TRAIN_DTYPE_CHOICES = (*TRAIN_DTYPES, "auto")


def resolve_train_dtype(value: str) -> str:
    """``auto`` is bf16 on a CPU with native bfloat16 and fp32 elsewhere (where bf16 is emulated, slower);
    a recipe records the resolved value, so results of the two never share a name."""
    if value == "auto":
        return "bf16" if native_bf16() else "fp32"
    return value


# (field, lowest allowed value, whether the lowest is allowed): the floats are also checked finite
_FLOATS = (("num_train_epochs", 0.0, True), ("learning_rate", 0.0, False), ("warmup_proportion", 0.0, True),
           ("weight_decay", 0.0, True), ("sandwich_epochs", 0.0, True))
_INTS = ("train_batch_size", "eval_batch_size", "max_seq_length", "eval_step", "max_train_examples",
         "max_eval_examples")


def recipe_number_fields() -> dict[str, type]:
    """Every numeric field of a recipe and its type: what a ``FIELD=VALUE`` setting of a recipe may name."""
    return {**{field: float for field, _, _ in _FLOATS}, "dropout": float, **{field: int for field in _INTS}}


def check_recipe_numbers(settings: RecipeSettings) -> None:
    """One line naming the flag for a value of the wrong type, out of range or not finite."""
    for field, low, inclusive in _FLOATS:
        value = getattr(settings, field)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise UserError(f"--{field}: must be a finite number, got {value!r}")
        if value < low:
            raise UserError(f"--{field}: must be >= {low:g}, got {value}")
        if value == low and not inclusive:
            raise UserError(f"--{field}: must be > {low:g} ({low:g} would train nothing)")
    if settings.train_dtype not in TRAIN_DTYPE_CHOICES:
        raise UserError(f"--train_dtype: must be one of {', '.join(TRAIN_DTYPE_CHOICES)}, got {settings.train_dtype!r}")
    if settings.warmup_proportion > 1:
        raise UserError(f"--warmup_proportion: must be <= 1, got {settings.warmup_proportion}")
    if settings.dropout is not None and not (isinstance(settings.dropout, (int, float))
                                             and not isinstance(settings.dropout, bool)
                                             and math.isfinite(settings.dropout) and 0 <= settings.dropout < 1):
        raise UserError(f"--dropout: must be a number in [0, 1), got {settings.dropout!r}")
    for field in _INTS:
        value = getattr(settings, field)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int):
            raise UserError(f"--{field}: must be an integer, got {value!r}")
        if value < 1:
            raise UserError(f"--{field}: must be >= 1, got {value}")
