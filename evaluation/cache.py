"""One fine-tune per (task, arch, seed, recipe) for every search of a run: the evaluation cache.

A search's evaluator asks the cache before it fine-tunes. An entry is the record of one fine-tune --
its metrics under every scheme that was scored on the fine-tuned weights -- keyed by what made it:
the task, the arch, the seed and the settings (supernet weights, data directory, casing and the
whole recipe). The fp32 search, the int8 search and the random baseline of a run that meet the same
(arch, seed, recipe) therefore share one fine-tune, and both scorings (fp32 and int8) of it. Two
recipes never mix: the recipe is part of the key, and an entry whose recorded settings differ from
its key's is refused in one line naming the file and the field.

Entries are small JSON files written atomically under ``<cache_dir>/<task>/``. Two searches that want
the same entry at once take turns on a lock file next to it, so nothing is trained twice. A search makes
first the entries of its list that no other holds (``claim(..., wait=False)`` raises ``EntryBusy`` for a
held one) and waits on a held entry, then reads its result, only when every entry it still needs is held:
two searches that chose the same finalist fine-tune its seeds side by side. A scheme the entry was not
scored with (an ORT search after PyTorch ones) is the one case that fine-tunes again; the new entry then
holds the schemes of both.
"""

from __future__ import annotations

import contextlib
import copy
import fcntl
import hashlib
import json
import os
import time

from evaluation.results import add_score_views
from utils import UserError, arch_key, arch_summary, atomic_write, get_logger, load_json_file

logger = get_logger("evaluation.cache")

CACHE_FORMAT = 1
# settings a cached fine-tune does not depend on: which extra schemes a search asks for is the
# request, not the fine-tune (an entry scored with more schemes serves fewer)
NOT_IN_KEY = ("extra_schemes",)


def fine_tune_settings(settings: dict) -> dict:
    """The part of a result's ``settings`` that makes the fine-tune (everything but the request)."""
    return {field: value for field, value in sorted(settings.items()) if field not in NOT_IN_KEY}


def check_same_settings(path: str, what: str, recorded: dict, settings: dict) -> None:
    """One line naming the first field in which an entry's recorded settings differ from the asked ones."""
    mine = fine_tune_settings(settings)
    for field in sorted(set(mine) | set(recorded)):
        if mine.get(field) != recorded.get(field):
            raise UserError(f"{path}: {what} made with {field}={recorded.get(field)!r}, asked for with "
                            f"{field}={mine.get(field)!r}; the cache never mixes settings: remove the entry or "
                            "use another EVAL_CACHE")


class EntryBusy(Exception):
    """``claim(..., wait=False)``: another process holds the entry (it is making it)."""


class EvaluationCache:
    """The fine-tunes of one run, shared by its searches (see the module docstring)."""

    def __init__(self, directory: str):
        self.directory = directory

    def key(self, task: str, arch: dict, seed: int, settings: dict) -> str:
        text = json.dumps({"format": CACHE_FORMAT, "task": task, "arch": arch_key(arch), "seed": int(seed),
                           "settings": fine_tune_settings(settings)}, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:24]

    def path(self, task: str, key: str) -> str:
        return os.path.join(self.directory, task, f"{key}.json")

    @contextlib.contextmanager
    def claim(self, task: str, key: str, what: str, wait: bool = True):
        """Hold the entry's lock while it is looked up and, if missing, made (others wait, then read it).
        With ``wait=False`` an entry another process holds raises ``EntryBusy`` at once."""
        path = self.path(task, key)
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            fd = os.open(path + ".lock", os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as err:
            raise UserError(f"EVAL_CACHE={self.directory}: cannot write the evaluation cache there "
                            f"({err.strerror})") from None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if not wait:
                    raise EntryBusy(what) from None
                started = time.perf_counter()
                logger.info("%s: another process of this run is fine-tuning it; waiting for its result", what)
                fcntl.flock(fd, fcntl.LOCK_EX)
                logger.info("%s: its result came after %.1f s", what, time.perf_counter() - started)
            yield path
        finally:
            os.close(fd)  # closing releases the lock

    def get(self, task: str, key: str, settings: dict, schemes) -> dict | None:
        """The cached record when the entry exists and was scored with every one of ``schemes``."""
        path = self.path(task, key)
        if not os.path.isfile(path):
            return None
        entry = load_json_file(path, "evaluation cache entry")
        if not isinstance(entry, dict) or entry.get("format") != CACHE_FORMAT or not isinstance(entry.get("record"),
                                                                                                   dict):
            raise UserError(f"{path}: not an evaluation cache entry of this version; remove it (it is re-made)")
        check_same_settings(path, "a cache entry", entry.get("settings") or {}, settings)
        record = entry["record"]
        if not set(schemes) <= set(record.get("best_by_scheme") or {}):
            return None
        return record

    def put(self, task: str, key: str, settings: dict, record: dict) -> None:
        with atomic_write(self.path(task, key)) as handle:
            json.dump({"format": CACHE_FORMAT, "settings": fine_tune_settings(settings), "record": record}, handle,
                      sort_keys=True)
            handle.write("\n")


class TaskSupernetEntries:
    """The task supernets of a run (``evaluation.task_supernet``) in the same cache: one per (task, seed,
    settings; the settings name the sampled space), its weights in ``<key>.safetensors`` beside a ``<key>.json`` naming what made
    it, under the same lock as an entry (``claim``), so two searches never train the same one twice."""

    def __init__(self, cache: EvaluationCache):
        self.cache = cache

    def key(self, task: str, seed: int, settings: dict) -> str:
        text = json.dumps({"format": CACHE_FORMAT, "kind": "task_supernet", "task": task, "seed": int(seed),
                           "settings": fine_tune_settings(settings)}, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:24]

    def get(self, task: str, key: str, settings: dict):
        """The task supernet's weights (a state dict) when made, else None."""
        from transformer.hf_converter import load_safetensors

        path = self.cache.path(task, key)
        if not os.path.isfile(path):
            return None
        entry = load_json_file(path, "task supernet entry")
        theirs = entry.get("settings") if isinstance(entry, dict) else None
        if not isinstance(theirs, dict) or entry.get("kind") != "task_supernet":
            raise UserError(f"{path}: not a task supernet entry of this version; remove it (it is re-made)")
        check_same_settings(path, "a task supernet", theirs, settings)
        return load_safetensors(path[:-len(".json")] + ".safetensors")

    def put(self, task: str, key: str, settings: dict, state: dict, train_cpu_seconds: float) -> None:
        from safetensors.torch import save_file

        weights = self.cache.path(task, key)[:-len(".json")] + ".safetensors"
        staging = weights + ".tmp"
        save_file({name: tensor.contiguous() for name, tensor in state.items()}, staging)
        os.replace(staging, weights)  # the entry below is written last: no entry without its weights
        with atomic_write(self.cache.path(task, key)) as handle:
            json.dump({"format": CACHE_FORMAT, "kind": "task_supernet", "settings": fine_tune_settings(settings),
                       "train_cpu_seconds": train_cpu_seconds}, handle, sort_keys=True)
            handle.write("\n")


def serve(record: dict, scheme: str, settings: dict, origin: str | None) -> dict:
    """A cached fine-tune's record as the requesting search's result: its fitness scheme, its settings
    (``origin``: the entry it was read from, recorded as ``from_cache``; None: fine-tuned for this search)."""
    served = copy.deepcopy(record)
    served["scheme"] = scheme
    served["settings"] = settings
    served.pop("from_cache", None)
    if origin is not None:
        served["from_cache"] = origin
    timing = served.get("time_per_batch_ms_by_scheme") or {}
    if scheme in timing:
        served["time_per_batch_infer_ms"] = timing[scheme]
    return add_score_views(served)


def describe(arch: dict, seed: int) -> str:
    return f"{arch_summary(arch)} seed {seed}"
