"""Budgets kept by measurement: before a search names its finalists, they are measured with the
protocol of the predictor's table, in that table's unit (``latency.units.measure_in_unit``), and a
finalist measured over the budget cannot be one.

``keep_within_budget(ranked, predict, metadata, budget_ms, top_k, final_file)`` walks the evaluated archs in
fitness order, measures them ``top_k`` at a time (at most ``MAX_MEASURED_FACTOR x top_k`` in all) and
returns the ``top_k`` fittest that measure within the budget. It writes what it measured next to the
final file, for the report (whose "of budget" column is this measurement, not another one):

* ``<final stem>.latency.json`` -- the budget, the unit, and per measured arch its fitness, predicted
  and measured latency (in the unit and raw), ``budget_fraction`` and ``within_budget``; ``none_fit``
  and one ``message`` line when no measured arch fits (by how much the closest one is over, and by
  how much the predictor was off);
* ``<final stem>.latency/lat_<backend>.jsonl`` -- the measurement records themselves (a latency
  table in the predictor's table's unit; a re-run resumes it, nothing measured is redone or lost).

When none fits, the ``top_k`` fittest are returned anyway (the search's final step still
re-evaluates them) and the report names no winner for the search. A predictor whose table has no
unit (an original ``.tmp`` table, or one of protocol ``baf-latency-2``) cannot express its budget in
a unit measurable here: one warning line names its table and the budget, and the finalists are the
``top_k`` fittest by fitness alone, as before.
"""

from __future__ import annotations

import json
import os

from utils import UserError, arch_key, arch_summary, atomic_write, get_logger

logger = get_logger("latency.finalists")

# measure at most this many times top_k archs before giving up on the budget: with 4, a demo search whose
# predictor ran 8 % low (its four fittest measured 102-109 % of the budget) had no winner while its fifth fitted
MAX_MEASURED_FACTOR = 10
SUMMARY_SUFFIX = ".latency.json"
TABLE_SUFFIX = ".latency"


def final_stem(final_file: str) -> str:
    """``<name>.final`` of ``<name>.final.cands``: what the files written next to it start with."""
    stem, ext = os.path.splitext(final_file)
    return stem if ext == ".cands" else final_file


def summary_path(final_file: str) -> str:
    """Where the finalists' measurement of ``final_file`` is summarised (the report reads it)."""
    return final_stem(final_file) + SUMMARY_SUFFIX


def table_dir(final_file: str) -> str:
    return final_stem(final_file) + TABLE_SUFFIX


def read_summary(final_file: str) -> dict | None:
    """The finalists' measurement written by ``keep_within_budget`` (``None`` when there is none)."""
    path = summary_path(final_file)
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError) as err:
        raise UserError(f"{path}: not a readable finalist measurement ({err})") from None
    if not isinstance(data, dict) or not isinstance(data.get("measured"), list):
        raise UserError(f"{path}: not a finalist measurement (no 'measured' list)")
    return data


def _entry(arch: dict, fitness: float, predicted: float, measured, budget_ms: float) -> dict:
    return {"arch": arch, "arch_key": arch_key(arch), "arch_summary": arch_summary(arch), "fitness": fitness,
            "predicted_ms": predicted, "measured_ms": measured.median_ms, "raw_ms": measured.raw_median_ms,
            "reference_raw_ms": measured.reference_raw_ms, "ratio_se_pct": measured.ratio_se_pct,
            "budget_fraction": measured.median_ms / budget_ms, "within_budget": measured.median_ms <= budget_ms,
            "predictor_error_pct": 100 * (predicted / measured.median_ms - 1)}


def none_fit_message(entries: list[dict], budget_ms: float, unit_text: str) -> str:
    closest = min(entries, key=lambda e: e["measured_ms"])
    bias = sorted(e["predictor_error_pct"] for e in entries)[len(entries) // 2]
    return (f"none of the {len(entries)} measured finalists fits the {budget_ms:g} ms budget ({unit_text}): the "
            f"closest, {closest['arch_summary']}, measures {closest['measured_ms']:.3f} ms = "
            f"{100 * closest['budget_fraction']:.0f} % of it (predicted {closest['predicted_ms']:.3f} ms); the "
            f"predictor was off by {bias:+.1f} % (median over them); no winner can be named")


def keep_within_budget(ranked: list[tuple[dict, float]], predict, metadata: dict, budget_ms: float, top_k: int,
                       final_file: str, predictor_name: str = "the predictor", progress: bool = False) -> list[dict]:
    """The ``top_k`` fittest of ``ranked`` (``[(arch, fitness)]``, best first) that measure within
    ``budget_ms`` in the unit of the predictor's table (``predict``: archs -> predicted ms;
    ``metadata``: the predictor's, which records the unit). See the module docstring."""
    from latency.units import measure_in_unit, unit_of_predictor

    unit = unit_of_predictor(metadata)
    if unit is None:
        table = metadata.get("source_table") or metadata.get("source") or "its table"
        logger.warning("the %g ms budget is kept by predicted latency only: %s was trained on %s, which has no "
                       "reference unit to measure the finalists in (protocol %s)", budget_ms, predictor_name, table,
                       (metadata.get("table_environment") or {}).get("protocol") or "of an original .tmp table")
        return [arch for arch, _ in ranked[:top_k]]
    logger.info("the %g ms budget is read in the unit of the predictor's table: %s", budget_ms, unit.describe())
    limit = min(len(ranked), MAX_MEASURED_FACTOR * top_k)
    entries: list[dict] = []
    while len(entries) < limit and sum(e["within_budget"] for e in entries) < top_k:
        wanted = top_k - sum(e["within_budget"] for e in entries)
        batch = ranked[len(entries):min(limit, len(entries) + wanted)]
        archs = [arch for arch, _ in batch]
        try:
            measured = measure_in_unit(archs, unit, table_dir(final_file), progress=progress)
        except UserError as err:  # what was measured before stays in table_dir(final_file)
            raise UserError(f"{final_file}: measuring the finalists for the {budget_ms:g} ms budget: {err}") from None
        predicted = predict(archs)
        for (arch, fitness), one, guess in zip(batch, measured, predicted):
            entry = _entry(arch, float(fitness), float(guess), one, budget_ms)
            entries.append(entry)
            logger.info("finalist candidate %s (fitness %.4f): predicted %.3f ms, measured %.3f ms in the table's unit "
                        "(raw %.3f ms) = %.0f %% of the budget%s", entry["arch_summary"], fitness, guess,
                        entry["measured_ms"], entry["raw_ms"], 100 * entry["budget_fraction"],
                        "" if entry["within_budget"] else ": OVER, cannot be a finalist")
    fitting = [e for e in entries if e["within_budget"]][:top_k]
    message = None if fitting else none_fit_message(entries, budget_ms, unit.describe())
    if message:
        logger.warning("%s", message)
    summary = {"budget_ms": budget_ms, "unit": unit.to_dict(), "top_k": top_k, "measured": entries,
               "finalists": [e["arch_key"] for e in fitting], "none_fit": not fitting, "message": message,
               "table": os.path.join(table_dir(final_file), f"lat_{unit.backend}.jsonl")}
    with atomic_write(summary_path(final_file)) as handle:
        json.dump(summary, handle, indent=2, sort_keys=True)
        handle.write("\n")
    return [e["arch"] for e in fitting] if fitting else [arch for arch, _ in ranked[:top_k]]
