#!/usr/bin/env python
"""Does the demo NLI task reward capacity? Dev accuracy per sub-model size after the demo's short
fine-tune, the wall time of each fine-tune, and the large/small accuracy ratio -- all in one run.

The chain is the pipeline's own: ``demo_data.py``'s generator -> ``generate_data.py`` shards ->
``pre_training.py --mlm --space demo_supernet`` (a short run) -> for every arch, the candidate
evaluator's protocol (``evaluation.candidate.evaluate_candidate``: extract a plain
``BertForSequenceClassification`` from the supernet, fine-tune it, evaluate fp32 and dynamic int8
on dev_matched and dev_mismatched). ``--scratch`` also fine-tunes the same archs from random
weights, which shows what the pre-training buys. Bag-of-words baselines (scikit-learn logistic
regression) check that the hypothesis alone does not give the label away.

    .venv/bin/python benchmarks/bench_demo_task.py --work_dir /tmp/bench_demo_task
    .venv/bin/python benchmarks/bench_demo_task.py --work_dir /tmp/bench_demo_task --pretrain_steps 0 --scratch

Re-running with the same --work_dir reuses the data, the shards and the supernet.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

def ladder(space, steps: int) -> list[dict]:
    """``steps`` archs from the space's smallest to its largest, every dimension growing together."""
    from utils import make_arch

    heads = space.num_attention_heads.values[0]
    archs = []
    for i in range(steps):
        pick = [grid.values[round(i * (len(grid.values) - 1) / (steps - 1))]
                for grid in (space.layer_num, space.hidden_size, space.intermediate_size)]
        archs.append(make_arch(*pick, heads))
    return archs


def parse_archs(text: str | None, steps: int) -> list[dict]:
    from utils import get_space, make_arch

    space = get_space("demo_search")
    if not text:
        return ladder(space, steps)
    archs = []
    for item in text.split(","):
        layers, hidden, ffn = (int(v) for v in item.split("/"))
        archs.append(space.validate(make_arch(layers, hidden, ffn, space.num_attention_heads.values[0])))
    return archs


def run_stage(command: list[str], log) -> None:
    log(" ".join(command))
    subprocess.run([sys.executable, *command], cwd=REPO, check=True)


def bow_baselines(data_dir: str) -> dict[str, dict[str, float]]:
    """Logistic regression on bags of words: hypothesis only, premise only, both (separate features)."""
    import scipy.sparse as sp
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import LogisticRegression

    from glue.tasks import read_split

    splits = {name: read_split("mnli", data_dir, name) for name in ("train", "matched", "mismatched")}
    premise = CountVectorizer(token_pattern=r"[^ ]+").fit([e.text_a for e in splits["train"]])
    hypothesis = CountVectorizer(token_pattern=r"[^ ]+").fit([e.text_b for e in splits["train"]])

    def features(examples, which):
        parts = {"hypothesis": [hypothesis.transform([e.text_b for e in examples])],
                 "premise": [premise.transform([e.text_a for e in examples])]}
        parts["both"] = parts["premise"] + parts["hypothesis"]
        return sp.hstack(parts[which]).tocsr()

    results = {}
    for which in ("hypothesis", "premise", "both"):
        model = LogisticRegression(max_iter=3000).fit(features(splits["train"], which),
                                                       [e.label for e in splits["train"]])
        results[which] = {name: float(model.score(features(splits[name], which), [e.label for e in splits[name]]))
                          for name in ("matched", "mismatched")}
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work_dir", default="/tmp/bench_demo_task", help="data, shards and supernet (reused)")
    group = parser.add_argument_group("data (demo_data.py flags)")
    group.add_argument("--seed", type=int, default=42)
    group.add_argument("--corpus_mb", type=float, default=2.0)
    group.add_argument("--num_train", type=int, default=3000)
    group.add_argument("--num_dev", type=int, default=500)
    group.add_argument("--vocab_size", type=int, default=1000)
    group.add_argument("--task_level", type=int, default=1, help="NLI difficulty (demo.nli.TASK_LEVELS)")
    group = parser.add_argument_group("pre-training (pre_training.py flags)")
    group.add_argument("--pretrain_steps", type=int, default=300, help="0: no pre-training (random supernet)")
    group.add_argument("--pretrain_batch", type=int, default=16)
    group.add_argument("--pretrain_seq", type=int, default=64)
    group.add_argument("--pretrain_lr", type=float, default=1e-3)
    group.add_argument("--sandwich", action="store_true", help="pre-train with the sandwich rule")
    group = parser.add_argument_group("fine-tuning (candidate evaluator)")
    group.add_argument("--archs", default=None,
                       help="comma-separated LAYERS/HIDDEN/FFN of demo_search (qkv = hidden); default: a ladder "
                            "of --ladder archs from the space's smallest to its largest")
    group.add_argument("--ladder", type=int, default=6)
    group.add_argument("--max_seq_length", type=int, default=64)
    group.add_argument("--learning_rate", type=float, default=3e-4)
    group.add_argument("--epochs", type=float, default=1.0)
    group.add_argument("--batch", type=int, default=16)
    group.add_argument("--finetune_seeds", default="42", help="comma-separated; accuracies are averaged")
    group.add_argument("--train_examples", type=int, default=None, help="use only the first N train examples")
    group.add_argument("--scratch", action="store_true", help="also fine-tune from random weights")
    group.add_argument("--no_int8", action="store_true", help="skip the int8 evaluation")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: CPU seconds then equal wall seconds on an idle core)")
    parser.add_argument("--output_json", default=None, help="write all figures here")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from demo import DemoDataParams, build_demo_data
    from evaluation.candidate import TaskData, evaluate_candidate
    from evaluation.data import encode_examples, load_tokenizer
    from evaluation.finetune import FinetuneConfig
    from glue.tasks import get_task, read_split
    from transformer.checkpoint import load_supernet
    from transformer.config import SuperBertConfig
    from transformer.modeling_super import SuperBertForSequenceClassification
    from utils import arch_summary, get_logger, get_space

    logger = get_logger("bench_demo_task")
    log = logger.info
    work = os.path.abspath(args.work_dir)
    data_dir = os.path.join(work, "data")
    params = DemoDataParams(seed=args.seed, corpus_mb=args.corpus_mb, num_train=args.num_train,
                            num_dev=args.num_dev, task_level=args.task_level, vocab_size=args.vocab_size)
    start = time.perf_counter()
    manifest = build_demo_data(data_dir, params, overwrite=True) if _params_changed(data_dir, params) \
        else build_demo_data(data_dir, params)
    data_seconds = time.perf_counter() - start
    vocab = os.path.join(data_dir, "vocab", "vocab.txt")
    mnli = os.path.join(data_dir, "MNLI")

    figures: dict = {"data": manifest["stats"], "params": vars(args)}
    figures["bow_baselines"] = bow_baselines(mnli)
    log("bag-of-words logistic regression (matched/mismatched): %s", json.dumps(figures["bow_baselines"]))

    supernets: dict[str, str | None] = {}
    if args.pretrain_steps > 0:
        tag = f"steps{args.pretrain_steps}_b{args.pretrain_batch}_s{args.pretrain_seq}_lr{args.pretrain_lr}" + \
            ("_sandwich" if args.sandwich else "")
        shards = os.path.join(work, "shards")
        supernet_dir = os.path.join(work, f"supernet_{tag}")
        start = time.perf_counter()
        run_stage(["generate_data.py", "--train_corpus", os.path.join(data_dir, "corpus"), "--output_dir", shards,
                   "--bert_model", vocab, "--max_seq_len", str(args.pretrain_seq), "--do_lower_case",
                   "--no_progress", "--overwrite"], log)
        shard_seconds = time.perf_counter() - start
        start = time.perf_counter()
        if not os.path.isdir(os.path.join(supernet_dir, "final")):
            run_stage(["pre_training.py", "--pregenerated_data", shards, "--output_dir", supernet_dir, "--mlm",
                       "--space", "demo_supernet", "--max_position_embeddings", "128",
                       "--max_seq_length", str(args.pretrain_seq), "--train_batch_size", str(args.pretrain_batch),
                       "--max_steps", str(args.pretrain_steps), "--learning_rate", str(args.pretrain_lr),
                       "--seed", str(args.seed), "--logging_steps", "25", "--no_progress", "--overwrite_output_dir",
                       "--threads", str(args.threads),
                       *(["--sandwich"] if args.sandwich else [])], log)
        figures["pretrain_seconds"] = time.perf_counter() - start
        figures["shard_seconds"] = shard_seconds
        supernets["pretrained"] = os.path.join(supernet_dir, "final")
    if args.scratch or args.pretrain_steps == 0:
        supernets["scratch"] = None

    tokenizer = load_tokenizer(os.path.dirname(vocab), do_lower_case=True)
    task = get_task("mnli")
    train_examples = read_split(task, mnli, "train")[: args.train_examples]
    data = TaskData(task, encode_examples(tokenizer, train_examples, task, args.max_seq_length),
                    {name: encode_examples(tokenizer, read_split(task, mnli, name), task, args.max_seq_length)
                     for name in ("matched", "mismatched")})
    lengths = data.train.lengths.float()
    figures["train_tokens_mean"] = float(lengths.mean())
    figures["train_tokens_max"] = int(lengths.max())
    log("train: %d examples, %.1f tokens on average (max %d)", len(data.train), lengths.mean(), lengths.max())

    archs = parse_archs(args.archs, args.ladder)
    seeds = [int(s) for s in args.finetune_seeds.split(",")]
    rows = []
    for init, directory in supernets.items():
        if directory is None:
            space = get_space("demo_supernet")
            largest = space.largest()
            torch.manual_seed(args.seed)
            supernet = SuperBertForSequenceClassification(SuperBertConfig(
                vocab_size=len(tokenizer), hidden_size=largest["sample_hidden_size"],
                num_hidden_layers=largest["sample_layer_num"], intermediate_size=largest["sample_intermediate_sizes"][0],
                qkv_size=largest["sample_qkv_sizes"][0], num_attention_heads=largest["sample_num_attention_heads"][0],
                max_position_embeddings=128, num_labels=task.num_labels)).eval()
        else:  # as the candidate evaluator loads it
            supernet = load_supernet(directory, SuperBertForSequenceClassification, num_labels=task.num_labels).eval()
        for arch in archs:
            records = []
            for seed in seeds:
                config = FinetuneConfig(learning_rate=args.learning_rate, num_train_epochs=args.epochs,
                                        train_batch_size=args.batch, eval_batch_size=128, eval_step=10**9, seed=seed)
                cpu_start = time.process_time()
                record = evaluate_candidate(supernet, arch, data, config, "cpu",
                                            scheme="torch_fp32" if args.no_int8 else "torch_dynamic_int8")
                record["cpu_seconds"] = time.process_time() - cpu_start
                records.append(record)
            row = {"init": init, "arch": arch_summary(arch), "params": records[0]["parameter_size"]}
            for key, source in (("fp32_m", ("metrics_fp32", "matched")), ("fp32_mm", ("metrics_fp32", "mismatched")),
                                ("int8_m", ("metrics_int8", "matched")), ("int8_mm", ("metrics_int8", "mismatched"))):
                if source[0] in records[0]:
                    row[key] = sum(r[source[0]][source[1]]["acc"] for r in records) / len(records)
            row["fp32_m_per_seed"] = [r["metrics_fp32"]["matched"]["acc"] for r in records]
            row["train_s"] = sum(r["train_seconds"] for r in records) / len(records)
            row["total_s"] = sum(r["elapsed_seconds"] for r in records) / len(records)
            row["cpu_s"] = sum(r["cpu_seconds"] for r in records) / len(records)
            rows.append(row)
            log("%s %-18s acc m/mm %.3f/%.3f  int8 %s  train %.1fs  total %.1fs  cpu %.1fs", init, row["arch"],
                row["fp32_m"], row["fp32_mm"],
                f"{row['int8_m']:.3f}/{row['int8_mm']:.3f}" if "int8_m" in row else "-",
                row["train_s"], row["total_s"], row["cpu_s"])
    figures["rows"] = rows
    figures["data_seconds"] = data_seconds

    print()
    print("bag of words, logistic regression (dev matched / mismatched accuracy; chance 0.333):")
    for which, accs in figures["bow_baselines"].items():
        print(f"  {which:<11} {accs['matched']:.3f} / {accs['mismatched']:.3f}")
    print()
    print(f"dev accuracy averaged over fine-tune seeds {seeds}; 'range m' is the lowest and highest seed")
    print("| init | arch | params | acc m | range m | acc mm | int8 m | int8 mm | fine-tune s | fine-tune+eval s | cpu s |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        print(f"| {row['init']} | {row['arch']} | {row['params'] / 1e6:.2f}M | {row['fp32_m']:.3f} | "
              f"{min(row['fp32_m_per_seed']):.2f}–{max(row['fp32_m_per_seed']):.2f} | {row['fp32_mm']:.3f} | {row.get('int8_m', float('nan')):.3f} | {row.get('int8_mm', float('nan')):.3f} | "
              f"{row['train_s']:.1f} | {row['total_s']:.1f} | {row['cpu_s']:.1f} |")
    for init in supernets:
        mine = [row for row in rows if row["init"] == init]
        small, large = mine[0], mine[-1]
        print(f"{init}: largest/smallest dev-matched accuracy {large['fp32_m']:.3f}/{small['fp32_m']:.3f} = "
              f"{large['fp32_m'] / small['fp32_m']:.2f}x ({100 * (large['fp32_m'] - small['fp32_m']):+.1f} points); "
              f"fine-tune+eval time ratio {large['total_s'] / small['total_s']:.1f}x")
    if args.output_json:
        with open(args.output_json, "w", encoding="utf-8") as handle:
            json.dump(figures, handle, indent=2, sort_keys=True)


def _params_changed(data_dir: str, params) -> bool:
    from demo import read_manifest

    manifest = read_manifest(data_dir) if os.path.isdir(data_dir) else None
    return manifest is not None and manifest["params"] != params.as_dict()


if __name__ == "__main__":
    main()
