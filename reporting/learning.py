"""Which fine-tunes learned, as the report states it in its first lines: per search, how many of its
fine-tunes did not learn (each record's verdict: ``evaluation.learning``), and a NOTHING LEARNED line
for a search none of whose fine-tunes did. A record without a verdict (from before it) counts as
learned and is counted apart."""

from __future__ import annotations

from evaluation.learning import describe, did_not_learn, kinds_text, learned, not_learned_reason, verdict_of


def failed_verdicts(records: list[dict], scheme: str | None = None, split: str | None = None) -> list[dict]:
    """The verdict dicts of ``records`` (scored with ``scheme`` on ``split``; default: each record's
    fitness scheme on its primary split) that did not learn."""
    out = []
    for record in records:
        if did_not_learn(record, scheme, split):
            out.append(verdict_of(record, scheme, split)
                       or {"learned": False, "reason": not_learned_reason(record, scheme, split)})
    return out


def group_learned(records: list[dict], scheme: str | None = None, split: str | None = None) -> bool | None:
    """False when any of ``records`` did not learn, None when none of them has a verdict, else True."""
    if failed_verdicts(records, scheme, split):
        return False
    return None if all(learned(r, scheme, split) is None for r in records) else True


def search_learning(name: str, records: list[dict]) -> dict:
    """One search's count, and its line when some of its fine-tunes did not learn."""
    failed = failed_verdicts(records)
    entry = {"search": name, "fine_tunes": len(records), "not_learned": len(failed),
             "unknown": sum(learned(record) is None for record in records),
             "none_learned": bool(records) and len(failed) == len(records), "line": None}
    if entry["none_learned"]:
        entry["line"] = f"NOTHING LEARNED: every fine-tune of {name} {describe(failed)}"
    elif failed:
        entry["line"] = f"{name}: {len(failed)} of {len(records)} fine-tunes did not learn ({kinds_text(failed)})"
    return entry


def learning_section(searches) -> dict:
    """``{"searches": [...], "lines": [the report's first lines], "problems": [the lines that are problems]}``
    of ``reporting.inputs.Search`` objects."""
    entries = [search_learning(search.name, search.records) for search in searches]
    problems = [entry["line"] for entry in entries if entry["line"]]
    lines = list(problems)
    clean = [entry for entry in entries if not entry["not_learned"] and not entry["unknown"]]
    if clean:
        lines.append(f"{', '.join(e['search'] for e in clean)}: every one of the {sum(e['fine_tunes'] for e in clean)} "
                     "fine-tunes learned (each scored beyond a constant predictor plus its noise)")
    unknown, total = sum(e["unknown"] for e in entries), sum(e["fine_tunes"] for e in entries)
    if unknown:
        lines.append(f"{unknown} of {total} fine-tunes have no learning verdict (recorded before it): they count "
                     "as learned")
    return {"searches": entries, "lines": lines, "problems": problems}
