"""The supernet configuration: the largest model's dimensions (weights are sliced from it)."""

from __future__ import annotations

import dataclasses
import json
import os

from utils import UserError, make_arch

CONFIG_NAME = "config.json"


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
        if self.qkv_size % self.num_attention_heads:
            raise UserError(f"supernet config: num_attention_heads={self.num_attention_heads} "
                            f"does not divide qkv_size={self.qkv_size}")
        if self.hidden_act != "gelu":
            raise UserError(f"supernet config: hidden_act={self.hidden_act!r} is not supported (only 'gelu')")

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
        return cls(**values)

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
        try:
            with open(path, encoding="utf-8") as handle:
                data = json.load(handle)
        except json.JSONDecodeError as err:
            raise UserError(f"{path}: not valid JSON ({err.msg})") from None
        model_type = data.get("model_type", "bert")
        if model_type not in ("bert", "superbert"):
            raise UserError(f"{path}: model_type {model_type!r} is not a BERT model")
        return cls.from_dict(data, where=path)
