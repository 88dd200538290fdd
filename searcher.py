#!/usr/bin/env python
"""Evolutionary search for the most accurate sub-model under a latency budget.

    python searcher.py --method Candidate --ckpt_path conf_datasets/lat_predictor_quant.pt \\
        --latency_constraint 10 --candidate_file cands/kd_ptq_10.cands
    python searcher.py --method Fast --ckpt_path ... --latency_constraint 10 \\
        --candidate_file cands/kd_ptq_10.cands --output_file cands/1st_generation_kd_ptq_10.cands
    python searcher.py --method Evolved --ckpt_path ... --latency_constraint 10 \\
        --candidate_file cands/kd_ptq_10.cands --arch_perfs_file output/kd_ptq_10/subbert.results \\
        --output_file cands/1st_generation_kd_ptq_10.evo.cands

Methods (the original's): Candidate enumerates the search space and writes every arch whose
predicted latency is in [0.85c, 1.0c] (the original's 1.1c: --latency_window_high 1.1) to --candidate_file; Random / Fast draw --gen_size archs
from the candidates (Fast: 1.6h <= ffn <= 1.9h and 0.7h <= qkv <= h, topped up at random);
Evolved breeds --population new archs from the best evaluated ones (roulette + mutation,
optional crossover, exploration of unevaluated candidates). Added: Random with --arch_perfs_file
draws a later generation of unevaluated candidates (the random-search baseline spends the same
evaluations as evolution), and TopK writes the --top_k fittest evaluated archs whose fine-tune
learned and that measure within the budget in the predictor table's unit, for the final
re-evaluation with several seeds. Output: JSON arch lines. Every generation is logged to
--search_log (default: next to the candidate file).

The search space defaults to the one the supernet (--supernet) records, else the predictor's;
a space the supernet cannot run, whose slices its sampler never trained, or that reaches outside
the predictor's latency grid is refused before any file is written, and so is a --scheme whose
latency backend is not the predictor's. Each search records what it is (task, scheme, budget,
space, predictor, supernet, strategy) in <candidate stem>.search.json; a later step that differs
is refused in one line.

The flags become one ``search.config.SearchConfig``; ``search.methods.run_method`` does the work.
"""

from __future__ import annotations

from search.cli import build_parser, config_from_args
from search.config import Predictor, load_predictor
from search.methods import run_method
from utils import run_cli


def load_latency_fn(path: str):
    """The predictor as a plain callable ``archs -> ms array`` plus its metadata."""
    predictor = load_predictor(path)
    return predictor.predict, predictor.metadata


def main(argv=None) -> int:
    args = build_parser(description=__doc__).parse_args(argv)
    config = config_from_args(args, load=lambda path: Predictor(path, *load_latency_fn(path)))
    run_method(config, args.method, args.output_file, args.arch_perfs_file, args.generation)
    return 0


if __name__ == "__main__":
    run_cli(main)
