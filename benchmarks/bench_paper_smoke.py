#!/usr/bin/env python
"""Benchmark: the paper's reproduction in smoke mode (``SMOKE=1 bash script/reproduce_paper.sh``),
end to end at paper geometry, with what each stage costs, and the full-scale run those costs imply.

    python benchmarks/bench_paper_smoke.py                       # runs the smoke in a fresh temp dir
    python benchmarks/bench_paper_smoke.py --run_dir paper_smoke_run --reuse   # only summarise a finished run

Prints (and writes ``<run_dir>/bench_paper_smoke.md``):
* the whole smoke's wall time (goal: <= 15 min on 2 idle cores) and, per stage, its wall seconds,
  peak resident memory (largest process; ``RUN_DIR/stage_costs.tsv``), units and seconds per unit;
* the per-unit costs a user budgets with: seconds per pre-training step at batch 12 x seq 512
  (``paper_step``) and at the smoke's batch x seq 128 (``pretrain``), seconds per latency arch (fp32 + int8),
  seconds per candidate fine-tune per 1k training examples;
* the full-scale estimate at those per-unit costs (``reproduce.plan``'s formulas, the ones the
  script's plan uses): BookCorpus (``--corpus_tokens``, about 1 B tokens) for 4 epochs at 12 x 512,
  the 14,250-arch grid in fp32 + int8, 8 searches (4 budgets x fp/ptq) x 91 candidates on MNLI
  (392,702 / 9,815 / 9,832 examples) -- on this machine's device with NPROC=1 and with NPROC=8 (ideal
  data-parallel scaling: a floor, not a measurement; latency stays one CPU thread).
Run it on an idle machine; on a GPU machine the pre-training and fine-tune figures are the GPU's.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from reproduce.costs import COLUMNS, unit_costs, write_summary  # noqa: E402
from reproduce.plan import build_plan, human_seconds  # noqa: E402
from reproduce.settings import Settings  # noqa: E402

MNLI_SIZES = "392702 9815 9832"  # GLUE MNLI train / dev_matched / dev_mismatched


def full_scale_settings(run_dir: str, corpus_tokens: float, nproc: int) -> Settings:
    values = {"SMOKE": "0", "RUN_DIR": os.path.join(run_dir, "full_scale_estimate"), "STAGES": "all",
              "RAW_DIR": "", "GLUE_DIR": "", "CORPUS_TOKENS": str(corpus_tokens), "MNLI_SIZES": MNLI_SIZES,
              "EPOCHS": "4", "MAX_STEPS": "-1", "BATCH_SIZE": "12", "MAX_SEQ_LENGTH": "512", "NPROC": str(nproc),
              "LATENCY_TABLES": "measure", "SAMPLE": "", "INFER_CNT": "20", "BUDGETS": "5 10 15 20",
              "TYPES": "fp ptq", "RANDOM_BASELINE": "0", "GEN_SIZE": "10", "POPULATION": "25", "GENERATIONS": "3",
              "TOP_K": "3", "SEEDS": "42 43 44", "NUM_TRAIN_EPOCHS": "1", "JOBS": str(nproc), "EVAL_ARGS": ""}
    return Settings(values)


def probe_from_run(run_dir: str) -> dict | None:
    """The smoke run's own per-unit costs in the shape of a probe: the paper-shape step (12 x 512), the
    latency table's archs, the searches' fine-tunes; fixed overheads from the run's probe."""
    costs = unit_costs(run_dir)
    step = costs.get("pretrain_step_b12_s512")
    probe_path = os.path.join(run_dir, "probe", "probe.json")
    probe = json.load(open(probe_path)) if os.path.isfile(probe_path) else {}
    if not step:
        return None
    manifest = json.load(open(os.path.join(run_dir, "shards", "data_manifest.json")))
    seconds = dict(probe.get("seconds") or {})
    # the probe's pre-training overhead belongs to its own shape; the paper_step stage's wall less its steps
    seconds["pretrain"] = None
    return {"device": probe.get("device", "this machine"), "seconds": {k: v for k, v in seconds.items() if v},
            "pretrain": step, "latency": costs.get("latency_arch") or probe.get("latency"),
            "finetune": costs.get("candidate_finetune") or probe.get("finetune"),
            "shards": {"tokens": manifest["tokens"], "sequences": manifest["sequences"]}}


def table(rows, columns) -> list[str]:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join("" if row.get(c) is None else (f"{row[c]:g}" if isinstance(row[c], float)
                                                                      else str(row[c])) for c in columns) + " |")
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run_dir", default=None, help="default: a fresh temporary directory")
    parser.add_argument("--reuse", action="store_true", help="do not run; summarise --run_dir as it is")
    parser.add_argument("--corpus_tokens", type=float, default=1.0e9, help="BookCorpus tokens (docs/paper-scale.md: about 1 B)")
    parser.add_argument("--env", nargs="*", default=[], metavar="NAME=VALUE",
                        help="more variables for the script (e.g. BUDGETS=20)")
    args = parser.parse_args(argv)
    run_dir = os.path.abspath(args.run_dir or tempfile.mkdtemp(prefix="paper_smoke_"))
    wall = None
    if not args.reuse:
        env = dict(os.environ, SMOKE="1", RUN_DIR=run_dir)
        env.update(pair.split("=", 1) for pair in args.env)
        started = time.perf_counter()
        done = subprocess.run(["bash", os.path.join(ROOT, "script", "reproduce_paper.sh")], cwd=ROOT, env=env)
        wall = time.perf_counter() - started
        if done.returncode != 0:
            print(f"bench_paper_smoke: the smoke run failed (exit {done.returncode}); see above", file=sys.stderr)
            return done.returncode
    rows = write_summary(run_dir)
    lines = [f"## Paper smoke run ({run_dir})", ""]
    if wall is not None:
        lines.append(f"Whole smoke (probe and plan included): {wall:.0f} s ({human_seconds(wall)}); goal <= 15 min "
                     "on 2 idle cores.")
        lines.append("")
    lines += table(rows, [c for c in COLUMNS])
    costs = unit_costs(run_dir)
    lines += ["", "Per-unit costs:"]
    for key, info in sorted(costs.items()):
        if key.startswith("pretrain_step"):
            lines.append(f"- {key}: {info.get('seconds_per_step'):.2f} s per step (mean of {info['timed_steps']}; "
                         f"first step {info['first_step_seconds']:.2f} s)")
    if "latency_arch" in costs:
        info = costs["latency_arch"]
        lines.append(f"- latency: {info['seconds_per_arch']:.2f} s per arch (fp32 + int8, {info['archs']} archs) + "
                     f"{info['checkpoint_seconds']:.1f} s per reference checkpoint")
    if "candidate_finetune" in costs:
        info = costs["candidate_finetune"]
        lines.append(f"- candidate fine-tune: {info['train_seconds_per_1k_examples']:.1f} s per 1k training examples, "
                     f"scoring {info['eval_fp32_seconds_per_1k_examples']:.1f} (fp32) / "
                     f"{info['eval_int8_seconds_per_1k_examples'] or 0:.1f} (int8) s per 1k dev examples "
                     f"({info['candidates']} fine-tunes, device {info['device']})")
    probe = probe_from_run(run_dir)
    if probe:
        lines += ["", f"Full-scale estimate at these per-unit costs ({probe['device']}; BookCorpus "
                  f"{args.corpus_tokens / 1e9:g} B tokens, 4 epochs at 12 x 512; 14,250 archs; 8 searches x 91 "
                  "fine-tunes of MNLI):", ""]
        estimate_rows = []
        for nproc in (1, 8):
            plan = build_plan(full_scale_settings(run_dir, args.corpus_tokens, nproc), probe)
            by_stage = {row["stage"]: row.get("estimate_s") for row in plan["stages"]}
            estimate_rows.append({"devices": nproc, **{k: human_seconds(v) for k, v in by_stage.items()},
                                  "total": human_seconds(plan["total_estimate_s"])})
        lines += table(estimate_rows, ["devices", "shards", "pretrain", "latency", "predictors", "searches", "report",
                                       "total"])
        lines.append("")
        lines.append("8 devices: ideal data-parallel scaling of pre-training (NPROC=8) and one search per device "
                     "(JOBS=8); latency is one CPU thread either way.")
    text = "\n".join(lines) + "\n"
    print(text)
    with open(os.path.join(run_dir, "bench_paper_smoke.md"), "w", encoding="utf-8") as handle:
        handle.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
