"""ONNX Runtime int8 vs PyTorch dynamic int8 on the same fine-tuned sub-models: dev accuracy of
both schemes on the same weights (and fp32), and their latency with the tables' protocol, on this
machine (whose CPU flags are printed: which runtime wins depends on AVX-512 VNNI / AMX).

    python benchmarks/bench_ort_vs_torch_int8.py --supernet demo_run/supernet/final --data_dir demo_run/data/MNLI \\
        [--archs 1/192/256 2/320/768 4/448/1536] [--seeds 42 43] [--max_train_examples 2000]

Prints one line per (arch, seed) and a summary: accuracy difference ORT - torch in points (mean, max
abs) and the latency ratio torch / ORT (median over archs), both measured in this run.
"""

from __future__ import annotations

import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402
import torch  # noqa: E402


def cpu_flags() -> str:
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16", "avx_vnni")
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            flags = next(line for line in handle if line.startswith("flags")).split(":", 1)[1].split()
    except (OSError, StopIteration):
        return "unknown"
    return " ".join(flag for flag in wanted if flag in flags) or "none of " + ", ".join(wanted)


def main() -> int:
    from evaluation.candidate import TaskData
    from evaluation.data import encode_examples, load_tokenizer
    from evaluation.finetune import FinetuneConfig, evaluate, finetune
    from glue.tasks import get_task, read_split
    from latency.backends import example_inputs
    from latency.measure import Protocol, apply_threads, cpu_model, measure
    from quantize_utils import SCHEMES
    from transformer.checkpoint import load_supernet
    from transformer.hf_converter import to_hf_model
    from transformer.modeling_super import SuperBertForSequenceClassification
    from utils import arch_summary, make_arch

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--supernet", required=True)
    parser.add_argument("--data_dir", required=True, help="MNLI-layout task directory")
    parser.add_argument("--archs", nargs="+", default=["1/192/256", "2/320/768", "3/384/1280", "4/448/1536"],
                        help="L/H/F with qkv = hidden and the supernet's head count")
    parser.add_argument("--seeds", nargs="+", type=int, default=[42])
    parser.add_argument("--max_train_examples", type=int, default=2000)
    parser.add_argument("--max_eval_examples", type=int, default=500)
    parser.add_argument("--learning_rate", type=float, default=5e-4)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    apply_threads(1)
    task = get_task("mnli")
    tokenizer = load_tokenizer(args.supernet, True)
    splits = {"train": read_split(task, args.data_dir, "train", args.max_train_examples)}
    splits.update({name: read_split(task, args.data_dir, name, args.max_eval_examples) for name in task.dev_files})
    data = TaskData(task, encode_examples(tokenizer, splits["train"], task, 32),
                    {name: encode_examples(tokenizer, splits[name], task, 32) for name in task.dev_files})
    supernet = load_supernet(args.supernet, SuperBertForSequenceClassification, num_labels=3).eval()
    heads = supernet.config.num_attention_heads
    print(f"CPU: {cpu_model()}; flags: {cpu_flags()}; torch {torch.__version__}; one thread")
    protocol = Protocol(version="baf-latency-2", runs=args.runs, rounds=4, warmup=5,
                        vocab_size=supernet.config.vocab_size, max_position_embeddings=supernet.config.max_position_embeddings)
    differences, ratios = [], []
    for spec in args.archs:
        layers, hidden, ffn = (int(x) for x in spec.split("/"))
        arch = make_arch(layers, hidden, ffn, heads)
        for seed in args.seeds:
            torch.manual_seed(seed)
            model = to_hf_model(supernet, arch, head="cls")
            config = FinetuneConfig(learning_rate=args.learning_rate, num_train_epochs=1, train_batch_size=16,
                                    eval_batch_size=32, eval_step=10**9, seed=seed)
            outcome = finetune(model, data.train, data.primary_dev[1], task, config, "cpu")
            model.load_state_dict(outcome.best_state)
            model.eval()
            accuracy = {"torch_fp32": {name: evaluate(model, split, task, 32).primary for name, split in data.dev.items()}}
            for name in ("torch_dynamic_int8", "ort_dynamic_int8"):
                scored, _ = SCHEMES[name].scored_model(model, threads=1)
                accuracy[name] = {split: evaluate(scored, data.dev[split], task, 32).primary for split in data.dev}
            diff = [accuracy["ort_dynamic_int8"][s] - accuracy["torch_dynamic_int8"][s] for s in data.dev]
            differences += diff
            # latency of the same weights' plain encoder, both runtimes interleaved in one process
            runners = [SCHEMES[name].latency_runner(model.bert, example_inputs(protocol), 1)[0]
                       for name in ("torch_fp32", "torch_dynamic_int8", "ort_dynamic_int8")]
            fp32, torch_int8, ort_int8 = (float(np.median(t.wall_ms)) for t in measure(runners, protocol))
            ratios.append(torch_int8 / ort_int8)
            print(f"{arch_summary(arch)} seed {seed}: acc fp32 {accuracy['torch_fp32']} | torch int8 "
                  f"{accuracy['torch_dynamic_int8']} | ORT int8 {accuracy['ort_dynamic_int8']} | latency ms fp32 "
                  f"{fp32:.2f}, torch int8 {torch_int8:.2f}, ORT int8 {ort_int8:.2f}", flush=True)
    differences = 100 * np.asarray(differences)
    print(f"accuracy ORT - torch int8: mean {differences.mean():+.2f} points, max |diff| {np.abs(differences).max():.2f} "
          f"points over {len(differences)} (arch, seed, split); latency torch int8 / ORT int8: median "
          f"{np.median(ratios):.2f}x (range {min(ratios):.2f}-{max(ratios):.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
