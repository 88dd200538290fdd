"""searcher.py's command line as a library: its flags (``build_parser``), the same flags read from a
search's ``SEARCH_ARGS`` (``parse_overrides``), and their ``SearchConfig`` (``config_from_args``)."""

from __future__ import annotations

import argparse

from search.config import (
    DEFAULT_BUDGET_MS,
    SearchConfig,
    SearchSizes,
    build_search_config,
    load_predictor,
    load_supernet_record,
    search_settings,
)
from search.evolution import MODELS, EvolutionSettings, LatencyWindow
from search.identity import STRATEGIES
from search.methods import ALL_METHODS, check_method
from utils import OneLineParser, UserError, add_space_arguments

# The flags of one step that a search sets itself (search.plan.SearchPlan): SEARCH_ARGS may not override them.
PLAN_FLAGS = {"ckpt_path": "PREDICTOR", "candidate_file": "CANDS_DIR / SEARCH_NAME", "arch_perfs_file": "OUTPUT_ROOT",
              "output_file": "CANDS_DIR / SEARCH_NAME", "method": "OP", "latency_constraint": "LATENCY_CONSTRAINT",
              "fitness_task": "TASK_NAME", "supernet": "MODEL_DIR", "scheme": "TYPE", "strategy": "STRATEGY",
              "results_dir": "OUTPUT_ROOT / SEARCH_NAME", "generation": "GENERATION", "search_log": "CANDS_DIR"}


def build_parser(overrides: str | None = None, description: str | None = None) -> argparse.ArgumentParser:
    """searcher.py's flags. ``overrides`` (a variable's name, ``SEARCH_ARGS``): a parser of the flags
    given only, nothing required, errors one line naming the variable."""
    if overrides:
        parser = OneLineParser(where=overrides, add_help=False)
    else:
        parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt_path", required=not overrides, help="latency predictor checkpoint (latency_predictor.py)")
    parser.add_argument("--candidate_file", default="cands/candidates.cands",
                        help="Candidate writes it; the other methods read it")
    parser.add_argument("--arch_perfs_file", default=None,
                        help="Evolved: subbert.results (or its .jsonl twin) of the evaluated archs")
    parser.add_argument("--output_file", default="cands/archs.txt", help="Random/Fast/Evolved: the new archs")
    parser.add_argument("--latency_constraint", type=float, default=DEFAULT_BUDGET_MS, help="latency budget c in ms")
    parser.add_argument("--latency_window_low", type=float, default=LatencyWindow.low, help="window starts at low x c")
    parser.add_argument("--latency_window_high", type=float, default=LatencyWindow.high,
                        help="window ends at high x c (the original's 1.1 lets a choice be predicted 10 %% over)")
    parser.add_argument("--method", choices=ALL_METHODS, default="Random")
    parser.add_argument("--model", choices=MODELS, default=SearchConfig.model,
                        help="KD: qkv = hidden (the paper); MLM: qkv = --mlm_head_dim x heads")
    parser.add_argument("--mlm_head_dim", type=int, default=SearchConfig.mlm_head_dim, help="head size of the MLM rule")
    _add_evolution_arguments(parser)
    parser.add_argument("--fitness_task", "--task_name", dest="fitness_task", default=None,
                        help="the search's task: Evolved/Random/TopK use only its results (recorded in the identity)")
    parser.add_argument("--supernet", default=None,
                        help="the supernet the candidates will be evaluated on: its recorded space is the default "
                             "--space, and archs it cannot run (or never trained) are refused")
    parser.add_argument("--scheme", default=None,
                        help="the search's scheme (quantize_utils.SCHEMES: fp, ptq, ort, ...): refused unless the "
                             "predictor was trained on that scheme's latency table; fitness must be scored with it")
    parser.add_argument("--strategy", choices=STRATEGIES, default=SearchConfig.strategy,
                        help="recorded in the search identity: evolution or the random-search baseline")
    parser.add_argument("--results_dir", default=None,
                        help="where the evaluator writes this search's results (recorded for the report)")
    parser.add_argument("--seed", type=int, default=SearchConfig.seed, help="seed of every random draw")
    parser.add_argument("--search_log", default=None,
                        help="per-generation JSONL log (default: <candidate_file stem>.search_log.jsonl)")
    parser.add_argument("--generation", type=int, default=None,
                        help="generation number to log (default: 0 for Random/Fast, last + 1 for Evolved)")
    add_space_arguments(parser, default=None, role="search")
    legacy = parser.add_argument_group("original flags, accepted and ignored (the predictor checkpoint "
                                       "stores its own features, norms and sizes)")
    for flag, nargs in (("--feature_norm", "+"), ("--lat_norm", None), ("--feature_dim", None),
                        ("--hidden_dim", None), ("--hidden_layer_num", None)):
        legacy.add_argument(flag, nargs=nargs, default=None, help=argparse.SUPPRESS)
    return parser.only_given() if overrides else parser


def _add_evolution_arguments(parser) -> None:
    parser.add_argument("--gen_size", type=int, default=SearchSizes.gen_size,
                        help="Random/Fast: size of the first generation")
    parser.add_argument("--population", type=int, default=EvolutionSettings.population,
                        help="Evolved: parents kept and children produced per generation")
    parser.add_argument("--explore_rate", type=float, default=EvolutionSettings.explore_rate,
                        help="Evolved: chance that a slot takes a random unevaluated candidate")
    parser.add_argument("--mutation_prob", type=float, default=EvolutionSettings.mutation_prob,
                        help="Evolved: mutation probability")
    parser.add_argument("--crossover_prob", type=float, default=EvolutionSettings.crossover_prob,
                        help="Evolved: chance that a child is bred from two parents (0 = the original)")
    parser.add_argument("--max_retries", type=int, default=EvolutionSettings.max_retries,
                        help="Evolved: mutation attempts per slot before falling back to exploration")
    parser.add_argument("--top_k", type=int, default=SearchSizes.top_k,
                        help="TopK: how many of the fittest archs to write")


def parse_overrides(text: str, variable: str = "SEARCH_ARGS"):
    """The searcher flags in ``text`` (a search's ``SEARCH_ARGS``), as a namespace of the flags given;
    a flag the search sets itself is refused naming the variable to use instead."""
    import shlex

    args = build_parser(overrides=variable).parse_args(shlex.split(text))
    for dest, owner in PLAN_FLAGS.items():
        if hasattr(args, dest):
            raise UserError(f"{variable}: --{dest} is set by the search; use {owner}")
    search_settings(vars(args))  # checked now, before any step
    return args


def config_from_args(args: argparse.Namespace, load=load_predictor) -> SearchConfig:
    """The search's configuration from searcher.py's flags (``load``: path -> ``Predictor``)."""
    settings = search_settings(vars(args))
    window = LatencyWindow(args.latency_constraint, *settings.pop("window"))
    check_method(args.method, args.output_file, args.arch_perfs_file)
    if args.method == "TopK" and args.top_k < 1:
        raise UserError("--method TopK needs --arch_perfs_file and --top_k >= 1")
    predictor = load(args.ckpt_path)
    supernet = load_supernet_record(args.supernet) if args.supernet else None
    return build_search_config(predictor, window, args.candidate_file, args, scheme=args.scheme, supernet=supernet,
                               task=args.fitness_task, strategy=args.strategy, results_dir=args.results_dir,
                               search_log=args.search_log, **settings)
