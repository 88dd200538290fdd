"""The student supernet and the KD teacher: where they come from and whether they fit.

Student: from scratch (the space's largest arch as the supernet shape unless a config says
otherwise), from a local Hugging Face BERT directory (``supernet_from_hf``), or from one of our
supernet directories. Teacher: any local BERT directory ``load_supernet`` reads; it must share
the student's vocabulary and head count (scores are compared head by head), have at least as
many layers as the largest student, and its width becomes the KD projection's output size.

``archs_for_step`` is the per-step arch schedule: it depends only on ``(seed, global_step,
sample_index)``, so every distributed rank (and a resumed run) trains the same archs.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from transformer.checkpoint import is_supernet_dir, load_supernet, vocab_path
from transformer.config import SuperBertConfig
from transformer.hf_converter import supernet_from_hf
from transformer.modeling_super import SuperBertForPreTraining
from utils import SearchSpace, UserError, get_logger, load_json_file, load_vocab, loads_json, sample_arch

logger = get_logger(__name__)

# Supernet shape flags of pre_training.py (each a SuperBertConfig field).
CONFIG_FLAGS = ("num_hidden_layers", "hidden_size", "intermediate_size", "qkv_size", "num_attention_heads",
                "max_position_embeddings")


def parse_config_overrides(supernet_config: str | None, flag_values: dict) -> dict:
    """``--supernet_config`` (inline JSON or a JSON file) plus the shape flags; flags win."""
    overrides = {}
    if supernet_config:
        if supernet_config.lstrip().startswith("{"):
            overrides = loads_json(supernet_config, "--supernet_config")
        elif os.path.isfile(supernet_config):
            overrides = load_json_file(supernet_config, "supernet config file")
        else:
            raise UserError(f"--supernet_config: {supernet_config} is neither JSON nor an existing file")
        if not isinstance(overrides, dict):
            raise UserError("--supernet_config: expected a JSON object")
        overrides.pop("model_type", None)
        known = {field.name for field in dataclasses.fields(SuperBertConfig)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise UserError(f"--supernet_config: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    overrides.update({key: value for key, value in flag_values.items() if value is not None})
    return overrides


def _make_config(values: dict, where: str) -> SuperBertConfig:
    try:
        return SuperBertConfig(**values)
    except TypeError as err:
        raise UserError(f"{where}: {err}") from None


def check_space_fits(space: SearchSpace, config: SuperBertConfig, flag: str = "--space") -> None:
    """Every arch the space can sample must fit the supernet (one line naming the dimension)."""
    def fail(what: str, value: int, limit: int) -> None:
        raise UserError(f"{flag} {space.name}: {what} up to {value} does not fit the supernet's {limit} "
                        f"(supernet L{config.num_hidden_layers}/H{config.hidden_size}/F{config.intermediate_size}"
                        f"/Q{config.qkv_size}/A{config.num_attention_heads})")

    for what, value, limit in (("layers", space.layer_num.stop, config.num_hidden_layers),
                               ("hidden size", space.hidden_size.values[-1], config.hidden_size),
                               ("FFN size", space.intermediate_size.values[-1], config.intermediate_size),
                               ("heads", space.num_attention_heads.values[-1], config.num_attention_heads)):
        if value > limit:
            fail(what, value, limit)
    qkv_values = space.hidden_size.values if space.qkv_size is None else space.qkv_size.values
    head_dims = [q // h for q in qkv_values for h in space.num_attention_heads.values if q % h == 0]
    if head_dims and max(head_dims) > config.head_dim:
        fail("head size (qkv / heads)", max(head_dims), config.head_dim)


def build_student(space: SearchSpace, vocab_size: int, student_model: str | None, overrides: dict,
                  max_seq_length: int, kd_hidden_size: int | None) -> SuperBertForPreTraining:
    """The supernet to train (call after seeding: a fresh one is randomly initialised)."""
    if student_model and is_supernet_dir(student_model):
        if overrides:
            raise UserError(f"--student_model {student_model} is already a supernet; its shape cannot be "
                            f"changed by --supernet_config or the shape flags ({', '.join(sorted(overrides))})")
        model = load_supernet(student_model)
        if kd_hidden_size is not None and model.config.kd_hidden_size != kd_hidden_size:
            raise UserError(f"--teacher_model width {kd_hidden_size} does not fit the student's KD projection "
                            f"(dense_fit outputs {model.config.kd_hidden_size}, from {student_model})")
    elif student_model:
        values = SuperBertConfig.load(student_model).to_dict()  # the HF model's own shape
        values.pop("model_type")
        values.update(overrides)
        if kd_hidden_size is not None:
            values["kd_hidden_size"] = kd_hidden_size
        model = supernet_from_hf(student_model, _make_config(values, "--student_model"))
    else:
        largest = space.largest()
        values = dict(num_hidden_layers=largest["sample_layer_num"], hidden_size=largest["sample_hidden_size"],
                      intermediate_size=largest["sample_intermediate_sizes"][0],
                      qkv_size=largest["sample_qkv_sizes"][0],
                      num_attention_heads=largest["sample_num_attention_heads"][0],
                      max_position_embeddings=max(512, max_seq_length), vocab_size=vocab_size)
        if kd_hidden_size is not None:
            values["kd_hidden_size"] = kd_hidden_size
        values.update(overrides)
        model = SuperBertForPreTraining(_make_config(values, "--supernet_config"))
    config = model.config
    if vocab_size > config.vocab_size:
        raise UserError(f"the vocab has {vocab_size} tokens but the supernet's embeddings only {config.vocab_size}")
    if config.max_position_embeddings < max_seq_length:
        raise UserError(f"--max_seq_length {max_seq_length} exceeds the supernet's max_position_embeddings "
                        f"{config.max_position_embeddings}")
    check_space_fits(space, config)
    return model


def teacher_width(teacher_model: str) -> int:
    """The teacher's hidden size (read from its config before any weights are loaded)."""
    return SuperBertConfig.load(teacher_model).hidden_size


def load_teacher(teacher_model: str, student: SuperBertForPreTraining, space: SearchSpace, max_seq_length: int,
                 vocab_tokens) -> SuperBertForPreTraining:
    """The frozen teacher, after checking that it can teach this student."""
    config = SuperBertConfig.load(teacher_model)
    where = f"--teacher_model {teacher_model}"
    heads = sorted(set(space.num_attention_heads.values))
    if heads != [config.num_attention_heads]:
        raise UserError(f"{where}: {config.num_attention_heads} heads, but the student samples {heads}; "
                        "attention-score KD compares head by head, so they must match")
    if config.num_hidden_layers < space.layer_num.stop:
        raise UserError(f"{where}: {config.num_hidden_layers} layer(s), fewer than the largest student's "
                        f"{space.layer_num.stop}")
    if config.hidden_size != student.config.kd_hidden_size:
        raise UserError(f"{where}: width {config.hidden_size} does not fit the student's KD projection "
                        f"({student.config.kd_hidden_size})")
    if config.vocab_size != student.config.vocab_size:
        raise UserError(f"{where}: vocab size {config.vocab_size} != the student's {student.config.vocab_size}")
    if config.max_position_embeddings < max_seq_length:
        raise UserError(f"{where}: max_position_embeddings {config.max_position_embeddings} < "
                        f"--max_seq_length {max_seq_length}")
    teacher_vocab = vocab_path(teacher_model)
    if teacher_vocab is not None:
        if tuple(load_vocab(teacher_vocab)) != tuple(vocab_tokens):
            raise UserError(f"{where}: its vocab.txt differs from the training vocab; token ids would not match")
    teacher = load_supernet(teacher_model)
    teacher.eval()
    teacher.requires_grad_(False)
    return teacher


def step_seed(seed: int, global_step: int, sample_index: int) -> int:
    """Arch-sampling seed of one draw: a hash of ``(seed, global_step, sample_index)``."""
    return int(np.random.SeedSequence([seed, global_step, sample_index]).generate_state(1)[0])


def archs_for_step(space: SearchSpace, seed: int, global_step: int, sample_times: int = 1,
                   sandwich: bool = False, fixed_arch: dict | None = None) -> list[dict]:
    """The archs trained at ``global_step``: ``sample_times`` seeded draws, preceded by the
    space's largest and smallest with ``sandwich``; only ``fixed_arch`` when given."""
    if fixed_arch is not None:
        return [fixed_arch]
    archs = [space.largest(), space.smallest()] if sandwich else []
    archs += [sample_arch(space, step_seed(seed, global_step, index)) for index in range(sample_times)]
    return archs
