"""Latency budgets for the demo, read off its own int8 latency table.

The paper's budgets (5/10/15/20 ms) are for its space and CPU; the demo's grid and this machine
give other latencies, so the demo takes percentiles of its measured int8 table instead: a budget
that about half the grid meets in int8 leaves the fp32 search a smaller choice than the int8 one.

    python -m demo.budgets demo_run/latency/lat_torch_dynamic_int8.jsonl --percentiles 35 65
"""

from __future__ import annotations

import argparse

import numpy as np

from utils import UserError, run_cli


def suggest_budgets(latencies_ms, percentiles) -> list[float]:
    """Percentiles of the measured latencies, rounded to 0.1 ms, without duplicates."""
    values = np.asarray(list(latencies_ms), dtype=float)
    if values.size == 0:
        raise UserError("no latencies to choose budgets from")
    budgets = []
    for percentile in percentiles:
        if not 0 < percentile < 100:
            raise UserError(f"--percentiles: {percentile} is not between 0 and 100")
        budget = round(float(np.percentile(values, percentile)), 1)
        if budget not in budgets:
            budgets.append(budget)
    return budgets


def main(argv=None) -> int:
    from latency.table import read_latency_table

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("table", help="a latency table (JSONL or .tmp)")
    parser.add_argument("--percentiles", type=float, nargs="+", default=[35.0, 65.0])
    args = parser.parse_args(argv)
    records = read_latency_table(args.table)
    print(" ".join(f"{b:g}" for b in suggest_budgets((r["median_ms"] for r in records), args.percentiles)))
    return 0


if __name__ == "__main__":
    run_cli(main)
