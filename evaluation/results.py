"""``subbert.results`` (the original block layout, byte-compatible: ``evaluation.result_blocks``) and its JSONL twin.

A block, as the original evaluator appended it for every candidate (followed by an empty line)::

    **************S*************
    task_name = rte
    architecture = {'sample_layer_num': 4, 'sample_num_attention_heads': [12, 12, 12, 12], ...}
    parameter size = 18123456
    best_acc = 0.5740072202166066
    time_per_batch_infer = 12.345 ms
    infer_cnt = 9
    **************E*************

The JSONL twin (``subbert.results.jsonl``) holds every metric of the same evaluation (fp32 and
int8, MNLI matched and mismatched, sizes, timing, seed, scheme) and is the record: it is written
first, what it holds is what is done, and the text file is its view, rebuilt from it when they
disagree (``reconcile``).
Both files are appended one record per write, flushed to disk, so a killed run loses nothing
that had finished. The parser fixes the original's bug: **one fitness per block** (the original
emitted an entry only after two ``best_acc`` lines and averaged them).
"""

from __future__ import annotations

import os
import time
from collections import defaultdict
from typing import Iterable

from evaluation.result_blocks import RESULTS_NAME, format_block, parse_results
from utils import UserError, append_jsonl, arch_key, get_logger, read_jsonl

logger = get_logger(__name__)

JSONL_NAME = "subbert.results.jsonl"

# --------------------------------------------------------------------------------------
# The score of a record: one key (``best_by_scheme`` / ``metrics_by_scheme``), read in one place
# --------------------------------------------------------------------------------------


def add_score_views(record: dict) -> dict:
    """Write the original's and older readers' keys as views of ``best_by_scheme`` /
    ``metrics_by_scheme`` (the record's one score): ``best_acc`` (the fitness scheme's primary metric,
    the block's field), ``best_fp32`` / ``metrics_fp32`` and, for an int8 fitness scheme,
    ``best_int8`` / ``metrics_int8``. Nothing reads these back but ``score`` for old files."""
    scheme = record["scheme"]
    record["metrics_fp32"] = record["metrics_by_scheme"]["torch_fp32"]
    record["best_fp32"] = record["best_by_scheme"]["torch_fp32"]
    if scheme != "torch_fp32":
        record["metrics_int8"] = record["metrics_by_scheme"][scheme]
        record["best_int8"] = record["best_by_scheme"][scheme]
    record["best_acc"] = record["best_by_scheme"][scheme]
    return record


def scheme_metrics(record: dict, scheme: str) -> dict | None:
    """``{split: {metric: value, "primary": value}}`` of ``record`` scored with ``scheme`` (None when it
    was not scored so); records from before the registry kept fp32 and int8 under their own keys."""
    by_scheme = record.get("metrics_by_scheme")
    if by_scheme is not None:
        return by_scheme.get(scheme)
    if scheme == "torch_fp32":
        return record.get("metrics_fp32")
    recorded = record.get("scheme")
    return record.get("metrics_int8") if recorded and canonical_scheme(recorded) == scheme else None


def score(record: dict, scheme: str | None = None) -> float:
    """The primary dev metric of ``record`` scored with ``scheme`` (default: its own fitness scheme)."""
    mine = canonical_scheme(record.get("scheme") or "torch_fp32")
    wanted = canonical_scheme(scheme) if scheme else mine
    by_scheme = record.get("best_by_scheme")
    if by_scheme is not None and wanted in by_scheme:
        return float(by_scheme[wanted])
    if wanted == mine:
        return float(record["best_acc"])  # older records and the original's blocks
    if wanted == "torch_fp32" and "best_fp32" in record:
        return float(record["best_fp32"])
    raise KeyError(f"the {record.get('arch_summary') or 'record'} was not scored with {wanted}")


# --------------------------------------------------------------------------------------
# Fitness for the searcher
# --------------------------------------------------------------------------------------


def load_fitness(path: str, task_name: str | None = None, scheme: str | None = None,
                 recipe: str | None = None) -> dict[str, float]:
    """``{arch_key: fitness}``: the mean of each arch's results (``fitness_scores``)."""
    return {key: sum(values) / len(values) for key, values in fitness_scores(path, task_name, scheme, recipe).items()}


def fitness_scores(path: str, task_name: str | None = None, scheme: str | None = None,
                   recipe: str | None = None) -> dict[str, list[float]]:
    """``{arch_key: [score, ...]}`` from ``subbert.results`` (or its ``.jsonl`` twin, which is read
    instead whenever it exists: it says which task, seed and scheme made each result).

    One score per block: an arch evaluated more than once (several seeds) has several. ``task_name``
    keeps only that task's results. ``scheme`` (a registry name or alias) refuses results scored with
    another scheme: a search's fitness is its own scheme's metric. ``recipe`` (a ``recipe_id``) keeps
    only the results of that recipe: the search's fine-tunes, not its finalists' longer ones.
    """
    jsonl = path if path.endswith(".jsonl") else os.path.join(os.path.dirname(path) or ".", JSONL_NAME)
    scores: dict[str, list[float]] = defaultdict(list)
    if os.path.isfile(jsonl) and (path == jsonl or os.path.basename(path) == RESULTS_NAME):
        wanted = canonical_scheme(scheme) if scheme else None
        for number, record in read_jsonl(jsonl, with_line_numbers=True):
            if task_name is not None and record.get("task_name") != task_name:
                continue
            if recipe is not None and record_recipe(record) != recipe:
                continue
            if wanted is not None and canonical_scheme(record.get("scheme", "torch_fp32")) != wanted:
                raise UserError(f"{jsonl}:{number}: scored with scheme {canonical_scheme(record['scheme'])}, but this "
                                f"search's scheme is {wanted}; a search's fitness comes from its own scheme")
            scores[arch_key(record["arch"])].append(score(record))
    elif path.endswith(".jsonl"):
        raise UserError(f"{path}: no such results file")
    else:
        for block in parse_results(path):
            if task_name is None or block.task_name == task_name:
                scores[arch_key(block.arch)].append(block.fitness)
    return dict(scores)


# --------------------------------------------------------------------------------------
# Writing, resume and reconciliation
# --------------------------------------------------------------------------------------


def canonical_scheme(name: str) -> str:
    """The registry's name of a record's scheme (older records say ``fp32`` / ``torch_dynamic``)."""
    from quantize_utils import resolve_scheme

    return resolve_scheme(name, "scheme").name


def record_recipe(record: dict) -> str:
    """The ``recipe_id`` of the recipe that made ``record`` (older records: from their settings)."""
    from evaluation.recipe import recipe_id

    return record.get("recipe_id") or recipe_id(record.get("settings") or {})


def result_key(record: dict) -> str:
    """What makes an evaluation unique: task, seed, scheme, arch and recipe (the other settings that
    made it are checked separately: ``evaluation.evaluate.check_settings``)."""
    return (f"{record['task_name']}|{record['seed']}|{canonical_scheme(record['scheme'])}|{arch_key(record['arch'])}"
            f"|{record_recipe(record)}")


def _same_settings(record: dict, settings: dict) -> bool:
    theirs = record.get("settings") or {}
    return all(theirs.get(field) == value for field, value in settings.items())


def block_text(record: dict) -> str:
    return format_block(record["task_name"], record["arch"], record["parameter_size"], record["best_acc"],
                        record["time_per_batch_infer_ms"], record["infer_cnt"])


def _append_text(path: str, text: str) -> None:
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())


class ResultsStore:
    """The two result files of one ``--output_dir``."""

    def __init__(self, output_dir: str):
        self.output_dir = output_dir
        self.results_path = os.path.join(output_dir, RESULTS_NAME)
        self.jsonl_path = os.path.join(output_dir, JSONL_NAME)

    def records(self) -> list[dict]:
        return read_jsonl(self.jsonl_path) if os.path.isfile(self.jsonl_path) else []

    def numbered_records(self) -> list[tuple[int, dict]]:
        """``(line number, record)`` pairs, for messages that name the line."""
        return read_jsonl(self.jsonl_path, with_line_numbers=True) if os.path.isfile(self.jsonl_path) else []

    def done_keys(self) -> set[str]:
        return {result_key(record) for record in self.records()}

    @staticmethod
    def key(task_name: str, arch: dict, seed: int, scheme: str, recipe: str) -> str:
        """The key of the evaluation of (task, arch, seed, scheme) with the recipe ``recipe``
        (a ``recipe_id``; ``result_key``)."""
        return result_key({"task_name": task_name, "seed": seed, "scheme": scheme, "arch": arch,
                           "recipe_id": recipe})

    def find(self, task_name: str, arch: dict, seed: int, scheme: str, settings: dict | None = None) -> dict | None:
        """The recorded result of (task, arch, seed, scheme) -- made with ``settings`` when given (a
        recipe's, see ``evaluation.config.EvaluationConfig.settings``) -- or None."""
        wanted = result_key({"task_name": task_name, "seed": seed, "scheme": scheme, "arch": arch,
                             "recipe_id": "-"}).rsplit("|", 1)[0]
        found = None
        for record in self.records():
            if result_key(record).rsplit("|", 1)[0] == wanted and (settings is None or _same_settings(record, settings)):
                found = record
        return found

    def is_done(self, task_name: str, arch: dict, seed: int, scheme: str, settings: dict | None = None) -> bool:
        """Whether (task, arch, seed, scheme) was evaluated (with ``settings``, when given)."""
        return self.find(task_name, arch, seed, scheme, settings) is not None

    def index(self) -> dict[str, dict]:
        """``{result_key: record}`` of every result (the last one of a key wins)."""
        return {result_key(record): record for record in self.records()}

    def legacy_archs(self) -> set[tuple[str, str]]:
        """``(task, arch_key)`` of the blocks of a results file that has no JSONL at all (the original
        code's, or an older run's): resume skips these archs rather than evaluating them twice. Once
        the JSONL exists it is the record, and a block without a record there is not done."""
        if not os.path.isfile(self.results_path) or os.path.isfile(self.jsonl_path):
            return set()
        return {(b.task_name, arch_key(b.arch)) for b in parse_results(self.results_path)}

    def append(self, record: dict) -> None:
        """JSONL first (the record), then the block (its view)."""
        os.makedirs(self.output_dir, exist_ok=True)
        append_jsonl(self.jsonl_path, record)
        _append_text(self.results_path, block_text(record))

    def reconcile(self) -> int:
        """Make ``subbert.results`` the view of the JSONL, which is the record. Blocks that a crash
        between the two writes left out are added (returns how many). When the text holds blocks the
        JSONL has no record of (the JSONL lost its last records, or the blocks come from other code)
        or cannot be parsed, it is kept aside as ``subbert.results.unrecorded-<time>`` and written
        anew from the JSONL: those evaluations are not done, and the run redoes them."""
        if not os.path.isfile(self.jsonl_path):
            return 0  # nothing of ours yet; a results file of other code is read by legacy_archs
        records = self.records()
        want: dict[tuple[str, str], list[dict]] = defaultdict(list)
        for record in records:
            want[(record["task_name"], arch_key(record["arch"]))].append(record)
        have: dict[tuple[str, str], int] = defaultdict(int)
        problem = None
        if os.path.isfile(self.results_path):
            try:
                for block in parse_results(self.results_path):
                    have[(block.task_name, arch_key(block.arch))] += 1
            except UserError as err:
                problem = f"cannot be read ({err})"
        unrecorded = sum(max(0, count - len(want.get(key, []))) for key, count in have.items())
        missing: list[dict] = []
        for key, group in want.items():
            missing.extend(group[have.get(key, 0):])
        if problem is None and unrecorded:
            problem = f"holds {unrecorded} block(s) with no record in {JSONL_NAME} (the record)"
        if problem is not None:
            aside = f"{self.results_path}.unrecorded-{time.strftime('%Y%m%d-%H%M%S')}"
            os.replace(self.results_path, aside)
            write_results(self.results_path, records)
            logger.warning("%s %s: kept as %s and written anew from %s; evaluations without a record are redone",
                           self.results_path, problem, aside, JSONL_NAME)
            return len(missing)
        if missing:
            _terminate_partial_block(self.results_path)
            _append_text(self.results_path, "".join(block_text(record) for record in missing))
            logger.warning("%s: rebuilt %d block(s) from %s", self.results_path, len(missing), JSONL_NAME)
        return len(missing)


def _terminate_partial_block(path: str) -> None:
    """Make sure the next block starts on its own line after a write that was cut short."""
    if os.path.isfile(path) and os.path.getsize(path):
        with open(path, "rb") as handle:
            handle.seek(-1, os.SEEK_END)
            if handle.read(1) != b"\n":
                _append_text(path, "\n")


def write_results(path: str, records: Iterable[dict]) -> None:
    """Write blocks for ``records`` to a fresh file (used by tests and tools)."""
    from utils import atomic_write

    with atomic_write(path) as handle:
        for record in records:
            handle.write(block_text(record))


# --------------------------------------------------------------------------------------
# Every arch evaluated under a results root (the report measures their real latency)
# --------------------------------------------------------------------------------------


def evaluated_archs(output_root: str) -> list[dict]:
    """Archs of every ``<output_root>/*/subbert.results.jsonl``, each once, in first-seen order."""
    if not os.path.isdir(output_root):
        raise UserError(f"{output_root}: no such results directory")
    archs: dict[str, dict] = {}
    for name in sorted(os.listdir(output_root)):
        path = os.path.join(output_root, name, JSONL_NAME)
        if os.path.isfile(path):
            for record in read_jsonl(path):
                archs.setdefault(arch_key(record["arch"]), record["arch"])
    if not archs:
        raise UserError(f"{output_root}: no */{JSONL_NAME} with results")
    return list(archs.values())


def main(argv=None) -> int:
    """``python -m evaluation.results OUTPUT_ROOT OUT.cands``: write the evaluated archs as JSON lines."""
    import argparse

    from utils import write_arch_file

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("output_root", help="directory holding <search>/subbert.results.jsonl")
    parser.add_argument("output", help="arch file to write (JSON lines)")
    args = parser.parse_args(argv)
    archs = evaluated_archs(args.output_root)
    write_arch_file(args.output, archs)
    logger.info("wrote %d evaluated archs to %s", len(archs), args.output)
    return 0


if __name__ == "__main__":
    from utils import run_cli

    run_cli(main)
