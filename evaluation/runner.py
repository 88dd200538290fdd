"""The one command line behind ``superbert_run_en_classifier_fp.py`` and ``..._ptq.py``.

For every (task, arch, seed) not yet in ``<output_dir>/subbert.results.jsonl``: extract the
sub-model from the supernet, fine-tune it with the task's original hyper-parameters, evaluate
on dev (MNLI: matched and mismatched), and for ptq quantize it and evaluate again; append the
result to ``subbert.results`` (original layout) and its JSONL twin. The supernet is loaded and
the data tokenised once per task, not per arch. Every input is checked before any training.
Launched with ``torchrun --nproc_per_node N``, the candidates are shared out over the ranks
(one GPU each).
"""

from __future__ import annotations

import argparse
import json
import os

import torch
from tqdm import tqdm

from evaluation.candidate import TaskData, evaluate_candidate
from evaluation.data import encode_examples, load_tokenizer
from evaluation.finetune import FinetuneConfig
from evaluation.results import ResultsStore, result_key
from glue.tasks import get_task, read_split
from transformer.checkpoint import load_supernet
from transformer.config import SuperBertConfig
from transformer.hf_converter import check_hf_compatible
from transformer.modeling_super import SuperBertForSequenceClassification, check_arch_fits
from utils import (
    ArchError,
    UserError,
    arch_key,
    arch_summary,
    atomic_write,
    get_logger,
    get_space,
    iter_arch_lines,
    set_seed,
)

logger = get_logger("candidate_evaluation")

PTQ_SCHEMES = ("torch_dynamic", "fakequant")


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
    parser.add_argument("--task_name", nargs="+", required=True, help="GLUE task(s): cola, mnli, mrpc, ...")
    parser.add_argument("--output_dir", required=True, help="subbert.results(.jsonl) and saved models go here")
    parser.add_argument("--arches_file", required=True, help=".cands file: one arch per line (JSON or Python repr)")
    parser.add_argument("--num_train_epochs", type=float, default=1.0)
    parser.add_argument("--seed", nargs="+", default=["42"], help="one or more seeds")
    parser.add_argument("--do_lower_case", action="store_true", help="lower-case the text (uncased vocab)")
    parser.add_argument("--save_model_flag", type=int, choices=(0, 1), default=0,
                        help="1: save each fine-tuned sub-model (HF dir) and its int8 weights under output_dir/models")
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
    if quantize:
        parser.add_argument("--quant_scheme", choices=PTQ_SCHEMES, default="torch_dynamic",
                            help="torch_dynamic: the latency tables' int8 (dynamic int8 Linear on the sub-model); "
                                 "fakequant: the original's whole-supernet min-max fake-quant (parity)")
    parser.add_argument("--space", default=None, help="also require every arch to be in this named search space")
    parser.add_argument("--no_cuda", action="store_true", help="train on CPU even if a GPU is present")
    parser.add_argument("--num_threads", type=int, default=0,
                        help="torch CPU threads (0 = torch's default). Small sub-models on a busy CPU are much "
                             "faster with 1 (see BENCHMARKS.md)")
    parser.add_argument("--super_model", default=None, help=argparse.SUPPRESS)  # original flag, no effect here
    parser.add_argument("--cache_dir", default=None, help=argparse.SUPPRESS)  # original flag, unused there too
    return parser


def read_arches(path: str, supernet_config: SuperBertConfig, space_name: str | None) -> list[dict]:
    """Every arch of ``--arches_file``, checked against the supernet (and ``--space``) before any
    work; duplicates are evaluated once."""
    space = get_space(space_name) if space_name else None
    archs, seen = [], set()
    for number, arch, _extra in iter_arch_lines(path):
        where = f"{path}:{number}"
        if space is not None:
            space.validate(arch, where=where)
        check_arch_fits(arch, supernet_config, where=where)
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


def main(argv=None, quantize: bool = False, description: str | None = None) -> int:
    args = build_parser(quantize, description or __doc__).parse_args(argv)
    scheme = args.quant_scheme if quantize else None
    seeds = _seeds(args.seed)
    if len(args.data_dir) != len(args.task_name):
        raise UserError(f"--data_dir has {len(args.data_dir)} value(s) but --task_name has {len(args.task_name)}")
    if args.num_train_epochs < 0:
        raise UserError(f"--num_train_epochs: must be >= 0, got {args.num_train_epochs}")
    tasks = [get_task(name) for name in args.task_name]
    supernet_config = SuperBertConfig.load(args.model)
    archs = read_arches(args.arches_file, supernet_config, args.space)
    tokenizer = load_tokenizer(args.model, args.do_lower_case)

    # read every task's files first: a missing file or bad row stops the run before training
    examples = {}
    for task, data_dir in zip(tasks, args.data_dir):
        splits = {"train": read_split(task, data_dir, "train", args.max_train_examples)}
        for name in task.dev_files:
            splits[name] = read_split(task, data_dir, name, args.max_eval_examples)
        examples[task.name] = splits

    # Under torchrun every rank evaluates its own share of the candidates (no process group is
    # needed: each result is one appended write to the shared files).
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    store = ResultsStore(args.output_dir)
    os.makedirs(args.output_dir, exist_ok=True)
    if rank == 0:
        store.reconcile()
        with atomic_write(os.path.join(args.output_dir, "run_args.json")) as handle:
            json.dump(dict(vars(args), quant_scheme=scheme, seeds=seeds), handle, indent=2, sort_keys=True)
    done, legacy = store.done_keys(), store.legacy_archs()
    if args.num_threads > 0:
        torch.set_num_threads(args.num_threads)
    device = torch.device("cpu")
    if torch.cuda.is_available() and not args.no_cuda:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)) % torch.cuda.device_count())
    save_dir = os.path.join(args.output_dir, "models") if args.save_model_flag else None
    vocab_file = os.path.join(args.model, "vocab.txt")

    for task in tasks:
        todo = []
        for arch in archs:
            if (task.name, arch_key(arch)) in legacy:
                logger.info("%s: %s already has a block without a JSONL twin; skipped", task.name, arch_summary(arch))
                continue
            for seed in seeds:
                key = result_key({"task_name": task.name, "seed": seed, "scheme": scheme or "fp32", "arch": arch})
                if key not in done:
                    todo.append((arch, seed))
        skipped = len(archs) * len(seeds) - len(todo)
        todo = todo[rank::world]
        logger.info("%s: %d evaluation(s) to run%s, %d already done (resume)", task.name, len(todo),
                    f" on rank {rank} of {world}" if world > 1 else "", skipped)
        if not todo:
            continue
        set_seed(seeds[0])
        _, max_seq = _hparams(args, task, seeds[0])
        splits = examples[task.name]
        data = TaskData(task, encode_examples(tokenizer, splits["train"], task, max_seq),
                        {name: encode_examples(tokenizer, splits[name], task, max_seq) for name in task.dev_files})
        supernet = load_supernet(args.model, SuperBertForSequenceClassification, num_labels=task.num_labels).eval()
        progress = tqdm(todo, desc=f"{task.name} candidates", unit="arch", disable=None)
        for arch, seed in progress:
            config, _ = _hparams(args, task, seed)
            record = evaluate_candidate(supernet, arch, data, config, device, scheme, save_dir, vocab_file)
            record.update(max_seq_length=max_seq, train_examples=len(data.train),
                          dev_examples={name: len(split) for name, split in data.dev.items()})
            store.append(record)
            text = f"fp32 {record['best_fp32']:.4f}" + (f" int8 {record['best_int8']:.4f}" if scheme else "")
            progress.set_postfix_str(f"{arch_summary(arch)} {text}")
            logger.info("%s seed %d %s: %s (%.1f s)", task.name, seed, arch_summary(arch), text,
                        record["elapsed_seconds"])
    logger.info("results: %s and %s", store.results_path, store.jsonl_path)
    return 0

