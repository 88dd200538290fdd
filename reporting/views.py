"""Markdown and CSV views of ``summary.json`` (one row per budget and method)."""

from __future__ import annotations

import csv
import json
import os

from utils import atomic_write


def _f(value, digits=2) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "**no**"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _acc(row: dict) -> str:
    acc = row["accuracy_points"]
    if not acc:
        return "–"
    return f"{acc['mean']:.1f} ± {acc['std']:.1f} (n={acc['n']})" if acc["n"] > 1 else f"{acc['mean']:.1f} (n=1)"


def _splits(row: dict) -> str:
    parts = [f"{v['mean']:.1f}" for v in row["accuracy_by_split_points"].values() if v]
    return "/".join(parts) if parts else "–"


def flat_rows(summary: dict) -> list[dict]:
    rows = []
    for entry in summary["budgets"]:
        for method, row in entry["methods"].items():
            acc = row["accuracy_points"] or {}
            flat = {"budget_ms": entry["budget_ms"], "method": method, "label": row["label"], "search": row["search"],
                    "arch": row["arch_summary"], "total_params": row["total_params"],
                    "encoder_params": row["encoder_params"], "size_mb_fp32": row["size_mb_fp32"],
                    "size_mb_deployed": row["size_mb_deployed"], "deployed_scheme": row["deployed_scheme"],
                    "pred_latency_ms_deployed": row["pred_latency_ms_deployed"],
                    "measured_latency_ms_deployed": row["measured_latency_ms_deployed"],
                    "measured_latency_raw_ms_deployed": row.get("measured_latency_raw_ms_deployed"),
                    "latency_unit": row.get("latency_unit"),
                    "budget_fraction": row["budget_fraction"], "within_budget": row["within_budget"],
                    "none_fit": row.get("none_fit"), "learned": row.get("learned"),
                    "none_learned": row.get("none_learned"),
                    "accuracy_mean_points": acc.get("mean"), "accuracy_std_points": acc.get("std"),
                    "accuracy_n": acc.get("n"), "evaluations_total": row["evaluations_total"],
                    "saved_model": row["saved_model"]}
            for split, value in row["accuracy_by_split_points"].items():
                flat[f"accuracy_{split}_mean_points"] = value["mean"] if value else None
            for backend in ("torch_fp32", "torch_dynamic_int8", "ort_dynamic_int8"):
                measured = row.get(f"measured_latency_{backend}")
                flat[f"measured_latency_ms_{backend}"] = measured["median_ms"] if measured else None
                flat[f"pred_latency_ms_{backend}"] = row.get(f"pred_latency_ms_{backend}")
            rows.append(flat)
    return rows


def _measured(row: dict) -> str:
    """The measured latency and what it is in: ``4.50 table (raw 4.71)`` or ``4.71 raw``."""
    value, unit = row["measured_latency_ms_deployed"], row.get("latency_unit")
    if value is None:
        return "–"
    if unit == "table":
        raw = row.get("measured_latency_raw_ms_deployed")
        return f"{value:.2f} table unit" + (f" (raw {raw:.2f})" if raw is not None else "")
    return f"{value:.2f} raw"


def markdown_table(summary: dict) -> str:
    header = ("| budget (ms) | method | arch | encoder / total params (M) | size fp32 / deployed (MB) "
              "| pred. / measured latency, deployed (ms) | of budget | within | accuracy (points, mean ± std) "
              "| per dev split | fine-tunes |")
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for entry in summary["budgets"]:
        for row in entry["methods"].values():
            enc = row["encoder_params"] / 1e6 if row["encoder_params"] else None
            fraction = None if row["budget_fraction"] is None else f"{100 * row['budget_fraction']:.0f} %"
            if row.get("none_fit") and not row.get("none_learned"):
                fraction = f"{fraction} (no finalist fits: no winner)"
            accuracy = _acc(row)
            if row.get("none_learned"):
                accuracy += " **did not learn: no winner**"
            elif row.get("learned") is False:
                accuracy += " **did not learn**"
            lines.append(
                f"| {entry['budget_ms']:g} | {row['label']} | {row['arch_summary']} | {_f(enc)} / "
                f"{_f(row['total_params'] / 1e6)} | {_f(row['size_mb_fp32'], 1)} / {_f(row['size_mb_deployed'], 1)} "
                f"| {_f(row['pred_latency_ms_deployed'])} / {_measured(row)} | {_f(fraction)} "
                f"| {_f(row['within_budget'])} | {accuracy} | {_splits(row)} | {row['evaluations_total']} |")
    return "\n".join(lines)


def unit_lines(summary: dict) -> list[str]:
    """What "table unit" means per backend (the report prints it above the table)."""
    units = summary["settings"].get("latency_units") or {}
    return [f"- {backend}: {text}" for backend, text in sorted(units.items())]


def write_csv(rows: list[dict], path: str) -> None:
    if not rows:
        return
    columns = list(dict.fromkeys(key for row in rows for key in row))
    with atomic_write(path) as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in columns})


def write_json(summary: dict, path: str) -> None:
    with atomic_write(path) as handle:
        json.dump(summary, handle, indent=2, sort_keys=True, allow_nan=False)
        handle.write("\n")


def links(summary: dict, report_dir: str) -> list[str]:
    """Where each winner's saved models are (relative to the report when possible)."""
    lines = []
    for entry in summary["budgets"]:
        for row in entry["methods"].values():
            if row.get("saved_model"):
                path = os.path.relpath(row["saved_model"], report_dir)
                files = sorted(os.listdir(row["saved_model"])) if os.path.isdir(row["saved_model"]) else []
                kinds = ", ".join(name for name in files if name.startswith("model"))
                lines.append(f"- {entry['budget_ms']:g} ms, {row['label']}: [{path}]({path}) ({kinds})")
    return lines
