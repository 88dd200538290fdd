#!/usr/bin/env python
"""The paper's comparison per latency budget: Bigger&Faster (int8 search) against the fp32 search
(AutoTinyBERT), the fp32 choice quantized (AutoTinyBERT + int8 PTQ) and a random search.

    python report.py --cands_dir cands --output_root output \\
        --predictors conf_datasets/lat_predictor.pt conf_datasets/lat_predictor_quant.pt \\
        --measured latency_evaluated/lat_torch_fp32.jsonl latency_evaluated/lat_torch_dynamic_int8.jsonl \\
        --seeds 42 43 44 --report_dir report

Reads every search (``<cands_dir>/<name>.search.json`` and its results, log and final top-k), the
latency measured on the evaluated archs and the predictors. Writes ``summary.json`` (everything, key
names with units), ``report.md`` and ``report.csv`` (views of it) and PNG plots. Each search's
answer is its finalist with the best mean fitness over the final seeds; every compared number is a
mean with its spread and n, and a difference inside its 95 % interval reads "within noise".
``script/report.sh`` runs this after collecting and re-measuring the evaluated archs.
"""

from __future__ import annotations

import argparse
import os

from reporting import claims, plots, views
from reporting.inputs import check_finished, load_measured, load_predictors, load_searches
from reporting.summary import build_summary
from utils import UserError, atomic_write, get_logger, output_lock, run_cli

logger = get_logger("report")

PLOTS = ("accuracy_vs_latency.png", "accuracy_vs_params.png", "search_progress.png", "predicted_vs_measured.png",
         "fitness_per_generation.png")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cands_dir", default="cands", help="the searches' .cands files, identities and logs")
    parser.add_argument("--output_root", default="output", help="results of searches without an identity file")
    parser.add_argument("--predictors", nargs="*", default=[], help="latency predictor checkpoints (any backends)")
    parser.add_argument("--fp_predictor", default=None, help=argparse.SUPPRESS)  # the former flags
    parser.add_argument("--int8_predictor", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--measured", nargs="*", default=[],
                        help="latency tables measured on the evaluated archs (python -m evaluation.results)")
    parser.add_argument("--seeds", nargs="*", type=int, default=None,
                        help="the final step's seeds: every finalist must have all of them (default: the seeds "
                             "each search's final step recorded)")
    parser.add_argument("--task", default=None, help="report this task when the root holds several")
    parser.add_argument("--allow_partial", action="store_true",
                        help="report unfinished searches / missing seeds (flagged) instead of refusing")
    parser.add_argument("--tickets", nargs="*", default=[], help="BERT-Tickets run directories to add as rows")
    parser.add_argument("--report_dir", default="report")
    parser.add_argument("--title", default="Bigger&Faster vs AutoTinyBERT-style fp32 search")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    for path in args.measured:
        if not os.path.isfile(path):
            raise UserError(f"--measured: {path}: no such latency table")
    if os.path.exists(args.report_dir) and not os.path.isdir(args.report_dir):
        raise UserError(f"--report_dir: {args.report_dir} exists and is not a directory")
    searches = load_searches(args.cands_dir, args.output_root, args.task)
    problems = check_finished(searches, args.seeds, args.allow_partial)
    predictor_paths = list(args.predictors) + [p for p in (args.fp_predictor, args.int8_predictor) if p]
    predictors = load_predictors(predictor_paths)
    measured, comparability = load_measured(args.measured, predictors)
    summary = build_summary(searches, predictors, measured, problems, comparability)
    if args.tickets:
        rows = [row for directory in args.tickets for row in _ticket_rows(directory)]
        summary["tickets"] = [ticket_summary_row(row) for row in rows]
        summary["learning"]["tickets"] = _ticket_learning_lines(rows)
        summary["problems"] += [line for line in summary["learning"]["tickets"] if "did not learn" in line]
    with output_lock(args.report_dir, "report directory"):
        views.write_json(summary, os.path.join(args.report_dir, "summary.json"))
        views.write_csv(views.flat_rows(summary), os.path.join(args.report_dir, "report.csv"))
        drawn = [plots.accuracy_vs_latency(searches, summary, measured, os.path.join(args.report_dir, PLOTS[0])),
                 plots.accuracy_vs_params(searches, summary, os.path.join(args.report_dir, PLOTS[1])),
                 plots.search_progress(summary, os.path.join(args.report_dir, PLOTS[2])),
                 plots.predicted_vs_measured(searches, predictors, measured, os.path.join(args.report_dir, PLOTS[3])),
                 plots.fitness_per_generation(searches, os.path.join(args.report_dir, PLOTS[4]))]
        for info in drawn:
            if info.overflowing:
                logger.warning("%s: text runs off the figure: %s", info.path, "; ".join(info.overflowing))
        text = render(summary, args)
        with atomic_write(os.path.join(args.report_dir, "report.md")) as handle:
            handle.write(text)
    logger.info("wrote %s/summary.json, report.md, report.csv and %d plots", args.report_dir, len(PLOTS))
    print("\n".join(claims.all_claims(summary)))
    return 0


def _ticket_rows(directory: str) -> list[dict]:
    from tickets.report import ticket_rows  # the BERT-Tickets baseline, when it was run

    return ticket_rows(directory)


def _ticket_learning_lines(rows: list[dict]) -> list[str]:
    from tickets.report import learning_lines

    return learning_lines(rows)


def ticket_summary_row(row: dict) -> dict:
    """A BERT-Tickets round as the summary holds it (points, units in the key names)."""
    def points(value):
        return None if value is None else 100 * value

    return {"round": row["round"], "sparsity_pct": row["sparsity_pct"], "arch_summary": row["arch_summary"],
            "accuracy_points": points(row["dev_primary_int8"]), "accuracy_std_points": points(row["dev_primary_int8_std"]),
            "accuracy_fp32_points": points(row["dev_primary_fp32"]), "n_seeds": row["n_seeds"],
            "nonzero_params": row["nonzero_params"], "total_params": row["total_params"],
            "size_mb_dense_fp32": row["size_mb_dense_fp32"], "size_mb_sparse": row["size_mb_sparse"],
            "latency_ms_fp32": row["latency_ms_fp32"], "latency_ms_int8": row["latency_ms_int8"],
            "latency_spread_pct_int8": row["latency_spread_pct_int8"], "is_matching": row["is_matching"],
            "is_selected": row["is_selected"], "matching_rule": row["matching_rule"], "ticket_dir": row["ticket_dir"],
            "learned": row.get("learned"), "not_learned_reason": row.get("not_learned_reason")}


def ticket_lines(rows: list[dict]) -> list[str]:
    lines = ["| round | sparsity (%) | nonzero / total params (M) | int8 accuracy (points) | fp32 accuracy "
             "| size dense / sparse (MB) | latency fp32 / int8 (ms) | matching |", "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        std = "" if row["accuracy_std_points"] is None else f" ± {row['accuracy_std_points']:.1f}"
        mark = "**selected**" if row["is_selected"] else ("yes" if row["is_matching"] else "")
        if row.get("learned") is False:
            mark = "**did not learn**"
        lines.append(f"| {row['round']} | {row['sparsity_pct']:.1f} | {row['nonzero_params'] / 1e6:.2f} / "
                     f"{row['total_params'] / 1e6:.2f} | {row['accuracy_points']:.1f}{std} (n={row['n_seeds']}) "
                     f"| {row['accuracy_fp32_points']:.1f} | {row['size_mb_dense_fp32']:.1f} / {row['size_mb_sparse']:.1f} "
                     f"| {row['latency_ms_fp32']:.2f} / {row['latency_ms_int8']:.2f} | {mark} |")
    if rows:
        lines += ["", f"Matching rule: {rows[0]['matching_rule']}. Unstructured zeros are still multiplied by the "
                      "dense kernels, so the latency does not fall with sparsity (the ticket's own timing run, same "
                      "protocol as the tables); only the stored (sparse) size does."]
    return lines


def render(summary: dict, args) -> str:
    first = claims.learning_lines(summary)
    text = [f"# {args.title}", "", *[f"- {line}" for line in first], *([""] if first else []),
            "Per latency budget, the arch each search chose: the finalist with the best mean fitness over the "
            "final seeds. Accuracy in points on the primary dev split, mean ± std over seeds (n); latency "
            "measured on this machine in the deployed scheme, in ms of its table's unit (\"table unit\", raw ms "
            "next to it) or as timed (\"raw\"). A finalist the search measured over its budget cannot win, nor can "
            "one that did not learn on every seed (its predictions (almost) one class, or its score within noise of "
            "a constant predictor's). "
            "`summary.json` holds every number.", "", *(["Table units:", *views.unit_lines(summary), ""]
                                                       if views.unit_lines(summary) else []),
            views.markdown_table(summary), "", "## What the numbers say", "", *claims.all_claims(summary), "",
            "## Settings (read from the records)", "", *claims.settings_text(summary), ""]
    if summary.get("tickets"):
        text += ["## BERT-Tickets (iterative magnitude pruning, the lottery-ticket baseline)", "",
                 *ticket_lines(summary["tickets"]), ""]
    saved = views.links(summary, args.report_dir)
    if saved:
        text += ["## Saved models of the winners", "", *saved, ""]
    text += ["## Plots", ""] + [f"![{name[:-4].replace('_', ' ')}]({name})\n" for name in PLOTS]
    return "\n".join(text)


if __name__ == "__main__":
    run_cli(main)
