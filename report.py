#!/usr/bin/env python
"""The paper's comparison: Bigger&Faster (int8 search) vs the AutoTinyBERT-style fp32 search, per budget.

    python report.py --output_root output --cands_dir cands \\
        --fp_predictor conf_datasets/lat_predictor.pt --int8_predictor conf_datasets/lat_predictor_quant.pt \\
        --measured latency/evaluated_fp32.jsonl latency/evaluated_int8.jsonl --report_dir reports

Reads every search under ``--output_root`` (directories ``kd_<fp|ptq>_<budget>`` holding
``subbert.results.jsonl``), the two latency predictors, the latency tables measured on the
evaluated archs, and the search logs in ``--cands_dir``. Writes ``report.md`` and ``report.csv``
(per budget and method: arch, parameters, size in MB fp32 vs int8, predicted and measured latency
fp32 and int8, dev metric fp32 and int8) and PNG plots: accuracy vs measured latency, predicted
vs measured latency, best fitness per generation. Works on the demo and on full-scale outputs.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import re
from collections import defaultdict

from evaluation.results import JSONL_NAME, ResultsStore
from search.history import default_log_path, fitness_by_generation, read_search_log
from utils import UserError, arch_key, arch_summary, atomic_write, get_logger, run_cli

logger = get_logger("report")

SEARCH_DIR = re.compile(r"^kd_(fp|ptq)_([0-9]+(?:\.[0-9]+)?)$")
METHOD_NAMES = {"fp": "AutoTinyBERT (fp32 search)", "ptq": "Bigger&Faster (int8 search)"}
DEPLOYED_BACKEND = {"fp": "fp32", "ptq": "int8"}


# --------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------


def find_searches(output_root: str) -> list[dict]:
    """Every ``kd_<type>_<budget>`` directory with results, sorted by budget then type."""
    if not os.path.isdir(output_root):
        raise UserError(f"--output_root: {output_root} is not a directory")
    searches = []
    for name in sorted(os.listdir(output_root)):
        match = SEARCH_DIR.match(name)
        if match:
            records = ResultsStore(os.path.join(output_root, name)).records()
            if records:
                searches.append({"name": name, "type": match.group(1), "budget": float(match.group(2)),
                                 "records": records})
    if not searches:
        raise UserError(f"--output_root: no kd_<fp|ptq>_<ms>/{JSONL_NAME} under {output_root}")
    return sorted(searches, key=lambda s: (s["budget"], s["type"] != "fp"))


# The latency backend each deployed precision is measured with (the searches' own predictors).
PRECISION_OF_BACKEND = {"torch_fp32": "fp32", "torch_dynamic_int8": "int8"}


def load_measured(paths: list[str]) -> dict[str, dict[str, float]]:
    """``{"fp32"|"int8": {arch_key: median_ms}}`` from latency tables (PyTorch backends)."""
    from latency.table import read_latency_table

    measured: dict[str, dict[str, float]] = defaultdict(dict)
    for path in paths:
        for record in read_latency_table(path):
            precision = PRECISION_OF_BACKEND.get(record.get("backend"))
            if precision is None:
                raise UserError(f"{path}: backend {record.get('backend')!r} is not one of {', '.join(PRECISION_OF_BACKEND)}")
            measured[precision][record["arch_key"]] = float(record["median_ms"])
    return measured


def load_predictors(fp_path: str | None, int8_path: str | None) -> dict:
    from latency_predictor import LatencyPredictor

    return {name: LatencyPredictor.load(path) for name, path in (("fp32", fp_path), ("int8", int8_path)) if path}


# --------------------------------------------------------------------------------------
# The comparison table
# --------------------------------------------------------------------------------------


def _metric(record: dict, precision: str, split: str) -> float | None:
    metrics = record.get(f"metrics_{precision}") or {}
    value = metrics.get(split, {}).get("primary")
    return None if value is None else float(value)


def _dev_splits(record: dict) -> list[str]:
    return list((record.get("metrics_fp32") or {}).keys())


def winner(search: dict) -> dict:
    """The search's answer: the evaluated arch with the best fitness (``best_acc``)."""
    return max(search["records"], key=lambda r: (float(r["best_acc"]), -r["parameter_size"]))


def table_rows(searches: list[dict], predictors: dict, measured: dict) -> list[dict]:
    rows = []
    for search in searches:
        best = winner(search)
        key = arch_key(best["arch"])
        row = {
            "budget_ms": search["budget"], "method": METHOD_NAMES[search["type"]], "type": search["type"],
            "arch": arch_summary(best["arch"]), "params_m": best["parameter_size"] / 1e6,
            "size_mb_fp32": best.get("size_mb_fp32"), "size_mb_int8": best.get("size_mb_int8"),
            "evaluated": len(search["records"]),
        }
        for precision in ("fp32", "int8"):
            predictor = predictors.get(precision)
            row[f"pred_ms_{precision}"] = float(predictor.predict(best["arch"])) if predictor else None
            row[f"measured_ms_{precision}"] = measured.get(precision, {}).get(key)
            for split in _dev_splits(best):
                row[f"dev_{precision}_{split}"] = _metric(best, precision, split)
        deployed = row[f"measured_ms_{DEPLOYED_BACKEND[search['type']]}"]
        row["within_budget"] = None if deployed is None else deployed <= search["budget"]
        rows.append(row)
    return rows


def _fmt(value, digits=2):
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "**no**"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _dev_text(row: dict, precision: str) -> str:
    values = [row[k] for k in sorted(row) if k.startswith(f"dev_{precision}_") and row[k] is not None]
    return "/".join(f"{100 * v:.1f}" for v in values) if values else "–"


def markdown_table(rows: list[dict]) -> str:
    header = ("| budget (ms) | method | arch | params (M) | size fp32 / int8 (MB) | pred. latency fp32 / int8 (ms) "
              "| measured latency fp32 / int8 (ms) | within budget | dev fp32 | dev int8 |")
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for row in rows:
        lines.append(
            f"| {row['budget_ms']:g} | {row['method']} | {row['arch']} | {_fmt(row['params_m'])} "
            f"| {_fmt(row['size_mb_fp32'], 1)} / {_fmt(row['size_mb_int8'], 1)} "
            f"| {_fmt(row['pred_ms_fp32'])} / {_fmt(row['pred_ms_int8'])} "
            f"| {_fmt(row['measured_ms_fp32'])} / {_fmt(row['measured_ms_int8'])} | {_fmt(row['within_budget'])} "
            f"| {_dev_text(row, 'fp32')} | {_dev_text(row, 'int8')} |")
    return "\n".join(lines)


def claims(rows: list[dict]) -> list[str]:
    """The paper's claims, checked per budget and stated in words with the numbers."""
    by_budget = defaultdict(dict)
    for row in rows:
        by_budget[row["budget_ms"]][row["type"]] = row
    sentences = []
    for budget, pair in sorted(by_budget.items()):
        if {"fp", "ptq"} - set(pair):
            sentences.append(f"- {budget:g} ms: only the {', '.join(pair)} search ran; no comparison.")
            continue
        fp, ptq = pair["fp"], pair["ptq"]
        bigger = ptq["params_m"] > fp["params_m"]
        fits = ptq["within_budget"]
        fit_text = ("has no measured int8 latency" if fits is None else
                    f"measures {ptq['measured_ms_int8']:.2f} ms in int8, "
                    f"{'within' if fits else 'OVER'} the {budget:g} ms budget")
        fp_fit = fp["within_budget"]
        fp_text = "" if fp_fit is None else f" (fp32 {fp['measured_ms_fp32']:.2f} ms, {'within' if fp_fit else 'over'} budget)"
        acc = ""
        # deployed accuracy: int8 for the int8 search, fp32 for the fp32 search, on the primary dev set
        ptq_acc = ptq.get("dev_int8_" + _first_split(ptq))
        fp_acc = fp.get("dev_fp32_" + _first_split(fp))
        if ptq_acc is not None and fp_acc is not None:
            acc = (f"; deployed accuracy int8 {100 * ptq_acc:.1f} vs fp32 {100 * fp_acc:.1f} "
                   f"({100 * (ptq_acc - fp_acc):+.1f} points)")
        sentences.append(
            f"- {budget:g} ms: Bigger&Faster chose {ptq['arch']} ({ptq['params_m']:.2f} M parameters), which {fit_text}; "
            f"the fp32 search chose {fp['arch']} ({fp['params_m']:.2f} M){fp_text}. The int8 choice is "
            f"{'bigger' if bigger else 'NOT bigger'} ({ptq['params_m'] / fp['params_m']:.2f}x the parameters){acc}.")
    return sentences


def _first_split(row: dict) -> str:
    splits = sorted(k[len("dev_fp32_"):] for k in row if k.startswith("dev_fp32_"))
    return splits[0] if splits else ""


# --------------------------------------------------------------------------------------
# Plots
# --------------------------------------------------------------------------------------


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_accuracy_vs_latency(searches: list[dict], measured: dict, predictors: dict, path: str) -> None:
    """Every evaluated arch: deployed accuracy vs its latency in the deployed precision."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    colours = {"fp": "tab:blue", "ptq": "tab:red"}
    for search in searches:
        precision = DEPLOYED_BACKEND[search["type"]]
        xs, ys = [], []
        for record in search["records"]:
            latency = measured.get(precision, {}).get(arch_key(record["arch"]))
            if latency is None:  # not measured: left out rather than mixed with predictions
                continue
            xs.append(latency)
            ys.append(100 * float(record["best_acc"]))
        label = f"{METHOD_NAMES[search['type']]} @ {search['budget']:g} ms"
        ax.scatter(xs, ys, s=18, alpha=0.6, color=colours[search["type"]],
                   marker="o" if search["type"] == "ptq" else "s", label=label)
        best = winner(search)
        latency = measured.get(precision, {}).get(arch_key(best["arch"]))
        if latency is not None:
            ax.scatter([latency], [100 * float(best["best_acc"])], s=120, facecolors="none",
                       edgecolors=colours[search["type"]], linewidths=2)
        ax.axvline(search["budget"], color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel("measured latency in the deployed precision (ms; fp32 for fp, int8 for ptq)")
    ax.set_ylabel("dev metric used as fitness (%)")
    ax.set_title("Accuracy vs latency of every evaluated sub-model (circled: chosen)")
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles))
    ax.legend(unique.values(), unique.keys(), fontsize=7, loc="lower right")
    fig.tight_layout()
    _save_figure(fig, path)


def plot_predicted_vs_measured(searches: list[dict], measured: dict, predictors: dict, path: str) -> None:
    import numpy as np

    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(9, 4))
    archs = {arch_key(r["arch"]): r["arch"] for s in searches for r in s["records"]}
    for ax, precision in zip(axes, ("fp32", "int8")):
        keys = [k for k in archs if k in measured.get(precision, {})]
        if precision not in predictors or not keys:
            ax.set_title(f"{precision}: no data")
            continue
        truth = np.array([measured[precision][k] for k in keys])
        pred = np.asarray(predictors[precision].predict_many([archs[k] for k in keys]), dtype=float)
        mapd = float(np.mean(np.abs(pred - truth) / truth) * 100)
        ax.scatter(truth, pred, s=12, alpha=0.7)
        low, high = float(min(truth.min(), pred.min())), float(max(truth.max(), pred.max()))
        ax.plot([low, high], [low, high], color="grey", linewidth=1)
        ax.set_title(f"{precision}: {len(keys)} evaluated archs, MAPD {mapd:.1f} %")
        ax.set_xlabel("measured (ms)")
        ax.set_ylabel("predicted (ms)")
    fig.tight_layout()
    _save_figure(fig, path)


def generation_rows(searches: list[dict], cands_dir: str | None) -> list[dict]:
    rows = []
    for search in searches:
        if not cands_dir:
            continue
        log = read_search_log(default_log_path(os.path.join(cands_dir, search["name"] + ".cands")))
        fitness = defaultdict(list)
        for record in search["records"]:
            fitness[arch_key(record["arch"])].append(float(record["best_acc"]))
        mean_fitness = {k: sum(v) / len(v) for k, v in fitness.items()}
        for row in fitness_by_generation(log, mean_fitness):
            rows.append(dict(row, search=search["name"]))
    return rows


def plot_fitness_per_generation(rows: list[dict], path: str) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    by_search = defaultdict(list)
    for row in rows:
        if row["best_so_far"] is not None:
            by_search[row["search"]].append((row["generation"], 100 * row["best_so_far"]))
    for name, points in sorted(by_search.items()):
        points.sort()
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=name,
                linestyle="-" if "_ptq_" in name else "--")
    ax.set_xlabel("generation (0 = first generation)")
    ax.set_ylabel("best fitness so far (%)")
    ax.set_title("Best fitness per generation")
    if by_search:
        ax.legend(fontsize=7)
    else:
        ax.text(0.5, 0.5, "no search logs found", ha="center", va="center", transform=ax.transAxes)
    fig.tight_layout()
    _save_figure(fig, path)


def _save_figure(fig, path: str) -> None:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    with atomic_write(path, "wb", encoding=None) as handle:
        handle.write(buffer.getvalue())
    _pyplot().close(fig)


# --------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------


def write_csv(rows: list[dict], path: str) -> None:
    columns = sorted({key for row in rows for key in row}, key=lambda k: (k not in rows[0], k))
    with atomic_write(path) as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in columns})


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_root", default="output", help="directory holding kd_<fp|ptq>_<ms>/ result dirs")
    parser.add_argument("--cands_dir", default="cands", help="directory holding the searches' .cands and logs")
    parser.add_argument("--fp_predictor", default="conf_datasets/lat_predictor.pt")
    parser.add_argument("--int8_predictor", default="conf_datasets/lat_predictor_quant.pt")
    parser.add_argument("--measured", nargs="*", default=[],
                        help="latency JSONL tables measured on the evaluated archs (fp32 and/or int8)")
    parser.add_argument("--report_dir", default="reports")
    parser.add_argument("--title", default="Bigger&Faster vs AutoTinyBERT-style fp32 search")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    searches = find_searches(args.output_root)
    for path in (args.fp_predictor, args.int8_predictor, *args.measured):
        if path and not os.path.isfile(path):
            raise UserError(f"{path}: no such file")
    predictors = load_predictors(args.fp_predictor, args.int8_predictor)
    measured = load_measured(args.measured)
    rows = table_rows(searches, predictors, measured)
    generations = generation_rows(searches, args.cands_dir)
    os.makedirs(args.report_dir, exist_ok=True)
    write_csv(rows, os.path.join(args.report_dir, "report.csv"))
    if generations:
        write_csv(generations, os.path.join(args.report_dir, "generations.csv"))
    plot_accuracy_vs_latency(searches, measured, predictors, os.path.join(args.report_dir, "accuracy_vs_latency.png"))
    plot_predicted_vs_measured(searches, measured, predictors, os.path.join(args.report_dir, "predicted_vs_measured.png"))
    plot_fitness_per_generation(generations, os.path.join(args.report_dir, "fitness_per_generation.png"))
    text = [f"# {args.title}", "",
            "Per latency budget, the arch each search chose (best fitness among the evaluated sub-models). "
            "Dev metrics in %, MNLI as matched/mismatched. Measured latency: batch 1, seq 128, the latency "
            "tables' protocol.", "", markdown_table(rows), "", "## What the numbers say", "", *claims(rows), "",
            "## Plots", "", "![accuracy vs latency](accuracy_vs_latency.png)", "",
            "![predicted vs measured latency](predicted_vs_measured.png)", "",
            "![best fitness per generation](fitness_per_generation.png)", ""]
    with atomic_write(os.path.join(args.report_dir, "report.md")) as handle:
        handle.write("\n".join(text))
    logger.info("wrote %s/report.md, report.csv and 3 plots", args.report_dir)
    print("\n".join(claims(rows)))
    return 0


if __name__ == "__main__":
    run_cli(main)
