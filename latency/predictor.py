"""The latency predictor: an MLP from arch features to milliseconds (stage 4).

Two recipes share one model class and one training loop:

* ``original`` -- the authors' (HAT's) predictor: 4 features [hidden, layers, mean FFN, mean qkv]
  divided by (564, 5, 1024, 564), target ms / 200, ReLU MLP 4 -> 2000 x4 -> 1 (state-dict keys
  ``first_layer``, ``layers.0..2``, ``predict``), MSE, Adam lr 1e-5, 5,000 steps of random
  minibatches of 128, the last step's weights kept.
* ``default`` -- ours: ``utils.arch_features_v2`` (sizes, FLOP-like products, alignment flags)
  standardised, target log(ms) standardised, a small GELU MLP plus a linear skip path solved by
  least squares before training, L1 loss (= relative error in log space, robust to the odd
  outlier), full-batch Adam with a one-cycle schedule, early stopping on validation MAPD. It also
  learns *line effects*: a shrunk (L2) intercept and FFN slope per (layers, hidden, qkv, heads)
  group seen in training. Latency tables are measured line by line and some kernels switch by
  shape, so points on one FFN line share an offset that no smooth function of the features has;
  archs of groups never seen in training get no correction (the smooth MLP alone).

The checkpoint is one ``torch.save`` of plain tensors/lists/strings/numbers (``weights_only=True``):
weights, MLP shape, feature names and normalisation, target transform, line effects, metrics and
metadata, so ``LatencyPredictor.load(path).predict(arch)`` needs nothing else.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections import defaultdict

import numpy as np
import torch
from torch import nn

from utils import (
    FEATURE_NAMES,
    FEATURE_NAMES_V2,
    ORIGINAL_FEATURE_NORM,
    UserError,
    arch_features,
    arch_features_v2,
    check_arch_schema,
    get_logger,
)

logger = get_logger("latency.predictor")

CHECKPOINT_FORMAT = "bigger_and_faster.latency_predictor/1"
ORIGINAL_LAT_NORM = 200.0
ENCODINGS = {"original": (FEATURE_NAMES, arch_features), "v2": (FEATURE_NAMES_V2, arch_features_v2)}
SLOPE_FEATURE = "mean_intermediate_size"
# fewer test archs than this measure nothing (a 30-arch table split 24/3/3 looked perfect on train)
MIN_TEST_ARCHS = 30


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


# --------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------


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


def line_key(arch: dict) -> str:
    """The FFN line an arch lies on: (layers, hidden, mean qkv, mean heads)."""
    qkv, heads = arch["sample_qkv_sizes"], arch["sample_num_attention_heads"]
    return (f"{arch['sample_layer_num']}/{arch['sample_hidden_size']}/"
            f"{round(sum(qkv) / len(qkv))}/{round(sum(heads) / len(heads))}")


# --------------------------------------------------------------------------------------
# The predictor (what other stages import)
# --------------------------------------------------------------------------------------


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

    # ----- loading
    @classmethod
    def load(cls, path: str | os.PathLike) -> "LatencyPredictor":
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise UserError(f"{path}: no such latency predictor checkpoint")
        try:
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # a truncated or foreign file
            raise UserError(f"{path}: not a readable predictor checkpoint ({type(err).__name__}: {err})") from None
        if isinstance(checkpoint, dict) and checkpoint.get("format") == CHECKPOINT_FORMAT:
            return cls(checkpoint)
        if isinstance(checkpoint, dict) and "first_layer.weight" in checkpoint:
            return cls(_wrap_original_state_dict(checkpoint, path))
        raise UserError(f"{path}: not a latency predictor checkpoint (format {CHECKPOINT_FORMAT})")

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
            index = np.asarray([self._lines.get(line_key(arch), -1) for arch in archs])
            known = index >= 0
            out[known] += self._intercept[index[known]] + self._slope[index[known]] * x[known, self._slope_index]
        return _inverse(out, self.target)

    def predict(self, arch: dict) -> float:
        return float(self.predict_many([arch])[0])

    predict_lat = predict  # the original's method name

    def save(self, path: str | os.PathLike) -> None:
        from utils import atomic_write

        with atomic_write(path, "wb") as handle:
            torch.save(self.checkpoint, handle)


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


# --------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------


@dataclasses.dataclass
class Dataset:
    archs: list[dict]
    ms: np.ndarray
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray


def make_dataset(records: list[dict], seed: int) -> Dataset:
    """One point per arch (repeated archs: the median of their measurements), ordered by
    ``arch_key`` and split 80/10/10 by a seeded permutation, so the split depends only on the set
    of archs and the seed, not on the order of the table."""
    by_key: dict[str, list[float]] = defaultdict(list)
    archs: dict[str, dict] = {}
    for record in records:
        key = record["arch_key"]
        by_key[key].append(float(record["median_ms"]))
        archs.setdefault(key, record["arch"])
    repeated = sum(1 for values in by_key.values() if len(values) > 1)
    if repeated:
        logger.warning("%d archs appear more than once; each is one point at the median of its measurements", repeated)
    keys = sorted(by_key)
    n = len(keys)
    if n < 10:
        raise UserError(f"the latency table has {n} distinct archs; a train/validation/test split needs at least 10")
    order = np.random.default_rng(seed).permutation(n)
    n_train, n_val = int(0.8 * n), int(0.9 * n) - int(0.8 * n)
    return Dataset(archs=[archs[key] for key in keys], ms=np.asarray([np.median(by_key[k]) for k in keys]),
                   train=order[:n_train], val=order[n_train:n_train + n_val], test=order[n_train + n_val:])


def regression_metrics(measured: np.ndarray, predicted: np.ndarray) -> dict:
    """RMSE (ms), MAPD (%), Kendall tau and Spearman rho of predictions against measurements."""
    from scipy.stats import kendalltau, spearmanr

    measured, predicted = np.asarray(measured, np.float64), np.asarray(predicted, np.float64)
    ape = np.abs(predicted - measured) / measured
    tau = kendalltau(measured, predicted)[0] if len(measured) > 1 else float("nan")
    rho = spearmanr(measured, predicted)[0] if len(measured) > 1 else float("nan")
    return {"rmse_ms": float(np.sqrt(np.mean((predicted - measured) ** 2))), "mapd_pct": float(100 * ape.mean()),
            "median_ape_pct": float(100 * np.median(ape)), "max_ape_pct": float(100 * ape.max()),
            "kendall_tau": float(tau), "spearman_rho": float(rho), "n": int(len(measured))}


# --------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------


def _normalisation(recipe: Recipe, x_train: np.ndarray, y_train: np.ndarray):
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


def _to_target(ms: np.ndarray, target: dict) -> np.ndarray:
    values = np.log(ms) if target["transform"] == "log" else ms
    return (values - target["offset"]) / target["scale"]


def train_predictor(records: list[dict], recipe: Recipe, seed: int = 0, metadata: dict | None = None,
                    progress: bool = True) -> tuple[LatencyPredictor, Dataset, dict]:
    """Train on a table's records; returns the predictor, the split data and the metrics."""
    from utils.progress import progress as progress_bar

    start = time.perf_counter()
    data = make_dataset(records, seed)
    names, encode = ENCODINGS[recipe.features]
    raw = np.asarray([encode(arch) for arch in data.archs], dtype=np.float64)
    offset, scale, target = _normalisation(recipe, raw[data.train], data.ms[data.train])
    x_all = (raw - offset) / scale
    y_all = _to_target(data.ms, target)

    torch.manual_seed(seed)
    model = LatencyMLP(len(names), recipe.hidden_dim, recipe.hidden_layers, recipe.activation, recipe.skip)
    if recipe.skip:  # start from the least-squares linear fit; the MLP learns the rest
        design = np.c_[x_all[data.train], np.ones(len(data.train))]
        coef = np.linalg.lstsq(design, y_all[data.train], rcond=None)[0]
        with torch.no_grad():
            model.skip.weight.copy_(torch.as_tensor(coef[:-1], dtype=torch.float32)[None])
            model.skip.bias.fill_(float(coef[-1]))
            model.predict.weight.zero_()
            model.predict.bias.zero_()
    params = list(model.parameters())

    line_keys, line_index = [], np.full(len(data.archs), -1)
    slope_index = names.index(SLOPE_FEATURE) if SLOPE_FEATURE in names else None
    if recipe.line_effects and slope_index is not None:
        keys = [line_key(arch) for arch in data.archs]
        line_keys = sorted({keys[i] for i in data.train})
        lookup = {key: i for i, key in enumerate(line_keys)}
        line_index = np.asarray([lookup.get(key, -1) for key in keys])
    intercept = torch.zeros(len(line_keys), requires_grad=True)
    slope = torch.zeros(len(line_keys), requires_grad=True)
    if line_keys:
        params += [intercept, slope]

    def tensors(index: np.ndarray) -> dict:
        """Everything a forward pass over these rows needs, gathered once."""
        rows = torch.as_tensor(x_all[index], dtype=torch.float32)
        lines = torch.as_tensor(line_index[index])
        return {"x": rows, "y": torch.as_tensor(y_all[index], dtype=torch.float32), "line": lines.clamp(min=0),
                "known": (lines >= 0).float(),
                "slope_x": rows[:, slope_index] if slope_index is not None else None}

    def forward(part: dict) -> torch.Tensor:
        out = model(part["x"])
        if line_keys:
            effect = intercept.index_select(0, part["line"]) + slope.index_select(0, part["line"]) * part["slope_x"]
            out = out + effect * part["known"]
        return out

    def rows(part: dict, index: torch.Tensor) -> dict:
        return {key: (value[index] if value is not None else None) for key, value in part.items()}

    train_part, val_part = tensors(data.train), tensors(data.val)
    optimizer = torch.optim.Adam(params, lr=recipe.lr)
    scheduler = (torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=recipe.lr, total_steps=recipe.max_steps,
                                                     pct_start=0.1)
                 if recipe.schedule == "onecycle" else None)
    generator = torch.Generator().manual_seed(seed)
    minibatch = 0 < recipe.batch_size < len(data.train)

    def val_mapd() -> float:
        with torch.no_grad():
            predicted = _inverse(forward(val_part).double().numpy(), target)
        return float(np.mean(np.abs(predicted - data.ms[data.val]) / data.ms[data.val]))

    best = (math.inf, None, 0)
    evaluations_without_gain, step = 0, 0
    bar = progress_bar(total=recipe.max_steps, desc=f"predictor ({recipe.features})", unit="step", enabled=progress)
    for step in range(1, recipe.max_steps + 1):
        if minibatch:  # the original: a fresh random minibatch (without replacement) every step
            part = rows(train_part, torch.randperm(len(data.train), generator=generator)[:recipe.batch_size])
        else:
            part = train_part
        diff = forward(part) - part["y"]
        loss = diff.abs().mean() if recipe.loss == "l1" else (diff ** 2).mean()
        if line_keys:
            loss = loss + recipe.line_l2 * ((intercept ** 2).mean() + (slope ** 2).mean())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        bar.update(1)
        if step % recipe.eval_every == 0 or step == recipe.max_steps:
            current = val_mapd()
            bar.set_postfix_str(f"val MAPD {100 * current:.2f}%")
            if current < best[0]:
                snapshot = ({k: v.detach().clone() for k, v in model.state_dict().items()},
                            intercept.detach().clone(), slope.detach().clone())
                best, evaluations_without_gain = (current, snapshot, step), 0
            else:
                evaluations_without_gain += 1
                if recipe.patience and evaluations_without_gain >= recipe.patience:
                    break
    bar.close()
    if recipe.restore_best and best[1] is not None:
        model.load_state_dict(best[1][0])
        with torch.no_grad():
            intercept.copy_(best[1][1])
            slope.copy_(best[1][2])
    train_seconds = time.perf_counter() - start

    checkpoint = {
        "format": CHECKPOINT_FORMAT,
        "state_dict": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "mlp": {"input_dim": len(names), "hidden_dim": recipe.hidden_dim, "hidden_layers": recipe.hidden_layers,
                "activation": recipe.activation, "skip": recipe.skip},
        "features": {"encoding": recipe.features, "names": list(names), "offset": [float(v) for v in offset],
                     "scale": [float(v) for v in scale]},
        "target": target,
        "line_effects": ({"keys": line_keys, "intercept": intercept.detach().clone(), "slope": slope.detach().clone(),
                          "slope_feature": SLOPE_FEATURE} if line_keys else None),
        "recipe": dataclasses.asdict(recipe),
        "metrics": {},
        "metadata": {},
    }
    predictor = LatencyPredictor(checkpoint)
    metrics = {}
    for split in ("train", "val", "test"):
        index = getattr(data, split)
        predicted = predictor.predict_many([data.archs[i] for i in index])
        metrics[split] = regression_metrics(data.ms[index], predicted)
    metrics.update(train_seconds=round(train_seconds, 2), steps_run=step, best_step=best[2],
                   best_val_mapd_pct=100 * best[0] if best[1] is not None else None,
                   n_archs=len(data.archs), seed=seed, split_sizes=[len(data.train), len(data.val), len(data.test)],
                   **{f"{split}_mapd_pct": metrics[split]["mapd_pct"] for split in ("train", "val", "test")})
    metrics["split_warning"] = split_warning(metrics)
    if metrics["split_warning"]:
        logger.warning("%s", metrics["split_warning"])
    checkpoint["metrics"] = metrics
    checkpoint["metadata"] = dict(metadata or {}, metrics=metrics, feature_names=list(names),
                                  recipe=dataclasses.asdict(recipe), seed=seed)
    predictor = LatencyPredictor(checkpoint)
    return predictor, data, metrics


def split_warning(metrics: dict) -> str | None:
    """One line when the test split is too small to measure the predictor (``None`` otherwise)."""
    n_train, n_val, n_test = metrics["split_sizes"]
    if n_test >= MIN_TEST_ARCHS:
        return None
    needed = math.ceil(MIN_TEST_ARCHS / 0.1)
    return (f"the test split has only {n_test} archs (split {n_train}/{n_val}/{n_test} of {metrics['n_archs']}; MAPD "
            f"train {metrics['train_mapd_pct']:.2f} %, val {metrics['val_mapd_pct']:.2f} %, test "
            f"{metrics['test_mapd_pct']:.2f} %): too few to measure the predictor; a table of at least {needed} archs "
            f"gives {MIN_TEST_ARCHS} test archs")


def _inverse(values: np.ndarray, target: dict) -> np.ndarray:
    values = values * target["scale"] + target["offset"]
    return np.exp(values) if target["transform"] == "log" else values


def plot_predictions(path: str, measured: np.ndarray, predicted: np.ndarray, title: str) -> None:
    """Predicted vs measured latency (test split), with the y = x line; atomic PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from utils import atomic_write

    fig, ax = plt.subplots(figsize=(5.2, 5.0), dpi=120)
    ax.scatter(measured, predicted, s=6, alpha=0.5, edgecolors="none")
    low, high = float(min(measured.min(), predicted.min())), float(max(measured.max(), predicted.max()))
    ax.plot([low, high], [low, high], color="black", linewidth=0.8)
    ax.set_xlabel("measured latency (ms)")
    ax.set_ylabel("predicted latency (ms)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_write(path, "wb") as handle:
        fig.savefig(handle, format="png")
    plt.close(fig)
