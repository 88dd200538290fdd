"""The report's PNG plots, drawn from the searches and ``summary.json``.

One visual language in every plot, so a reader learns it once: **one colour per method** (the same
colour in every plot), **one marker per budget** in the scatter plots and one panel per budget in
the curves; legends say which is which, titles say only what is drawn (a random search appears only
when one ran), and lines that coincide stay visible (a coinciding line is drawn thinner on top of a
wider one, and its legend entry names the line it coincides with). Every function returns a
``PlotInfo`` (titles, legend entries, texts that do not fit the figure) that the tests check.
"""

from __future__ import annotations

import dataclasses
import io

import numpy as np

from quantize_utils import SCHEMES
from reporting.summary import METHOD_LABELS, METHOD_ORDER, SEARCH_METHODS, _metric, primary_split
from utils import SearchSpace, arch_key, atomic_write

METHOD_COLOURS = {"autotinybert_fp32": "tab:blue", "autotinybert_int8_ptq": "tab:purple",
                  "bigger_and_faster_int8": "tab:red", "random_search_int8": "tab:gray",
                  "bigger_and_faster_ort_int8": "tab:orange", "random_search_ort_int8": "tab:brown",
                  "random_search_fp32": "tab:olive", "fakequant_int8": "tab:pink"}
BUDGET_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "h")
TICKETS_LABEL = "BERT-Tickets rounds (int8 latency)"


@dataclasses.dataclass
class PlotInfo:
    path: str
    titles: list[str]
    legend: list[str]  # every legend entry, in order (section headers as "[colour: method]")
    overflowing: list[str]  # texts that run off the figure or hide under a legend (should be none)
    line_widths: dict[str, float] = dataclasses.field(default_factory=dict)  # "<budget> ms <method>" -> width


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _figure(width: float, height: float, panels: int = 1):
    plt = _pyplot()
    fig, axes = plt.subplots(1, panels, figsize=(width, height), squeeze=False, layout="constrained")
    return fig, list(axes[0])


def _finish(fig, path: str) -> PlotInfo:
    """Lay out, check that every text fits the figure, save atomically and describe the plot."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    box = fig.bbox
    titles, legend = [], []
    texts = [fig._suptitle] if fig._suptitle is not None else []  # titles, axis labels, notes, legends
    for ax in fig.axes:
        titles += [t for t in (ax.get_title(),) if t]
        texts += [ax.title, ax.xaxis.label, ax.yaxis.label, *ax.texts]
    if fig._suptitle is not None:
        titles.insert(0, fig._suptitle.get_text())
    for leg in fig.legends + [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]:
        if leg.get_title().get_text():
            legend.append(f"[{leg.get_title().get_text()}]")
        legend += [f"[{text.get_text()}]" if text.get_fontweight() == "bold" else text.get_text()
                   for text in leg.get_texts()]
        texts += [leg.get_title(), *leg.get_texts()]
    overflowing = []
    for text in [t for t in texts if t.get_visible() and t.get_text()]:
        extent = text.get_window_extent(renderer)
        if extent.x0 < box.x0 - 1 or extent.x1 > box.x1 + 1 or extent.y0 < box.y0 - 1 or extent.y1 > box.y1 + 1:
            overflowing.append(text.get_text())
    heads = ([fig._suptitle] if fig._suptitle is not None else []) + [ax.title for ax in fig.axes]
    for leg in fig.legends:  # a title under a legend is a title nobody reads
        frame = leg.get_window_extent(renderer)
        overflowing += [f"{t.get_text()} (under the legend)" for t in heads
                        if t.get_text() and t.get_window_extent(renderer).overlaps(frame)]
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    with atomic_write(path, "wb", encoding=None) as handle:
        handle.write(buffer.getvalue())
    _pyplot().close(fig)
    return PlotInfo(path, titles, legend, overflowing)


def _budgets(summary: dict) -> list[float]:
    return [entry["budget_ms"] for entry in summary["budgets"]]


def _budget_markers(summary: dict) -> dict[float, str]:
    return {budget: BUDGET_MARKERS[i % len(BUDGET_MARKERS)] for i, budget in enumerate(_budgets(summary))}


def _methods(summary: dict) -> list[str]:
    present = {method for entry in summary["budgets"] for method in entry["methods"]}
    return [method for method in METHOD_ORDER if method in present]


def _sectioned_legend(fig, sections: list[tuple[str, list]], where: str = "outside right upper",
                      columns: int = 1) -> None:
    """One legend outside the plot, in sections, each headed by its title in bold ("colour: method")."""
    from matplotlib.lines import Line2D

    handles, headers = [], []
    for title, entries in sections:
        if not entries:
            continue
        headers.append(len(handles))
        handles.append(Line2D([], [], linestyle="", marker="", label=title))
        handles += entries
    if not handles:
        return
    legend = fig.legend(handles=handles, loc=where, fontsize=8, alignment="left", handlelength=2.2, ncols=columns)
    for index in headers:
        legend.get_texts()[index].set_fontweight("bold")
        legend.legend_handles[index].set_visible(False)


def _scatter_legends(fig, summary: dict, with_tickets: bool) -> None:
    """Legend sections: colour = method, marker = budget, what the two kinds of points are."""
    from matplotlib.lines import Line2D

    methods = [Line2D([], [], color=METHOD_COLOURS.get(m, "black"), marker="o", linestyle="", markersize=8,
                      label=METHOD_LABELS[m]) for m in _methods(summary)]
    if with_tickets:
        methods.append(Line2D([], [], color="black", marker="*", linestyle="", markersize=10, label=TICKETS_LABEL))
    budgets = [Line2D([], [], color="black", marker=marker, linestyle="", markerfacecolor="none", markersize=8,
                      label=f"{budget:g} ms") for budget, marker in _budget_markers(summary).items()]
    points = [Line2D([], [], color="dimgray", marker="o", linestyle="", markerfacecolor="none", markersize=6,
                     label="an evaluated arch (search seed)"),
              Line2D([], [], color="dimgray", marker="o", linestyle="-", markeredgecolor="black", markersize=9,
                     label="the search's choice: mean, bar = min-max over seeds")]
    _sectioned_legend(fig, [("colour: method", methods), ("marker: budget", budgets), ("points", points)])


def _evaluated(searches, x_of) -> list[tuple[str, float, list[tuple[float, float]]]]:
    """``(method, budget, [(x, accuracy points)])`` of every search's evaluated archs (search seed)."""
    out = []
    for search in searches:
        method = SEARCH_METHODS.get((search.scheme, search.strategy))
        if method is None:
            continue
        split = primary_split(search.records[0])
        points = []
        for record in search.search_records():
            x, accuracy = x_of(search, record), _metric(record, search.scheme, split)
            if x is not None and accuracy is not None:
                points.append((float(x), 100 * accuracy))
        out.append((method, search.budget_ms, points))
    return out


def _scatter(searches, summary: dict, path: str, x_of, row_x, title: str, xlabel: str, budget_lines: bool,
             tickets_x=None) -> PlotInfo:
    fig, (ax,) = _figure(10.5, 5.2)
    markers = _budget_markers(summary)
    for method, budget, points in _evaluated(searches, x_of):
        if points:
            xs, ys = zip(*points)
            ax.scatter(xs, ys, s=28, marker=markers.get(budget, "o"), facecolors="none", linewidths=1.1,
                       edgecolors=METHOD_COLOURS.get(method, "black"), alpha=0.75, zorder=2)
    for entry in summary["budgets"]:
        marker = markers[entry["budget_ms"]]
        if budget_lines:
            ax.axvline(entry["budget_ms"], color="dimgray", linestyle=":", linewidth=1.2, zorder=1)
            ax.annotate(f"budget {entry['budget_ms']:g} ms", (entry["budget_ms"], 1.0), xycoords=("data", "axes fraction"),
                        xytext=(-3, -4), textcoords="offset points", fontsize=8, color="dimgray", ha="right",
                        va="top", rotation=90)
        for method, row in entry["methods"].items():
            acc, x = row["accuracy_points"], row_x(row)
            if acc and x is not None:
                colour = METHOD_COLOURS.get(method, "black")
                # equal seeds: the float mean may sit a hair outside [min, max], and matplotlib refuses that
                low, high = max(0.0, acc["mean"] - acc["min"]), max(0.0, acc["max"] - acc["mean"])
                ax.errorbar([x], [acc["mean"]], yerr=[[low], [high]],
                            fmt=marker, markersize=11, color=colour, markeredgecolor="black", capsize=4,
                            linewidth=1.6, zorder=3)
    tickets = [row for row in summary.get("tickets", []) if tickets_x and tickets_x(row) and row.get("accuracy_points")]
    for row in tickets:
        ax.scatter([tickets_x(row)], [row["accuracy_points"]], marker="*", s=110, color="black", zorder=3)
    split = summary.get("settings", {}).get("primary_dev")
    ax.set_ylabel(f"dev accuracy{f' ({split})' if split else ''}, points")
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    ax.grid(alpha=0.25)
    _scatter_legends(fig, summary, bool(tickets))
    return _finish(fig, path)


def _deployed_latency(measured: dict):
    def x_of(search, record):
        found = measured.get(SCHEMES[search.scheme].latency_backend, {}).get(arch_key(record["arch"]))
        return None if found is None else found["median_ms"]
    return x_of


def accuracy_vs_latency(searches, summary: dict, measured: dict, path: str) -> PlotInfo:
    """Every evaluated arch (search seed) at its measured latency in the search's scheme, and each
    choice as the mean with its min-max over seeds; colour = method, marker = budget."""
    return _scatter(searches, summary, path, _deployed_latency(measured),
                    lambda row: row["measured_latency_ms_deployed"], "Dev accuracy vs measured latency",
                    "measured latency in the deployed scheme, ms (batch 1, seq 128, 1 thread)", budget_lines=True,
                    tickets_x=lambda row: row.get("latency_ms_int8"))


def accuracy_vs_params(searches, summary: dict, path: str) -> PlotInfo:
    """The paper's "bigger" made visible: accuracy against encoder parameters (Transformer layers,
    without embeddings, pooler and classifier) per method; colour = method, marker = budget."""
    def x_of(search, record):
        value = record.get("encoder_parameter_size")
        return None if value is None else value / 1e6

    def row_x(row):
        return None if row.get("encoder_params") is None else row["encoder_params"] / 1e6

    return _scatter(searches, summary, path, x_of, row_x, "Dev accuracy vs encoder size",
                    "encoder parameters, millions (Transformer layers; no embeddings, pooler, classifier)",
                    budget_lines=False)


def _coinciding(curves: list[tuple[str, list, list]]) -> dict[str, str]:
    """Method -> the earlier method whose curve it repeats exactly (so its legend can say so)."""
    same = {}
    for i, (method, xs, ys) in enumerate(curves):
        for other, oxs, oys in curves[:i]:
            if list(xs) == list(oxs) and np.allclose(ys, oys):
                same[method] = other
                break
    return same


def _touch(a: tuple, b: tuple) -> bool:
    """Two curves ``(method, xs, ys)`` pass through one same point (so one could hide the other)."""
    points = {(x, round(float(y), 9)) for x, y in zip(a[1], a[2])}
    return any((x, round(float(y), 9)) in points for x, y in zip(b[1], b[2]))


def _curves_per_budget(summary: dict, curves_of, path: str, title: str, xlabel: str, ylabel: str,
                       step: bool) -> PlotInfo:
    """One panel per budget, one line per method (colour = method; random searches dashed). In a panel
    where curves meet, each is drawn thinner on top of the earlier ones, so none hides another; a
    curve that repeats an earlier one entirely is also named in the legend."""
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    budgets = summary["budgets"]
    panels = max(1, len(budgets))
    fig, axes = _figure(4.3 * panels + 3.8, 4.4, panels)
    drawn: list[str] = []
    repeats: dict[str, list[str]] = {}  # method -> "<other> at <budget>" where its curve repeats another's
    widths: dict[str, float] = {}
    for ax, entry in zip(axes, budgets):
        curves = [(method, *zip(*points)) for method, points in curves_of(entry) if points]
        same = _coinciding(curves)
        # curves that share a point anywhere are nested: each later one thinner, on top of the earlier
        nested = any(_touch(a, b) for i, a in enumerate(curves) for b in curves[:i])
        for order, (method, xs, ys) in enumerate(curves):
            width = 2.0 + 2.2 * (len(curves) - 1 - order) if nested else 2.0
            widths[f"{entry['budget_ms']:g} ms {method}"] = width
            if method in same:
                repeats.setdefault(method, []).append(
                    f"{METHOD_LABELS[same[method]].split(' (')[0]} at {entry['budget_ms']:g} ms")
            kwargs = dict(color=METHOD_COLOURS.get(method, "black"), linewidth=width, zorder=2 + order,
                          linestyle="--" if method.startswith("random") else "-", marker="o",
                          markersize=3 + width)
            (ax.step(xs, ys, where="post", **kwargs) if step else ax.plot(xs, ys, **kwargs))
            if method not in drawn:
                drawn.append(method)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(f"budget {entry['budget_ms']:g} ms", fontsize=10)
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.25)
        if not curves:
            ax.text(0.5, 0.5, "nothing to show", ha="center", va="center", transform=ax.transAxes)
    axes[0].set_ylabel(ylabel)
    if not budgets:
        axes[0].text(0.5, 0.5, "nothing to show", ha="center", va="center", transform=axes[0].transAxes)
    fig.suptitle(title)
    handles = []
    for method in [m for m in METHOD_ORDER if m in drawn]:
        label = METHOD_LABELS[method]
        if method in repeats:
            label += "\n  (same curve as " + ", ".join(repeats[method]) + ")"
        handles.append(Line2D([], [], color=METHOD_COLOURS.get(method, "black"), marker="o", label=label,
                              linestyle="--" if method.startswith("random") else "-"))
    _sectioned_legend(fig, [("colour: method", handles)], "outside lower center", columns=2 if len(handles) > 1 else 1)
    info = _finish(fig, path)
    info.line_widths = widths
    return info


def search_progress(summary: dict, path: str) -> PlotInfo:
    """Best fitness so far against the number of evaluations (search seed), per budget and method."""
    def curves(entry):
        return [(method, [(r["evaluations"], r["best_so_far_points"]) for r in rows
                          if r["best_so_far_points"] is not None])
                for method, rows in sorted(entry["progress"].items(), key=lambda item: METHOD_ORDER.index(item[0]))]

    return _curves_per_budget(summary, curves, path, "Best fitness so far vs evaluations",
                              "evaluations (fine-tunes at the search seed)", "best fitness so far, points", step=True)


def fitness_per_generation(searches, path: str) -> PlotInfo:
    """Best fitness so far after each generation (0 = the first), per budget and method."""
    from search.history import fitness_by_generation

    by_budget: dict[float, list] = {}
    for search in searches:
        method = SEARCH_METHODS.get((search.scheme, search.strategy))
        if method is None:
            continue
        split = primary_split(search.records[0])
        fitness = {}
        for record in search.search_records():
            value = _metric(record, search.scheme, split)
            if value is not None:
                fitness[arch_key(record["arch"])] = value
        rows = [r for r in fitness_by_generation(search.log, fitness) if r["best_so_far"] is not None]
        by_budget.setdefault(search.budget_ms, []).append(
            (method, [(r["generation"], 100 * r["best_so_far"]) for r in rows]))
    entries = [{"budget_ms": budget, "curves": sorted(curves, key=lambda c: METHOD_ORDER.index(c[0]))}
               for budget, curves in sorted(by_budget.items())]
    return _curves_per_budget({"budgets": entries}, lambda entry: entry["curves"], path,
                              "Best fitness so far, by generation", "generation (0 = the first)",
                              "best fitness so far, points", step=False)


def predicted_vs_measured(searches, predictors: dict, measured: dict, path: str) -> PlotInfo:
    """Per backend, predicted vs re-measured latency of every evaluated arch; held-out archs (off
    the predictor's latency grid) as filled circles, on-grid ones as open squares."""
    backends = [b for b in predictors if measured.get(b)]
    fig, axes = _figure(4.8 * max(1, len(backends)), 4.4, max(1, len(backends)))
    archs = {arch_key(r["arch"]): r["arch"] for s in searches for r in s.records}
    if not backends:
        axes[0].text(0.5, 0.5, "no predictor with re-measured archs", ha="center", va="center")
        axes[0].axis("off")
    for ax, backend in zip(axes, backends):
        keys = [k for k in archs if k in measured[backend]]
        truth = np.array([float(measured[backend][k]["median_ms"]) for k in keys])
        pred = np.asarray(predictors[backend].predict_many([archs[k] for k in keys]), dtype=float)
        grid = predictors[backend].metadata.get("space_definition")
        space = SearchSpace.from_dict(grid) if isinstance(grid, dict) else None
        held = np.array([space is not None and not space.contains(archs[k]) for k in keys], dtype=bool)
        if (~held).any():
            ax.scatter(truth[~held], pred[~held], s=36, facecolors="none", edgecolors="tab:blue", marker="s",
                       linewidths=1.3, label=f"on the latency grid ({int((~held).sum())})")
        if held.any():
            ax.scatter(truth[held], pred[held], s=36, color="tab:red", edgecolors="black", linewidths=0.5,
                       label=f"held out ({int(held.sum())})")
        low, high = float(min(truth.min(), pred.min())), float(max(truth.max(), pred.max()))
        ax.plot([low, high], [low, high], color="grey", linewidth=1, label="predicted = measured")
        mapd = 100 * float(np.mean(np.abs(pred / truth - 1)))
        bias = 100 * float(np.median(pred / truth - 1))
        ax.set_title(f"{backend}: MAPD {mapd:.1f} %, bias {bias:+.1f} %", fontsize=9)
        ax.set_xlabel("re-measured latency, ms")
        ax.set_ylabel("predicted latency, ms")
        ax.grid(alpha=0.25)
        ax.legend(fontsize=8)
    fig.suptitle("Predicted vs re-measured latency of the evaluated archs")
    return _finish(fig, path)
