"""Peak memory of reading a big latency table: predictor training and a latency resume with nothing
left to measure, on the demo's table and on a ~200 MB table made from it (the demo's records
repeated as re-measurements of the same grid, as a table resumed many times would hold them).

    python benchmarks/bench_table_memory.py --table demo_run/latency/lat_torch_dynamic_int8.jsonl \\
        [--target_mb 200] [--work_dir /tmp/table_memory]

``--table`` is an int8 table of the demo (``make demo`` writes it under RUN_DIR/latency/). Each
command runs under ``/usr/bin/time -v``; the figures are its "Maximum resident set size" and wall
time. Peak memory does not depend on the machine's load; the wall times do (run those on an idle
machine). Prints one line per (command, table) and the big/demo ratio of each.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def build_big_table(source: str, target: str, target_mb: float) -> int:
    """``source`` repeated until ``target`` holds ``target_mb`` MB; every copy of an arch record is a
    later re-measurement of its arch. Returns the number of lines written."""
    with open(source, encoding="utf-8") as handle:
        records = [json.loads(line) for line in handle if line.strip()]
    top = max((r.get("measurement", 1) for r in records if r.get("record_type", "arch") == "arch"), default=1)
    size, copy, lines = 0, 0, 0
    with open(target, "w", encoding="utf-8") as out:
        while size < target_mb * 1e6:
            for record in records:
                if record.get("record_type", "arch") == "arch" and copy:
                    record = dict(record, measurement=record.get("measurement", 1) + copy * top)
                line = json.dumps(record, sort_keys=True) + "\n"
                out.write(line)
                size += len(line.encode())
                lines += 1
            copy += 1
    return lines


def measured(command: list[str]) -> dict:
    result = subprocess.run(["/usr/bin/time", "-v", *command], capture_output=True, text=True,
                            env=dict(os.environ, PYTHONPATH=ROOT, BAF_LOG_LEVEL="WARNING"))
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command[:3])}...: exit {result.returncode}: {result.stderr.strip()[-800:]}")
    rss_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", result.stderr).group(1))
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (\S+)", result.stderr).group(1)
    parts = [float(p) for p in wall.split(":")]
    seconds = sum(value * 60 ** index for index, value in enumerate(reversed(parts)))
    return {"peak_rss_mb": rss_kb / 1024, "wall_s": seconds}


def resume_command(table_dir: str, record: dict) -> list[str]:
    """A latency run with the table's own settings, on the table's directory (everything is measured)."""
    space = record.get("space_definition") or {}
    argv = [sys.executable, os.path.join(ROOT, "inference_time_evaluation_quant.py"), "--save_dir", table_dir,
            "--backends", "int8", "--references", "auto", "--seed", str(record.get("seed", 0)),
            "--threads", str(record["threads"]), "--infer_cnt", str(record["runs"]), "--warmup",
            str(record["warmup"]), "--timer", record["timer"], "--vocab_size", str(record["vocab_size"]),
            "--rounds", str(record["rounds"]), "--remeasure_cap", str(record["remeasure_cap"]),
            "--max_seq_length", str(record["seq_len"])]
    if space:
        argv += ["--space", space["name"]]
    return argv + ["--no_progress"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--table", required=True, help="the demo's int8 table (RUN_DIR/latency/lat_torch_dynamic_int8.jsonl)")
    parser.add_argument("--target_mb", type=float, default=200.0)
    parser.add_argument("--work_dir", default="/tmp/table_memory")
    parser.add_argument("--skip", nargs="*", default=[], choices=["predictor", "resume"])
    args = parser.parse_args()
    os.makedirs(args.work_dir, exist_ok=True)
    with open(args.table, encoding="utf-8") as handle:
        first = json.loads(next(line for line in handle if line.strip()))
    tables = {}
    demo_dir = os.path.join(args.work_dir, "demo")
    big_dir = os.path.join(args.work_dir, "big")
    for directory in (demo_dir, big_dir):
        shutil.rmtree(directory, ignore_errors=True)
        os.makedirs(directory)
    tables["demo"] = os.path.join(demo_dir, "lat_torch_dynamic_int8.jsonl")
    shutil.copyfile(args.table, tables["demo"])
    tables["big"] = os.path.join(big_dir, "lat_torch_dynamic_int8.jsonl")
    lines = build_big_table(args.table, tables["big"], args.target_mb)
    print(f"tables: demo {os.path.getsize(tables['demo']) / 1e6:.1f} MB; big {os.path.getsize(tables['big']) / 1e6:.1f} MB "
          f"({lines} lines)", flush=True)
    figures = {}
    for name, path in tables.items():
        if "predictor" not in args.skip:
            figures[("predictor", name)] = measured(
                [sys.executable, os.path.join(ROOT, "latency_predictor.py"), "--lat_dataset_path", path, "--ckpt_path",
                 os.path.join(args.work_dir, f"{name}_predictor.pt"), "--no_plot", "--quiet"])
        if "resume" not in args.skip:
            figures[("resume", name)] = measured(resume_command(os.path.dirname(path), first))
        for (what, table), values in figures.items():
            if table == name:
                print(f"{what:9s} {name:4s} table: peak RSS {values['peak_rss_mb']:7.0f} MB, wall {values['wall_s']:6.1f} s",
                      flush=True)
    for what in ("predictor", "resume"):
        if (what, "big") in figures:
            big, demo = figures[(what, "big")], figures[(what, "demo")]
            print(f"{what:9s} big/demo peak RSS ratio {big['peak_rss_mb'] / demo['peak_rss_mb']:.2f} "
                  f"(+{big['peak_rss_mb'] - demo['peak_rss_mb']:.0f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
