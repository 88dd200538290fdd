"""The predictor's model: the recipes, the MLP (original key names ``first_layer``, ``layers.i``,
``predict``; optional linear ``skip``), the feature encodings and the target transform."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from torch import nn

from utils import FEATURE_NAMES, FEATURE_NAMES_V2, ORIGINAL_FEATURE_NORM, UserError, arch_features, arch_features_v2

ORIGINAL_LAT_NORM = 200.0
ENCODINGS = {"original": (FEATURE_NAMES, arch_features), "v2": (FEATURE_NAMES_V2, arch_features_v2)}
# the feature a line effect's slope multiplies (the FFN size of the arch's line)
SLOPE_FEATURE = "mean_intermediate_size"


@dataclasses.dataclass(frozen=True)
class Recipe:
    features: str
    hidden_dim: int
    hidden_layers: int  # first_layer + (hidden_layers - 1) x layers.i
    activation: str
    skip: bool
    target: str  # "log" (standardised log ms) or "linear" (ms / lat_norm)
    loss: str  # "l1" or "mse"
    lr: float
    max_steps: int
    batch_size: int  # 0 = full batch
    schedule: str  # "onecycle" or "constant"
    eval_every: int
    patience: int  # evaluations without improvement before stopping; 0 = never stop early
    restore_best: bool
    line_effects: bool
    line_l2: float = 0.3


RECIPES = {
    "default": Recipe(features="v2", hidden_dim=32, hidden_layers=2, activation="gelu", skip=True, target="log",
                      loss="l1", lr=1e-2, max_steps=600, batch_size=0, schedule="onecycle", eval_every=25,
                      patience=20, restore_best=True, line_effects=True),
    "original": Recipe(features="original", hidden_dim=2000, hidden_layers=4, activation="relu", skip=False,
                       target="linear", loss="mse", lr=1e-5, max_steps=5000, batch_size=128, schedule="constant",
                       eval_every=100, patience=0, restore_best=False, line_effects=False),
}


class LatencyMLP(nn.Module):
    """``first_layer`` -> act -> [``layers.i`` -> act]* -> ``predict`` (+ optional linear ``skip``)."""

    def __init__(self, input_dim: int, hidden_dim: int, hidden_layers: int, activation: str = "relu",
                 skip: bool = False):
        super().__init__()
        if activation not in ("relu", "gelu"):
            raise UserError(f"unknown activation {activation!r}")
        if hidden_layers < 1:
            raise UserError("--hidden_layers must be >= 1")
        self.activation = activation
        self.first_layer = nn.Linear(input_dim, hidden_dim)
        self.layers = nn.ModuleList(nn.Linear(hidden_dim, hidden_dim) for _ in range(hidden_layers - 1))
        self.predict = nn.Linear(hidden_dim, 1)
        self.skip = nn.Linear(input_dim, 1) if skip else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        act = torch.relu if self.activation == "relu" else nn.functional.gelu
        h = act(self.first_layer(x))
        for layer in self.layers:
            h = act(layer(h))
        out = self.predict(h).squeeze(-1)
        if self.skip is not None:
            out = out + self.skip(x).squeeze(-1)
        return out


def normalisation(recipe: Recipe, x_train: np.ndarray, y_train: np.ndarray):
    """``(feature offset, feature scale, target transform)`` from the training split."""
    if recipe.features == "original":
        offset, scale = np.zeros(x_train.shape[1]), np.asarray(ORIGINAL_FEATURE_NORM, dtype=np.float64)
    else:
        offset, scale = x_train.mean(0), x_train.std(0)
        scale = np.where(scale > 1e-12, scale, 1.0)  # a constant feature (e.g. heads) stays 0
    if recipe.target == "log":
        logs = np.log(y_train)
        target = {"transform": "log", "offset": float(logs.mean()), "scale": float(logs.std() or 1.0)}
    else:
        target = {"transform": "linear", "offset": 0.0, "scale": ORIGINAL_LAT_NORM}
    return offset, scale, target


def to_target(ms: np.ndarray, target: dict) -> np.ndarray:
    values = np.log(ms) if target["transform"] == "log" else ms
    return (values - target["offset"]) / target["scale"]


def from_target(values: np.ndarray, target: dict) -> np.ndarray:
    values = values * target["scale"] + target["offset"]
    return np.exp(values) if target["transform"] == "log" else values
