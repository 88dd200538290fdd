"""The latency predictor: an MLP from arch features to milliseconds (stage 4).

* ``model``      -- the recipes (``default``: ours; ``original``: the authors' / HAT's), the MLP and
                    the feature encodings and target transform;
* ``data``       -- one point per arch, the seeded 80/10/10 split, the metrics;
* ``training``   -- ``train_predictor`` (one loop for both recipes; line effects per FFN line);
* ``checkpoint`` -- ``LatencyPredictor`` (load / predict / save; the self-describing checkpoint) and
                    ``load_predictor``, the loader other packages use;
* ``lock``       -- one writer per predictor directory, and the searches' read hold on it;
* ``plot``       -- predicted against measured latency.

Recipe ``original``: 4 features [hidden, layers, mean FFN, mean qkv] divided by (564, 5, 1024, 564),
target ms / 200, ReLU MLP 4 -> 2000 x4 -> 1 (state-dict keys ``first_layer``, ``layers.0..2``,
``predict``), MSE, Adam lr 1e-5, 5,000 steps of random minibatches of 128, the last step's weights
kept. Recipe ``default``: ``utils.arch_features_v2`` standardised, target log(ms) standardised, a small
GELU MLP plus a linear skip path solved by least squares before training, L1 loss, full-batch Adam
with a one-cycle schedule, early stopping on validation MAPD, and line effects: a shrunk intercept
and FFN slope per FFN line (``latency.lines.ffn_line``) seen in training (archs on unseen lines get
the smooth MLP alone).
"""

from latency.predictor.checkpoint import CHECKPOINT_FORMAT, LatencyPredictor, load_predictor
from latency.predictor.data import MIN_TEST_ARCHS, Dataset, make_dataset, regression_metrics, split_warning
from latency.predictor.model import ENCODINGS, ORIGINAL_LAT_NORM, RECIPES, SLOPE_FEATURE, LatencyMLP, Recipe
from latency.predictor.plot import plot_predictions
from latency.predictor.training import train_predictor

__all__ = ["CHECKPOINT_FORMAT", "ENCODINGS", "MIN_TEST_ARCHS", "ORIGINAL_LAT_NORM", "RECIPES", "SLOPE_FEATURE",
           "Dataset", "LatencyMLP", "LatencyPredictor", "Recipe", "load_predictor", "make_dataset",
           "plot_predictions", "regression_metrics", "split_warning", "train_predictor"]
