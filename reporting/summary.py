"""The report's content as one machine-readable dict (``report/summary.json``): per budget and
method the chosen arch, its sizes, predicted and measured latency, the fraction of the budget it
uses, and its accuracy as a mean over seeds with spread and n; per budget the comparisons the
paper makes, each with a verdict that respects the spread; per backend how well the predictor
did on the evaluated archs. The Markdown and CSV are views of this dict (``reporting.views``).
Key names say their unit (``_ms``, ``_mb``, ``_pct``, ``_points``). Whether the fine-tunes learned
(``learning``, ``reporting.learning``) comes first: a finalist that did not learn cannot win, and a
comparison with a side that did not learn is no gain."""

from __future__ import annotations

import dataclasses
from collections import defaultdict

import numpy as np

from evaluation.results import scheme_metrics
from glue.tasks import get_task
from quantize_utils import LATENCY_BACKENDS, SCHEMES
from reporting.inputs import Search
from reporting.learning import failed_verdicts, group_learned, learning_section
from reporting.stats import Estimate, difference, paired_difference
from utils import SearchSpace, arch_key, arch_summary

# (search scheme, strategy) -> method key; labels say what was searched and what is deployed.
METHOD_LABELS = {
    "autotinybert_fp32": "AutoTinyBERT (fp32 search, deployed fp32)",
    "autotinybert_int8_ptq": "AutoTinyBERT + int8 PTQ (fp32 winner, PyTorch dynamic int8)",
    "bigger_and_faster_int8": "Bigger&Faster (int8 search, deployed int8)",
    "random_search_int8": "Random search (int8, same evaluations)",
    "bigger_and_faster_ort_int8": "Bigger&Faster (ONNX Runtime int8 search)",
    "random_search_ort_int8": "Random search (ONNX Runtime int8)",
    "random_search_fp32": "Random search (fp32)",
    "fakequant_int8": "fake-quant parity search (int8)",
}
METHOD_ORDER = tuple(METHOD_LABELS)
SEARCH_METHODS = {("torch_fp32", "evolution"): "autotinybert_fp32", ("torch_fp32", "random"): "random_search_fp32",
                  ("torch_dynamic_int8", "evolution"): "bigger_and_faster_int8",
                  ("torch_dynamic_int8", "random"): "random_search_int8",
                  ("ort_dynamic_int8", "evolution"): "bigger_and_faster_ort_int8",
                  ("ort_dynamic_int8", "random"): "random_search_ort_int8",
                  ("fakequant", "evolution"): "fakequant_int8"}
# What the paper compares, per budget: (a, b, what the difference means)
COMPARISONS = (
    ("bigger_and_faster_int8", "autotinybert_fp32", "int8-aware search vs fp32 search, each deployed as searched"),
    ("bigger_and_faster_int8", "autotinybert_int8_ptq", "int8-aware search vs quantizing the fp32 search's choice"),
    ("bigger_and_faster_int8", "random_search_int8", "evolution vs random search at the same evaluations"),
    ("bigger_and_faster_ort_int8", "bigger_and_faster_int8", "ONNX Runtime int8 vs PyTorch int8 deployment"),
)


def _metric(record: dict, scheme: str, split: str) -> float | None:
    metrics = scheme_metrics(record, scheme)
    if not metrics or split not in metrics:
        return None
    return float(metrics[split]["primary"])


def primary_split(record: dict) -> str:
    """The task's primary dev split (MNLI: matched), as the record says or the task defines."""
    if record.get("primary_dev"):
        return record["primary_dev"]
    return next(iter(get_task(record["task_name"]).dev_files))


def _splits(record: dict) -> list[str]:
    return list(get_task(record["task_name"]).dev_files)


def _estimate(records: list[dict], scheme: str, split: str) -> Estimate | None:
    values = [_metric(record, scheme, split) for record in records]
    values = [value for value in values if value is not None]
    return Estimate.of(values) if values else None


@dataclasses.dataclass
class Choice:
    """A search's answer: the finalist with the best mean fitness, and its finalists' estimates."""

    arch: dict
    records: list[dict]
    fitness: Estimate
    finalists: list[dict]  # [{arch_summary, fitness: {...}}] in fitness order
    none_fit: bool = False  # every finalist measured over the budget: the arch is shown, it did not win
    excluded: list[str] = dataclasses.field(default_factory=list)  # finalists measured over the budget
    none_learned: bool = False  # no finalist learned on every seed: the arch is shown, it did not win
    not_learned: list[dict] = dataclasses.field(default_factory=list)  # [{arch, reasons}]: could not win
    tie: dict | None = None  # {tied_with: [{arch, difference}], decided_by}: the winner's rivals within noise


def _over_budget(search: Search, arch: dict) -> bool:
    measured = search.finalist_measurement(arch)
    return measured is not None and not measured["within_budget"]


def choose(search: Search) -> Choice:
    """The best finalist by mean fitness over its seeds (ties: fewer parameters) among those that learned
    on every seed (``evaluation.learning``; a record without a verdict counts as learned) and that the
    search did not measure over its budget (``latency.finalists``). A finalist that did not learn cannot
    win; when none learned, the fittest is shown with ``none_learned`` (no winner); when every one that
    learned is over the budget, the fittest of them with ``none_fit``. Rivals within noise of the winner
    are named in ``tie``. Without a final step (``--allow_partial``) the top-3 of the search phase, each
    with its one seed."""
    split = primary_split(search.records[0])
    finalists = search.final_archs
    if finalists is None:
        ranked = sorted(search.search_records(), key=lambda r: -(_metric(r, search.scheme, split) or -1))
        finalists = [record["arch"] for record in ranked[:3]]
    scored = []
    for arch in finalists:
        records = search.records_of(arch)
        estimate = _estimate(records, search.scheme, split)
        if estimate is not None:
            scored.append((estimate, records[0]["parameter_size"], arch, records))
    if not scored:
        raise ValueError(f"search {search.name}: no finalist has a result")
    scored.sort(key=lambda item: (-item[0].mean, item[1]))
    failed = {arch_key(a): failed_verdicts(r) for _, _, a, r in scored}
    learned = [item for item in scored if not failed[arch_key(item[2])]]
    eligible = [item for item in (learned or scored) if not _over_budget(search, item[2])]
    best = (eligible or learned or scored)[0]
    return Choice(best[2], best[3], best[0], [{"arch": arch_summary(a), "arch_key": arch_key(a),
                                               "fitness": e.to_dict(100.0)} for e, _, a, _ in scored],
                  none_fit=not eligible,
                  excluded=[arch_summary(a) for _, _, a, _ in scored if _over_budget(search, a)],
                  none_learned=not learned,
                  not_learned=[{"arch": arch_summary(a), "reasons": [v.get("reason") for v in failed[arch_key(a)]]}
                               for _, _, a, _ in scored if failed[arch_key(a)]],
                  tie=_tie(best, eligible) if learned else None)


def _tie(best: tuple, eligible: list[tuple]) -> dict | None:
    """The eligible finalists whose mean is within noise of the winner's, and what decided among them
    (the rule is unchanged: the higher mean, fewer parameters on an exact tie)."""
    rivals = []
    for estimate, params, arch, _ in eligible:
        if arch is best[2]:
            continue
        gap = difference(best[0], estimate)
        if gap.verdict == "within noise":
            rivals.append({"arch": arch_summary(arch), "difference": gap.text(100.0),
                           "by": "fewer parameters" if estimate.mean == best[0].mean else "the higher mean fitness"})
    if not rivals:
        return None
    decided = "fewer parameters" if all(r["by"] == "fewer parameters" for r in rivals) else "the higher mean fitness"
    return {"tied_with": rivals, "decided_by": decided}


def latency_unit(record: dict) -> str:
    """``table`` when a latency is in the unit of its backend's predictor table (measured in it:
    ``latency.units.measure_in_unit``, or rescaled into it through shared reference archs), else
    ``raw`` (as timed, in no table's unit)."""
    return "table" if record.get("unit_source") or record.get("comparability_factor") is not None else "raw"


def _latency(measured: dict, backend: str, arch: dict) -> dict | None:
    record = measured.get(backend, {}).get(arch_key(arch))
    if record is None:
        return None
    out = {"median_ms": float(record["median_ms"]), "unit": latency_unit(record)}
    raw = record.get("raw_median_ms") if record.get("protocol") == "baf-latency-3" else record.get("uncorrected_median_ms")
    if raw is not None:
        out["raw_ms"] = float(raw)
    for field in ("uncorrected_median_ms", "comparability_factor", "round_spread_pct", "ratio_se_pct", "p10_ms",
                  "p90_ms"):
        if record.get(field) is not None:
            out[field] = float(record[field])
    return out


def _deployed_latency(search: Search, choice: Choice, backend: str, measured: dict) -> dict | None:
    """The chosen arch's deployed latency: the search's own finalist measurement when it timed this
    backend (the measurement that chose it), else the report's re-measurement."""
    own = search.finalist_measurement(choice.arch)
    unit = (search.finalist_latency or {}).get("unit") or {}
    if own is not None and unit.get("backend") == backend:
        return {"median_ms": own["measured_ms"], "raw_ms": own["raw_ms"], "unit": "table",
                "source": "the search's finalist measurement", "ratio_se_pct": own.get("ratio_se_pct")}
    latency = _latency(measured, backend, choice.arch)
    if latency is not None:
        latency["source"] = "the report's re-measurement"
    return latency


def method_row(method: str, search: Search, choice: Choice, deployed: str, predictors: dict, measured: dict) -> dict:
    """One row of the table: ``deployed`` is the scheme the chosen arch runs in."""
    scheme = SCHEMES[deployed]
    split = primary_split(choice.records[0])
    first = choice.records[0]
    accuracy = _estimate(choice.records, deployed, split)
    per_split = {}
    for name in _splits(first):
        estimate = _estimate(choice.records, deployed, name)
        per_split[name] = estimate.to_dict(100.0) if estimate else None
    row = {
        "method": method, "label": METHOD_LABELS[method], "search": search.name, "budget_ms": search.budget_ms,
        "task": search.task, "deployed_scheme": deployed, "deployed_backend": scheme.latency_backend,
        "arch": choice.arch, "arch_summary": arch_summary(choice.arch),
        "total_params": int(first["parameter_size"]), "encoder_params": first.get("encoder_parameter_size"),
        "size_mb_fp32": first.get("size_mb_fp32"),
        "size_mb_deployed": (first.get("size_mb_by_scheme") or {}).get(deployed, first.get("size_mb_int8"))
        if scheme.quantized else first.get("size_mb_fp32"),
        "accuracy_points": accuracy.to_dict(100.0) if accuracy else None,
        "accuracy_by_seed_points": {str(r["seed"]): 100.0 * value for r in choice.records
                                    if (value := _metric(r, deployed, split)) is not None},
        "accuracy_by_split_points": per_split,
        "fitness_points": choice.fitness.to_dict(100.0), "fitness_scheme": search.scheme,
        "finalists": choice.finalists, "seeds": sorted({r["seed"] for r in choice.records}),
        "evaluations_search": len(search.search_records()),
        "evaluations_total": len(search.records),
        "saved_model": next((r["saved_model"] for r in choice.records if r.get("saved_model")), None),
    }
    for backend in LATENCY_BACKENDS:
        predictor = predictors.get(backend)
        row[f"pred_latency_ms_{backend}"] = float(predictor.predict(choice.arch)) if predictor else None
        row[f"measured_latency_{backend}"] = _latency(measured, backend, choice.arch)
    deployed_latency = _deployed_latency(search, choice, scheme.latency_backend, measured)
    row["measured_latency_deployed"] = deployed_latency
    row["measured_latency_ms_deployed"] = deployed_latency["median_ms"] if deployed_latency else None
    row["measured_latency_raw_ms_deployed"] = deployed_latency.get("raw_ms") if deployed_latency else None
    row["latency_unit"] = deployed_latency["unit"] if deployed_latency else None
    row["pred_latency_ms_deployed"] = row[f"pred_latency_ms_{scheme.latency_backend}"]
    if deployed_latency:
        row["budget_fraction"] = deployed_latency["median_ms"] / search.budget_ms
        row["within_budget"] = deployed_latency["median_ms"] <= search.budget_ms
    else:
        row["budget_fraction"], row["within_budget"] = None, None
    # a finalist measured over the budget cannot win; the report says when none fit (deployed as searched)
    row["none_fit"] = choice.none_fit and deployed == search.scheme
    row["none_fit_message"] = (search.finalist_latency or {}).get("message") if row["none_fit"] else None
    row["excluded_over_budget"] = choice.excluded
    # a finalist that did not learn cannot win; the deployed scheme's verdict on the chosen arch's seeds
    row["learned"] = group_learned(choice.records, deployed, split)
    row["not_learned_reasons"] = [v.get("reason") for v in failed_verdicts(choice.records, deployed, split)]
    row["none_learned"] = choice.none_learned
    searched = deployed == search.scheme  # the search's own row says how it chose (not its int8 PTQ twin)
    row["excluded_not_learned"] = choice.not_learned if searched else []
    row["tie"] = choice.tie if searched else None
    return row


def predictor_quality(searches: list[Search], predictors: dict, measured: dict,
                      comparability: dict | None = None) -> dict:
    """Per backend, the predictor against the re-measurement of every evaluated arch: MAPD and
    bias (median of predicted/measured - 1), also on the held-out archs (off the predictor's grid)."""
    archs = {arch_key(r["arch"]): r["arch"] for s in searches for r in s.records}
    out = {}
    for backend, predictor in predictors.items():
        keys = [key for key in archs if key in measured.get(backend, {})]
        if not keys:
            continue
        truth = np.array([float(measured[backend][key]["median_ms"]) for key in keys])
        pred = np.asarray(predictor.predict_many([archs[key] for key in keys]), dtype=float)
        ratio = pred / truth - 1
        grid = predictor.metadata.get("space_definition")
        space = SearchSpace.from_dict(grid) if isinstance(grid, dict) else None
        held = np.array([space is not None and not space.contains(archs[key]) for key in keys])
        entry = {"n": len(keys), "mapd_pct": float(100 * np.mean(np.abs(ratio))), "bias_pct": float(100 * np.median(ratio)),
                 "held_out_n": int(held.sum())}
        if held.any():
            entry.update(held_out_mapd_pct=float(100 * np.mean(np.abs(ratio[held]))),
                         held_out_bias_pct=float(100 * np.median(ratio[held])))
        entry["table_drift"] = predictor.metadata.get("table_drift")
        entry.update({f"comparability_{k}": v for k, v in (comparability or {}).get(backend, {}).items()})
        out[backend] = entry
    return out


def progress(search: Search) -> list[dict]:
    """Best-so-far fitness (search seed) after each evaluation, in evaluation order."""
    split = primary_split(search.records[0])
    best, rows = None, []
    for index, record in enumerate(search.search_records(), start=1):
        value = _metric(record, search.scheme, split)
        if value is not None:
            best = value if best is None else max(best, value)
        rows.append({"evaluations": index, "best_so_far_points": None if best is None else 100 * best})
    return rows


def latency_units(predictors: dict, searches: list[Search]) -> dict:
    """Per backend, what a millisecond of its table unit is (the predictor's table's unit)."""
    units = {backend: predictor.metadata.get("unit") for backend, predictor in predictors.items()
             if predictor.metadata.get("unit")}
    for search in searches:
        unit = (search.finalist_latency or {}).get("unit") or {}
        if unit.get("backend") and unit.get("text"):
            units.setdefault(unit["backend"], unit["text"])
    return units


def settings(searches: list[Search], measured: dict) -> dict:
    """The protocol the numbers come from, read from the records (never assumed)."""
    first = searches[0].records[0]
    hparams = first.get("hparams", {})
    protocol_fields = ("timer", "threads", "batch_size", "seq_len", "runs", "warmup", "rounds", "interleave",
                       "protocol", "cpu_model", "torch_version", "onnxruntime_version", "quant_engine")
    protocols = {}
    for backend, records in measured.items():
        if records:
            sample = next(iter(records.values()))
            protocols[backend] = {field: sample.get(field) for field in protocol_fields if sample.get(field) is not None}
    final_seeds = sorted({r["seed"] for s in searches for r in s.records})
    recorded = sorted({seed for s in searches for seed in s.final_seeds})
    return {"task": searches[0].task, "primary_dev": primary_split(first), "dev_examples": first.get("dev_examples"),
            "train_examples": first.get("train_examples"), "train_steps": first.get("train_steps"),
            "fine_tune": _fine_tune(first), "final_fine_tune": _final_fine_tune(searches),
            "results": sum(len(s.records) for s in searches),
            "results_from_cache": sum(1 for s in searches for r in s.records if r.get("from_cache")),
            "search_seed": searches[0].search_seed, "seeds": final_seeds, "final_seeds": recorded,
            "windows_ms": {s.name: s.window_ms for s in searches if s.window_ms},
            "window_fractions": sorted({tuple(round(bound / s.budget_ms, 4) for bound in s.window_ms)
                                        for s in searches if s.window_ms}),
            "top_k": max((len(s.final_archs) for s in searches if s.final_archs), default=None),
            "rescore": next(((s.final_record or {}).get("rescore") for s in searches
                             if (s.final_record or {}).get("rescore")), None),
            "latency_protocol": protocols}


def _fine_tune(record: dict) -> dict:
    hparams = record.get("hparams", {})
    return ({key: hparams.get(key) for key in ("learning_rate", "num_train_epochs", "train_batch_size",
                                               "warmup_proportion", "weight_decay", "eval_step")}
            | {"max_seq_length": record.get("max_seq_length"), "dropout": (record.get("settings") or {}).get("dropout"),
               "sandwich_epochs": (record.get("settings") or {}).get("sandwich_epochs"),
               "train_dtype": hparams.get("train_dtype", "fp32")})


def _final_fine_tune(searches: list[Search]) -> dict | None:
    """The finalists' recipe when the searches recorded one other than their candidates' (None: the same)."""
    for search in searches:
        record = search.final_record or {}
        if record.get("recipe_id") and record.get("recipe_id") != record.get("search_recipe_id"):
            for arch in search.final_archs or []:
                for result in search.records_of(arch):
                    return dict(_fine_tune(result), train_examples=result.get("train_examples"),
                                dev_examples=result.get("dev_examples"), train_steps=result.get("train_steps"),
                                recipe_id=record["recipe_id"])
    return None


def build_summary(searches: list[Search], predictors: dict, measured: dict, problems: list[str] | None = None,
                  comparability: dict | None = None) -> dict:
    by_budget: dict[float, dict[str, dict]] = defaultdict(dict)
    curves: dict[float, dict[str, list]] = defaultdict(dict)
    for search in searches:
        method = SEARCH_METHODS.get((search.scheme, search.strategy))
        if method is None:
            continue
        choice = choose(search)
        by_budget[search.budget_ms][method] = method_row(method, search, choice, search.scheme, predictors, measured)
        curves[search.budget_ms][method] = progress(search)
        if search.scheme == "torch_fp32" and search.strategy == "evolution":
            if any(_metric(r, "torch_dynamic_int8", primary_split(r)) is not None for r in choice.records):
                by_budget[search.budget_ms]["autotinybert_int8_ptq"] = method_row(
                    "autotinybert_int8_ptq", search, choice, "torch_dynamic_int8", predictors, measured)
    budgets = []
    for budget in sorted(by_budget):
        rows = by_budget[budget]
        comparisons = []
        for a, b, meaning in COMPARISONS:
            if a in rows and b in rows and rows[a]["accuracy_points"] and rows[b]["accuracy_points"]:
                ea, eb = (_estimate_of(rows[a]), _estimate_of(rows[b]))
                diff = difference(ea, eb)
                entry = {"a": a, "b": b, "meaning": meaning, **{f"{k}_points" if k in ("diff", "ci95_half_width") else k: v
                                                                 for k, v in diff.to_dict(1.0).items()}}
                entry["text"] = diff.text(1.0)
                paired = paired_difference(rows[a].get("accuracy_by_seed_points") or {},
                                           rows[b].get("accuracy_by_seed_points") or {})
                if paired is not None and paired.half_width is not None:
                    entry["paired"] = dict(paired.to_dict(1.0), text=paired.text(1.0))
                silent = [side for side in (a, b) if rows[side]["learned"] is False]
                over = [side for side in (a, b) if rows[side].get("none_fit")]
                if silent:  # a side that did not learn: no gain, no loss, whatever the numbers
                    entry.update(verdict="did not learn", not_learned=silent)
                elif over:  # a side whose every finalist measured over the budget has no arch to compare
                    entry.update(verdict="no winner", no_winner=over)
                if rows[a].get("encoder_params") and rows[b].get("encoder_params"):
                    entry["encoder_params_ratio"] = rows[a]["encoder_params"] / rows[b]["encoder_params"]
                entry["total_params_ratio"] = rows[a]["total_params"] / rows[b]["total_params"]
                comparisons.append(entry)
        budgets.append({"budget_ms": budget, "methods": {m: rows[m] for m in METHOD_ORDER if m in rows},
                        "comparisons": comparisons, "progress": curves[budget]})
    learning = learning_section(searches)
    no_winner = [f"{entry['budget_ms']:g} ms, {METHOD_LABELS[method]}: no winner, none of its measured finalists "
                 "fits the budget" for entry in budgets for method, row in entry["methods"].items() if row.get("none_fit")]
    return {"settings": dict(settings(searches, measured), latency_units=latency_units(predictors, searches)),
            "budgets": budgets,
            "predictors": predictor_quality(searches, predictors, measured, comparability),
            "learning": learning,
            "no_winner": no_winner,
            "problems": list(problems or []) + learning["problems"] + no_winner,
            "searches": [{"name": s.name, "task": s.task, "scheme": s.scheme, "strategy": s.strategy,
                          "budget_ms": s.budget_ms, "evaluations_search": len(s.search_records()),
                          "evaluations_total": len(s.records), "finished": s.final_archs is not None}
                         for s in searches]}


def _estimate_of(row: dict) -> Estimate:
    acc = row["accuracy_points"]
    return Estimate(acc["mean"], acc["std"], acc["n"], acc["min"], acc["max"])
