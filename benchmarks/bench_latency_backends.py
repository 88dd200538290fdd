"""ONNX Runtime int8 vs PyTorch int8 (and fp32) latency on the same archs, side by side, with the
machine's CPU flags: which int8 kernels a CPU has (AVX2, AVX-512 VNNI, AVX-VNNI, AMX) decides how
much int8 pays off, so the figures mean nothing without them.

    python benchmarks/bench_latency_backends.py [--quick] [--archs 24] [--space paper_latency] [--seed 0]
        [--out_dir reports/latency_backends] [--timer wall] [--cpu_affinity 1]

The archs (a seeded sample of ``--space``) are timed in ONE stage process with ``--backends
torch_fp32 torch_dynamic_int8 ort_dynamic_int8`` (protocol baf-latency-2: arch by arch, so the three
backends of an arch see the same conditions). Prints the machine (CPU model, ISA flags, torch /
onnxruntime versions, PyTorch's quantized engine), per-arch latencies and the per-arch speedups
(median, p10, p90): ORT int8 over PyTorch int8, and each int8 over fp32. Writes
``<out_dir>/ort_vs_torch.{md,csv,png}`` (``latency.compare``) and ``<out_dir>/results.json``.
Run it on an idle machine; ``--quick`` (3 small archs, few runs) only checks that it runs.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from latency import compare  # noqa: E402
from latency.table import read_latency_table  # noqa: E402
from utils import get_space, write_arch_file  # noqa: E402

BACKENDS = ("torch_fp32", "torch_dynamic_int8", "ort_dynamic_int8")
LABELS = {"torch_fp32": "torch_fp32", "torch_dynamic_int8": "torch_int8", "ort_dynamic_int8": "ort_int8"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--out_dir", default=os.path.join(ROOT, "reports", "latency_backends"))
    parser.add_argument("--quick", action="store_true", help="3 small archs, few runs: checks that it runs")
    parser.add_argument("--archs", type=int, default=24, help="archs sampled from --space")
    parser.add_argument("--space", default="paper_latency")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--timer", choices=("wall", "cpu"), default="wall")
    parser.add_argument("--vocab_size", type=int, default=30522)
    parser.add_argument("--seq_len", type=int, default=128)
    parser.add_argument("--cpu_affinity", default=None)
    args = parser.parse_args()
    if args.quick:
        args.archs, args.space, args.runs, args.warmup, args.vocab_size, args.seq_len = 3, "demo_latency", 4, 1, 2000, 32

    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs (run this on an idle machine)", flush=True)
    space = get_space(args.space)
    archs = random.Random(args.seed).sample(list(space.grid()), args.archs)
    os.makedirs(args.out_dir, exist_ok=True)
    arch_file = os.path.join(args.out_dir, "archs.cands")
    write_arch_file(arch_file, archs)
    tables_dir = os.path.join(args.out_dir, "tables")
    command = [sys.executable, os.path.join(ROOT, "inference_time_evaluation_quant.py"), "--save_dir", tables_dir,
               "--arch_file", arch_file, "--space", args.space, "--backends", *BACKENDS, "--infer_cnt", str(args.runs),
               "--warmup", str(args.warmup), "--timer", args.timer, "--vocab_size", str(args.vocab_size),
               "--max_seq_length", str(args.seq_len), "--seed", str(args.seed), "--no_progress"]
    if args.cpu_affinity:
        command += ["--cpu_affinity", args.cpu_affinity]
    subprocess.run(command, check=True, cwd=ROOT)

    tables = {LABELS[b]: read_latency_table(os.path.join(tables_dir, f"lat_{b}.jsonl")) for b in BACKENDS}
    rows = compare.join_tables(tables)
    labels = list(tables)
    compare.write_report(os.path.join(args.out_dir, "ort_vs_torch"), rows, labels)
    env = {label: records[0] for label, records in tables.items()}
    machine = {"cpu_model": env["torch_fp32"]["cpu_model"], "cpu_flags": env["torch_fp32"].get("cpu_flags"),
               "cpu_count": env["torch_fp32"]["cpu_count"], "torch_version": env["torch_fp32"]["torch_version"],
               "onnxruntime_version": env["ort_int8"]["onnxruntime_version"],
               "torch_quant_engine": env["torch_int8"]["quant_engine"], "threads": env["torch_fp32"]["threads"],
               "timer": args.timer, "runs": args.runs, "seq_len": args.seq_len, "vocab_size": args.vocab_size}
    speedups = {"ort_int8_over_torch_int8": compare.speedup_summary(rows, "torch_int8", "ort_int8"),
                "torch_int8_over_fp32": compare.speedup_summary(rows, "torch_fp32", "torch_int8"),
                "ort_int8_over_fp32": compare.speedup_summary(rows, "torch_fp32", "ort_int8")}
    print(f"\nmachine: {machine['cpu_model']}, {machine['cpu_count']} CPUs; ISA flags: "
          f"{', '.join(machine['cpu_flags'] or []) or 'unknown'}")
    print(f"torch {machine['torch_version']} (quantized engine {machine['torch_quant_engine']}), onnxruntime "
          f"{machine['onnxruntime_version']}; {machine['threads']} thread, batch 1 x seq {args.seq_len}, "
          f"{args.warmup} warm-up + {args.runs} runs, timer {args.timer}; {len(rows)} archs of {args.space}\n")
    print("| arch | fp32 ms | PyTorch int8 ms | ORT int8 ms | PyTorch int8 / ORT int8 |")
    print("|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['summary']} | {row['torch_fp32']:.2f} | {row['torch_int8']:.2f} | {row['ort_int8']:.2f} | "
              f"{row['torch_int8'] / row['ort_int8']:.2f}x |")
    print()
    for name, s in speedups.items():
        print(f"{name}: median {s['median']:.2f}x (p10 {s['p10']:.2f}x, p90 {s['p90']:.2f}x, min {s['min']:.2f}x, "
              f"max {s['max']:.2f}x) over {s['n']} archs")
    with open(os.path.join(args.out_dir, "results.json"), "w", encoding="utf-8") as handle:
        json.dump({"machine": machine, "speedups": speedups, "rows": rows}, handle, indent=2, sort_keys=True)
    print(f"\nper arch: {os.path.join(args.out_dir, 'ort_vs_torch.md')}; results: "
          f"{os.path.join(args.out_dir, 'results.json')}" + (" (--quick: figures meaningless)" if args.quick else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
