"""Latency tables side by side: per-arch latency of several backends (e.g. PyTorch fp32, PyTorch
int8, ONNX Runtime int8) for the archs they share, and the speedup of each over the first.

    python -m latency.compare conf_datasets/lat_torch_fp32.jsonl conf_datasets/lat_torch_dynamic_int8.jsonl \\
        conf_datasets/lat_ort_dynamic_int8.jsonl --out_prefix reports/latency_compare

writes ``<prefix>.md`` (summary + per-arch table), ``<prefix>.csv`` and ``<prefix>.png``.
"""

from __future__ import annotations

import argparse
import csv
import os

import numpy as np

from latency.table import read_latency_table
from utils import UserError, arch_summary, atomic_write, get_logger, run_cli

logger = get_logger("latency.compare")


def label_of(records: list[dict], path: str) -> str:
    backends = {record.get("backend", "unknown") for record in records}
    return backends.pop() if len(backends) == 1 and "unknown" not in backends else os.path.basename(path)


def join_tables(tables: dict[str, list[dict]]) -> list[dict]:
    """One row per arch present in every table: ``{"arch", "summary", <label>: median ms, ...}``,
    ordered by the first table's latency."""
    labels = list(tables)
    maps = {label: {} for label in labels}
    for label, records in tables.items():
        for record in records:
            maps[label].setdefault(record["arch_key"], record)
    shared = set(maps[labels[0]])
    for label in labels[1:]:
        shared &= set(maps[label])
    rows = []
    for key in shared:
        first = maps[labels[0]][key]
        row = {"arch": first["arch"], "summary": arch_summary(first["arch"])}
        row.update({label: float(maps[label][key]["median_ms"]) for label in labels})
        rows.append(row)
    rows.sort(key=lambda row: row[labels[0]])
    return rows


def speedup_summary(rows: list[dict], slow: str, fast: str) -> dict:
    """Per-arch speedup ``slow / fast``: median, p10, p90, min, max over the shared archs."""
    ratio = np.asarray([row[slow] / row[fast] for row in rows], dtype=np.float64)
    if not len(ratio):
        return {"n": 0}
    return {"n": int(len(ratio)), "median": float(np.median(ratio)), "p10": float(np.percentile(ratio, 10)),
            "p90": float(np.percentile(ratio, 90)), "min": float(ratio.min()), "max": float(ratio.max())}


def write_report(prefix: str, rows: list[dict], labels: list[str], max_rows: int = 60) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    base = labels[0]
    lines = [f"# Latency side by side ({len(rows)} shared archs)", "",
             "| speedup over " + base + " | n | median | p10 | p90 | min | max |", "|---|---|---|---|---|---|---|"]
    for label in labels[1:]:
        s = speedup_summary(rows, base, label)
        lines.append(f"| {label} | {s['n']} | {s['median']:.2f}x | {s['p10']:.2f}x | {s['p90']:.2f}x | "
                     f"{s['min']:.2f}x | {s['max']:.2f}x |")
    lines += ["", "| arch | " + " | ".join(f"{label} ms" for label in labels) + " | "
              + " | ".join(f"{base}/{label}" for label in labels[1:]) + " |",
              "|---" * (1 + 2 * len(labels) - 1) + "|"]
    step = max(1, len(rows) // max_rows)
    for row in rows[::step]:
        lines.append(f"| {row['summary']} | " + " | ".join(f"{row[label]:.2f}" for label in labels) + " | "
                     + " | ".join(f"{row[base] / row[label]:.2f}x" for label in labels[1:]) + " |")
    if step > 1:
        lines.append(f"\n(every {step}th arch by {base} latency; all rows in {prefix}.csv)")
    os.makedirs(os.path.dirname(os.path.abspath(prefix)), exist_ok=True)
    with atomic_write(prefix + ".md") as handle:
        handle.write("\n".join(lines) + "\n")
    with atomic_write(prefix + ".csv") as handle:
        writer = csv.writer(handle)
        writer.writerow(["arch"] + [f"{label}_ms" for label in labels])
        for row in rows:
            writer.writerow([row["summary"]] + [f"{row[label]:.4f}" for label in labels])

    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2), dpi=110)
    x = np.asarray([row[base] for row in rows])
    for label in labels[1:]:
        y = np.asarray([row[label] for row in rows])
        axes[0].scatter(x, y, s=8, alpha=0.6, label=label)
        axes[1].scatter(x, x / y, s=8, alpha=0.6, label=label)
    axes[0].plot([x.min(), x.max()], [x.min(), x.max()], color="black", linewidth=0.8)
    axes[0].set_xlabel(f"{base} latency (ms)")
    axes[0].set_ylabel("latency (ms)")
    axes[1].axhline(1.0, color="black", linewidth=0.8)
    axes[1].set_xlabel(f"{base} latency (ms)")
    axes[1].set_ylabel(f"speedup over {base}")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_write(prefix + ".png", "wb") as handle:
        fig.savefig(handle, format="png")
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m latency.compare", description=__doc__.split("\n\n")[0])
    parser.add_argument("tables", nargs="+", help="latency tables (JSONL or .tmp); the first is the baseline")
    parser.add_argument("--labels", nargs="+", default=None, help="column names (default: each table's backend)")
    parser.add_argument("--out_prefix", default="reports/latency_compare")
    args = parser.parse_args(argv)
    if len(args.tables) < 2:
        raise UserError("give at least two tables to compare")
    if args.labels and len(args.labels) != len(args.tables):
        raise UserError(f"--labels: {len(args.labels)} label(s) for {len(args.tables)} tables")
    tables = {}
    for index, path in enumerate(args.tables):
        records = read_latency_table(path)
        label = args.labels[index] if args.labels else label_of(records, path)
        if label in tables:
            label = f"{label}#{index}"
        tables[label] = records
    rows = join_tables(tables)
    if not rows:
        raise UserError("the tables share no arch")
    labels = list(tables)
    write_report(args.out_prefix, rows, labels)
    for label in labels[1:]:
        s = speedup_summary(rows, labels[0], label)
        print(f"{labels[0]} / {label}: median {s['median']:.2f}x (p10 {s['p10']:.2f}x, p90 {s['p90']:.2f}x) "
              f"over {s['n']} archs")
    logger.info("wrote %s.md, %s.csv and %s.png", args.out_prefix, args.out_prefix, args.out_prefix)
    return 0


if __name__ == "__main__":
    run_cli(main)
