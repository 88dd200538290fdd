"""The kill matrix: every long stage, killed with SIGKILL / SIGINT / SIGTERM at seeded random
moments, then resumed, must end equal to an uninterrupted run -- no record lost, none duplicated,
the same numbers where the stage is deterministic.

    python benchmarks/kill_matrix.py [--stages data pretraining latency evaluation search] \\
        [--signals KILL INT TERM] [--moments 2] [--seed 0] [--work_dir /tmp/kill_matrix]

Each case prints one line (stage, signal, moment, verdict); the exit code is 1 if any case differs.
``tests/test_kill_matrix.py`` runs a seeded subset as a slow test.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))

SIGNALS = {"KILL": signal.SIGKILL, "INT": signal.SIGINT, "TERM": signal.SIGTERM}
VOLATILE = ("elapsed_seconds", "train_seconds", "time_per_batch", "measured_at", "load_average", "prepare_s",
            "saved_model", "settings", "round_wall_seconds", "round_cpu_seconds", "wall", "seconds", "time")


def _env() -> dict:
    return dict(os.environ, PYTHONPATH=ROOT, BAF_LOG_LEVEL="WARNING", OMP_NUM_THREADS="1")


def _jsonl(path: str) -> list[dict]:
    if not os.path.isfile(path):
        return []
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def processes_of_run(tag: str) -> list[tuple[int, str]]:
    """``(pid, command)`` of every live process whose environment holds ``BAF_RUN_TAG=<tag>``: a run
    started with that variable passes it to everything it starts (Linux /proc; zombies excluded)."""
    needle = f"BAF_RUN_TAG={tag}".encode()
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as handle:
                if needle not in handle.read().split(b"\0"):
                    continue
            with open(f"/proc/{name}/stat", "rb") as handle:
                if handle.read().rsplit(b")", 1)[1].split()[0] == b"Z":
                    continue
            with open(f"/proc/{name}/cmdline", "rb") as handle:
                command = handle.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        found.append((int(name), command[:160]))
    return found


def _stable(record: dict) -> dict:
    return {k: v for k, v in record.items() if not any(part in k for part in VOLATILE)}


# --------------------------------------------------------------------------------------
# The stages: inputs made once, a command per output directory, and what must be equal
# --------------------------------------------------------------------------------------


class Stage:
    name = ""

    def prepare(self, work: str) -> None:
        """Inputs shared by every case (made once)."""

    def command(self, work: str, out: str) -> list[str]:
        raise NotImplementedError

    def outcome(self, out: str):
        """What an uninterrupted run and a resumed one must agree on."""
        raise NotImplementedError


class DataStage(Stage):
    name = "data"

    def prepare(self, work):
        from demo import DemoDataParams, build_demo_data

        if not os.path.isdir(os.path.join(work, "demo", "corpus")):
            build_demo_data(os.path.join(work, "demo"), DemoDataParams(corpus_mb=0.3, num_train=50, num_dev=10))

    def command(self, work, out):
        return [sys.executable, os.path.join(ROOT, "generate_data.py"), "--train_corpus",
                os.path.join(work, "demo", "corpus"), "--output_dir", out, "--bert_model",
                os.path.join(work, "demo", "vocab", "vocab.txt"), "--max_seq_len", "64", "--num_shards", "3",
                "--num_workers", "1", "--do_lower_case"]

    def outcome(self, out):
        names = sorted(n for n in os.listdir(out) if n.startswith("train_doc_tokens_ngrams_"))
        return {name: open(os.path.join(out, name), "rb").read() for name in names}


class PretrainingStage(DataStage):
    name = "pretraining"

    def prepare(self, work):
        super().prepare(work)
        shards = os.path.join(work, "shards")
        if not os.path.isdir(shards):
            subprocess.run(DataStage.command(self, work, shards), check=True, env=_env(), capture_output=True)

    def command(self, work, out):
        config = json.dumps({"vocab_size": sum(1 for _ in open(os.path.join(work, "demo", "vocab", "vocab.txt"))),
                             "hidden_size": 64, "num_hidden_layers": 2, "intermediate_size": 128, "qkv_size": 64,
                             "num_attention_heads": 4, "max_position_embeddings": 64})
        argv = [sys.executable, os.path.join(ROOT, "pre_training.py"), "--pregenerated_data",
                os.path.join(work, "shards"), "--output_dir", out, "--mlm", "--supernet_config", config,
                "--space", "demo_supernet", "--layer_num_space", "1", "2", "--hidden_size_space", "32", "64", "32",
                "--intermediate_size_space", "64", "128", "64", "--qkv_size_space", "32", "64", "32",
                "--head_num_space", "4", "4", "--max_steps", "24", "--num_train_epochs", "50", "--train_batch_size",
                "8", "--max_seq_length", "64", "--save_steps", "8", "--logging_steps", "1", "--threads", "1",
                "--learning_rate", "1e-3"]
        return argv + (["--resume"] if os.path.isdir(out) and os.listdir(out) else [])

    def outcome(self, out):
        from safetensors.torch import load_file

        log = [{k: v for k, v in r.items() if k in ("step", "loss", "archs")} for r in
               _jsonl(os.path.join(out, "loss_log.jsonl"))]
        weights = load_file(os.path.join(out, "final", "model.safetensors"))
        return {"log": log, "weights": {k: v.numpy().tobytes() for k, v in sorted(weights.items())}}


class LatencyStage(Stage):
    name = "latency"

    def command(self, work, out):
        return [sys.executable, os.path.join(ROOT, "inference_time_evaluation_quant.py"), "--save_dir", out,
                "--quant", "--space", "demo_latency", "--layer_num_space", "1", "2", "--hidden_size_space", "192",
                "256", "64", "--intermediate_size_space", "256", "768", "256", "--vocab_size", "64", "--infer_cnt",
                "4", "--warmup", "1", "--rounds", "2", "--max_seq_length", "32"]

    def outcome(self, out):
        records = [r for r in _jsonl(os.path.join(out, "lat_torch_dynamic_int8.jsonl"))
                   if r.get("record_type", "arch") == "arch"]
        # timings (and so the number of re-measurements) differ by nature; each measurement of an
        # arch must be written once
        measurements = [(r["arch_key"], r.get("measurement", 0)) for r in records]
        return {"archs": sorted({key for key, _ in measurements}),
                "duplicates": len(measurements) - len(set(measurements))}


class EvaluationStage(Stage):
    name = "evaluation"

    def prepare(self, work):
        from evaluation_fixtures import make_supernet_dir, write_arches, write_mnli

        from utils import make_arch

        if not os.path.isdir(os.path.join(work, "supernet")):
            make_supernet_dir(os.path.join(work, "supernet"))
            write_mnli(os.path.join(work, "MNLI"), n_train=160, n_dev=40)
            write_arches(os.path.join(work, "three.cands"),
                         [make_arch(2, 64, 128, 4), make_arch(1, 32, 64, 4), make_arch(2, 32, 128, 4)])

    def command(self, work, out):
        return [sys.executable, os.path.join(ROOT, "superbert_run_en_classifier_ptq.py"), "--model",
                os.path.join(work, "supernet"), "--data_dir", os.path.join(work, "MNLI"), "--task_name", "mnli",
                "--arches_file", os.path.join(work, "three.cands"), "--output_dir", out, "--seed", "1", "2",
                "--num_train_epochs", "2", "--learning_rate", "2e-3", "--max_seq_length", "32", "--eval_step", "10",
                "--train_batch_size", "16", "--num_threads", "1", "--do_lower_case"]

    def outcome(self, out):
        from evaluation.results import parse_results

        records = sorted((_stable(r) for r in _jsonl(os.path.join(out, "subbert.results.jsonl"))),
                         key=lambda r: (r["arch_key"], r["seed"]))
        blocks = sorted((b.task_name, json.dumps(b.arch, sort_keys=True), b.best_acc)
                        for b in parse_results(os.path.join(out, "subbert.results")))
        return {"records": records, "blocks": blocks}


STAGES = {stage.name: stage for stage in (DataStage(), PretrainingStage(), LatencyStage(), EvaluationStage())}


# --------------------------------------------------------------------------------------
# The matrix
# --------------------------------------------------------------------------------------


def run_to_end(stage: Stage, work: str, out: str, timeout: float = 900) -> float:
    start = time.perf_counter()
    result = subprocess.run(stage.command(work, out), env=_env(), capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise RuntimeError(f"{stage.name}: exit {result.returncode}: {result.stderr.strip().splitlines()[-1:]}")
    return time.perf_counter() - start


def interrupted_then_resumed(stage: Stage, work: str, out: str, signum: int, after: float) -> None:
    process = subprocess.Popen(stage.command(work, out), env=_env(), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    time.sleep(after)
    if process.poll() is None:
        process.send_signal(signum)
    process.wait(timeout=300)
    run_to_end(stage, work, out)


def matrix(stages, signals, moments: int, seed: int, work_dir: str) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for name in stages:
        stage = STAGES[name]
        work = os.path.join(work_dir, name)
        os.makedirs(work, exist_ok=True)
        stage.prepare(work)
        reference_dir = os.path.join(work, "reference")
        shutil.rmtree(reference_dir, ignore_errors=True)
        duration = run_to_end(stage, work, reference_dir)
        reference = stage.outcome(reference_dir)
        for signal_name in signals:
            for index in range(moments):
                after = rng.uniform(0.15, 0.9) * duration
                out = os.path.join(work, f"case_{signal_name}_{index}")
                shutil.rmtree(out, ignore_errors=True)
                interrupted_then_resumed(stage, work, out, SIGNALS[signal_name], after)
                equal = stage.outcome(out) == reference
                rows.append({"stage": name, "signal": signal_name, "after_s": round(after, 2),
                             "of_s": round(duration, 2), "equal": equal})
                print(f"{name:11s} SIG{signal_name:4s} at {after:6.2f} s of {duration:6.2f} s: "
                      f"{'equal to the uninterrupted run' if equal else 'DIFFERS'}", flush=True)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stages", nargs="+", choices=list(STAGES), default=list(STAGES))
    parser.add_argument("--signals", nargs="+", choices=list(SIGNALS), default=list(SIGNALS))
    parser.add_argument("--moments", type=int, default=2, help="random kill moments per (stage, signal)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work_dir", default=os.path.join("/tmp", "kill_matrix"))
    args = parser.parse_args()
    rows = matrix(args.stages, args.signals, args.moments, args.seed, args.work_dir)
    bad = [row for row in rows if not row["equal"]]
    print(f"{len(rows) - len(bad)} of {len(rows)} cases equal to the uninterrupted run")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
