"""Training a latency predictor on a table's records (``train_predictor``).

Two recipes share one loop (``latency.predictor.model.RECIPES``): ``original`` (the authors' MLP,
MSE, random minibatches, the last step kept) and ``default`` (standardised v2 features, log target,
a small GELU MLP with a least-squares linear skip path, L1 loss, full-batch Adam with a one-cycle
schedule, early stopping on validation MAPD, and *line effects*: a shrunk intercept and FFN slope
per FFN line (``latency.lines.ffn_line``) seen in training)."""

from __future__ import annotations

import dataclasses
import math
import time

import numpy as np
import torch

from latency.lines import ffn_line
from latency.predictor.checkpoint import CHECKPOINT_FORMAT, LatencyPredictor
from latency.predictor.data import Dataset, make_dataset, regression_metrics, split_warning
from latency.predictor.model import (ENCODINGS, SLOPE_FEATURE, LatencyMLP, Recipe, from_target, normalisation,
                                     to_target)
from utils import get_logger

logger = get_logger("latency.predictor")


@dataclasses.dataclass
class LineEffects:
    """A shrunk intercept and FFN slope per FFN line seen in training (none for unseen lines)."""

    keys: list[str]
    index: np.ndarray  # per arch of the data set: its line's index, -1 when unseen in training
    slope_index: int | None
    intercept: torch.Tensor
    slope: torch.Tensor

    @classmethod
    def build(cls, recipe: Recipe, names, data: Dataset) -> "LineEffects":
        keys, index = [], np.full(len(data.archs), -1)
        slope_index = list(names).index(SLOPE_FEATURE) if SLOPE_FEATURE in names else None
        if recipe.line_effects and slope_index is not None:
            lines = [ffn_line(arch) for arch in data.archs]
            keys = sorted({lines[i] for i in data.train})
            lookup = {key: i for i, key in enumerate(keys)}
            index = np.asarray([lookup.get(key, -1) for key in lines])
        return cls(keys, index, slope_index, torch.zeros(len(keys), requires_grad=True),
                   torch.zeros(len(keys), requires_grad=True))

    def parameters(self) -> list[torch.Tensor]:
        return [self.intercept, self.slope] if self.keys else []

    def penalty(self) -> torch.Tensor | float:
        return (self.intercept ** 2).mean() + (self.slope ** 2).mean() if self.keys else 0.0

    def to_checkpoint(self) -> dict | None:
        if not self.keys:
            return None
        return {"keys": self.keys, "intercept": self.intercept.detach().clone(), "slope": self.slope.detach().clone(),
                "slope_feature": SLOPE_FEATURE}


def _rows(x_all: np.ndarray, y_all: np.ndarray, lines: LineEffects, index: np.ndarray) -> dict:
    """Everything a forward pass over these rows needs, gathered once."""
    rows = torch.as_tensor(x_all[index], dtype=torch.float32)
    line = torch.as_tensor(lines.index[index])
    return {"x": rows, "y": torch.as_tensor(y_all[index], dtype=torch.float32), "line": line.clamp(min=0),
            "known": (line >= 0).float(),
            "slope_x": rows[:, lines.slope_index] if lines.slope_index is not None else None}


def _forward(model: LatencyMLP, lines: LineEffects, part: dict) -> torch.Tensor:
    out = model(part["x"])
    if lines.keys:
        effect = (lines.intercept.index_select(0, part["line"])
                  + lines.slope.index_select(0, part["line"]) * part["slope_x"])
        out = out + effect * part["known"]
    return out


def _initial_model(recipe: Recipe, input_dim: int, x_train: np.ndarray, y_train: np.ndarray) -> LatencyMLP:
    model = LatencyMLP(input_dim, recipe.hidden_dim, recipe.hidden_layers, recipe.activation, recipe.skip)
    if recipe.skip:  # start from the least-squares linear fit; the MLP learns the rest
        design = np.c_[x_train, np.ones(len(x_train))]
        coef = np.linalg.lstsq(design, y_train, rcond=None)[0]
        with torch.no_grad():
            model.skip.weight.copy_(torch.as_tensor(coef[:-1], dtype=torch.float32)[None])
            model.skip.bias.fill_(float(coef[-1]))
            model.predict.weight.zero_()
            model.predict.bias.zero_()
    return model


def _fit(model: LatencyMLP, lines: LineEffects, recipe: Recipe, parts: dict, data: Dataset, target: dict,
         seed: int, progress: bool) -> tuple[int, int, float | None]:
    """The training loop; returns ``(steps run, best step, best validation MAPD or None)``."""
    from utils.progress import progress as progress_bar

    optimizer = torch.optim.Adam(list(model.parameters()) + lines.parameters(), lr=recipe.lr)
    scheduler = (torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=recipe.lr, total_steps=recipe.max_steps,
                                                     pct_start=0.1) if recipe.schedule == "onecycle" else None)
    generator = torch.Generator().manual_seed(seed)
    minibatch = 0 < recipe.batch_size < len(data.train)
    train_part, val_part = parts["train"], parts["val"]

    def val_mapd() -> float:
        with torch.no_grad():
            predicted = from_target(_forward(model, lines, val_part).double().numpy(), target)
        return float(np.mean(np.abs(predicted - data.ms[data.val]) / data.ms[data.val]))

    best, snapshot, best_step, stale, step = math.inf, None, 0, 0, 0
    bar = progress_bar(total=recipe.max_steps, desc=f"predictor ({recipe.features})", unit="step", enabled=progress)
    for step in range(1, recipe.max_steps + 1):
        part = train_part
        if minibatch:  # the original: a fresh random minibatch (without replacement) every step
            chosen = torch.randperm(len(data.train), generator=generator)[:recipe.batch_size]
            part = {key: (value[chosen] if value is not None else None) for key, value in train_part.items()}
        diff = _forward(model, lines, part) - part["y"]
        loss = diff.abs().mean() if recipe.loss == "l1" else (diff ** 2).mean()
        loss = loss + recipe.line_l2 * lines.penalty()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        bar.update(1)
        if step % recipe.eval_every == 0 or step == recipe.max_steps:
            current = val_mapd()
            bar.set_postfix_str(f"val MAPD {100 * current:.2f}%")
            if current < best:
                snapshot = ({k: v.detach().clone() for k, v in model.state_dict().items()},
                            lines.intercept.detach().clone(), lines.slope.detach().clone())
                best, best_step, stale = current, step, 0
            else:
                stale += 1
                if recipe.patience and stale >= recipe.patience:
                    break
    bar.close()
    if recipe.restore_best and snapshot is not None:
        model.load_state_dict(snapshot[0])
        with torch.no_grad():
            lines.intercept.copy_(snapshot[1])
            lines.slope.copy_(snapshot[2])
    return step, best_step, (100 * best if snapshot is not None else None)


def _metrics(predictor: LatencyPredictor, data: Dataset, seed: int, fit: tuple, seconds: float) -> dict:
    metrics = {}
    for split in ("train", "val", "test"):
        index = getattr(data, split)
        predicted = predictor.predict_many([data.archs[i] for i in index])
        metrics[split] = regression_metrics(data.ms[index], predicted)
    steps, best_step, best_val = fit
    metrics.update(train_seconds=round(seconds, 2), steps_run=steps, best_step=best_step, best_val_mapd_pct=best_val,
                   n_archs=len(data.archs), seed=seed, split_sizes=[len(data.train), len(data.val), len(data.test)],
                   **{f"{split}_mapd_pct": metrics[split]["mapd_pct"] for split in ("train", "val", "test")})
    metrics["split_warning"] = split_warning(metrics)
    if metrics["split_warning"]:
        logger.warning("%s", metrics["split_warning"])
    return metrics


def train_predictor(records: list[dict], recipe: Recipe, seed: int = 0, metadata: dict | None = None,
                    progress: bool = True) -> tuple[LatencyPredictor, Dataset, dict]:
    """Train on a table's records; returns the predictor, the split data and the metrics."""
    start = time.perf_counter()
    data = make_dataset(records, seed)
    names, encode = ENCODINGS[recipe.features]
    raw = np.asarray([encode(arch) for arch in data.archs], dtype=np.float64)
    offset, scale, target = normalisation(recipe, raw[data.train], data.ms[data.train])
    x_all = (raw - offset) / scale
    y_all = to_target(data.ms, target)

    torch.manual_seed(seed)
    model = _initial_model(recipe, len(names), x_all[data.train], y_all[data.train])
    lines = LineEffects.build(recipe, names, data)
    parts = {split: _rows(x_all, y_all, lines, getattr(data, split)) for split in ("train", "val")}
    fit = _fit(model, lines, recipe, parts, data, target, seed, progress)
    seconds = time.perf_counter() - start

    checkpoint = {
        "format": CHECKPOINT_FORMAT,
        "state_dict": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "mlp": {"input_dim": len(names), "hidden_dim": recipe.hidden_dim, "hidden_layers": recipe.hidden_layers,
                "activation": recipe.activation, "skip": recipe.skip},
        "features": {"encoding": recipe.features, "names": list(names), "offset": [float(v) for v in offset],
                     "scale": [float(v) for v in scale]},
        "target": target,
        "line_effects": lines.to_checkpoint(),
        "recipe": dataclasses.asdict(recipe),
        "metrics": {},
        "metadata": {},
    }
    metrics = _metrics(LatencyPredictor(checkpoint), data, seed, fit, seconds)
    checkpoint["metrics"] = metrics
    checkpoint["metadata"] = dict(metadata or {}, metrics=metrics, feature_names=list(names),
                                  recipe=dataclasses.asdict(recipe), seed=seed)
    return LatencyPredictor(checkpoint), data, metrics
