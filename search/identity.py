"""What a search *is*: its task, scheme, budget, window, space, predictor, supernet, strategy and
results directory, written once next to its candidate file (``<stem>.search.json``) and checked by
every later step. Two searches that differ in any of these never share files: a step that would
mix them (a second task at the same type and budget, another predictor, ...) is refused in one
line naming the field, before any work -- instead of silently resuming another search's
generations and averaging both tasks' fitness.
"""

from __future__ import annotations

import json
import os

from utils import UserError, atomic_write

IDENTITY_FIELDS = ("task_name", "scheme", "latency_constraint", "window_ms", "space", "predictor", "supernet",
                   "strategy", "results_dir")
STRATEGIES = ("evolution", "random")


def identity_path(candidate_file: str) -> str:
    """``cands/kd_ptq_10.cands`` -> ``cands/kd_ptq_10.search.json``."""
    stem = candidate_file[:-len(".cands")] if candidate_file.endswith(".cands") else candidate_file
    return stem + ".search.json"


def read_identity(path: str) -> dict | None:
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: not a search identity")
    return data


def check_identity(path: str, identity: dict) -> dict:
    """Write ``identity`` to ``path`` when the search is new; otherwise refuse any field that
    differs from the recorded one (``None`` in ``identity`` means "not known to this step" and is
    not compared; a field recorded as ``None`` is filled in). Returns the recorded identity."""
    recorded = read_identity(path)
    if recorded is None:
        _write(path, identity)
        return dict(identity)
    merged = dict(recorded)
    for field in IDENTITY_FIELDS:
        mine, theirs = identity.get(field), recorded.get(field)
        if mine is None:
            continue
        if theirs is None:
            merged[field] = mine
        elif mine != theirs:
            name = os.path.basename(path)[:-len(".search.json")]
            raise UserError(f"{path}: search {name} was started with {field}={_short(theirs)}, this step has "
                            f"{field}={_short(mine)}; one search has one identity: set SEARCH_NAME (e.g. "
                            f"{name}_{identity.get('task_name') or 'other'}) or use other CANDS_DIR/OUTPUT_ROOT")
    if merged != recorded:
        _write(path, merged)
    return merged


def _short(value) -> str:
    text = json.dumps(value, sort_keys=True) if isinstance(value, (dict, list)) else repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _write(path: str, identity: dict) -> None:
    with atomic_write(path) as handle:
        json.dump({field: identity.get(field) for field in IDENTITY_FIELDS} | {
            key: value for key, value in identity.items() if key not in IDENTITY_FIELDS}, handle, indent=2,
            sort_keys=True)
        handle.write("\n")


def find_searches(cands_dir: str) -> list[dict]:
    """Every search identity under ``cands_dir`` (the report's index of searches), each with
    ``name`` and ``identity_file`` added."""
    found = []
    if not os.path.isdir(cands_dir):
        return found
    for entry in sorted(os.listdir(cands_dir)):
        if entry.endswith(".search.json"):
            path = os.path.join(cands_dir, entry)
            identity = read_identity(path) or {}
            found.append(dict(identity, name=entry[:-len(".search.json")], identity_file=path))
    return found
