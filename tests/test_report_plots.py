"""The report's plots read in five seconds (issue 24): one colour per method and one marker per budget,
legends that say so, titles that fit and promise nothing that did not run (no random search in a
legend or title unless one ran), coinciding curves named, and the accuracy-vs-encoder-size plot.
Fixtures: 1 and 2 budgets, with and without a random search."""

from __future__ import annotations

import os
import struct

import pytest

from reporting import plots
from reporting.inputs import load_measured, load_searches
from reporting.summary import METHOD_LABELS, build_summary
from test_report import BIG, HUGE, MID, SMALL, _search, _table
from utils import make_arch

EXTRA_A, EXTRA_B = make_arch(4, 384, 1280, 4), make_arch(3, 384, 1536, 4)
POINTS = ["[points]", "an evaluated arch (search seed)", "the search's choice: mean, bar = min-max over seeds"]


def build(root, budgets: int, random: bool):
    _search(root, "kd_fp_5", "torch_fp32", "evolution", 5.0, [(SMALL, 0.66), (MID, 0.60), (BIG, 0.50)],
            [(SMALL, [(43, 0.50, 0.49), (44, 0.51, 0.50)]), (MID, [(43, 0.61, 0.58), (44, 0.59, 0.57)])])
    _search(root, "kd_ptq_5", "torch_dynamic_int8", "evolution", 5.0, [(MID, 0.59), (BIG, 0.62), (HUGE, 0.40)],
            [(BIG, [(43, 0.63, None), (44, 0.61, None)])])
    if random:
        _search(root, "kd_ptq_5_random", "torch_dynamic_int8", "random", 5.0,
                [(SMALL, 0.50), (MID, 0.58), (HUGE, 0.40)], [(MID, [(43, 0.57, None), (44, 0.59, None)])])
    if budgets == 2:  # at 8 ms both searches evaluate the same archs with the same fitness: identical curves
        same = [(BIG, 0.66), (EXTRA_A, 0.60), (MID, 0.60)]
        _search(root, "kd_fp_8", "torch_fp32", "evolution", 8.0, same, [(BIG, [(43, 0.64, 0.63), (44, 0.65, 0.64)])])
        _search(root, "kd_ptq_8", "torch_dynamic_int8", "evolution", 8.0, same,
                [(BIG, [(43, 0.64, None), (44, 0.65, None)])])
        if random:
            _search(root, "kd_ptq_8_random", "torch_dynamic_int8", "random", 8.0,
                    [(EXTRA_B, 0.62), (EXTRA_A, 0.60), (SMALL, 0.5)], [(EXTRA_B, [(43, 0.63, None), (44, 0.60, None)])])
    latency = [(SMALL, 3.0), (MID, 4.8), (BIG, 7.5), (HUGE, 12.0), (EXTRA_A, 7.9), (EXTRA_B, 7.0)]
    _table(root / "fp32.jsonl", "torch_fp32", latency)
    _table(root / "int8.jsonl", "torch_dynamic_int8", [(arch, 0.7 * ms) for arch, ms in latency])
    searches = load_searches(str(root / "cands"), str(root / "output"))
    measured, comparability = load_measured([str(root / "fp32.jsonl"), str(root / "int8.jsonl")])
    return searches, measured, build_summary(searches, {}, measured, [], comparability)


def png_size(path):
    with open(path, "rb") as handle:
        header = handle.read(24)
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", header[16:24])


def methods_present(budgets, random):
    present = ["autotinybert_fp32", "autotinybert_int8_ptq", "bigger_and_faster_int8"]
    return present + (["random_search_int8"] if random else [])


@pytest.mark.parametrize("budgets,random", [(1, False), (1, True), (2, False), (2, True)])
def test_plots_say_what_colour_and_marker_mean(tmp_path, budgets, random):
    searches, measured, summary = build(tmp_path, budgets, random)
    labels = [METHOD_LABELS[m] for m in methods_present(budgets, random)]
    budget_entries = ["5 ms"] + (["8 ms"] if budgets == 2 else [])
    infos = {
        "latency": plots.accuracy_vs_latency(searches, summary, measured, str(tmp_path / "lat.png")),
        "params": plots.accuracy_vs_params(searches, summary, str(tmp_path / "params.png")),
        "progress": plots.search_progress(summary, str(tmp_path / "progress.png")),
        "generations": plots.fitness_per_generation(searches, str(tmp_path / "generations.png")),
        "predicted": plots.predicted_vs_measured(searches, {}, measured, str(tmp_path / "predicted.png")),
    }
    for info in infos.values():
        assert info.overflowing == [], (info.path, info.overflowing)
        width, height = png_size(info.path)
        assert width <= 1600 and height <= 700, (info.path, width, height)  # readable at real size
        words = " ".join(info.titles + info.legend).lower()
        assert ("random" in words) == (random and info is not infos["predicted"]), info.path
    for name in ("latency", "params"):
        assert infos[name].legend == ["[colour: method]", *labels, "[marker: budget]", *budget_entries, *POINTS]
    assert infos["latency"].titles == ["Dev accuracy vs measured latency"]
    assert infos["params"].titles == ["Dev accuracy vs encoder size"]
    panels = [f"budget {b}" for b in budget_entries]
    assert infos["progress"].titles == ["Best fitness so far vs evaluations", *panels]
    assert infos["generations"].titles == ["Best fitness so far, by generation", *panels]
    curve_labels = [METHOD_LABELS[m] for m in ("autotinybert_fp32", "bigger_and_faster_int8")]
    if random:
        curve_labels.append(METHOD_LABELS["random_search_int8"])
    if budgets == 2:  # the 8 ms curves coincide: the second is named as such, not hidden
        curve_labels[1] += "\n  (same curve as AutoTinyBERT at 8 ms)"
    for name in ("progress", "generations"):
        assert infos[name].legend == ["[colour: method]", *curve_labels], name
    # curves that never meet are drawn alike; where they meet, each later one is thinner, on top
    widths = infos["progress"].line_widths
    assert widths["5 ms autotinybert_fp32"] == widths["5 ms bigger_and_faster_int8"] == 2.0
    if budgets == 2:
        assert widths["8 ms autotinybert_fp32"] > widths["8 ms bigger_and_faster_int8"] >= 2.0
        if random:
            assert widths["8 ms bigger_and_faster_int8"] > widths["8 ms random_search_int8"] == 2.0


def test_tickets_join_the_method_legend(tmp_path):
    searches, measured, summary = build(tmp_path, 1, False)
    summary["tickets"] = [{"latency_ms_int8": 6.0, "accuracy_points": 61.0}]
    info = plots.accuracy_vs_latency(searches, summary, measured, str(tmp_path / "lat.png"))
    assert info.legend.index(plots.TICKETS_LABEL) == info.legend.index("[marker: budget]") - 1


def test_a_title_under_a_legend_or_off_the_figure_is_reported(tmp_path):
    fig, (ax,) = plots._figure(3, 2)
    fig.suptitle("a title much too long for a figure three inches wide, so it runs off both of its edges")
    ax.plot([0, 1], [0, 1], label="x")
    fig.legend(loc="upper center")
    info = plots._finish(fig, str(tmp_path / "bad.png"))
    assert info.overflowing and any("under the legend" in text for text in info.overflowing)
    assert os.path.isfile(tmp_path / "bad.png")
