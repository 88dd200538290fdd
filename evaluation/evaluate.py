"""The typed evaluation call: ``evaluate_archs(config, archs, seeds)``.

For every (task, arch, seed) not yet in ``<output_dir>/subbert.results.jsonl`` with the same settings:
extract the sub-model from the supernet, fine-tune it with the task's recipe, evaluate it on dev (MNLI:
matched and mismatched) and score it with its scheme (plus the extra schemes on the same weights);
append the result to ``subbert.results`` (original layout) and its JSONL twin. The supernet is loaded
and the data tokenised once per task, not per arch. Every input is checked before any training.
Under ``torchrun`` the evaluations are shared out over the ranks (one GPU each).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import time
from typing import Sequence

from evaluation.cache import EntryBusy, EvaluationCache, TaskSupernetEntries, describe, serve
from evaluation.config import RUNG_RECIPE_FIELDS, SETTING_FIELDS, EvaluationConfig, TaskInput, check_archs
from evaluation.recipe import Recipe
from evaluation.results import ResultsStore
from glue.overlap import check_dev_disjoint
from glue.recipes import check_steps, finetune_steps, small_data_warning
from glue.tasks import read_split
from utils import (
    UserError,
    arch_key,
    arch_summary,
    atomic_write,
    get_logger,
    output_lock,
    read_space_record,
    set_seed,
)
from utils.progress import progress as progress_bar

logger = get_logger("candidate_evaluation")


@dataclasses.dataclass
class _Inputs:
    """What the checks before any training read once: the supernet's shape and recorded spaces, the
    tokenizer and every task's examples."""

    supernet_config: object
    spaces: dict
    tokenizer: object
    examples: dict[str, dict]  # task -> split -> examples


class Evaluator:
    """The evaluations of one ``EvaluationConfig``. Its inputs are checked and read once (``check_inputs``)
    and each task's tokenised data and supernet are kept, so a search that evaluates generation after
    generation in one process pays for them once."""

    def __init__(self, config: EvaluationConfig):
        self.config = config
        self._inputs: _Inputs | None = None
        self._tasks: dict[str, tuple] = {}  # task -> (TaskData, supernet)
        self._task_supernets: dict[tuple[str, int], object] = {}  # (task, seed) -> supernet fine-tuned on the task
        self._runs: dict[str, _TaskRun] = {}  # task -> what its fine-tunes share

    def check_inputs(self) -> _Inputs:
        """Every input but the archs checked and read before anything is written (one line naming it)."""
        if self._inputs is None:
            self._inputs = _read_inputs(self.config)
            if any(self.config.recipe_for(item.task).sandwich_epochs is not None for item in self.config.tasks):
                self.config.sandwich_space()  # checked before anything is written
        return self._inputs

    def _task_supernet(self, item: TaskInput, seed: int, settings: dict, cache: EvaluationCache | None):
        """The supernet fine-tuned on the task with the sandwich rule for ``seed``: trained once per run
        (the cache keeps it for the other searches), once per evaluator without a cache."""
        import copy

        from evaluation.task_supernet import train_task_supernet

        task = item.task
        if (task.name, seed) in self._task_supernets:
            return self._task_supernets[task.name, seed]
        data, supernet = self._task_data(item)
        recipe, space = self.config.recipe_for(task), self.config.sandwich_space()
        model = copy.deepcopy(supernet)

        def train() -> float:
            logger.info("%s seed %d: fine-tuning the supernet on the task, %g epoch(s) with the sandwich rule over "
                        "%s", task.name, seed, recipe.sandwich_epochs, space.name)
            seconds = train_task_supernet(model, data.train, space, recipe, seed, task)
            logger.info("%s seed %d: task supernet trained in %.0f CPU s", task.name, seed, seconds)
            return seconds

        if cache is None:
            train()
        else:
            entries = TaskSupernetEntries(cache)  # the settings name the sampled space (sandwich_space)
            key = entries.key(task.name, seed, settings)
            with cache.claim(task.name, key, f"{task.name} task supernet seed {seed}") as path:
                state = entries.get(task.name, key, settings)
                if state is None:
                    seconds = train()
                    entries.put(task.name, key, settings, model.state_dict(), seconds)
                else:
                    model.load_state_dict(state)
                    logger.info("%s seed %d: task supernet trained already for another search of this run (%s)",
                                task.name, seed, path)
        self._task_supernets[task.name, seed] = model.eval()
        return model

    def evaluate(self, archs: Sequence[dict], seeds: Sequence[int], origins: Sequence[str] | None = None,
                 save_seeds: Sequence[int] | None = None, arches_file: str | None = None) -> list[dict]:
        """Evaluate every (task, arch, seed) not done yet; returns the result record of every (task, arch,
        seed) asked for, in that order (a done one as recorded). ``origins`` names where each arch came
        from (``file:line``) in messages. ``save_seeds``: save the models of these seeds (default: as the
        config says). ``arches_file``: the file the archs were read from, recorded with the seeds in
        ``run_args.json`` (the report reads a final step's seeds there)."""
        config = self.config
        if save_seeds is None:
            save, save_seeds = config.save_models, config.save_seeds
        else:
            save, save_seeds = bool(save_seeds), tuple(save_seeds)
        if not seeds:
            raise UserError("--seed: no seed given")
        inputs = self.check_inputs()
        archs = check_archs(archs, origins, inputs.supernet_config, config.space, trained=inputs.spaces.get("supernet"))
        if not archs:
            raise UserError("no arch to evaluate")
        # Under torchrun every rank evaluates its own share (no process group is needed: each result is
        # one appended write to the shared files); rank 0 holds the directory.
        rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
        store = ResultsStore(config.output_dir)
        lock = output_lock(config.output_dir, "evaluation output directory") if rank == 0 else contextlib.nullcontext()
        with lock:
            _start(config, store, rank, {"arches_file": arches_file, "seeds": [int(seed) for seed in seeds],
                                         "archs": [arch_summary(arch) for arch in archs]})
            for item in config.tasks:
                self._evaluate_task(item, archs, list(seeds), store, rank, world, save, save_seeds)
        logger.info("results: %s and %s", store.results_path, store.jsonl_path)
        index = store.index()
        return [index.get(store.key(item.task.name, arch, seed, config.scheme.name,
                                    config.recipe_for(item.task).identity()))
                for item in config.tasks for arch in archs for seed in seeds]

    def _task_data(self, item: TaskInput):
        """The task tokenised and its supernet loaded, once per evaluator."""
        if item.task.name not in self._tasks:
            from evaluation.candidate import TaskData
            from evaluation.data import encode_examples
            from transformer.checkpoint import load_supernet
            from transformer.modeling_super import SuperBertForSequenceClassification

            task, recipe, inputs = item.task, self.config.recipe_for(item.task), self.check_inputs()
            set_seed(0)  # the load's fresh classifier is redrawn per seed by every fine-tune (reset_classifier)
            splits, tokenizer = inputs.examples[task.name], inputs.tokenizer
            data = TaskData(task, encode_examples(tokenizer, splits["train"], task, recipe.max_seq_length),
                            {name: encode_examples(tokenizer, splits[name], task, recipe.max_seq_length)
                             for name in task.dev_files})
            supernet = load_supernet(self.config.model_dir, SuperBertForSequenceClassification,
                                     num_labels=task.num_labels).eval()
            self._tasks[task.name] = (data, supernet)
        return self._tasks[item.task.name]

    def _task_run(self, item: TaskInput) -> "_TaskRun":
        """What every fine-tune of ``item``'s task under this config shares, made once per evaluator."""
        if item.task.name in self._runs:
            return self._runs[item.task.name]
        import torch

        config = self.config
        if config.num_threads > 0:
            torch.set_num_threads(config.num_threads)
        device = torch.device("cpu")
        if torch.cuda.is_available() and not config.no_cuda:
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)) % torch.cuda.device_count())
        recipe = config.recipe_for(item.task)
        data, supernet = self._task_data(item)
        run = _TaskRun(item, config.settings(item), recipe, recipe.identity(), data, supernet,
                       self.check_inputs().tokenizer, device,
                       config.num_threads if config.num_threads > 0 else torch.get_num_threads(),
                       EvaluationCache(config.cache_dir) if config.cache_dir else None)
        self._runs[item.task.name] = run
        return run

    def _fine_tune(self, run: "_TaskRun", arch: dict, seed: int, keep: str | None) -> dict:
        """Fine-tune and score one (arch, seed) with the run's recipe: the record a result or cache entry holds."""
        from evaluation.candidate import evaluate_candidate

        task, recipe, tune = run.item.task, run.recipe, run.recipe.finetune
        logger.info("%s seed %d %s: fine-tuning %d steps (%d examples, batch %d, lr %g, %g epoch(s)), %s "
                    "recipe %s", task.name, seed, arch_summary(arch),
                    finetune_steps(len(run.data.train), tune.train_batch_size, tune.num_train_epochs),
                    len(run.data.train), tune.train_batch_size, tune.learning_rate, tune.num_train_epochs,
                    self.config.rung, run.recipe_name)
        sandwich = recipe.sandwich_epochs is not None
        start = self._task_supernet(run.item, seed, run.settings, run.cache) if sandwich else run.supernet
        made = evaluate_candidate(start, arch, run.data, recipe.for_seed(seed), run.device, self.config.scheme, keep,
                                  tokenizer=run.tokenizer, extra_schemes=self.config.extra_schemes,
                                  threads=run.threads, model_overrides=recipe.model_overrides(),
                                  keep_classifier=sandwich)
        made.update(max_seq_length=recipe.max_seq_length, train_examples=len(run.data.train), settings=run.settings,
                    dev_examples={name: len(split) for name, split in run.data.dev.items()}, rung=self.config.rung,
                    recipe_id=run.recipe_name)
        return made

    def make_entry(self, item: TaskInput, arch: dict, seed: int) -> bool:
        """A spare core's share (``evaluation.spare``): make the (arch, seed) cache entry of this config if it
        is missing and no other process holds it; True when it was made here."""
        shared = self._task_run(item)
        try:
            served = _through_cache(shared.cache, item.task.name, arch, seed, shared.settings, self.config,
                                    lambda: self._fine_tune(shared, arch, seed, None), wait=False)
        except EntryBusy:
            return False
        return "from_cache" not in served

    def _evaluate_task(self, item: TaskInput, archs: list[dict], seeds: list[int], store: ResultsStore, rank: int,
                       world: int, save: bool, save_seeds: tuple[int, ...] | None) -> None:
        from evaluation.spare import post_order

        config, task = self.config, item.task
        recipe_name = config.recipe_for(task).identity()
        done, legacy = store.done_keys(), store.legacy_archs()
        todo = []
        for arch in archs:
            if (task.name, arch_key(arch)) in legacy:
                logger.info("%s: %s already has a block without a JSONL twin; skipped", task.name, arch_summary(arch))
                continue
            todo += [(arch, seed) for seed in seeds
                     if store.key(task.name, arch, seed, config.scheme.name, recipe_name) not in done]
        skipped = len(archs) * len(seeds) - len(todo)
        todo = todo[rank::world]
        logger.info("%s: %d evaluation(s) to run%s, %d already done with the same settings (resume)", task.name,
                    len(todo), f" on rank {rank} of {world}" if world > 1 else "", skipped)
        if not todo:
            return
        shared = self._task_run(item)
        warn_small_data(task.name, len(shared.data.train), shared.recipe.finetune)
        save_dir = os.path.join(config.output_dir, "models") if save else None

        def run(arch: dict, seed: int, wait: bool) -> dict:
            """The (arch, seed) result: fine-tuned here, or read from the cache (``EntryBusy`` without
            ``wait`` when another process is making it)."""
            keep = save_dir if save_dir and (save_seeds is None or seed in save_seeds) else None
            if shared.cache is None or keep:  # a model to save is trained here, not looked up
                return self._fine_tune(shared, arch, seed, keep)
            return _through_cache(shared.cache, task.name, arch, seed, shared.settings, config,
                                  lambda: self._fine_tune(shared, arch, seed, None), wait)

        pending, deferred = list(todo), set()
        # what this search still needs, posted for a spare core (evaluation.spare) while it works through it
        order = post_order(config, task.name, todo) if shared.cache and not save_dir else contextlib.nullcontext()
        with order, progress_bar(total=len(todo), desc=f"{task.name} candidates", unit="arch") as progress:
            while pending:
                arch, seed, record = _first_free(pending, run, deferred, task.name)
                store.append(record)
                text = " ".join(f"{name} {value:.4f}" for name, value in record["best_by_scheme"].items())
                progress.set_postfix_str(f"{arch_summary(arch)} {text}")
                progress.update(1)
                logger.info("%s seed %d %s: %s (%.1f s)", task.name, seed, arch_summary(arch), text,
                            record["elapsed_seconds"])


@dataclasses.dataclass
class _TaskRun:
    """One task's shared state for the fine-tunes of an evaluator: its settings and recipe, data, supernet,
    tokenizer, device, threads and the run's cache (None: off)."""

    item: TaskInput
    settings: dict
    recipe: Recipe
    recipe_name: str
    data: object
    supernet: object
    tokenizer: object
    device: object
    threads: int
    cache: EvaluationCache | None


def _first_free(pending: list, run, deferred: set, task: str) -> tuple[dict, int, dict]:
    """Take from ``pending`` the first (arch, seed) no other search is making, and its result; when
    others make every one, wait for the first. Two searches that need the same fine-tunes thus make
    them side by side (both cores busy) instead of one waiting through each of the other's."""
    for index, (arch, seed) in enumerate(pending):
        try:
            record = run(arch, seed, wait=False)
        except EntryBusy:
            if (arch_key(arch), seed) not in deferred:
                deferred.add((arch_key(arch), seed))
                logger.info("%s %s: another process of this run (a search or the spare core) is fine-tuning it; "
                            "the others first", task, describe(arch, seed))
            continue
        del pending[index]
        return arch, seed, record
    arch, seed = pending.pop(0)
    return arch, seed, run(arch, seed, wait=True)


def _through_cache(cache: EvaluationCache, task: str, arch: dict, seed: int, settings: dict,
                   config: EvaluationConfig, fine_tune, wait: bool = True) -> dict:
    """The (task, arch, seed, recipe) fine-tune from the run's cache, made (and cached) when missing
    (``EntryBusy`` without ``wait`` when another search holds the entry)."""
    schemes = config.scheme_names()
    key = cache.key(task, arch, seed, settings)
    with cache.claim(task, key, f"{task} {describe(arch, seed)}", wait=wait) as path:
        cached = cache.get(task, key, settings, schemes)
        hit = cached is not None
        if not hit:
            cached = fine_tune()
            cache.put(task, key, settings, cached)
        else:
            logger.info("%s %s: fine-tuned already by another process of this run (%s)", task, describe(arch, seed),
                        path)
    served = serve(cached, config.scheme.name, settings, path if hit else None)
    served.update(rung=config.rung)
    return served


_WARNED: set[str] = set()  # small-data warnings already given by this process


def warn_small_data(task: str, examples: int, finetune) -> None:
    """One warning line, once per process (a search runs its steps in one), when the task's data are too
    small for its recipe (``glue.recipes.small_data_warning``)."""
    warning = small_data_warning(task, examples, finetune.train_batch_size, finetune.num_train_epochs)
    if warning and warning not in _WARNED:
        _WARNED.add(warning)
        logger.warning(warning)


def evaluate_archs(config: EvaluationConfig, archs: Sequence[dict], seeds: Sequence[int],
                   origins: Sequence[str] | None = None, arches_file: str | None = None) -> list[dict]:
    """``Evaluator(config).evaluate(archs, seeds, origins, arches_file=...)``: the typed evaluation call."""
    return Evaluator(config).evaluate(archs, seeds, origins, arches_file=arches_file)


def _read_inputs(config: EvaluationConfig) -> _Inputs:
    from evaluation.data import load_tokenizer
    from transformer.config import SuperBertConfig

    if os.path.exists(config.output_dir) and not os.path.isdir(config.output_dir):
        raise UserError(f"--output_dir: {config.output_dir} exists and is not a directory")
    supernet_config = SuperBertConfig.load(config.model_dir)
    spaces = read_space_record(config.model_dir) if os.path.isdir(config.model_dir) else {}
    tokenizer = load_tokenizer(config.model_dir, config.do_lower_case)
    if len(tokenizer) != supernet_config.vocab_size:
        raise UserError(f"--model {config.model_dir}: vocab.txt has {len(tokenizer)} tokens but the supernet's "
                        f"embedding has {supernet_config.vocab_size} rows; the vocabulary must be the one the "
                        "supernet was trained with")
    # read every task's files first: a missing file or bad row stops the run before training
    examples = {}
    for item in config.tasks:
        recipe = config.recipe_for(item.task)
        splits = {"train": read_split(item.task, item.data_dir, "train", recipe.max_train_examples)}
        for name in item.task.dev_files:
            splits[name] = read_split(item.task, item.data_dir, name, recipe.max_eval_examples)
        check_dev_disjoint(item.task, item.data_dir, splits["train"], {n: splits[n] for n in item.task.dev_files})
        check_steps(item.task.name, len(splits["train"]), recipe.finetune)
        examples[item.task.name] = splits
    return _Inputs(supernet_config, spaces, tokenizer, examples)


def _start(config: EvaluationConfig, store: ResultsStore, rank: int, call: dict) -> None:
    """Clean up after killed runs, refuse results of other settings, record the run and this ``call``
    (its arch file, seeds and archs)."""
    if rank == 0:
        remove_stale_staging(os.path.join(config.output_dir, "models"))
        if config.restart:
            _move_aside(store)
    for item in config.tasks:
        check_settings(store, item.task.name, config.settings(item), config.rung)
    if rank == 0:
        store.reconcile()
        with atomic_write(os.path.join(config.output_dir, "run_args.json")) as handle:
            json.dump(dict(config.describe(), **call, settings={item.task.name: config.settings(item)
                                                                for item in config.tasks}),
                      handle, indent=2, sort_keys=True)


def check_settings(store: ResultsStore, task_name: str, settings: dict, rung: str = "search") -> None:
    """Refuse to add to results made with other settings (one line naming the first difference). The
    recipe is compared with the results of the same rung only: a search's candidates and its finalists
    are fine-tuned with a recipe each (a result's key holds its recipe, so the two never mix)."""
    for number, record in store.numbered_records():
        if record.get("task_name") != task_name:
            continue
        where = f"{store.jsonl_path}:{number}"
        theirs = record.get("settings")
        if theirs is None:
            raise UserError(f"{where}: this result does not say which settings made it (older format); "
                            "use another --output_dir or pass --restart")
        same_rung = record.get("rung", "search") == rung
        for field in ("model_identity",) + SETTING_FIELDS:
            if field in RUNG_RECIPE_FIELDS and not same_rung:
                continue
            if theirs.get(field) != settings.get(field):
                shown = "model" if field == "model_identity" else field
                mine = settings.get("model") if field == "model_identity" else settings.get(field)
                old = theirs.get("model") if field == "model_identity" else theirs.get(field)
                detail = " (same path, other weights)" if field == "model_identity" and mine == old else ""
                raise UserError(f"{where}: evaluated with {shown}={old!r}, this run has {shown}={mine!r}{detail}; "
                                "results of other settings are never reused: use another --output_dir or pass "
                                "--restart")


def _move_aside(store: ResultsStore) -> None:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for path in (store.jsonl_path, store.results_path, os.path.join(store.output_dir, "run_args.json")):
        if os.path.exists(path):
            os.replace(path, f"{path}.before-{stamp}")
            logger.warning("--restart: moved %s to %s.before-%s", path, path, stamp)


def remove_stale_staging(models_dir: str) -> int:
    """Remove what killed runs left under ``models/``: ``save_hf_directory`` stages a model in
    ``.<name>.<random>`` and renames it into place, so a hidden directory there is a fragment
    (only the lock holder calls this, so no live staging is touched). Returns how many."""
    if not os.path.isdir(models_dir):
        return 0
    stale = [name for name in os.listdir(models_dir) if name.startswith(".")
             and os.path.isdir(os.path.join(models_dir, name))]
    for name in stale:
        shutil.rmtree(os.path.join(models_dir, name), ignore_errors=True)
    if stale:
        logger.warning("%s: removed %d staging director%s left by a killed run", models_dir, len(stale),
                       "y" if len(stale) == 1 else "ies")
    return len(stale)
