"""The predictor's own plot: predicted against measured latency on the test split."""

from __future__ import annotations

import textwrap

import numpy as np

from utils import atomic_write


def plot_predictions(path: str, measured: np.ndarray, predicted: np.ndarray, title: str,
                     unit: str = "ms", band_pct: float = 5.0) -> None:
    """Predicted vs measured latency (test split): solid markers, the y = x line and a +-``band_pct`` %
    band, the unit on both axes and the share of archs inside the band in the legend; atomic PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    measured, predicted = np.asarray(measured, dtype=float), np.asarray(predicted, dtype=float)
    inside = np.abs(predicted / measured - 1) <= band_pct / 100
    fig, ax = plt.subplots(figsize=(6.4, 6.0), dpi=110)
    low = float(min(measured.min(), predicted.min())) * 0.95
    high = float(max(measured.max(), predicted.max())) * 1.05
    line = np.linspace(low, high, 2)
    ax.fill_between(line, line * (1 - band_pct / 100), line * (1 + band_pct / 100), color="#bbbbbb", alpha=0.35,
                    linewidth=0, label=f"within ±{band_pct:g} %")
    ax.plot(line, line, color="black", linewidth=1.0, label="predicted = measured")
    ax.scatter(measured[inside], predicted[inside], s=30, color="#1f5fa8", edgecolors="white", linewidths=0.5,
               label=f"test archs inside the band ({int(inside.sum())} of {len(measured)})", zorder=3)
    if (~inside).any():
        ax.scatter(measured[~inside], predicted[~inside], s=36, marker="D", color="#c2410c", edgecolors="white",
                   linewidths=0.5, label=f"test archs outside ({int((~inside).sum())})", zorder=4)
    ax.set_xlim(low, high)
    ax.set_ylim(low, high)
    ax.set_aspect("equal")
    ax.set_xlabel(f"measured latency ({unit})", fontsize=11)
    ax.set_ylabel(f"predicted latency ({unit})", fontsize=11)
    ax.set_title("\n".join(textwrap.wrap(title, 60)), fontsize=11)
    ax.tick_params(labelsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=9, loc="upper left", framealpha=0.9)
    fig.tight_layout()
    with atomic_write(path, "wb") as handle:
        fig.savefig(handle, format="png")
    plt.close(fig)
