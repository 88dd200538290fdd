"""The one command line behind ``superbert_run_en_classifier_fp.py`` and ``..._ptq.py``.

For every (task, arch, seed) not yet in ``<output_dir>/subbert.results.jsonl``: extract the
sub-model from the supernet, fine-tune it with the task's original hyper-parameters, evaluate
on dev (MNLI: matched and mismatched), and score it with its scheme (the registry in
``quantize_utils``: fp32 for the fp evaluator, PyTorch or ONNX Runtime int8 for ptq, plus any
``--extra_schemes`` on the same weights); append the result to ``subbert.results`` (original layout)
and its JSONL twin. The supernet is loaded and the data tokenised once per task, not per arch.
Every input is checked before any training, and a result is reused only when the settings that
produced it (model, data, recipe, scheme) match this run's. Launched with
``torchrun --nproc_per_node N``, the candidates are shared out over the ranks (one GPU each).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import time

import torch

from evaluation.candidate import TaskData, evaluate_candidate
from evaluation.data import encode_examples, load_tokenizer
from evaluation.finetune import FinetuneConfig
from evaluation.results import ResultsStore, result_key
from glue.recipes import finetune_steps, recipes_help, small_data_warning
from glue.tasks import TASKS, get_task, read_split
from quantize_utils import SCHEMES, resolve_scheme
from transformer.checkpoint import load_supernet
from transformer.config import SuperBertConfig
from transformer.hf_converter import check_hf_compatible
from transformer.modeling_super import SuperBertForSequenceClassification, check_arch_fits
from utils import (
    ArchError,
    Grid,
    SearchSpace,
    UserError,
    arch_key,
    arch_summary,
    atomic_write,
    get_logger,
    iter_arch_lines,
    output_lock,
    read_space_record,
    resolve_space,
    set_seed,
    uncovered_dimensions,
)
from utils.progress import progress as progress_bar

logger = get_logger("candidate_evaluation")

# The settings a result depends on besides (task, seed, scheme, arch): a result made with other
# settings is never reused (issue: re-running with another lr reported "1 already done").
SETTING_FIELDS = ("model", "data_dir", "do_lower_case", "learning_rate", "num_train_epochs", "train_batch_size",
                  "eval_batch_size", "eval_step", "warmup_proportion", "weight_decay", "max_seq_length",
                  "max_train_examples", "max_eval_examples", "extra_schemes")
_WARNED: set[str] = set()  # small-data warnings already given by this process
INT8_SCHEME_NAMES = tuple(name for name, scheme in SCHEMES.items() if scheme.quantized)


def _seeds(values: list[str]) -> list[int]:
    """``--seed 42 43`` or the original's ``--seed "42 43"``."""
    seeds = []
    for value in values:
        for token in value.split():
            try:
                seeds.append(int(token))
            except ValueError:
                raise UserError(f"--seed: {token!r} is not an integer") from None
    if not seeds:
        raise UserError("--seed: no seed given")
    return seeds


def build_parser(quantize: bool, description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_dir", nargs="+", required=True, help="GLUE task directory (one per --task_name)")
    parser.add_argument("--model", required=True, help="supernet directory (or a plain HF BERT directory)")
    parser.add_argument("--task_name", nargs="+", required=True,
                        help=f"GLUE task(s): {', '.join(TASKS)}")
    parser.add_argument("--output_dir", required=True, help="subbert.results(.jsonl) and saved models go here")
    parser.add_argument("--arches_file", required=True, help=".cands file: one arch per line (JSON or Python repr)")
    parser.add_argument("--num_train_epochs", type=float, default=1.0)
    parser.add_argument("--seed", nargs="+", default=["42"], help="one or more seeds")
    parser.add_argument("--do_lower_case", action="store_true", help="lower-case the text (uncased vocab)")
    parser.add_argument("--save_model_flag", type=int, choices=(0, 1), default=0,
                        help="1: save each fine-tuned sub-model (HF dir + tokenizer) and its int8 model "
                             "(model_int8.pt / model_int8.onnx) under output_dir/models")
    parser.add_argument("--save_seeds", nargs="+", type=int, default=None,
                        help="with --save_model_flag 1: save only the models of these seeds")
    group = parser.add_argument_group("overrides of the per-task table (default: the original's values)")
    group.add_argument("--train_batch_size", type=int, default=None)
    group.add_argument("--eval_batch_size", type=int, default=32)
    group.add_argument("--max_seq_length", type=int, default=None)
    group.add_argument("--learning_rate", type=float, default=None)
    group.add_argument("--eval_step", type=int, default=None)
    group.add_argument("--warmup_proportion", type=float, default=0.1)
    group.add_argument("--weight_decay", type=float, default=0.01)
    group.add_argument("--max_train_examples", type=int, default=None, help="debug/demo: first N training examples")
    group.add_argument("--max_eval_examples", type=int, default=None, help="debug/demo: first N examples per dev set")
    schemes = parser.add_argument_group("schemes (quantize_utils.SCHEMES; names or aliases such as ptq, int8, ort)")
    default = "torch_dynamic_int8" if quantize else "torch_fp32"
    schemes.add_argument("--scheme", "--quant_scheme", dest="scheme", default=default,
                         help=f"the fitness scheme (best_acc); default {default}. "
                              + ("torch_dynamic_int8: the latency tables' int8 (dynamic int8 Linear on the sub-model); "
                                 "ort_dynamic_int8: ONNX Runtime int8; fakequant: the original's whole-supernet "
                                 "min-max fake-quant (parity)" if quantize else "torch_fp32: no quantization"))
    schemes.add_argument("--extra_schemes", nargs="*", default=[],
                         help="int8 schemes also scored on the same fine-tuned weights (recorded, not the fitness), "
                              "e.g. torch_dynamic_int8 for the fp32 search's 'quantize the winner' row")
    parser.add_argument("--space", default=None,
                        help="also require every arch to be in this search space (a name, a family or a JSON file)")
    parser.add_argument("--restart", action="store_true",
                        help="results made with other settings are moved aside (subbert.results*.before-<time>) "
                             "and everything is evaluated again")
    parser.add_argument("--no_cuda", action="store_true", help="train on CPU even if a GPU is present")
    parser.add_argument("--num_threads", type=int, default=0,
                        help="torch CPU threads (0 = torch's default). Small sub-models on a busy CPU are much "
                             "faster with 1 (see BENCHMARKS.md)")
    parser.add_argument("--super_model", default=None, help=argparse.SUPPRESS)  # original flag, no effect here
    parser.add_argument("--cache_dir", default=None, help=argparse.SUPPRESS)  # original flag, unused there too
    parser.epilog = recipes_help(*(parser.get_default(name) for name in
                                   ("num_train_epochs", "warmup_proportion", "weight_decay")))
    return parser


def _arch_as_space(arch: dict) -> SearchSpace:
    def point(values):
        return Grid(min(values), max(values))
    return SearchSpace("arch", point([arch["sample_layer_num"]]), point([arch["sample_hidden_size"]]),
                       point(arch["sample_intermediate_sizes"]), point(arch["sample_num_attention_heads"]),
                       point(arch["sample_qkv_sizes"]))


def read_arches(path: str, supernet_config: SuperBertConfig, space: SearchSpace | None,
                trained: SearchSpace | None = None) -> list[dict]:
    """Every arch of ``--arches_file``, checked against the supernet (its shape and the ranges its
    sampler trained, when recorded) and ``--space`` before any work; duplicates are evaluated once."""
    archs, seen = [], set()
    for number, arch, _extra in iter_arch_lines(path):
        where = f"{path}:{number}"
        if space is not None:
            space.validate(arch, where=where)
        check_arch_fits(arch, supernet_config, where=where)
        if trained is not None:
            outside = uncovered_dimensions(_arch_as_space(arch), trained)
            if outside:
                raise ArchError(f"{where}: {arch_summary(arch)} uses slices the supernet never trained "
                                f"({'; '.join(outside)} of its sampler {trained.name})")
        try:
            check_hf_compatible(arch)
        except ArchError as err:
            raise ArchError(f"{where}: {err}") from None
        key = arch_key(arch)
        if key not in seen:
            seen.add(key)
            archs.append(arch)
    if not archs:
        raise UserError(f"--arches_file: {path} holds no arch")
    return archs


def _hparams(args, task, seed: int) -> tuple[FinetuneConfig, int]:
    table = task.hparams
    config = FinetuneConfig(
        learning_rate=args.learning_rate or table.learning_rate,
        num_train_epochs=args.num_train_epochs,
        train_batch_size=args.train_batch_size or table.train_batch_size,
        eval_batch_size=args.eval_batch_size,
        eval_step=args.eval_step or table.eval_step,
        warmup_proportion=args.warmup_proportion,
        weight_decay=args.weight_decay,
        seed=seed,
    )
    return config, args.max_seq_length or table.max_seq_length


def _model_identity(model_dir: str) -> str:
    """Where the supernet is and which weights it holds (path, size and mtime of its files)."""
    parts = [os.path.realpath(model_dir)]
    for name in sorted(os.listdir(model_dir)):
        if name.endswith((".safetensors", ".bin", ".json", ".txt")):
            stat = os.stat(os.path.join(model_dir, name))
            parts.append(f"{name}:{stat.st_size}:{stat.st_mtime_ns}")
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def run_settings(args, task, data_dir: str, extra_schemes: list[str]) -> dict:
    """Everything besides (task, seed, scheme, arch) that a result depends on."""
    config, max_seq = _hparams(args, task, 0)
    return {"model": os.path.realpath(args.model), "model_identity": _model_identity(args.model),
            "data_dir": os.path.realpath(data_dir), "do_lower_case": bool(args.do_lower_case),
            "learning_rate": config.learning_rate, "num_train_epochs": config.num_train_epochs,
            "train_batch_size": config.train_batch_size, "eval_batch_size": config.eval_batch_size,
            "eval_step": config.eval_step, "warmup_proportion": config.warmup_proportion,
            "weight_decay": config.weight_decay, "max_seq_length": max_seq,
            "max_train_examples": args.max_train_examples, "max_eval_examples": args.max_eval_examples,
            "extra_schemes": sorted(extra_schemes)}


def check_settings(store: ResultsStore, task_name: str, settings: dict) -> None:
    """Refuse to add to results made with other settings (one line naming the first difference)."""
    for number, record in store.numbered_records():
        if record.get("task_name") != task_name:
            continue
        where = f"{store.jsonl_path}:{number}"
        theirs = record.get("settings")
        if theirs is None:
            raise UserError(f"{where}: this result does not say which settings made it (older format); "
                            "use another --output_dir or pass --restart")
        for field in ("model_identity",) + SETTING_FIELDS:
            if theirs.get(field) != settings.get(field):
                shown = "model" if field == "model_identity" else field
                mine = settings.get("model") if field == "model_identity" else settings.get(field)
                old = theirs.get("model") if field == "model_identity" else theirs.get(field)
                detail = " (same path, other weights)" if field == "model_identity" and mine == old else ""
                raise UserError(f"{where}: evaluated with {shown}={old!r}, this run has {shown}={mine!r}{detail}; "
                                "results of other settings are never reused: use another --output_dir or pass "
                                "--restart")


def _check_vocab(tokenizer, config: SuperBertConfig, model_dir: str) -> None:
    size = len(tokenizer)
    if size != config.vocab_size:
        raise UserError(f"--model {model_dir}: vocab.txt has {size} tokens but the supernet's embedding has "
                        f"{config.vocab_size} rows; the vocabulary must be the one the supernet was trained with")


def _check_numbers(args) -> None:
    for flag, value in (("--learning_rate", args.learning_rate), ("--warmup_proportion", args.warmup_proportion),
                        ("--weight_decay", args.weight_decay)):
        if value is not None and value < 0:
            raise UserError(f"{flag}: must be >= 0, got {value}")
    if args.learning_rate == 0:
        raise UserError("--learning_rate: must be > 0 (0 would train nothing)")
    if args.num_train_epochs < 0:
        raise UserError(f"--num_train_epochs: must be >= 0, got {args.num_train_epochs}")
    for flag, value in (("--train_batch_size", args.train_batch_size), ("--eval_step", args.eval_step),
                        ("--max_seq_length", args.max_seq_length), ("--max_train_examples", args.max_train_examples),
                        ("--max_eval_examples", args.max_eval_examples), ("--eval_batch_size", args.eval_batch_size)):
        if value is not None and value < 1:
            raise UserError(f"{flag}: must be >= 1, got {value}")


def _move_aside(store: ResultsStore) -> None:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for path in (store.jsonl_path, store.results_path, os.path.join(store.output_dir, "run_args.json")):
        if os.path.exists(path):
            os.replace(path, f"{path}.before-{stamp}")
            logger.warning("--restart: moved %s to %s.before-%s", path, path, stamp)


def main(argv=None, quantize: bool = False, description: str | None = None) -> int:
    args = build_parser(quantize, description or __doc__).parse_args(argv)
    scheme = resolve_scheme(args.scheme, "--scheme")
    if quantize and not scheme.quantized:
        raise UserError(f"--scheme {args.scheme}: the ptq evaluator scores an int8 scheme "
                        f"({', '.join(INT8_SCHEME_NAMES)}); use superbert_run_en_classifier_fp.py for fp32")
    if not quantize and scheme.quantized:
        raise UserError(f"--scheme {args.scheme}: the fp evaluator scores fp32; use "
                        "superbert_run_en_classifier_ptq.py for int8, or --extra_schemes to also score int8")
    extras = []
    for name in args.extra_schemes:
        extra = resolve_scheme(name, "--extra_schemes")
        if not extra.quantized or extra.needs_supernet:
            raise UserError(f"--extra_schemes {name}: only int8 sub-model schemes "
                            f"({', '.join(n for n in INT8_SCHEME_NAMES if n != 'fakequant')}) can be extra")
        if extra.name != scheme.name and extra.name not in extras:
            extras.append(extra.name)
    seeds = _seeds(args.seed)
    if len(args.data_dir) != len(args.task_name):
        raise UserError(f"--data_dir has {len(args.data_dir)} value(s) but --task_name has {len(args.task_name)}")
    _check_numbers(args)
    tasks = [get_task(name) for name in args.task_name]
    if os.path.exists(args.output_dir) and not os.path.isdir(args.output_dir):
        raise UserError(f"--output_dir: {args.output_dir} exists and is not a directory")
    supernet_config = SuperBertConfig.load(args.model)
    recorded = read_space_record(args.model) if os.path.isdir(args.model) else {}
    space = resolve_space(args.space, "search") if args.space else None
    archs = read_arches(args.arches_file, supernet_config, space, trained=recorded.get("supernet"))
    tokenizer = load_tokenizer(args.model, args.do_lower_case)
    _check_vocab(tokenizer, supernet_config, args.model)

    # read every task's files first: a missing file or bad row stops the run before training
    examples = {}
    for task, data_dir in zip(tasks, args.data_dir):
        splits = {"train": read_split(task, data_dir, "train", args.max_train_examples)}
        for name in task.dev_files:
            splits[name] = read_split(task, data_dir, name, args.max_eval_examples)
        examples[task.name] = splits

    # Under torchrun every rank evaluates its own share of the candidates (no process group is
    # needed: each result is one appended write to the shared files); rank 0 holds the directory.
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    store = ResultsStore(args.output_dir)
    lock = output_lock(args.output_dir, "evaluation output directory") if rank == 0 else contextlib.nullcontext()
    with lock:
        return _evaluate(args, scheme, extras, seeds, tasks, archs, tokenizer, examples, store, rank, world)


def remove_stale_staging(models_dir: str) -> int:
    """Remove what killed runs left under ``models/``: ``save_hf_directory`` stages a model in
    ``.<name>.<random>`` and renames it into place, so a hidden directory there is a fragment
    (only the lock holder calls this, so no live staging is touched). Returns how many."""
    import shutil

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


def _evaluate(args, scheme, extras, seeds, tasks, archs, tokenizer, examples, store, rank, world) -> int:
    settings = {task.name: run_settings(args, task, data_dir, extras) for task, data_dir in zip(tasks, args.data_dir)}
    if rank == 0:
        remove_stale_staging(os.path.join(args.output_dir, "models"))
    if args.restart and rank == 0:
        _move_aside(store)
    for task in tasks:
        check_settings(store, task.name, settings[task.name])
    if rank == 0:
        store.reconcile()
        with atomic_write(os.path.join(args.output_dir, "run_args.json")) as handle:
            json.dump(dict(vars(args), scheme=scheme.name, extra_schemes=extras, seeds=seeds,
                           settings=settings), handle, indent=2, sort_keys=True)
    done, legacy = store.done_keys(), store.legacy_archs()
    if args.num_threads > 0:
        torch.set_num_threads(args.num_threads)
    device = torch.device("cpu")
    if torch.cuda.is_available() and not args.no_cuda:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)) % torch.cuda.device_count())
    save_dir = os.path.join(args.output_dir, "models") if args.save_model_flag else None
    threads = args.num_threads if args.num_threads > 0 else torch.get_num_threads()

    for task in tasks:
        todo = []
        for arch in archs:
            if (task.name, arch_key(arch)) in legacy:
                logger.info("%s: %s already has a block without a JSONL twin; skipped", task.name, arch_summary(arch))
                continue
            for seed in seeds:
                key = result_key({"task_name": task.name, "seed": seed, "scheme": scheme.name, "arch": arch})
                if key not in done:
                    todo.append((arch, seed))
        skipped = len(archs) * len(seeds) - len(todo)
        todo = todo[rank::world]
        logger.info("%s: %d evaluation(s) to run%s, %d already done with the same settings (resume)", task.name,
                    len(todo), f" on rank {rank} of {world}" if world > 1 else "", skipped)
        if not todo:
            continue
        set_seed(seeds[0])
        first, max_seq = _hparams(args, task, seeds[0])
        splits = examples[task.name]
        warning = small_data_warning(task.name, len(splits["train"]), first.train_batch_size, first.num_train_epochs)
        if warning and warning not in _WARNED:  # once per process: a search runs its steps in one
            _WARNED.add(warning)
            logger.warning(warning)
        data = TaskData(task, encode_examples(tokenizer, splits["train"], task, max_seq),
                        {name: encode_examples(tokenizer, splits[name], task, max_seq) for name in task.dev_files})
        supernet = load_supernet(args.model, SuperBertForSequenceClassification, num_labels=task.num_labels).eval()
        progress = progress_bar(todo, desc=f"{task.name} candidates", unit="arch")
        for arch, seed in progress:
            config, _ = _hparams(args, task, seed)
            keep = save_dir if save_dir and (args.save_seeds is None or seed in args.save_seeds) else None
            logger.info("%s seed %d %s: fine-tuning %d steps (%d examples, batch %d, lr %g, %g epoch(s))", task.name,
                        seed, arch_summary(arch), finetune_steps(len(data.train), config.train_batch_size,
                        config.num_train_epochs), len(data.train), config.train_batch_size, config.learning_rate,
                        config.num_train_epochs)
            record = evaluate_candidate(supernet, arch, data, config, device, scheme, keep, tokenizer=tokenizer,
                                        extra_schemes=extras, threads=threads)
            record.update(max_seq_length=max_seq, train_examples=len(data.train), settings=settings[task.name],
                          dev_examples={name: len(split) for name, split in data.dev.items()})
            store.append(record)
            text = " ".join(f"{name} {value:.4f}" for name, value in record["best_by_scheme"].items())
            progress.set_postfix_str(f"{arch_summary(arch)} {text}")
            logger.info("%s seed %d %s: %s (%.1f s)", task.name, seed, arch_summary(arch), text,
                        record["elapsed_seconds"])
    logger.info("results: %s and %s", store.results_path, store.jsonl_path)
    return 0
