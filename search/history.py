"""The search log: one JSON line per generation the searcher wrote (SPEC: log per-generation
best/mean fitness so that stalls are visible; the report plots best fitness per generation).

A record holds the generation number, the method, the arch keys it proposed with their predicted
latencies and origins, and (for ``Evolved``) the fitness of every earlier generation as read from
the results at that time. ``fitness_by_generation`` recomputes the per-generation figures from
the log plus any fitness dict, so the report can use the final ``subbert.results``.
"""

from __future__ import annotations

import json
import os
from typing import Mapping

import numpy as np

from utils import atomic_write, read_jsonl


def default_log_path(candidate_file: str) -> str:
    """``cands/kd_ptq_10.cands`` -> ``cands/kd_ptq_10.search_log.jsonl``: every method of one
    search reads the same candidate file, so they all log to the same place."""
    stem = candidate_file[:-len(".cands")] if candidate_file.endswith(".cands") else candidate_file
    return stem + ".search_log.jsonl"


def read_search_log(path: str) -> list[dict]:
    """The log's records sorted by generation (an absent log is empty)."""
    if not os.path.isfile(path):
        return []
    return sorted(read_jsonl(path), key=lambda record: record.get("generation", 0))


def record_generation(path: str, record: dict, generation: int | None = None) -> int:
    """Add ``record`` to the log and return its generation number.

    ``Random``/``Fast`` without evaluated archs are generation 0; ``Evolved`` (and ``Random`` over
    evaluated archs, the random baseline) is one more than the latest logged generation unless
    ``generation`` is given; a step that wrote the same output file before keeps its number. A
    record for a generation already logged replaces it (a re-run rewrote that generation's file),
    so a re-run never adds a duplicate row. The log is rewritten atomically.
    """
    records = read_search_log(path)
    if generation is None:
        again = [r.get("generation") for r in records
                 if record.get("output_file") is not None and r.get("output_file") == record.get("output_file")]
        if again:  # the same step run again (it rewrote its file): it keeps its generation
            generation = again[-1]
        elif record.get("method") in ("Random", "Fast") and not record.get("evaluated"):
            generation = 0
        else:
            generation = max((r.get("generation", 0) for r in records), default=0) + 1
    records = [r for r in records if r.get("generation") != generation]
    records.append(dict(record, generation=generation))
    records.sort(key=lambda r: r["generation"])
    with atomic_write(path) as handle:
        for item in records:
            handle.write(json.dumps(item, sort_keys=True) + "\n")
    return generation


def fitness_by_generation(records: list[dict], fitness: Mapping[str, float]) -> list[dict]:
    """Per logged generation: how many of its archs have a fitness, their best and mean, and the
    best fitness over this and all earlier generations."""
    rows, best_so_far = [], None
    for record in sorted(records, key=lambda r: r.get("generation", 0)):
        values = [fitness[key] for key in record.get("archs", []) if key in fitness]
        best = max(values) if values else None
        if best is not None:
            best_so_far = best if best_so_far is None else max(best_so_far, best)
        rows.append({"generation": record.get("generation", 0), "method": record.get("method"),
                     "proposed": len(record.get("archs", [])), "evaluated": len(values), "best": best,
                     "mean": float(np.mean(values)) if values else None, "best_so_far": best_so_far})
    return rows
