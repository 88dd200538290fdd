"""The supernet configuration: the largest model's dimensions (weights are sliced from it)."""

from __future__ import annotations

import dataclasses
import json
import math
import os

from utils import UserError, load_json_file, make_arch

CONFIG_NAME = "config.json"

# Integer fields and their least value; float fields and their range (low excluded when marked).
_INT_FIELDS = {"vocab_size": 1, "hidden_size": 1, "num_hidden_layers": 1, "intermediate_size": 1, "qkv_size": 1,
               "num_attention_heads": 1, "max_position_embeddings": 1, "type_vocab_size": 1, "pad_token_id": 0,
               "kd_hidden_size": 1, "num_labels": 1}
_FLOAT_FIELDS = {"hidden_dropout_prob": (0.0, 1.0, False), "attention_probs_dropout_prob": (0.0, 1.0, False),
                 "layer_norm_eps": (0.0, 1.0, True), "initializer_range": (0.0, 10.0, False)}


def check_config_values(values: dict, where: str = "supernet config") -> dict:
    """Type, range and finiteness of the config fields present in ``values`` (one line naming the
    field); returns them with integral floats (``768.0``) made ints."""
    checked = dict(values)
    for key, value in values.items():
        if key in _INT_FIELDS:
            if isinstance(value, float) and math.isfinite(value) and value.is_integer():
                value = checked[key] = int(value)
            if not isinstance(value, int) or isinstance(value, bool):
                raise UserError(f"{where}: {key} must be an integer, got {value!r}")
            if value < _INT_FIELDS[key]:
                raise UserError(f"{where}: {key} must be at least {_INT_FIELDS[key]}, got {value}")
        elif key in _FLOAT_FIELDS:
            low, high, open_low = _FLOAT_FIELDS[key]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise UserError(f"{where}: {key} must be a finite number, got {value!r}")
            if value > high or value < low or (open_low and value == low):
                raise UserError(f"{where}: {key} must be in {'(' if open_low else '['}{low:g}, {high:g}], got {value}")
    return checked


def _physical_memory_bytes() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


@dataclasses.dataclass
class SuperBertConfig:
    """Dimensions of the weight-sharing BERT supernet (the largest sub-model).

    ``qkv_size`` may differ from ``hidden_size`` inside the supernet (AutoTinyBERT KD-S1 is
    H564/Q528). ``kd_hidden_size`` is the teacher width that the KD projection maps to.
    """

    vocab_size: int = 30522
    hidden_size: int = 564
    num_hidden_layers: int = 5
    intermediate_size: int = 1024
    qkv_size: int = 528
    num_attention_heads: int = 12
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    layer_norm_eps: float = 1e-12
    initializer_range: float = 0.02
    pad_token_id: int = 0
    kd_hidden_size: int = 768
    num_labels: int = 2

    def __post_init__(self):
        for key, value in check_config_values(dataclasses.asdict(self)).items():
            setattr(self, key, value)
        if self.pad_token_id >= self.vocab_size:
            raise UserError(f"supernet config: pad_token_id={self.pad_token_id} is not a token of the vocab "
                            f"(vocab_size={self.vocab_size})")
        memory = _physical_memory_bytes()
        if memory and 4 * self.parameter_count() > memory:  # fp32 weights alone: the model cannot be built
            raise UserError(f"supernet config: L{self.num_hidden_layers}/H{self.hidden_size}/F{self.intermediate_size}"
                            f"/Q{self.qkv_size} x vocab {self.vocab_size} has about {self.parameter_count():.3g} "
                            f"parameters ({4 * self.parameter_count() / 2**30:.3g} GiB in fp32), more than this "
                            f"machine's memory ({memory / 2**30:.3g} GiB)")
        if self.qkv_size % self.num_attention_heads:
            raise UserError(f"supernet config: num_attention_heads={self.num_attention_heads} "
                            f"does not divide qkv_size={self.qkv_size}")
        if self.hidden_act != "gelu":
            raise UserError(f"supernet config: hidden_act={self.hidden_act!r} is not supported (only 'gelu')")

    def parameter_count(self) -> int:
        """The supernet's parameters, near enough to size it (embeddings, layers, pooler, KD and MLM heads)."""
        h, q, f = self.hidden_size, self.qkv_size, self.intermediate_size
        embeddings = (self.vocab_size + self.max_position_embeddings + self.type_vocab_size + 2) * h
        layer = 4 * h * q + 2 * h * f + 3 * q + f + 6 * h
        heads = 2 * (h * h + h) + h * self.kd_hidden_size + self.vocab_size
        return embeddings + self.num_hidden_layers * layer + heads

    @property
    def head_dim(self) -> int:
        return self.qkv_size // self.num_attention_heads

    def largest_arch(self) -> dict:
        return make_arch(self.num_hidden_layers, self.hidden_size, self.intermediate_size,
                         self.num_attention_heads, self.qkv_size)

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        data["model_type"] = "superbert"
        return data

    @classmethod
    def from_dict(cls, data: dict, where: str = "config") -> "SuperBertConfig":
        """Build from a supernet config.json or from a Hugging Face BERT config dict."""
        fields = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in fields}
        if "qkv_size" not in values and "hidden_size" in values:
            values["qkv_size"] = values["hidden_size"]  # plain BERT: qkv is the hidden size
        for key in ("hidden_size", "num_hidden_layers", "intermediate_size", "num_attention_heads", "vocab_size"):
            if key not in data:
                raise UserError(f"{where}: not a BERT config (no {key!r})")
        values = check_config_values(values, where)  # NaN, 10**12, "768": one line naming the file
        try:
            return cls(**values)
        except UserError as err:
            raise UserError(str(err).replace("supernet config", where, 1)) from None

    def save(self, directory: str) -> None:
        from utils import atomic_write

        with atomic_write(os.path.join(directory, CONFIG_NAME)) as handle:
            json.dump(self.to_dict(), handle, indent=2, sort_keys=True)
            handle.write("\n")

    @classmethod
    def load(cls, directory: str) -> "SuperBertConfig":
        path = os.path.join(directory, CONFIG_NAME)
        if not os.path.isdir(directory):
            raise UserError(f"{directory}: no such model directory")
        if not os.path.isfile(path):
            raise UserError(f"{directory}: no {CONFIG_NAME}; not a BERT checkpoint directory")
        data = load_json_file(path, CONFIG_NAME)  # encoding, depth, number size: one line
        if not isinstance(data, dict):
            raise UserError(f"{path}: expected a JSON object, got {type(data).__name__}")
        model_type = data.get("model_type", "bert")
        if model_type not in ("bert", "superbert"):
            raise UserError(f"{path}: model_type {model_type!r} is not a BERT model")
        return cls.from_dict(data, where=path)
