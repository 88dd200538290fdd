#!/usr/bin/env python
"""BERT-Tickets: lottery-ticket subnetworks of a BERT by iterative magnitude pruning with rewinding.

    python bert_tickets.py --model BERT_DIR --data_dir GLUE/MNLI --task_name mnli --output_dir OUT \\
        [--rounds 3] [--target_sparsity 0.7] [--prune_fraction 0.1] [--seeds 42 43]

--model is a plain Hugging Face BERT directory (e.g. bert-base-uncased) or a supernet directory
(then --arch picks the sub-model; default: its largest arch). Round 0 fine-tunes the dense model;
each further round prunes --prune_fraction of the encoder weights still alive (globally, by
magnitude of the fine-tuned weights), rewinds the survivors to their pre-trained values and
fine-tunes again, until --rounds or --target_sparsity. Embeddings, biases, LayerNorm, pooler and
classifier stay dense. Per round: OUT/tickets.jsonl (sparsity, dev metric fp32 and int8, nonzero
parameters, dense and sparse size, latency fp32/int8 with the latency tables' protocol, seeds),
OUT/masks/round_RR.safetensors and OUT/subnetworks/round_RR/ (a Hugging Face directory, pruned
weights stored as zeros). A killed run resumes at the next round.
"""

from __future__ import annotations

import argparse

from evaluation.recipe import RecipeSettings
from tickets.imp import RunOptions, run
from tickets.report import format_table, ticket_rows
from utils import UserError, run_cli


def _seeds(values: list[str]) -> tuple[int, ...]:
    """``--seeds 42 43`` or ``--seeds "42 43"`` (as the shell scripts pass them)."""
    seeds = []
    for value in values:
        for token in value.replace(",", " ").split():
            try:
                seeds.append(int(token))
            except ValueError:
                raise UserError(f"--seeds: {token!r} is not an integer") from None
    return tuple(seeds)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="plain HF BERT directory, or a supernet directory")
    parser.add_argument("--arch", default=None,
                        help="supernet --model only: the sub-model (JSON arch, a file with one, or 'largest', the default)")
    parser.add_argument("--data_dir", required=True, help="GLUE task directory (train.tsv, dev files)")
    parser.add_argument("--task_name", required=True, help="GLUE task: mnli, sst-2, mrpc, ...")
    parser.add_argument("--output_dir", required=True, help="records, masks and tickets go here (resumable)")
    group = parser.add_argument_group("pruning schedule")
    group.add_argument("--rounds", type=int, default=None, help="pruning rounds after the dense round 0")
    group.add_argument("--target_sparsity", type=float, default=None,
                       help="stop when this fraction of the encoder weights is pruned, in (0, 1); the last round is capped at it")
    group.add_argument("--prune_fraction", type=float, default=0.1,
                       help="fraction of the remaining encoder weights pruned per round, in (0, 1) (paper: 0.1)")
    group.add_argument("--schedule", choices=("remaining", "original"), default="remaining",
                       help="remaining: each round prunes --prune_fraction of the weights still alive (sparsity "
                            "1-(1-p)^r); original: of all of them (10, 20, ..., 90 %%: the authors' public code)")
    group.add_argument("--prune_pooler", action="store_true",
                       help="also prune the pooler's dense weight, as the authors' public code does (default: kept dense)")
    group.add_argument("--seeds", nargs="+", default=["42"],
                       help="fine-tune seeds per round (the first one's ticket is saved and pruned further); "
                            "two or more give the dense model's spread for the matching rule")
    group = parser.add_argument_group("fine-tuning (defaults: the task's table in glue/tasks.py)")
    group.add_argument("--num_train_epochs", type=float, default=3.0)
    group.add_argument("--learning_rate", type=float, default=None)
    group.add_argument("--train_batch_size", type=int, default=None)
    group.add_argument("--eval_batch_size", type=int, default=32)
    group.add_argument("--max_seq_length", type=int, default=None)
    group.add_argument("--eval_step", type=int, default=None)
    group.add_argument("--warmup_proportion", type=float, default=0.1)
    group.add_argument("--weight_decay", type=float, default=0.01)
    group.add_argument("--max_train_examples", type=int, default=None, help="first N training examples (demo, debug)")
    group.add_argument("--max_eval_examples", type=int, default=None, help="first N examples per dev set")
    group.add_argument("--do_lower_case", action="store_true", help="lower-case the text (uncased vocab)")
    group = parser.add_argument_group("latency (the latency tables' protocol, on the pruned model)")
    group.add_argument("--no_latency", action="store_true", help="do not time the tickets")
    group.add_argument("--latency_runs", type=int, default=20, help="timed runs (--infer_cnt of the tables)")
    group.add_argument("--latency_warmup", type=int, default=5)
    group.add_argument("--latency_rounds", type=int, default=4, help="interleaved rounds (fp32 and int8 alternate)")
    group.add_argument("--latency_threads", type=int, default=1)
    group.add_argument("--latency_seq_len", type=int, default=128)
    group.add_argument("--latency_timer", choices=("wall", "cpu"), default="wall",
                       help="cpu: thread CPU time, for single-thread runs on a shared machine")
    parser.add_argument("--no_cuda", action="store_true", help="fine-tune on CPU even if a GPU is present")
    parser.add_argument("--num_threads", type=int, default=0, help="torch CPU threads for fine-tuning (0 = default)")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    options = RunOptions(
        model=args.model, arch=args.arch, data_dir=args.data_dir, task_name=args.task_name,
        output_dir=args.output_dir, rounds=args.rounds, prune_fraction=args.prune_fraction,
        target_sparsity=args.target_sparsity, schedule=args.schedule, prune_pooler=args.prune_pooler, seeds=_seeds(args.seeds),
        recipe=RecipeSettings.from_values(vars(args)), do_lower_case=args.do_lower_case, latency=not args.no_latency, latency_runs=args.latency_runs,
        latency_warmup=args.latency_warmup, latency_rounds=args.latency_rounds,
        latency_threads=args.latency_threads, latency_seq_len=args.latency_seq_len,
        latency_timer=args.latency_timer, no_cuda=args.no_cuda, num_threads=args.num_threads)
    run(options)
    print(format_table(ticket_rows(args.output_dir)))
    return 0


if __name__ == "__main__":
    run_cli(main)
