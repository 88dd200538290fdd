"""What the report reads: every search (its identity, results, log and final top-k), the latency
measured on the evaluated archs, and the latency predictors. Pure reading and checking: one-line
errors naming the search, file or arch when something is missing or inconsistent."""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections import defaultdict

from evaluation.results import JSONL_NAME, ResultsStore, canonical_scheme, record_recipe
from latency.finalists import read_summary
from search.history import default_log_path, read_search_log
from quantize_utils import DEPLOYED
from search.identity import find_searches as find_identities
from utils import UserError, arch_key, load_json_file, read_arch_file

# Searches made before identities existed: kd_<short>_<budget>[_random] directories of the deployed schemes.
LEGACY_TYPES = {scheme.short: scheme.name for scheme in DEPLOYED}
LEGACY_SEARCH_DIR = re.compile(rf"^kd_({'|'.join(LEGACY_TYPES)})_([0-9]+(?:\.[0-9]+)?)(_random)?$")
RUN_ARGS_NAME = "run_args.json"  # the evaluator's record of its latest call (arches file, seeds, settings)


@dataclasses.dataclass
class Search:
    name: str
    task: str
    scheme: str  # canonical registry name of the fitness scheme
    budget_ms: float
    strategy: str  # evolution | random
    results_dir: str
    records: list[dict]  # every result of the search's task, in the order they were written
    log: list[dict]  # the search log's generations
    final_archs: list[dict] | None  # the TopK file (None: the final step never ran)
    identity: dict
    # the search's measurement of its finalists in the predictor's table unit (latency.finalists;
    # None: a search from before it, or a predictor whose table has no unit)
    finalist_latency: dict | None = None
    recorded_seeds: list[int] | None = None  # the seeds the final step was started with (its evaluator's record)
    final_record: dict | None = None  # <name>.final.json: the final step's seeds and recipe (search.chain)

    def finalist_measurement(self, arch: dict) -> dict | None:
        """The search's own measurement of ``arch`` (a finalist or a finalist candidate), if any."""
        key = arch_key(arch)
        return next((e for e in (self.finalist_latency or {}).get("measured", []) if e["arch_key"] == key), None)

    @property
    def window_ms(self) -> list[float] | None:
        """The latency window the search recorded in its identity ([low, high] in ms)."""
        window = self.identity.get("window_ms")
        return [float(bound) for bound in window] if window else None

    @property
    def final_seeds(self) -> list[int]:
        """The final step's seeds: as recorded when it started, else every seed its finalists have."""
        if self.final_record and self.final_record.get("seeds"):
            return sorted(int(seed) for seed in self.final_record["seeds"])
        if self.recorded_seeds:
            return list(self.recorded_seeds)
        return sorted({record["seed"] for arch in self.final_archs or [] for record in self.records_of(arch)})

    @property
    def search_seed(self) -> int | None:
        return self.records[0]["seed"] if self.records else None

    def _of_recipe(self, field: str) -> list[dict]:
        """The results of the recipe the final record names under ``field`` (every result without one)."""
        wanted = (self.final_record or {}).get(field)
        return [record for record in self.records if wanted is None or record_recipe(record) == wanted]

    def search_records(self) -> list[dict]:
        """The search phase: each arch's first result at the search seed with the search's recipe, in
        evaluation order."""
        seen, out = set(), []
        for record in self._of_recipe("search_recipe_id"):
            key = arch_key(record["arch"])
            if record["seed"] == self.search_seed and key not in seen:
                seen.add(key)
                out.append(record)
        return out

    def records_of(self, arch: dict) -> list[dict]:
        """The final step's results of ``arch``: those of the final recipe and, when the final step recorded its
        seeds, of those seeds only -- a search whose candidates' recipe is the finalists' own holds a finalist's
        result at the search seed too, the one that chose it, which is not one of the final seeds unless SEEDS
        names it (every result when the search recorded no final step, or one from before the final recipe)."""
        key = arch_key(arch)
        seeds = set((self.final_record or {}).get("seeds") or [])
        return [record for record in self._of_recipe("recipe_id")
                if arch_key(record["arch"]) == key and (not seeds or record["seed"] in seeds)]


def _final_file(cands_dir: str, name: str) -> str:
    return os.path.join(cands_dir, f"{name}.final.cands")


def read_final_record(cands_dir: str, name: str) -> dict | None:
    """``<name>.final.json`` (what the final step is: its seeds and recipe), or None."""
    path = os.path.join(cands_dir, f"{name}.final.json")
    if not os.path.isfile(path):
        return None
    data = load_json_file(path, "final-step record")
    if not isinstance(data, dict):
        raise UserError(f"{path}: not a final-step record (a JSON object)")
    return data


def recorded_final_seeds(results_dir: str, name: str) -> list[int] | None:
    """The seeds the search's final step evaluates its finalists with, as its evaluator recorded them
    when the step started (``run_args.json`` of a call on ``<name>.final.cands``); None when the
    latest evaluation there was another step's, or there is no record."""
    try:
        with open(os.path.join(results_dir, RUN_ARGS_NAME), encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError):
        return None
    arches, seeds = data.get("arches_file"), data.get("seeds")
    if not isinstance(arches, str) or os.path.basename(arches) != f"{name}.final.cands" or not seeds:
        return None
    try:
        return sorted(int(seed) for seed in seeds)
    except (TypeError, ValueError):
        return None


def load_searches(cands_dir: str, output_root: str | None = None, task: str | None = None) -> list[Search]:
    """Every search with results: from the identities in ``cands_dir`` (and, for older runs,
    ``kd_<type>_<budget>`` directories under ``output_root``). ``task`` keeps one task; a root with
    several tasks and no ``task`` is refused (one line naming them)."""
    found: dict[str, dict] = {}
    for identity in find_identities(cands_dir):
        results_dir = identity.get("results_dir") or (os.path.join(output_root, identity["name"]) if output_root else None)
        if results_dir:
            found[identity["name"]] = dict(identity, results_dir=results_dir)
    if output_root and os.path.isdir(output_root):
        for name in sorted(os.listdir(output_root)):
            match = LEGACY_SEARCH_DIR.match(name)
            if match and name not in found and os.path.isfile(os.path.join(output_root, name, JSONL_NAME)):
                found[name] = {"name": name, "scheme": LEGACY_TYPES[match.group(1)], "task_name": None,
                               "latency_constraint": float(match.group(2)), "results_dir": os.path.join(output_root, name),
                               "strategy": "random" if match.group(3) else "evolution"}
    if not found:
        raise UserError(f"no search found: no <name>.search.json in {cands_dir} "
                        + (f"and no kd_<{'|'.join(LEGACY_TYPES)}>_<ms>/{JSONL_NAME} under {output_root}" if output_root else ""))
    searches = []
    for name, identity in sorted(found.items()):
        records = ResultsStore(identity["results_dir"]).records()
        if not records:
            continue
        tasks = sorted({record["task_name"] for record in records})
        wanted = task or identity.get("task_name")
        if wanted is None and len(tasks) > 1:
            raise UserError(f"{identity['results_dir']}: results of several tasks ({', '.join(tasks)}); pass --task")
        wanted = wanted or tasks[0]
        records = [record for record in records if record["task_name"] == wanted]
        if not records:
            continue
        scheme = canonical_scheme(identity.get("scheme") or records[0]["scheme"])
        odd = [r for r in records if canonical_scheme(r["scheme"]) != scheme]
        if odd:
            raise UserError(f"{identity['results_dir']}: results scored with {canonical_scheme(odd[0]['scheme'])} in "
                            f"a {scheme} search; one search has one scheme")
        final_path = _final_file(cands_dir, name)
        final = read_arch_file(final_path) if os.path.isfile(final_path) else None
        log = read_search_log(default_log_path(os.path.join(cands_dir, name + ".cands")))
        searches.append(Search(name=name, task=wanted, scheme=scheme, budget_ms=float(identity["latency_constraint"]),
                               strategy=identity.get("strategy") or "evolution", results_dir=identity["results_dir"],
                               records=records, log=log, final_archs=final, identity=identity,
                               finalist_latency=read_summary(final_path) if final is not None else None,
                               recorded_seeds=recorded_final_seeds(identity["results_dir"], name),
                               final_record=read_final_record(cands_dir, name)))
    if not searches:
        raise UserError(f"no search under {cands_dir} has results yet" + (f" for task {task}" if task else ""))
    tasks = sorted({search.task for search in searches})
    if len(tasks) > 1:
        raise UserError(f"{cands_dir}: searches of several tasks ({', '.join(tasks)}) in one output root; pass --task "
                        "to report one of them")
    return searches


def check_finished(searches: list[Search], seeds: list[int] | None, allow_partial: bool) -> list[str]:
    """Refuse (or, with ``allow_partial``, list as warnings) searches whose final step did not run
    and finalists with fewer seeds than asked: ``seeds`` when given, else the seeds each search's
    final step recorded (``Search.final_seeds``), so the report never asks for them again."""
    problems = []
    for search in searches:
        if search.final_archs is None:
            problems.append(f"search {search.name} never finished: no {search.name}.final.cands (run its final step: "
                            "bash script/search.sh final, or FINAL=1 bash script/run_search.sh)")
            continue
        wanted = seeds or search.final_seeds
        for arch in search.final_archs:
            have = sorted({record["seed"] for record in search.records_of(arch)})
            missing = [seed for seed in wanted if seed not in have]
            if missing or not have:
                problems.append(f"search {search.name}: finalist {arch_key(arch)} has seeds {have}, "
                                f"missing {missing or wanted}")
    if problems and not allow_partial:
        raise UserError(problems[0] + ("" if len(problems) == 1 else f" (and {len(problems) - 1} more problem(s))")
                        + "; pass --allow_partial to report what is there")
    return problems


def load_measured(paths: list[str], predictors: dict | None = None) -> tuple[dict, dict]:
    """The latency tables measured on the evaluated archs: ``({backend: {arch_key: record}},
    {backend: comparability})``. A table measured in its backend's predictor table's unit
    (``latency.units.measure_in_unit``) is taken as it is; when a table otherwise shares reference
    archs with that table, its latencies are expressed in that table's unit (``latency.drift.make_comparable``;
    ``uncorrected_median_ms`` keeps the value as measured) and ``comparability`` says by which factor,
    how uniform it was and how much the re-measurement itself drifted."""
    from latency.drift import drift_summary, make_comparable
    from latency.table import read_latency_table

    measured: dict[str, dict[str, dict]] = defaultdict(dict)
    comparability: dict[str, dict] = {}
    for path in paths:
        table = read_latency_table(path)
        backend = table[0].get("backend") if table else None
        if backend in (None, "unknown"):
            raise UserError(f"{path}: latency records without a backend; measure with the latency stage")
        records = list(table)
        predictor = (predictors or {}).get(backend)
        target = (predictor.metadata.get("table_references") if predictor is not None else None) or None
        entry = {"table": path, "remeasurement_drift": drift_summary(table)}
        unit = (predictor.metadata.get("table_unit") if predictor is not None else None) or {}
        if unit and records and records[0].get("unit_source") == unit.get("source"):
            entry.update(factor=None, note="re-measured in the predictor table's unit (each arch paired with its "
                                           "reference, the ratio times the reference's latency at the table's start)")
        elif target and getattr(table, "references", None):
            records, info = make_comparable(table, target)
            entry.update(factor=info["factor"], spread_pct=info["spread_pct"], references=info["references"])
        else:
            entry.update(factor=None, note="not rescaled: the tables share no reference arch")
        comparability[backend] = entry
        for record in records:
            measured[backend][record["arch_key"]] = record
    return dict(measured), comparability


def load_predictors(paths: list[str]) -> dict:
    """``{backend: LatencyPredictor}``, keyed by the backend each predictor was trained on."""
    from latency.predictor import load_predictor

    predictors = {}
    for path in paths:
        if not path:
            continue
        if not os.path.isfile(path):
            raise UserError(f"{path}: no such predictor checkpoint")
        predictor = load_predictor(path)
        backend = predictor.metadata.get("backend", "unknown")
        predictors[backend] = predictor
    return predictors
