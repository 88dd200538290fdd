"""Wall time and peak memory of each stage of ``script/reproduce_paper.sh``, and what one unit of
each stage's work costs (the numbers a user needs to budget a real run).

    python -m reproduce.costs run --record RUN/stages/pretrain.cost.jsonl -- bash script/pre_training.sh
    python -m reproduce.costs summary --run_dir RUN

``run`` runs the command and appends one JSON line per attempt: wall seconds, the peak resident set
size of the largest process of the command's tree (``getrusage(RUSAGE_CHILDREN).ru_maxrss``, what
``/usr/bin/time -v`` reports as "Maximum resident set size"; concurrent processes are not summed),
the exit status and whether it completed. A SIGTERM/SIGINT is passed on to the command, and the
interrupted attempt is still recorded, so a killed-and-resumed stage's cost is the sum of its
attempts.

``summary`` writes ``RUN/stage_costs.tsv`` (stage, seconds, peak RSS MB, units, unit, wall seconds
per unit, the artefacts' own seconds per unit, note) and ``RUN/unit_costs.json`` from the attempts
and the stages' artefacts: the pre-training loss log (seconds of every step), the latency tables
(``prepare_s`` + ``timing_s`` of every arch record), the candidates' ``subbert.results.jsonl``
(``train_seconds`` per training example). The first pre-training step (warm-up: allocation, kernel
selection) is left out of the per-step figure.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import time

from utils import UserError, append_jsonl, atomic_write, get_logger, read_jsonl, run_cli

logger = get_logger("reproduce.costs")

STAGES_DIR = "stages"
COLUMNS = ("stage", "seconds", "peak_rss_mb", "units", "unit", "seconds_per_unit", "unit_seconds", "note")


# --------------------------------------------------------------------------------------
# One attempt of a stage
# --------------------------------------------------------------------------------------


def run_timed(command: list[str], record_path: str, stage: str) -> int:
    """Run ``command``; append its attempt to ``record_path``; return its exit status. The peak RSS is
    the largest child this process ever waited for: call it from a fresh process (the ``run`` CLI)."""
    os.makedirs(os.path.dirname(os.path.abspath(record_path)), exist_ok=True)
    started = time.perf_counter()
    process = subprocess.Popen(command)
    received = []

    def forward(signum, _frame):
        received.append(signum)
        try:
            process.send_signal(signum)
        except ProcessLookupError:
            pass

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        while True:
            try:
                status = process.wait()
                break
            except InterruptedError:  # pragma: no cover (PEP 475 retries; kept for clarity)
                continue
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    seconds = time.perf_counter() - started
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # KiB on Linux
    if sys.platform == "darwin":  # bytes there
        peak_kb //= 1024
    append_jsonl(record_path, {"stage": stage, "seconds": round(seconds, 3), "peak_rss_mb": round(peak_kb / 1024, 1),
                               "returncode": status, "completed": status == 0 and not received,
                               "signal": received[0] if received else None, "ended_at": time.time()})
    if received:
        return 128 + received[0]
    return status if status >= 0 else 128 - status


# --------------------------------------------------------------------------------------
# Per-unit costs from the stages' artefacts
# --------------------------------------------------------------------------------------


def _mean(values):
    values = [float(v) for v in values]
    return sum(values) / len(values) if values else None


def pretraining_step_seconds(output_dir: str) -> dict | None:
    """Steps and mean seconds per step of a pre-training output directory's loss log, without its
    first step (warm-up: allocations, kernel selection)."""
    from pretraining.checkpointing import LOSS_LOG  # imports torch: not in the light ``run`` wrapper

    path = os.path.join(output_dir, LOSS_LOG)
    if not os.path.isfile(path):
        return None
    rows = [row for row in read_jsonl(path) if "seconds" in row and "step" in row]
    if not rows:
        return None
    timed = [float(row["seconds"]) for row in rows[1:]]
    info = {"steps": len(rows), "timed_steps": len(timed), "seconds_per_step": _mean(timed),
            "first_step_seconds": float(rows[0]["seconds"])}
    if timed:
        info["median_seconds_per_step"] = statistics.median(timed)
    args = _trainer_args(output_dir)
    if args:
        info.update(batch_size=args.get("train_batch_size"), max_seq_length=args.get("max_seq_length"),
                    gradient_accumulation_steps=args.get("gradient_accumulation_steps"))
    return info


def _trainer_args(output_dir: str) -> dict:
    from pretraining.checkpointing import TRAINER_FILE

    for candidate in [os.path.join(output_dir, "final")] + sorted(glob.glob(os.path.join(output_dir, "*_*"))):
        path = os.path.join(candidate, TRAINER_FILE)
        if os.path.isfile(path):
            try:
                with open(path, encoding="utf-8") as handle:
                    return json.load(handle).get("args") or {}
            except (OSError, json.JSONDecodeError):
                continue
    return {}


def latency_arch_seconds(tables: list[str]) -> dict | None:
    """Archs measured in every table and the seconds one arch costs in all of them together: the
    shared build once, each backend's conversion and timing (the paired reference runs, or the anchor's
    share by the chunk's interleave), from the arch records' ``prepare_s`` / ``timing_s``; plus a
    reference checkpoint's seconds (all references in all backends)."""
    per_arch: dict[str, dict[str, dict]] = {}
    checkpoints: dict[tuple, float] = {}
    interleave = reference_every = None
    for path in tables:
        if not os.path.isfile(path) or not path.endswith(".jsonl"):
            continue
        for record in read_jsonl(path):
            kind = record.get("record_type", "arch")
            if kind == "arch" and int(record.get("measurement", 1)) == 1:
                per_arch.setdefault(record["arch_key"], {})[path] = record
                interleave = record.get("interleave", interleave)
                reference_every = record.get("reference_every", reference_every)
            elif kind == "reference":
                key = (record.get("run_id"), record.get("checkpoint"))
                checkpoints[key] = checkpoints.get(key, 0.0) + float(record.get("timing_s") or 0.0)
    complete = [records for records in per_arch.values() if len(records) == len([t for t in tables if
                                                                               t.endswith(".jsonl")])]
    if not complete:
        return None
    costs = []
    # baf-latency-2: the chunk's anchor is timed once for every `interleave` archs; baf-latency-3's
    # timing_s already holds the reference's runs paired with the arch's
    paired = any(r.get("protocol") == "baf-latency-3" for records in complete for r in records.values())
    share = 1.0 if paired else 1.0 + 1.0 / float(interleave or 8)
    for records in complete:
        prepares = [float(r.get("prepare_s") or 0.0) for r in records.values()]
        build = min(prepares)
        timing = sum(float(r.get("timing_s") or 0.0) for r in records.values())
        costs.append(build + sum(p - build for p in prepares) + timing * share)
    return {"archs": len(complete), "backends": len(tables), "seconds_per_arch": _mean(costs),
            "checkpoint_seconds": _mean(checkpoints.values()) if checkpoints else 0.0,
            "interleave": interleave, "reference_every": reference_every}


def finetune_seconds(results: list[str]) -> dict | None:
    """Candidate fine-tunes and their cost per 1k training examples (``train_seconds`` less the dev
    evaluations made during training), per 1k dev examples scored in fp32 and in int8."""
    records = []
    for path in results:
        if os.path.isfile(path):
            records += [r for r in read_jsonl(path) if "train_seconds" in r]
    if not records:
        return None
    train, fp32, int8, elapsed = [], [], [], []
    for record in records:
        hparams = record.get("hparams") or {}
        batch = int(hparams.get("train_batch_size") or 32)
        eval_batch = int(hparams.get("eval_batch_size") or 32)
        examples = int(record.get("train_steps") or 0) * batch
        eval_ms = float(record.get("time_per_batch_infer_fp32_ms") or 0.0)
        eval_batches = int(record.get("infer_cnt") or 0)
        during = len(record.get("evaluations") or []) * eval_ms * eval_batches / 1000.0
        if examples:
            train.append(max(float(record["train_seconds"]) - during, 0.0) / examples * 1000.0)
        if eval_ms:
            fp32.append(eval_ms / eval_batch)  # ms per example = s per 1k examples
        if record.get("time_per_batch_infer_int8_ms"):
            int8.append(float(record["time_per_batch_infer_int8_ms"]) / eval_batch)
        elapsed.append(float(record.get("elapsed_seconds") or 0.0))
    first = records[0].get("hparams") or {}
    return {"candidates": len(records), "train_seconds_per_1k_examples": _mean(train),
            "eval_fp32_seconds_per_1k_examples": _mean(fp32), "eval_int8_seconds_per_1k_examples": _mean(int8),
            "seconds_per_candidate": _mean(elapsed), "train_batch_size": first.get("train_batch_size"),
            "max_seq_length": records[0].get("max_seq_length", first.get("max_seq_length")),
            "device": records[0].get("device")}


# --------------------------------------------------------------------------------------
# The summary
# --------------------------------------------------------------------------------------


def read_attempts(run_dir: str) -> dict[str, list[dict]]:
    attempts = {}
    for path in sorted(glob.glob(os.path.join(run_dir, STAGES_DIR, "*.cost.jsonl"))):
        stage = os.path.basename(path)[: -len(".cost.jsonl")]
        attempts[stage] = read_jsonl(path)
    return attempts


def _shard_tokens(directory: str) -> float | None:
    path = os.path.join(directory, "data_manifest.json")
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as handle:
        return float(json.load(handle).get("tokens", 0))


def stage_units(run_dir: str, stage: str) -> tuple[float | None, str, float | None, str]:
    """(units, unit name, the artefacts' own seconds per unit, note) of one stage."""
    if stage == "shards":
        tokens = _shard_tokens(os.path.join(run_dir, "shards"))
        return (tokens / 1e6 if tokens else None), "M tokens", None, ""
    if stage in ("pretrain", "paper_step"):
        info = pretraining_step_seconds(os.path.join(run_dir, "supernet" if stage == "pretrain" else "paper_step"))
        if not info:
            return None, "step", None, ""
        shape = f"batch {info.get('batch_size')} x seq {info.get('max_seq_length')}"
        return info["steps"], f"step ({shape})", info.get("seconds_per_step"), "first step left out"
    if stage == "latency":
        info = latency_arch_seconds(sorted(glob.glob(os.path.join(run_dir, "latency", "lat_*.jsonl"))))
        if not info:
            return None, "arch", None, ""
        return (info["archs"], f"arch ({info['backends']} backends)", info["seconds_per_arch"],
                f"+ {info['checkpoint_seconds']:.1f} s per reference checkpoint")
    if stage == "predictors":
        count = len(glob.glob(os.path.join(run_dir, "conf_datasets", "lat_predictor*.pt")))
        return count or None, "predictor", None, ""
    if stage == "searches":
        info = finetune_seconds(sorted(glob.glob(os.path.join(run_dir, "output", "*", "subbert.results.jsonl"))))
        if not info:
            return None, "candidate fine-tune", None, ""
        per_1k = info["train_seconds_per_1k_examples"]
        note = (f"train {per_1k:.2f} s per 1k examples (batch {info['train_batch_size']} x seq "
                f"{info['max_seq_length']}, {info['device']})" if per_1k is not None else "")
        return info["candidates"], "candidate fine-tune", info["seconds_per_candidate"], note
    if stage == "report":
        path = os.path.join(run_dir, "latency_evaluated", "evaluated_archs.cands")
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as handle:
                return sum(1 for line in handle if line.strip()), "evaluated arch", None, "re-measured"
    return None, "", None, ""


def summarize(run_dir: str) -> list[dict]:
    rows = []
    for stage, attempts in read_attempts(run_dir).items():
        if not attempts:
            continue
        seconds = sum(float(a["seconds"]) for a in attempts)
        peak = max(float(a["peak_rss_mb"]) for a in attempts)
        units, unit, unit_seconds, note = stage_units(run_dir, stage)
        if len(attempts) > 1:
            note = (note + "; " if note else "") + f"{len(attempts)} attempts"
        if not attempts[-1].get("completed"):
            note = (note + "; " if note else "") + "not finished"
        rows.append({"stage": stage, "seconds": round(seconds, 1), "peak_rss_mb": round(peak, 1),
                     "units": units, "unit": unit,
                     "seconds_per_unit": round(seconds / units, 4) if units else None,
                     "unit_seconds": round(unit_seconds, 4) if unit_seconds is not None else None, "note": note})
    rows.sort(key=lambda row: min(a["ended_at"] for a in read_attempts(run_dir)[row["stage"]]))
    return rows


def unit_costs(run_dir: str) -> dict:
    """The per-unit figures BENCHMARKS.md asks for (None where the run has not made them)."""
    costs = {}
    for stage in ("paper_step", "pretrain"):
        info = pretraining_step_seconds(os.path.join(run_dir, "supernet" if stage == "pretrain" else "paper_step"))
        if info:
            key = f"pretrain_step_b{info.get('batch_size')}_s{info.get('max_seq_length')}"
            costs[key] = info
    latency = latency_arch_seconds(sorted(glob.glob(os.path.join(run_dir, "latency", "lat_*.jsonl"))))
    if latency:
        costs["latency_arch"] = latency
    finetune = finetune_seconds(sorted(glob.glob(os.path.join(run_dir, "output", "*", "subbert.results.jsonl"))))
    if finetune:
        costs["candidate_finetune"] = finetune
    return costs


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def write_summary(run_dir: str) -> list[dict]:
    rows = summarize(run_dir)
    with atomic_write(os.path.join(run_dir, "stage_costs.tsv")) as handle:
        handle.write("\t".join(COLUMNS) + "\n")
        for row in rows:
            handle.write("\t".join(_cell(row[column]) for column in COLUMNS) + "\n")
    with atomic_write(os.path.join(run_dir, "unit_costs.json")) as handle:
        json.dump(unit_costs(run_dir), handle, indent=2, sort_keys=True)
        handle.write("\n")
    return rows


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run a command, record its wall time and peak RSS")
    run.add_argument("--record", required=True, help="JSONL file the attempt is appended to")
    run.add_argument("--stage", default=None, help="stage name (default: the record's file name)")
    run.add_argument("cmd", nargs=argparse.REMAINDER, metavar="-- COMMAND", help="the command and its arguments")
    summary = commands.add_parser("summary", help="write RUN/stage_costs.tsv and RUN/unit_costs.json")
    summary.add_argument("--run_dir", required=True)
    summary.add_argument("--print", dest="show", action="store_true", help="also print the table")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "run":
        command = args.cmd[1:] if args.cmd and args.cmd[0] == "--" else args.cmd
        if not command:
            raise UserError("run: no command given (python -m reproduce.costs run --record FILE -- COMMAND ...)")
        stage = args.stage or os.path.basename(args.record).split(".")[0]
        return run_timed(command, args.record, stage)
    if not os.path.isdir(args.run_dir):
        raise UserError(f"--run_dir {args.run_dir}: no such directory")
    rows = write_summary(args.run_dir)
    if args.show:
        print("\t".join(COLUMNS))
        for row in rows:
            print("\t".join(_cell(row[column]) for column in COLUMNS))
    return 0


if __name__ == "__main__":
    run_cli(main)
