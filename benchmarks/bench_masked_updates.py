#!/usr/bin/env python
"""Masked updates vs plain AdamW on the demo supernet (issue 13): the same seed and steps, trained
both ways, then for each supernet the held-out MLM loss of every arch of a fixed ladder of
``demo_search`` (inherited weights, no fine-tuning: ``pretraining.quality``) and, with
``--finetune``, the fine-tuned dev accuracy of the same archs and the Kendall tau between the two.

    .venv/bin/python benchmarks/bench_masked_updates.py --work_dir /tmp/bench_masked --seeds 42,43,44
    .venv/bin/python benchmarks/bench_masked_updates.py --work_dir /tmp/bench_masked --seeds 42,43,44 --finetune

The chain is the pipeline's own: ``demo_data.py``'s generator -> ``generate_data.py`` shards ->
``pre_training.py --mlm --space demo_supernet`` (``--masked_updates`` / ``--no_masked_updates``;
pre-training writes ``subnet_quality.json`` on its held-out lines) -> the candidate evaluator's
``evaluate_candidate`` per ladder arch. Re-running with the same --work_dir reuses what exists.

Read: per supernet, the ladder's mean held-out loss; per seed, masked minus plain (paired: same
initialisation, arch schedule and data); their mean and standard deviation over seeds. A mean
difference inside about two standard errors is within noise.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

MODES = {"masked": "--masked_updates", "plain": "--no_masked_updates"}


def run(command: list[str]) -> None:
    print("+", " ".join(command), flush=True)
    subprocess.run([sys.executable, *command], cwd=REPO, check=True)


def spread(values: list[float]) -> tuple[float, float]:
    """(mean, sample standard deviation; 0 for a single value)."""
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work_dir", default="/tmp/bench_masked_updates")
    parser.add_argument("--seeds", default="42,43,44", help="pre-training seeds (each trains both modes)")
    group = parser.add_argument_group("data (demo_data.py)")
    group.add_argument("--corpus_mb", type=float, default=2.0)
    group.add_argument("--num_train", type=int, default=3000)
    group.add_argument("--num_dev", type=int, default=500)
    group = parser.add_argument_group("pre-training (the demo's settings)")
    group.add_argument("--pretrain_steps", type=int, default=300)
    group.add_argument("--pretrain_batch", type=int, default=16)
    group.add_argument("--pretrain_seq", type=int, default=64)
    group.add_argument("--pretrain_lr", type=float, default=1e-3)
    group.add_argument("--sandwich", action="store_true")
    group.add_argument("--ladder", type=int, default=6, help="archs on the demo_search ladder")
    group = parser.add_argument_group("fine-tuning (candidate evaluator, as benchmarks/bench_demo_task.py)")
    group.add_argument("--finetune", action="store_true", help="also fine-tune the ladder archs (slow)")
    group.add_argument("--finetune_seed", type=int, default=42)
    group.add_argument("--learning_rate", type=float, default=3e-4)
    group.add_argument("--epochs", type=float, default=1.0)
    group.add_argument("--batch", type=int, default=16)
    group.add_argument("--max_seq_length", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--output_json", default=None)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from demo import DemoDataParams, build_demo_data, read_manifest
    from pretraining.quality import rank_agreement

    work = os.path.abspath(args.work_dir)
    data_dir = os.path.join(work, "data")
    params = DemoDataParams(corpus_mb=args.corpus_mb, num_train=args.num_train, num_dev=args.num_dev)
    old = read_manifest(data_dir) if os.path.isdir(data_dir) else None
    build_demo_data(data_dir, params, overwrite=old is not None and old["params"] != params.as_dict())
    vocab = os.path.join(data_dir, "vocab", "vocab.txt")
    shards = os.path.join(work, "shards")
    run(["generate_data.py", "--train_corpus", os.path.join(data_dir, "corpus"), "--output_dir", shards,
         "--bert_model", vocab, "--max_seq_len", str(args.pretrain_seq), "--do_lower_case", "--num_shards", "4",
         "--num_workers", "1", "--no_progress", "--overwrite"])

    seeds = [int(seed) for seed in args.seeds.split(",")]
    reports: dict[tuple[str, int], dict] = {}
    for seed in seeds:
        for mode, flag in MODES.items():
            out = os.path.join(work, f"supernet_{mode}_seed{seed}_steps{args.pretrain_steps}"
                                     + ("_sandwich" if args.sandwich else ""))
            if not os.path.isfile(os.path.join(out, "subnet_quality.json")):
                run(["pre_training.py", "--pregenerated_data", shards, "--output_dir", out, "--mlm", flag,
                     "--space", "demo_supernet", "--max_position_embeddings", "128",
                     "--max_seq_length", str(args.pretrain_seq), "--train_batch_size", str(args.pretrain_batch),
                     "--max_steps", str(args.pretrain_steps), "--learning_rate", str(args.pretrain_lr),
                     "--warmup_proportion", "0.1", "--seed", str(seed), "--save_steps", "0", "--logging_steps", "50",
                     "--quality_ladder", str(args.ladder), "--threads", str(args.threads), "--no_progress",
                     "--overwrite_output_dir", *(["--sandwich"] if args.sandwich else [])])
            with open(os.path.join(out, "subnet_quality.json"), encoding="utf-8") as handle:
                reports[(mode, seed)] = json.load(handle)
            reports[(mode, seed)]["dir"] = out

    if args.finetune:
        finetune_ladders(args, data_dir, vocab, reports)

    figures: dict = {"args": vars(args), "runs": []}
    ladder = [row["arch_summary"] for row in next(iter(reports.values()))["ladder"]]
    print()
    print(f"held-out MLM loss per ladder arch (inherited weights), {args.pretrain_steps} steps, seeds {seeds}")
    print("| mode | seed | " + " | ".join(ladder) + " | ladder mean |" + (" acc (ladder) | Kendall tau |" if args.finetune else ""))
    print("|---|---:|" + "---:|" * (len(ladder) + 1) + ("---|---:|" if args.finetune else ""))
    for (mode, seed), report in sorted(reports.items()):
        losses = [row["mlm_loss"] for row in report["ladder"]]
        entry = {"mode": mode, "seed": seed, "losses": losses, "ladder_mean": statistics.fmean(losses),
                 "sem": [row["sem"] for row in report["ladder"]]}
        line = f"| {mode} | {seed} | " + " | ".join(f"{loss:.4f}" for loss in losses) + f" | {entry['ladder_mean']:.4f} |"
        if args.finetune:
            entry["accuracy"] = [row["best_acc"] for row in report["ladder"]]
            entry.update(rank_agreement(report["ladder"]))
            tau = entry["kendall_tau_loss_vs_accuracy"]
            line += " " + "/".join(f"{acc:.3f}" for acc in entry["accuracy"])
            line += f" | {tau:.3f} |" if tau is not None else " | - |"
        figures["runs"].append(entry)
        print(line)

    by = {(run_["mode"], run_["seed"]): run_ for run_ in figures["runs"]}
    print()
    summary = {}
    for key, label in (("ladder_mean", "ladder-mean held-out MLM loss"),) + (
            (("accuracy_mean", "ladder-mean fine-tuned accuracy"), ("kendall_tau_loss_vs_accuracy", "Kendall tau"))
            if args.finetune else ()):
        def value(run_):
            return statistics.fmean(run_["accuracy"]) if key == "accuracy_mean" else run_[key]

        usable = [seed for seed in seeds if value(by[("masked", seed)]) is not None
                  and value(by[("plain", seed)]) is not None]  # a tau is None when accuracies tie
        if not usable:
            print(f"{label}: not defined for any seed")
            continue
        per_mode = {mode: spread([value(by[(mode, seed)]) for seed in usable]) for mode in MODES}
        differences = [value(by[("masked", seed)]) - value(by[("plain", seed)]) for seed in usable]
        mean, sd = spread(differences)
        sem = sd / math.sqrt(len(differences)) if len(differences) > 1 else float("nan")
        verdict = ("within noise" if len(differences) > 1 and abs(mean) <= 2 * sem else
                   "beyond noise" if len(differences) > 1 else "one seed: no spread")
        summary[key] = {"masked": per_mode["masked"], "plain": per_mode["plain"], "differences": differences,
                        "mean_difference": mean, "sd_difference": sd, "verdict": verdict}
        print(f"{label}: masked {per_mode['masked'][0]:.4f} ± {per_mode['masked'][1]:.4f}, plain "
              f"{per_mode['plain'][0]:.4f} ± {per_mode['plain'][1]:.4f} (mean ± sd over {len(usable)} seeds); "
              f"masked − plain per seed {', '.join(f'{d:+.4f}' for d in differences)}: mean {mean:+.4f}, "
              f"sd {sd:.4f} -> {verdict}")
    figures["summary"] = summary
    if args.output_json:
        with open(args.output_json, "w", encoding="utf-8") as handle:
            json.dump(figures, handle, indent=2, sort_keys=True)


def finetune_ladders(args, data_dir: str, vocab: str, reports: dict) -> None:
    """Add ``best_acc`` (dev matched, fp32) to every ladder row, as the candidate evaluator scores."""
    from evaluation.candidate import TaskData, evaluate_candidate
    from evaluation.data import encode_examples, load_tokenizer
    from evaluation.finetune import FinetuneConfig
    from glue.tasks import get_task, read_split
    from transformer.checkpoint import load_supernet
    from transformer.modeling_super import SuperBertForSequenceClassification

    task = get_task("mnli")
    mnli = os.path.join(data_dir, "MNLI")
    tokenizer = load_tokenizer(os.path.dirname(vocab), do_lower_case=True)
    data = TaskData(task, encode_examples(tokenizer, read_split(task, mnli, "train"), task, args.max_seq_length),
                    {name: encode_examples(tokenizer, read_split(task, mnli, name), task, args.max_seq_length)
                     for name in ("matched", "mismatched")})
    config = FinetuneConfig(learning_rate=args.learning_rate, num_train_epochs=args.epochs,
                            train_batch_size=args.batch, eval_batch_size=128, eval_step=10**9, seed=args.finetune_seed)
    for (mode, seed), report in sorted(reports.items()):
        cache = os.path.join(report["dir"], f"ladder_finetune_seed{args.finetune_seed}.json")
        if os.path.isfile(cache):
            with open(cache, encoding="utf-8") as handle:
                accuracies = json.load(handle)
        else:
            supernet = load_supernet(os.path.join(report["dir"], "final"), SuperBertForSequenceClassification,
                                     num_labels=task.num_labels).eval()
            accuracies = [evaluate_candidate(supernet, row["arch"], data, config, "cpu", scheme="torch_fp32")
                          ["metrics_fp32"]["matched"]["acc"] for row in report["ladder"]]
            with open(cache, "w", encoding="utf-8") as handle:
                json.dump(accuracies, handle)
        for row, accuracy in zip(report["ladder"], accuracies):
            row["best_acc"] = accuracy
        print(f"{mode} seed {seed}: fine-tuned dev matched accuracy {', '.join(f'{a:.3f}' for a in accuracies)}",
              flush=True)


if __name__ == "__main__":
    main()
