"""The report's sentences, every one computed from ``summary.json``: a difference inside its 95 %
interval (or with a single seed on a side) reads "within noise", never as a gain; neither does one
with a side that did not learn (``evaluation.learning``)."""

from __future__ import annotations

from reporting.summary import METHOD_LABELS

SHORT = {"autotinybert_fp32": "AutoTinyBERT (fp32)", "autotinybert_int8_ptq": "AutoTinyBERT + int8 PTQ",
         "bigger_and_faster_int8": "Bigger&Faster (int8)", "random_search_int8": "random search (int8)",
         "bigger_and_faster_ort_int8": "Bigger&Faster (ORT int8)", "random_search_ort_int8": "random search (ORT int8)",
         "random_search_fp32": "random search (fp32)", "fakequant_int8": "fake-quant search"}


def _acc(row: dict) -> str:
    acc = row["accuracy_points"]
    if acc is None:
        return "no accuracy"
    if acc["n"] == 1:
        return f"{acc['mean']:.1f} (n=1)"
    return f"{acc['mean']:.1f} ± {acc['std']:.1f} (n={acc['n']})"


def _params(value) -> str:
    return "?" if value is None else f"{value / 1e6:.2f} M"


def _latency_text(row: dict) -> str:
    measured = row.get("measured_latency_ms_deployed")
    precision = "fp32" if row["deployed_scheme"] == "torch_fp32" else row["deployed_backend"].replace("_", " ")
    if measured is None:
        return f"no measured {precision} latency"
    verdict = "within" if row["within_budget"] else "OVER"
    detail = row.get("measured_latency_deployed") or {}
    if row.get("latency_unit") == "table":
        raw = row.get("measured_latency_raw_ms_deployed")
        unit = "in the table's unit" + (f" (raw {raw:.2f} ms)" if raw is not None else "")
    else:
        unit = "raw (not in the table's unit)"
    source = f", {detail['source']}" if detail.get("source") else ""
    return (f"measures {measured:.2f} ms in {precision} {unit}{source} ({100 * row['budget_fraction']:.0f} % of the "
            f"{row['budget_ms']:g} ms budget, {verdict})")


def budget_claims(entry: dict) -> list[str]:
    budget, rows = entry["budget_ms"], entry["methods"]
    sentences = []
    for method, row in rows.items():
        sentences.append(f"- {budget:g} ms, {SHORT.get(method, method)}: {row['arch_summary']}, "
                         f"{_params(row['encoder_params'])} encoder / {_params(row['total_params'])} total parameters, "
                         f"{_latency_text(row)}; accuracy {_acc(row)} on {row['task']} dev "
                         f"({len(row['finalists'])} finalist{'s' if len(row['finalists']) != 1 else ''}, "
                         f"{row['evaluations_total']} fine-tunes).")
        who = f"- {budget:g} ms, {SHORT.get(method, method)}"
        sentences += _learning_claims(who, row)
        if row.get("none_fit") and not row.get("none_learned"):
            sentences.append(f"{who}: **no winner**: {row['none_fit_message']}")
        elif row.get("excluded_over_budget"):
            sentences.append(f"{who}: finalists measured over the budget, so they could not win: "
                             f"{', '.join(row['excluded_over_budget'])}.")
    for comparison in entry["comparisons"]:
        a, b = rows[comparison["a"]], rows[comparison["b"]]
        verdict = comparison["verdict"]
        silent = [SHORT[side] for side in comparison.get("not_learned", [])]
        over = [SHORT[side] for side in comparison.get("no_winner", [])]
        if silent:
            wording = f"not a gain: {' and '.join(silent)} did not learn"
        elif over:
            wording = f"not a claim: {' and '.join(over)} has no winner within the budget"
        elif verdict == "within noise":
            wording = "within noise"
        else:
            wording = f"a {'gain' if verdict == 'gain' else 'loss'} beyond the spread"
        size = ""
        if comparison.get("encoder_params_ratio") and a["arch_summary"] != b["arch_summary"]:
            ratio = comparison["encoder_params_ratio"]
            bigger = comparison["a"] if ratio > 1 else comparison["b"]
            label = "bigger" if ratio > 1 else "not bigger"
            if bigger in comparison.get("not_learned", []):
                label += f", but {SHORT[bigger]} did not learn: no win"
            size = f"; {SHORT[comparison['a']]} is {ratio:.2f}x the encoder parameters ({label})"
        elif a["arch_summary"] == b["arch_summary"]:
            size = "; both chose the same arch"
        paired = comparison.get("paired")
        paired_text = (f"; paired by seed {paired['text']}" + ("" if over else f": {paired['verdict']}") if paired else "")
        sentences.append(f"- {budget:g} ms, {SHORT[comparison['a']]} vs {SHORT[comparison['b']]} "
                         f"({comparison['meaning']}): {_acc(a)} vs {_acc(b)}, difference {comparison['text']}: "
                         f"**{wording}**{paired_text}{size}.")
    return sentences


def _learning_claims(who: str, row: dict) -> list[str]:
    """Why the row's arch won or could not: finalists that did not learn, none that did, a tie."""
    sentences = []
    if row.get("none_learned"):
        named = [(entry["arch"], reason) for entry in row.get("excluded_not_learned", [])
                 for reason in entry["reasons"] if reason]
        sentences.append(f"{who}: **no winner**: no finalist learned on every seed"
                         + (f" ({named[0][0]}: {named[0][1]})" if named else "") + ".")
    elif row.get("excluded_not_learned"):
        sentences.append(f"{who}: finalists that did not learn, so they could not win: "
                         + "; ".join(f"{entry['arch']} ({entry['reasons'][0]})" for entry in row["excluded_not_learned"])
                         + ".")
    elif row.get("learned") is False:  # scored in another scheme than the search's (the fp32 winner in int8)
        sentences.append(f"{who}: did not learn in {row['deployed_scheme']}: {row['not_learned_reasons'][0]}.")
    tie = row.get("tie")
    if tie:
        rivals = ", ".join(f"{r['arch']} ({r['difference']})" for r in tie["tied_with"])
        sentences.append(f"{who}: tied within noise with {rivals}; chosen by {tie['decided_by']}.")
    return sentences


def predictor_claims(summary: dict) -> list[str]:
    sentences = []
    for backend, entry in summary["predictors"].items():
        text = (f"- {backend} predictor on the {entry['n']} evaluated archs (re-measured): MAPD {entry['mapd_pct']:.1f} %, "
                f"bias {entry['bias_pct']:+.1f} % (median of predicted/measured - 1)")
        if entry.get("held_out_n"):
            text += (f"; on the {entry['held_out_n']} held-out archs (not on its latency grid): MAPD "
                     f"{entry['held_out_mapd_pct']:.1f} %, bias {entry['held_out_bias_pct']:+.1f} %")
        else:
            text += "; none of them is off its latency grid, so this is not a held-out check"
        drift = entry.get("comparability_remeasurement_drift") or {}
        if drift.get("drift_pct") is not None:
            text += f"; the re-measurement's references drifted {drift['drift_pct']:.1f} %"
            if drift.get("flagged"):
                text += f" (FLAGGED: {drift.get('message')})"
        if entry.get("comparability_factor"):
            text += (f"; re-measured latencies are expressed in the table's unit (x{entry['comparability_factor']:.3f}, "
                     f"uniform within {entry['comparability_spread_pct']:.1f} % over "
                     f"{entry['comparability_references']} shared reference archs)")
        elif entry.get("comparability_note"):
            text += f"; {entry['comparability_note']}"
        for table_drift in (entry.get("table_drift") or {}).values():
            if isinstance(table_drift, dict) and table_drift.get("flagged"):
                text += f"; the predictor's table is FLAGGED: {table_drift.get('message')}"
        sentences.append(text + ".")
    return sentences


def _evaluation_text(settings: dict) -> str:
    """When the dev set was scored: once at the end (``eval_step`` at least the recorded number of
    training steps), or every ``eval_step`` steps keeping the best."""
    eval_step, steps = settings["fine_tune"].get("eval_step"), settings.get("train_steps")
    if isinstance(eval_step, int) and isinstance(steps, int) and eval_step >= steps:
        return "dev evaluated once, at the end of training"
    return f"dev evaluated every {eval_step} steps and at the end (best kept)"


def _recipe_text(tune: dict) -> str:
    text = (f"lr {tune.get('learning_rate')}, {tune.get('num_train_epochs')} epoch(s), batch {tune.get('train_batch_size')}, "
            f"max_seq_length {tune.get('max_seq_length')}, warm-up {tune.get('warmup_proportion')}, weight decay "
            f"{tune.get('weight_decay')}")
    return (text + (f", dropout {tune['dropout']}" if tune.get("dropout") is not None else "")
            + (f", training forward in {tune['train_dtype']} (autocast)" if tune.get("train_dtype", "fp32") != "fp32"
               else ""))


def _candidate_text(s: dict) -> str:
    tune = s["fine_tune"]
    if tune.get("sandwich_epochs"):  # evaluation.task_supernet
        text = (f"- Fitness of a candidate: its slice of the supernet fine-tuned once on the task, "
                f"{tune['sandwich_epochs']:g} epoch(s) with the sandwich rule, {s['train_examples']} training examples "
                f"(lr {tune.get('learning_rate')}, batch {tune.get('train_batch_size')}, max_seq_length "
                f"{tune.get('max_seq_length')}" + (f", dropout {tune['dropout']}" if tune.get("dropout") is not None
                                                    else "") + ")")
        epochs = tune.get("num_train_epochs")
        return text + (", then scored as it is." if not epochs else f", then fine-tuned alone: {_recipe_text(tune)}, "
                                                                    f"{_evaluation_text(s)}.")
    return f"- Fine-tune per candidate: {_recipe_text(tune)}, {_evaluation_text(s)}."


def settings_text(summary: dict) -> list[str]:
    s = summary["settings"]
    lines = [f"- Task {s['task']}, fitness and accuracy on the primary dev split `{s['primary_dev']}`"
             f" (dev examples: {s['dev_examples']}); {s['train_examples']} training examples.",
             _candidate_text(s),
             f"- Search seed {s['search_seed']}; the final top-{s['top_k']} of each search re-evaluated with seeds "
             f"{s.get('final_seeds') or s['seeds']} (as the searches recorded them); the winner is the best mean. "
             "Differences are compared with a 95 % Welch interval: inside it, or with one seed on a side, they are "
             "reported as within noise; where both sides share seeds the paired-by-seed interval is given too."]
    final = s.get("final_fine_tune")
    if final:
        longer = "" if s["fine_tune"].get("sandwich_epochs") else ", longer than the candidates'"
        lines.insert(2, f"- Fine-tune of each finalist (its own recipe{longer}): {_recipe_text(final)}, "
                        f"{final.get('train_examples')} training examples ({final.get('train_steps')} steps), dev examples "
                        f"{final.get('dev_examples')}; the accuracies below are these fine-tunes'.")
    rescore = s.get("rescore")
    if rescore:  # search.chain's rescore step
        lines.insert(2, f"- Before the finalists are chosen, the {rescore['top']} fittest candidates of each search are "
                        f"fine-tuned again with the candidates' recipe, seeds {rescore['seeds']}; the finalists are the "
                        "best of them by that mean (successive halving: a lucky seed alone does not make a finalist).")
    if s.get("results_from_cache"):
        lines.append(f"- {s['results']} results in all, {s['results_from_cache']} of them a fine-tune another search of "
                     "this run had made (the evaluation cache: one fine-tune per arch, seed and recipe).")
    windows = s.get("window_fractions") or []
    if windows:
        text = " and ".join(f"[{low:g}c, {high:g}c]" for low, high in windows)
        lines.append(f"- Candidates: archs whose predicted latency lies in the window {text} of each budget c "
                     "(recorded in each search's identity).")
    for backend, protocol in s["latency_protocol"].items():
        lines.append(f"- Latency ({backend}): " + ", ".join(f"{k} {v}" for k, v in protocol.items()) + ".")
    for backend, text in sorted((s.get("latency_units") or {}).items()):
        lines.append(f"- Latency unit ({backend}): {text}; budgets are read in it.")
    return lines


def learning_lines(summary: dict) -> list[str]:
    """The report's first lines: whether the fine-tunes learned (``reporting.learning``), the searches
    with no winner within their budget, and the BERT-Tickets rounds that did not learn."""
    learning = summary.get("learning") or {}
    return list(learning.get("lines", [])) + list(summary.get("no_winner", [])) + list(learning.get("tickets", []))


def all_claims(summary: dict) -> list[str]:
    sentences = []
    for entry in summary["budgets"]:
        sentences += budget_claims(entry)
    sentences += predictor_claims(summary)
    first = set(learning_lines(summary))  # already the report's first lines
    for problem in summary.get("problems", []):
        if problem not in first:
            sentences.append(f"- WARNING: {problem}")
    return sentences


__all__ = ["METHOD_LABELS", "all_claims", "budget_claims", "learning_lines", "predictor_claims", "settings_text"]
