"""The one command line behind ``superbert_run_en_classifier_fp.py`` and ``..._ptq.py``: the flags
become an ``EvaluationConfig`` once, and ``evaluation.evaluate.evaluate_archs`` does the work (see
there). The two scripts differ only in their default scheme, whose precision the script scores.
``parse_overrides`` reads the same flags from a search's ``EVAL_ARGS``.
"""

from __future__ import annotations

import argparse
import shlex

from evaluation.config import EvaluationConfig, TaskInput, check_evaluator_scheme, read_arch_lines
from evaluation.evaluate import evaluate_archs
from evaluation.recipe import TRAIN_DTYPE_CHOICES, RecipeSettings
from glue.recipes import recipes_help
from glue.tasks import TASKS, get_task
from quantize_utils import resolve_scheme
from utils import OneLineParser, UserError, resolve_space

# The flags of one evaluation that a search sets itself (SearchPlan): EVAL_ARGS may not override them.
PLAN_FLAGS = {"model": "MODEL_DIR", "data_dir": "DATA_DIR", "task_name": "TASK_NAME", "output_dir": "the search's "
              "output directory (OUTPUT_ROOT, SEARCH_NAME)", "arches_file": "ARCHES_FILE", "seed": "SEED / SEEDS",
              "scheme": "TYPE", "save_model_flag": "SAVE_MODELS", "save_seeds": "SAVE_MODELS"}


def parse_seeds(values: list[str], flag: str = "--seed") -> list[int]:
    """``--seed 42 43`` or the original's ``--seed "42 43"``."""
    seeds = []
    for value in values:
        for token in str(value).split():
            try:
                seeds.append(int(token))
            except ValueError:
                raise UserError(f"{flag}: {token!r} is not an integer") from None
    if not seeds:
        raise UserError(f"{flag}: no seed given")
    return seeds


def build_parser(default_scheme: str, description: str | None = None, overrides: str | None = None):
    """The evaluator's flags. ``overrides`` (the name of a variable such as ``EVAL_ARGS``): a parser of
    extra flags only -- nothing required, only the flags given appear, errors are one line naming it."""
    if overrides:
        parser = OneLineParser(where=overrides, add_help=False)
    else:
        parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    required = overrides is None
    parser.add_argument("--data_dir", nargs="+", required=required, help="GLUE task directory (one per --task_name)")
    parser.add_argument("--model", required=required, help="supernet directory (or a plain HF BERT directory)")
    parser.add_argument("--task_name", nargs="+", required=required, help=f"GLUE task(s): {', '.join(TASKS)}")
    parser.add_argument("--output_dir", required=required, help="subbert.results(.jsonl) and saved models go here")
    parser.add_argument("--arches_file", required=required,
                        help=".cands file: one arch per line (JSON or Python repr)")
    parser.add_argument("--seed", nargs="+", default=["42"], help="one or more seeds")
    parser.add_argument("--do_lower_case", action="store_true", help="lower-case the text (uncased vocab)")
    parser.add_argument("--save_model_flag", type=int, choices=(0, 1), default=0,
                        help="1: save each fine-tuned sub-model (HF dir + tokenizer) and its int8 model "
                             "(model_int8.pt / model_int8.onnx) under output_dir/models")
    parser.add_argument("--save_seeds", nargs="+", type=int, default=None,
                        help="with --save_model_flag 1: save only the models of these seeds")
    _add_recipe_arguments(parser)
    _add_scheme_arguments(parser, resolve_scheme(default_scheme))
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
    return parser.only_given() if overrides else parser


def _add_recipe_arguments(parser) -> None:
    defaults = RecipeSettings()
    parser.add_argument("--num_train_epochs", type=float, default=defaults.num_train_epochs)
    group = parser.add_argument_group("overrides of the per-task table (default: the original's values)")
    group.add_argument("--train_batch_size", type=int, default=defaults.train_batch_size)
    group.add_argument("--eval_batch_size", type=int, default=defaults.eval_batch_size)
    group.add_argument("--max_seq_length", type=int, default=defaults.max_seq_length)
    group.add_argument("--learning_rate", type=float, default=defaults.learning_rate)
    group.add_argument("--eval_step", type=int, default=defaults.eval_step)
    group.add_argument("--warmup_proportion", type=float, default=defaults.warmup_proportion)
    group.add_argument("--weight_decay", type=float, default=defaults.weight_decay)
    group.add_argument("--max_train_examples", type=int, default=defaults.max_train_examples,
                       help="debug/demo: first N training examples")
    group.add_argument("--max_eval_examples", type=int, default=defaults.max_eval_examples,
                       help="debug/demo: first N examples per dev set")
    group.add_argument("--dropout", type=float, default=defaults.dropout,
                       help="hidden and attention dropout of the fine-tuned sub-model (default: the supernet's)")
    group.add_argument("--train_dtype", choices=TRAIN_DTYPE_CHOICES, default=defaults.train_dtype,
                       help="precision of the training forward: fp32 (default), bf16 (bfloat16 autocast; weights, "
                            "gradients and evaluation stay fp32) or auto (bf16 where the CPU has native bfloat16, "
                            "else fp32; the results record which)")
    group.add_argument("--sandwich_epochs", type=float, default=defaults.sandwich_epochs,
                       help="the weight-sharing fitness: fine-tune the whole supernet on the task for this many "
                            "epochs first (sandwich rule over the search space, once per seed and run), then start "
                            "every arch from its slice, classifier included (with --num_train_epochs 0: score the "
                            "slice as it is). Default (or 0): off, every arch from the pre-trained supernet")


def _add_scheme_arguments(parser, default) -> None:
    schemes = parser.add_argument_group("schemes (quantize_utils.SCHEMES; names or aliases such as ptq, int8, ort)")
    schemes.add_argument("--scheme", "--quant_scheme", dest="scheme", default=default.name,
                         help=f"the fitness scheme (best_acc); default {default.name}. "
                              + ("torch_dynamic_int8: the latency tables' int8 (dynamic int8 Linear on the sub-model); "
                                 "ort_dynamic_int8: ONNX Runtime int8; fakequant: the original's whole-supernet "
                                 "min-max fake-quant (parity)" if default.quantized else "torch_fp32: no quantization"))
    schemes.add_argument("--extra_schemes", nargs="*", default=[],
                         help="int8 schemes also scored on the same fine-tuned weights (recorded, not the fitness), "
                              "e.g. torch_dynamic_int8 for the fp32 search's 'quantize the winner' row")


def parse_overrides(text: str, variable: str = "EVAL_ARGS") -> dict:
    """The evaluator flags in ``text`` (a search's ``EVAL_ARGS``) as ``{dest: value}``, the recipe checked;
    a flag the search sets itself is refused naming the variable to use instead."""
    values = vars(build_parser("ptq", overrides=variable).parse_args(shlex.split(text)))
    for dest, owner in PLAN_FLAGS.items():
        if dest in values:
            raise UserError(f"{variable}: --{dest} is set by the search; use {owner}")
    RecipeSettings.from_values(values)  # checked now
    if "extra_schemes" in values:
        values["extra_schemes"] = [resolve_scheme(name, "--extra_schemes") for name in values["extra_schemes"]]
    return values


def config_from_args(args: argparse.Namespace, default_scheme: str) -> EvaluationConfig:
    scheme = resolve_scheme(args.scheme, "--scheme")
    check_evaluator_scheme(scheme, resolve_scheme(default_scheme), args.scheme)
    extras = tuple(resolve_scheme(name, "--extra_schemes") for name in args.extra_schemes)
    if len(args.data_dir) != len(args.task_name):
        raise UserError(f"--data_dir has {len(args.data_dir)} value(s) but --task_name has {len(args.task_name)}")
    recipe = RecipeSettings.from_values(vars(args))
    tasks = tuple(TaskInput(get_task(name), data_dir) for name, data_dir in zip(args.task_name, args.data_dir))
    return EvaluationConfig(
        model_dir=args.model, tasks=tasks, scheme=scheme, output_dir=args.output_dir, recipe=recipe,
        extra_schemes=extras, do_lower_case=args.do_lower_case, save_models=bool(args.save_model_flag),
        save_seeds=tuple(args.save_seeds) if args.save_seeds is not None else None,
        space=resolve_space(args.space, "search") if args.space else None, num_threads=args.num_threads,
        no_cuda=args.no_cuda, restart=args.restart)


def main(argv=None, default_scheme: str = "torch_dynamic_int8", description: str | None = None) -> int:
    args = build_parser(default_scheme, description or __doc__).parse_args(argv)
    config = config_from_args(args, default_scheme)
    seeds = parse_seeds(args.seed)
    archs, origins = read_arch_lines(args.arches_file)
    if not archs:
        raise UserError(f"--arches_file: {args.arches_file} holds no arch")
    evaluate_archs(config, archs, seeds, origins, arches_file=args.arches_file)
    return 0
