"""The report's PNG plots, drawn from the searches and ``summary.json``: budgets in distinct
colours, methods in distinct markers, integer axes where the axis counts something."""

from __future__ import annotations

import io

import numpy as np

from quantize_utils import SCHEMES
from reporting.summary import METHOD_LABELS, SEARCH_METHODS, _metric, primary_split
from utils import SearchSpace, arch_key, atomic_write

MARKERS = {"autotinybert_fp32": "s", "autotinybert_int8_ptq": "D", "bigger_and_faster_int8": "o",
           "random_search_int8": "x", "bigger_and_faster_ort_int8": "^", "random_search_ort_int8": "+",
           "random_search_fp32": "1", "fakequant_int8": "v"}
COLOURS = ("tab:red", "tab:blue", "tab:green", "tab:purple", "tab:orange", "tab:brown")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str) -> None:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    with atomic_write(path, "wb", encoding=None) as handle:
        handle.write(buffer.getvalue())
    _pyplot().close(fig)


def _budget_colours(summary: dict) -> dict[float, str]:
    return {entry["budget_ms"]: COLOURS[i % len(COLOURS)] for i, entry in enumerate(summary["budgets"])}


def accuracy_vs_latency(searches, summary: dict, measured: dict, path: str) -> None:
    """Every evaluated arch (search seed) at its measured deployed latency; each chosen arch as a
    mean ± std over its seeds; one colour per budget, one marker per method."""
    from matplotlib.lines import Line2D

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 5))
    colours = _budget_colours(summary)
    for search in searches:
        method = SEARCH_METHODS.get((search.scheme, search.strategy))
        if method is None:
            continue
        backend = SCHEMES[search.scheme].latency_backend
        split = primary_split(search.records[0])
        points = [(measured.get(backend, {}).get(arch_key(r["arch"])), _metric(r, search.scheme, split))
                  for r in search.search_records()]
        points = [(float(m["median_ms"]), 100 * a) for m, a in points if m is not None and a is not None]
        if points:
            xs, ys = zip(*points)
            ax.scatter(xs, ys, s=14, alpha=0.35, color=colours.get(search.budget_ms, "grey"),
                       marker=MARKERS.get(method, "o"))
    for entry in summary["budgets"]:
        colour = colours[entry["budget_ms"]]
        ax.axvline(entry["budget_ms"], color=colour, linestyle=":", linewidth=1.2)
        for method, row in entry["methods"].items():
            acc, latency = row["accuracy_points"], row["measured_latency_ms_deployed"]
            if acc and latency is not None:
                ax.errorbar([latency], [acc["mean"]], yerr=[[acc["mean"] - acc["min"]], [acc["max"] - acc["mean"]]],
                            fmt=MARKERS.get(method, "o"), markersize=10, color=colour, markeredgecolor="black",
                            capsize=4, linewidth=1.5)
    for row in summary.get("tickets", []):
        if row.get("latency_ms_int8") and row.get("accuracy_points"):
            ax.scatter([row["latency_ms_int8"]], [row["accuracy_points"]], marker="*", s=80, color="black")
    handles = [Line2D([], [], color="black", marker=MARKERS[m], linestyle="", label=METHOD_LABELS[m])
               for m in MARKERS if any(m in e["methods"] for e in summary["budgets"])]
    handles += [Line2D([], [], color=c, linestyle=":", label=f"budget {b:g} ms") for b, c in colours.items()]
    if summary.get("tickets"):
        handles.append(Line2D([], [], color="black", marker="*", linestyle="", label="BERT-Tickets (int8 latency)"))
    ax.legend(handles=handles, fontsize=7, loc="lower right")
    ax.set_xlabel("measured latency in the deployed scheme (ms; batch 1, seq 128, 1 thread)")
    ax.set_ylabel("dev accuracy (points)")
    ax.set_title("Every evaluated sub-model (small) and each search's choice (mean, min-max over seeds)")
    fig.tight_layout()
    _save(fig, path)


def search_progress(summary: dict, path: str) -> None:
    """Best-so-far fitness against the number of evaluations: evolution (solid) vs random (dashed)."""
    from matplotlib.ticker import MaxNLocator

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    colours = _budget_colours(summary)
    drawn = 0
    for entry in summary["budgets"]:
        for method, rows in entry["progress"].items():
            points = [(r["evaluations"], r["best_so_far_points"]) for r in rows if r["best_so_far_points"] is not None]
            if not points:
                continue
            xs, ys = zip(*points)
            style = "--" if method.startswith("random") else "-"
            ax.step(xs, ys, where="post", linestyle=style, color=colours[entry["budget_ms"]],
                    marker=MARKERS.get(method, "o"), markersize=4,
                    label=f"{entry['budget_ms']:g} ms, {METHOD_LABELS[method]}")
            drawn += 1
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("evaluations (fine-tunes, search seed)")
    ax.set_ylabel("best fitness so far (points)")
    ax.set_title("Search progress: evolution (solid) vs random search (dashed)")
    if drawn:
        ax.legend(fontsize=7)
    else:
        ax.text(0.5, 0.5, "no search progress to show", ha="center", va="center", transform=ax.transAxes)
    fig.tight_layout()
    _save(fig, path)


def predicted_vs_measured(searches, predictors: dict, measured: dict, path: str) -> None:
    """Per backend, predicted vs re-measured latency of every evaluated arch; held-out archs (off
    the predictor's latency grid) as filled circles, on-grid ones as open squares."""
    plt = _pyplot()
    backends = [b for b in predictors if measured.get(b)]
    fig, axes = plt.subplots(1, max(1, len(backends)), figsize=(4.5 * max(1, len(backends)), 4), squeeze=False)
    archs = {arch_key(r["arch"]): r["arch"] for s in searches for r in s.records}
    if not backends:
        axes[0][0].text(0.5, 0.5, "no predictor with re-measured archs", ha="center", va="center")
    for ax, backend in zip(axes[0], backends):
        keys = [k for k in archs if k in measured[backend]]
        truth = np.array([float(measured[backend][k]["median_ms"]) for k in keys])
        pred = np.asarray(predictors[backend].predict_many([archs[k] for k in keys]), dtype=float)
        grid = predictors[backend].metadata.get("space_definition")
        space = SearchSpace.from_dict(grid) if isinstance(grid, dict) else None
        held = np.array([space is not None and not space.contains(archs[k]) for k in keys], dtype=bool)
        if (~held).any():
            ax.scatter(truth[~held], pred[~held], s=16, facecolors="none", edgecolors="tab:blue", marker="s",
                       label=f"on the latency grid ({int((~held).sum())})")
        if held.any():
            ax.scatter(truth[held], pred[held], s=16, color="tab:red", label=f"held out ({int(held.sum())})")
        low, high = float(min(truth.min(), pred.min())), float(max(truth.max(), pred.max()))
        ax.plot([low, high], [low, high], color="grey", linewidth=1)
        mapd = 100 * float(np.mean(np.abs(pred / truth - 1)))
        bias = 100 * float(np.median(pred / truth - 1))
        ax.set_title(f"{backend}: MAPD {mapd:.1f} %, bias {bias:+.1f} %", fontsize=9)
        ax.set_xlabel("re-measured (ms)")
        ax.set_ylabel("predicted (ms)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    _save(fig, path)


def fitness_per_generation(searches, path: str) -> None:
    """Best fitness so far per generation (integer axis) of every search with a log."""
    from matplotlib.ticker import MaxNLocator

    from search.history import fitness_by_generation

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    drawn = 0
    for search in searches:
        split = primary_split(search.records[0])
        fitness = {}
        for record in search.search_records():
            value = _metric(record, search.scheme, split)
            if value is not None:
                fitness[arch_key(record["arch"])] = value
        rows = [r for r in fitness_by_generation(search.log, fitness) if r["best_so_far"] is not None]
        if rows:
            ax.plot([r["generation"] for r in rows], [100 * r["best_so_far"] for r in rows], marker="o",
                    linestyle="--" if search.strategy == "random" else "-", label=search.name)
            drawn += 1
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("generation (0 = first generation)")
    ax.set_ylabel("best fitness so far (points)")
    ax.set_title("Best fitness per generation")
    if drawn:
        ax.legend(fontsize=7)
    else:
        ax.text(0.5, 0.5, "no search logs found", ha="center", va="center", transform=ax.transAxes)
    fig.tight_layout()
    _save(fig, path)
