"""What the report shows of a ticket run: one row per round, and the "matching" subnetwork.

``ticket_rows(ticket_dir)`` reads ``tickets.jsonl`` and returns one dict per finished round with
unit-carrying keys (see ``ROW_KEYS``). The matching subnetwork follows the paper's rule: a
subnetwork is *matching* when its dev metric is within the dense model's spread of the dense
(round 0) metric -- at least ``dense - spread`` -- and it learned (``evaluation.learning``: a round
any of whose fine-tunes did not learn is marked, matches nothing and cannot be selected). The
spread is the standard deviation (ddof=1) of the dense model's fine-tune seeds when the run has two
or more; with a single seed there is no measured spread, so a stated tolerance stands in for it
(``SINGLE_SEED_TOLERANCE``, absolute, in the metric's own units) and the rule says so. The selected
row is the sparsest matching round.
"""

from __future__ import annotations

import os

from utils import UserError, read_jsonl

RECORDS_NAME = "tickets.jsonl"  # the per-round records (written by tickets.imp)
# Without seeds there is no spread; one point of accuracy (0.01) is the stated stand-in.
SINGLE_SEED_TOLERANCE = 0.01

ROW_KEYS = (
    "round", "task_name", "dev_split", "arch_summary", "sparsity_pct", "sparsity_pct_total",
    "dev_fp32", "dev_int8", "dev_primary_fp32", "dev_primary_fp32_std", "dev_primary_int8", "dev_primary_int8_std",
    "pruned_params", "nonzero_params", "total_params", "encoder_params",
    "size_mb_dense_fp32", "size_mb_sparse", "size_mb_sparse_bitmap", "size_mb_sparse_csr",
    "latency_ms_fp32", "latency_p10_ms_fp32", "latency_p90_ms_fp32", "latency_spread_pct_fp32",
    "latency_ms_int8", "latency_p10_ms_int8", "latency_p90_ms_int8", "latency_spread_pct_int8",
    "seeds", "n_seeds", "mask_seed", "ticket_dir", "mask_file",
    "learned", "not_learned_seeds", "not_learned_reason",
)


def read_ticket_records(ticket_dir: str) -> list[dict]:
    path = os.path.join(ticket_dir, RECORDS_NAME)
    if not os.path.isfile(path):
        raise UserError(f"{ticket_dir}: no {RECORDS_NAME}; not a BERT-Tickets output directory")
    records = sorted(read_jsonl(path), key=lambda record: record["round"])
    if not records:
        raise UserError(f"{path}: no finished round yet")
    return records


def matching_rule(dense: dict, tolerance: float = SINGLE_SEED_TOLERANCE) -> dict:
    """The threshold a round must reach, and how it was obtained."""
    std = dense.get("dev_primary_fp32_std")
    if dense.get("n_seeds", 1) >= 2 and std is not None:
        spread, label = std, f"within 1 std of the dense model over {dense['n_seeds']} seeds ({std:.4f})"
    else:
        spread, label = tolerance, f"single seed: within a stated tolerance of {tolerance:g} (no measured spread)"
    return {"dense_dev_primary_fp32": dense["dev_primary_fp32"], "spread": spread,
            "threshold": dense["dev_primary_fp32"] - spread, "label": label,
            "measured_spread": dense.get("n_seeds", 1) >= 2 and std is not None}


def ticket_rows(ticket_dir: str, tolerance: float = SINGLE_SEED_TOLERANCE) -> list[dict]:
    """One row per finished round (``ROW_KEYS``, plus ``is_matching``, ``is_selected`` and the
    ``matching_rule`` text). Metrics are fractions as the evaluator records them (acc 0.72),
    latencies the median of the tables' protocol (fp32 and dynamic int8 of the pruned model, dense
    kernels), sizes in MiB (the sparse one: bitmap or CSR, the smaller; see ``tickets.storage``)."""
    records = read_ticket_records(ticket_dir)
    if records[0]["round"] != 0:
        raise UserError(f"{ticket_dir}: round 0 (the dense model) is missing")
    rule = matching_rule(records[0], tolerance)
    rows = []
    for record in records:
        row = {key: record.get(key) for key in ROW_KEYS}
        # a round that did not learn matches nothing (records from before the verdict: learned)
        row["is_matching"] = (record["round"] > 0 and record.get("learned") is not False
                              and record["dev_primary_fp32"] >= rule["threshold"])
        row["matching_rule"] = rule["label"]
        row["is_selected"] = False
        rows.append(row)
    selected = select_matching(rows)
    if selected is not None:
        selected["is_selected"] = True
    return rows


def select_matching(rows: list[dict]) -> dict | None:
    """The sparsest matching round (None when no pruned round matches)."""
    matching = [row for row in rows if row["is_matching"]]
    return max(matching, key=lambda row: row["sparsity_pct"]) if matching else None


def learning_lines(rows: list[dict]) -> list[str]:
    """The first lines of a ticket run's summary: the rounds whose fine-tunes did not learn
    (``evaluation.learning``); none when every round learned (or the records predate the verdict)."""
    failed = [row for row in rows if row.get("learned") is False]
    if not failed:
        return []
    dense = rows[0] if rows and rows[0]["round"] == 0 else None
    if len(failed) == len(rows):
        return [f"NOTHING LEARNED: no BERT-Tickets round learned (round {failed[0]['round']}: "
                f"{failed[0].get('not_learned_reason')}); no round can be selected"]
    lines = [f"BERT-Tickets round {row['round']} (sparsity {row['sparsity_pct']:.1f} %) did not learn: "
             f"{row.get('not_learned_reason')}; it cannot be selected" for row in failed]
    if dense is not None and dense.get("learned") is False:
        lines.append("BERT-Tickets: the dense model (round 0) did not learn, so \"matching\" it says nothing")
    return lines


def format_table(rows: list[dict]) -> str:
    """A Markdown table of the rounds (the command line's summary; the report has its own), after the
    lines naming the rounds that did not learn."""
    first = learning_lines(rows)
    lines = [*first, *([""] if first else []),"| round | sparsity % | nonzero / total params | dev fp32 | dev int8 | size MiB dense / sparse "
             "| latency ms fp32 / int8 | matching |",
             "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        latency = ("-" if row["latency_ms_fp32"] is None else
                   f"{row['latency_ms_fp32']:.2f} / {row['latency_ms_int8']:.2f}")
        spread = "" if row["dev_primary_fp32_std"] is None else f" ± {row['dev_primary_fp32_std']:.4f}"
        mark = "**selected**" if row["is_selected"] else ("yes" if row["is_matching"] else "")
        if row.get("learned") is False:
            mark = "**did not learn**"
        lines.append(f"| {row['round']} | {row['sparsity_pct']:.1f} | {row['nonzero_params']:,} / "
                     f"{row['total_params']:,} | {row['dev_primary_fp32']:.4f}{spread} | {row['dev_primary_int8']:.4f} | "
                     f"{row['size_mb_dense_fp32']:.2f} / {row['size_mb_sparse']:.2f} | {latency} | {mark} |")
    if rows:
        lines.append(f"\nmatching: {rows[0]['matching_rule']}")
    return "\n".join(lines)
