"""Reference archs: drift control within a latency table, and comparability between two tables.

Protocol ``baf-latency-3`` (``latency.paired``) times one reference next to every arch: the drift is
cancelled pair by pair and only reported here (``reference_slowdown_pct`` of its records), and the
table's unit is the reference's latency at the table's start (``reference_values``). The rest of
this docstring is protocol ``baf-latency-2``'s.

Every latency run of ``baf-latency-2`` (``latency.session``) keeps a small fixed set of *reference archs* built for the
whole run and measures all of them at *checkpoints*: at the start, every ``--reference_every`` archs
and at the end. Their records (``record_type: "reference"``) sit in the table next to the arch
records. The first reference is the *anchor*: it is also timed inside every chunk of archs, and
with ``--drift_correction anchor`` each arch's round medians are divided by the anchor's of the same
round and multiplied by the anchor's *base* latency -- its latency at the table's first checkpoint
(a resumed run keeps the table's base). So a table is expressed in one unit: "the machine as fast
as at the start of the table".

* ``drift_summary(records)``: how far the machine's speed moved while the table was measured --
  per checkpoint, the geometric mean over references of (latency / its first latency); the drift is
  max / min - 1 over the checkpoints. ``flagged`` when above the table's ``drift_threshold_pct``
  (default 5 %). ``corrected_drift_pct``: what the anchor correction leaves (the other references'
  corrected values, max / min - 1; a slowdown that is not the same for every arch size).
* ``reference_values(records)``: each reference's latency in the table's unit (median over the
  checkpoints of its corrected latency).
* ``comparability_factor(records, target)`` / ``make_comparable(records, target)``: two tables
  measured in different runs differ by the machine's speed in each; both time the same reference
  archs (``--references <the other table>``), so multiplying one table's latencies by the geometric
  mean over the shared references of (target's value / own value) expresses it in the target's
  unit. A uniform slowdown of a whole run cancels exactly.
"""

from __future__ import annotations

import json
import math
import os
from collections import defaultdict

import numpy as np

from latency.protocol import PAIRED
from latency.table import read_latency_table  # drift reads tables; table.py never imports drift
from utils import UserError, arch_key, check_arch_schema, make_arch, read_arch_file

DEFAULT_DRIFT_THRESHOLD_PCT = 5.0
# quantiles of each dimension's grid values: the anchor (middle) first, then a smaller and a larger one
REFERENCE_QUANTILES = (0.5, 0.25, 0.75)


# --------------------------------------------------------------------------------------
# Which archs are the references
# --------------------------------------------------------------------------------------


def default_references(space) -> list[dict]:
    """Up to 3 plain-BERT archs of ``space``'s grid: the middle of every dimension (the anchor),
    then the quarter and three-quarter points (duplicates dropped)."""

    def pick(values, q):
        return values[min(len(values) - 1, int(q * (len(values) - 1) + 0.5))]

    archs, seen = [], set()
    for q in REFERENCE_QUANTILES:
        hidden = pick(space.hidden_size.values, q)
        dividing = [h for h in space.num_attention_heads.values if hidden % h == 0]
        if not dividing:
            continue
        heads = min(dividing, key=lambda h: abs(h - pick(space.num_attention_heads.values, q)))
        arch = make_arch(pick(space.layer_num.values, q), hidden, pick(space.intermediate_size.values, q), heads)
        if arch_key(arch) not in seen:
            seen.add(arch_key(arch))
            archs.append(arch)
    if not archs:
        raise UserError(f"the {space.name} space has no plain-BERT arch to use as a reference; give --references FILE")
    return archs


def _is_table(path: str) -> bool:
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                try:
                    first = json.loads(line)
                except ValueError:
                    return False
                return isinstance(first, dict) and "arch" in first
    return False


def read_reference_source(path: str) -> list[dict]:
    """``--references PATH``: a latency table (its reference archs, anchor first) or an arch file."""
    if not os.path.isfile(path):
        raise UserError(f"--references {path}: no such table or arch file")
    if _is_table(path):
        keys = reference_keys(read_latency_table(path))
        if not keys:
            raise UserError(f"--references {path}: this latency table has no reference measurements "
                            "(measured before protocol baf-latency-2, or with --references none)")
        archs = {ref["arch_key"]: ref["arch"] for ref in read_latency_table(path).references}
        missing = [key for key in keys if key not in archs]
        if missing:
            raise UserError(f"--references {path}: the table names the reference {missing[0]} but holds no "
                            "measurement of it (its reference record is missing)")
        return [archs[key] for key in keys]
    archs = read_arch_file(path, allow_duplicates=False)
    if not archs:
        raise UserError(f"--references {path}: no archs in the file")
    return archs


# --------------------------------------------------------------------------------------
# Reading reference records
# --------------------------------------------------------------------------------------


def _references(records) -> list[dict]:
    found = getattr(records, "references", None)
    if found is not None:
        return list(found)
    return [record for record in records if record.get("record_type") == "reference"]


def _arch_records(records) -> list[dict]:
    return [record for record in records if record.get("record_type", "arch") == "arch"]


def _name(records) -> str:
    path = getattr(records, "path", None)
    if path:
        return os.path.basename(path)
    for record in records:
        where = record.get("_where")
        if where:
            return os.path.basename(where.rsplit(":", 1)[0])
    return "the latency table"


def reference_keys(records) -> list[str]:
    """The table's reference arch keys, anchor first (as recorded), else in order of appearance."""
    refs = _references(records)
    if not refs:
        return []
    recorded = refs[0].get("reference_keys")
    if recorded:
        return list(recorded)
    keys = []
    for ref in refs:
        if ref["arch_key"] not in keys:
            keys.append(ref["arch_key"])
    return keys


def _checkpoints(refs: list[dict]) -> list[dict[str, dict]]:
    """Reference records grouped by checkpoint, in file order: ``[{arch_key: record}]``."""
    order, groups = [], {}
    for ref in refs:
        key = (ref.get("run_id"), ref.get("checkpoint"))
        if key not in groups:
            groups[key] = {}
            order.append(key)
        groups[key][ref["arch_key"]] = ref
    return [groups[key] for key in order]


def _range_pct(values) -> float | None:
    values = [v for v in values if v and v > 0]
    return float(100 * (max(values) / min(values) - 1)) if len(values) > 1 else None


# --------------------------------------------------------------------------------------
# Drift
# --------------------------------------------------------------------------------------


def drift_summary(records, threshold_pct: float | None = None) -> dict:
    """How much the machine drifted while the table was measured (see the module docstring).

    Returns ``drift_pct`` (``None`` without references), ``flagged``, ``threshold_pct``,
    ``corrected_drift_pct``, ``anchor_drift_pct`` (the anchor timed inside the chunks, max / min - 1),
    ``end_vs_start_pct`` (the last run's last checkpoint against its first), ``checkpoints``,
    ``runs``, ``references``, ``correction``, ``backend`` and ``message`` (one line naming the
    table and the figure when flagged, else ``None``). Records of several backends: the worst."""
    refs = _references(records)
    arch_records = _arch_records(records)
    if threshold_pct is None:
        sample = refs[0] if refs else (arch_records[0] if arch_records else {})
        threshold_pct = float(sample.get("drift_threshold_pct") or DEFAULT_DRIFT_THRESHOLD_PCT)
    backends = sorted({record.get("backend") or "unknown" for record in refs}) or [None]
    summaries = [_drift_one([r for r in refs if b is None or (r.get("backend") or "unknown") == b],
                            [r for r in arch_records if b is None or (r.get("backend") or "unknown") == b],
                            threshold_pct, b, _name(records)) for b in backends]
    return max(summaries, key=lambda s: -1.0 if s["drift_pct"] is None else s["drift_pct"])


def _drift_one(refs, arch_records, threshold_pct, backend, name) -> dict:
    paired = bool(refs) and refs[0].get("protocol") == PAIRED
    correction = "paired" if paired else (refs[0].get("drift_correction") if refs else None) or "none"
    summary = {"drift_pct": None, "flagged": False, "threshold_pct": threshold_pct, "corrected_drift_pct": None,
               "anchor_drift_pct": None, "end_vs_start_pct": None, "checkpoints": 0, "runs": 0, "references": 0,
               "correction": correction, "backend": backend, "message": None}
    if not refs:
        return summary
    if paired:
        return _drift_paired(summary, refs, arch_records)
    checkpoints = _checkpoints(refs)
    first: dict[str, float] = {}
    for group in checkpoints:
        for key, ref in group.items():
            first.setdefault(key, float(ref["median_ms"]))
    speeds = [math.exp(np.mean([math.log(float(ref["median_ms"]) / first[key]) for key, ref in group.items()]))
              for group in checkpoints]
    runs = []
    for group in checkpoints:
        run_id = next(iter(group.values())).get("run_id")
        if run_id not in runs:
            runs.append(run_id)
    last_run = [speed for speed, group in zip(speeds, checkpoints) if next(iter(group.values())).get("run_id") == runs[-1]]
    corrected = defaultdict(list)
    for ref in refs:
        if not ref.get("anchor"):
            corrected[ref["arch_key"]].append(float(ref.get("corrected_ms") or ref["median_ms"]))
    corrected_ranges = [r for r in (_range_pct(values) for values in corrected.values()) if r is not None]
    anchor = [float(r["anchor_ms"]) / float(r["reference_base_ms"]) for r in arch_records
              if r.get("anchor_ms") and r.get("reference_base_ms")]
    drift = _range_pct(speeds) if len(speeds) > 1 else 0.0
    summary.update(drift_pct=drift, flagged=bool(drift is not None and drift > threshold_pct),
                   corrected_drift_pct=max(corrected_ranges) if correction == "anchor" and corrected_ranges else None,
                   anchor_drift_pct=_range_pct(anchor) if anchor else None,
                   end_vs_start_pct=float(100 * (last_run[-1] / last_run[0] - 1)) if len(last_run) > 1 else None,
                   checkpoints=len(checkpoints), runs=len(runs), references=len(first))
    if summary["flagged"]:
        left = (f"; after the anchor correction {summary['corrected_drift_pct']:.1f} % is left"
                if summary["corrected_drift_pct"] is not None else "")
        summary["message"] = (f"{name}: its reference archs drifted {drift:.1f} % while it was measured (threshold "
                              f"{threshold_pct:g} %, {len(checkpoints)} checkpoints over {len(runs)} run(s){left}); "
                              "measure it again on a quiet machine if its figures matter")
    return summary


def _drift_paired(summary: dict, refs: list[dict], arch_records: list[dict]) -> dict:
    """Protocol baf-latency-3: the reference ran next to every arch, so its speed is known all along
    the table (``reference_slowdown_pct`` of every record). The drift is reported, never flagged:
    each pair's ratio cancels it, and the table's unit is the reference at the table's start."""
    speeds = [1 + float(r["reference_slowdown_pct"]) / 100 for r in list(refs) + list(arch_records)
              if r.get("reference_slowdown_pct") is not None]
    runs = list(dict.fromkeys(r.get("run_id") for r in refs))
    last = [1 + float(r["reference_slowdown_pct"]) / 100 for r in arch_records
            if r.get("run_id") == runs[-1] and r.get("reference_slowdown_pct") is not None]
    summary.update(drift_pct=_range_pct(speeds) if len(speeds) > 1 else 0.0, checkpoints=len(refs), runs=len(runs),
                   references=len({r["arch_key"] for r in refs}),
                   end_vs_start_pct=float(100 * (last[-1] / last[0] - 1)) if len(last) > 1 else None)
    return summary


# --------------------------------------------------------------------------------------
# Comparability of two tables
# --------------------------------------------------------------------------------------


def reference_values(records) -> dict[str, float]:
    """``{reference arch_key: latency in the table's unit}``: per reference, the median over the
    checkpoints of its corrected latency (its raw latency without drift correction); under protocol
    baf-latency-3 the reference's latency at the table's start (``reference_base_ms``), by definition."""
    values = defaultdict(list)
    for ref in _references(records):
        if ref.get("protocol") == PAIRED and ref.get("reference_base_ms"):
            values[ref["arch_key"]].append(float(ref["reference_base_ms"]))
            continue
        values[ref["arch_key"]].append(float(ref.get("corrected_ms") or ref["median_ms"]))
    return {key: float(np.median(found)) for key, found in values.items()}


def comparability_factor(records, target) -> dict:
    """The factor that expresses ``records``' latencies in ``target``'s unit (``target``: the
    records of another table, or ``reference_values`` of one, e.g. a predictor's
    ``metadata["table_references"]``). Returns ``factor``, ``references`` (how many shared),
    ``spread_pct`` (max / min - 1 of the per-reference factors: how uniform the speed difference
    was) and ``per_reference``. One-line ``UserError`` when they share no reference or backend."""
    own, name = reference_values(records), _name(records)
    if isinstance(target, dict):
        other, other_name, other_backend = target, "the target table", None
    else:
        other, other_name = reference_values(target), _name(target)
        other_backend = next((r.get("backend") for r in _arch_records(target) + _references(target)), None)
    backend = next((r.get("backend") for r in _arch_records(records) + _references(records)), None)
    if backend and other_backend and backend != other_backend:
        raise UserError(f"{name} times {backend} but {other_name} times {other_backend}; compare tables of one backend")
    if not own:
        raise UserError(f"{name}: no reference measurements, so it cannot be made comparable with {other_name} "
                        "(measure it with protocol baf-latency-2 and --references <the other table>)")
    shared = [key for key in own if key in other]
    if not shared:
        raise UserError(f"{name} shares no reference arch with {other_name}; measure it with --references <that table>")
    per = {key: other[key] / own[key] for key in shared}
    factor = math.exp(float(np.mean([math.log(value) for value in per.values()])))
    return {"factor": factor, "references": len(shared), "spread_pct": _range_pct(per.values()) or 0.0,
            "per_reference": per}


def make_comparable(records, target) -> tuple[list[dict], dict]:
    """``records``' arch records with ``median_ms`` in ``target``'s unit (see ``comparability_factor``):
    copies with ``median_ms`` multiplied by the factor, ``uncorrected_median_ms`` the value as
    measured and ``comparability_factor`` the factor. Returns ``(records, info)``."""
    info = comparability_factor(records, target)
    out = []
    for record in _arch_records(records):
        copy = dict(record, uncorrected_median_ms=record["median_ms"], comparability_factor=info["factor"])
        copy["median_ms"] = float(record["median_ms"]) * info["factor"]
        out.append(copy)
    return out, info


def check_reference_archs(archs: list[dict], where: str = "--references") -> list[dict]:
    """Reference archs must be plain-BERT archs (they are timed like any other)."""
    from transformer.hf_converter import check_hf_compatible

    checked = []
    for index, arch in enumerate(archs):
        arch = check_arch_schema(arch, where=f"{where} #{index + 1}")
        try:
            check_hf_compatible(arch)
        except UserError as err:
            raise UserError(f"{where} #{index + 1}: {err}") from None
        checked.append(arch)
    return checked
