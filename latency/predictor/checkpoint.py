"""A trained latency predictor as other stages use it: ``LatencyPredictor.load(path)``,
``predict(arch) -> ms``, ``predict_many(archs) -> ms array`` and ``metadata`` (the table it was
trained on, its protocol, environment and unit, the metrics).

The checkpoint is one ``torch.save`` of plain tensors/lists/strings/numbers (``weights_only=True``):
weights, MLP shape, feature names and normalisation, target transform, line effects, metrics and
metadata. The authors' bare state dicts (the original recipe) load too.
"""

from __future__ import annotations

import os

import numpy as np
import torch

from latency.lines import ffn_line
from latency.predictor.model import ENCODINGS, ORIGINAL_LAT_NORM, LatencyMLP, from_target
from utils import (
    FEATURE_NAMES,
    ORIGINAL_FEATURE_NORM,
    UserError,
    atomic_write,
    check_arch_schema,
    load_weights_only,
)

CHECKPOINT_FORMAT = "bigger_and_faster.latency_predictor/1"


class LatencyPredictor:
    """A trained latency predictor: ``predict(arch) -> ms`` and ``predict_many(archs) -> ms array``."""

    def __init__(self, checkpoint: dict):
        self.checkpoint = checkpoint
        spec = checkpoint["mlp"]
        self.model = LatencyMLP(spec["input_dim"], spec["hidden_dim"], spec["hidden_layers"], spec["activation"],
                                spec["skip"])
        self.model.load_state_dict(checkpoint["state_dict"])
        self.model.eval()
        features = checkpoint["features"]
        if features["encoding"] not in ENCODINGS:
            raise UserError(f"predictor checkpoint: unknown feature encoding {features['encoding']!r}")
        self._encode = ENCODINGS[features["encoding"]][1]
        self.feature_names = list(features["names"])
        self._offset = np.asarray(features["offset"], dtype=np.float64)
        self._scale = np.asarray(features["scale"], dtype=np.float64)
        self.target = dict(checkpoint["target"])
        effects = checkpoint.get("line_effects")
        self._lines = {}
        if effects:
            self._lines = {key: i for i, key in enumerate(effects["keys"])}
            self._intercept = effects["intercept"].double().numpy()
            self._slope = effects["slope"].double().numpy()
            self._slope_index = self.feature_names.index(effects["slope_feature"])
        self.metadata = dict(checkpoint.get("metadata", {}))
        self.metadata.setdefault("metrics", checkpoint.get("metrics", {}))
        self.metadata.setdefault("feature_names", self.feature_names)
        self.path: str | None = None

    # ----- loading
    @classmethod
    def load(cls, path: str | os.PathLike) -> "LatencyPredictor":
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise UserError(f"{path}: no such latency predictor checkpoint")
        checkpoint = load_weights_only(path, "predictor checkpoint")  # a truncated, foreign or pickled file: one line
        if isinstance(checkpoint, dict) and checkpoint.get("format") == CHECKPOINT_FORMAT:
            predictor = cls(checkpoint)
        elif isinstance(checkpoint, dict) and "first_layer.weight" in checkpoint:
            predictor = cls(_wrap_original_state_dict(checkpoint, path))
        else:
            raise UserError(f"{path}: not a latency predictor checkpoint (format {CHECKPOINT_FORMAT})")
        predictor.path = path
        return predictor

    # ----- prediction
    def features(self, archs: list[dict]) -> np.ndarray:
        raw = np.asarray([self._encode(check_arch_schema(arch)) for arch in archs], dtype=np.float64)
        return (raw - self._offset) / self._scale

    def predict_many(self, archs) -> np.ndarray:
        """Latency in ms of every arch (batched; thousands per call are cheap)."""
        archs = list(archs)
        if not archs:
            return np.zeros(0)
        x = self.features(archs)
        with torch.no_grad():
            out = self.model(torch.as_tensor(x, dtype=torch.float32)).double().numpy()
        if self._lines:
            index = np.asarray([self._lines.get(ffn_line(arch), -1) for arch in archs])
            known = index >= 0
            out[known] += self._intercept[index[known]] + self._slope[index[known]] * x[known, self._slope_index]
        return from_target(out, self.target)

    def predict(self, arch: dict) -> float:
        return float(self.predict_many([arch])[0])

    predict_lat = predict  # the original's method name

    def save(self, path: str | os.PathLike) -> None:
        with atomic_write(path, "wb") as handle:
            torch.save(self.checkpoint, handle)


def load_predictor(path: str | os.PathLike) -> LatencyPredictor:
    """The library-level loader other packages use (one-line ``UserError`` for a missing or foreign file)."""
    return LatencyPredictor.load(path)


def _wrap_original_state_dict(state: dict, path: str) -> dict:
    """The authors' checkpoints are a bare state dict of the original recipe."""
    layers = len({key.split(".")[1] for key in state if key.startswith("layers.")})
    hidden, input_dim = state["first_layer.weight"].shape
    if input_dim != len(FEATURE_NAMES):
        raise UserError(f"{path}: an original-style predictor with {input_dim} inputs; expected {len(FEATURE_NAMES)}")
    return {
        "format": CHECKPOINT_FORMAT,
        "state_dict": state,
        "mlp": {"input_dim": input_dim, "hidden_dim": hidden, "hidden_layers": layers + 1, "activation": "relu",
                "skip": False},
        "features": {"encoding": "original", "names": list(FEATURE_NAMES), "offset": [0.0] * input_dim,
                     "scale": list(ORIGINAL_FEATURE_NORM)},
        "target": {"transform": "linear", "offset": 0.0, "scale": ORIGINAL_LAT_NORM},
        "line_effects": None,
        "metrics": {},
        "metadata": {"backend": "unknown", "recipe": "original", "source": os.path.basename(path),
                     "note": "original bare state dict; features /(564,5,1024,564), ms/200"},
    }
