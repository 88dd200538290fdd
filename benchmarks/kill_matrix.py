"""The kill matrix: every long stage, killed with SIGKILL / SIGINT / SIGTERM at seeded random
moments, then resumed, must end equal to an uninterrupted run -- no record lost, none duplicated,
the same numbers where the stage is deterministic.

    python benchmarks/kill_matrix.py [--stages data pretraining latency evaluation search] \\
        [--signals KILL INT TERM] [--moments 2] [--seed 0] [--work_dir /tmp/kill_matrix] \\
        [--demo make pipeline stage [--demo_scale tiny|ci]] [--bad_inputs]

Each case prints one line (stage, signal, moment, verdict); the exit code is 1 if any case differs.
``--demo`` also stops a whole ``make demo`` -- make itself (SIGINT as Ctrl-C sends it, to make's
process group), the pipeline script or the current stage's process -- once in every stage, counts
the processes of the run still alive 5 s later (goal 0) and re-runs it each time (each re-run
resumes; the last one must complete). ``--bad_inputs`` runs every malformed-input case through the
real command lines (benchmarks/bad_inputs.py). ``tests/test_kill_matrix.py`` runs a seeded subset as
slow tests.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
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
                "4", "--warmup", "1", "--max_seq_length", "32"]

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


# --------------------------------------------------------------------------------------
# make demo: the whole run stopped at one of its levels, then resumed
# --------------------------------------------------------------------------------------

DEMO_STAGES = ("data", "shards", "pretraining", "latency", "predictors", "searches", "report")
LEVELS = ("make", "pipeline", "stage")
# The demo's chain at its smallest (the latency grid stays the demo's 120 archs).
TINY_DEMO = {"DEMO_SCALE": "ci", "PRETRAIN_STEPS": "12", "CORPUS_MB": "0.2", "NUM_TRAIN": "64", "NUM_DEV": "30",
             "LAT_RUNS": "2", "LAT_ROUNDS": "1", "GEN_SIZE": "1", "POPULATION": "1", "GENERATIONS": "1", "TOP_K": "1",
             "SEEDS": "42", "RANDOM_BASELINE": "0"}
SETTLE_S = 5.0  # what is still alive this long after the signal counts as left behind


class DemoRun:
    """``make demo`` into one RUN_DIR; every attempt is tagged (``processes_of_run``) and logged."""

    def __init__(self, run_dir: str, settings: dict):
        self.run_dir, self.settings, self.attempts = run_dir, settings, 0
        self.process: subprocess.Popen | None = None
        self.tag = ""

    @property
    def log_path(self) -> str:
        return f"{self.run_dir}.attempt{self.attempts}.log"

    def start(self) -> subprocess.Popen:
        os.makedirs(os.path.dirname(self.run_dir), exist_ok=True)
        self.attempts += 1
        self.tag = f"kill-matrix-{os.getpid()}-{time.time_ns()}"
        env = dict(_env(), **self.settings, RUN_DIR=self.run_dir, BAF_RUN_TAG=self.tag, BAF_LOG_LEVEL="INFO")
        command = ["make", "--no-print-directory", "-C", ROOT, "-o", ".venv/.installed", "demo", f"PY={sys.executable}"]
        with open(self.log_path, "w") as log:  # make's own session: a Ctrl-C reaches make and what it runs, nothing else
            self.process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True)
        return self.process

    def current_stage(self) -> str | None:
        with open(self.log_path, errors="replace") as handle:
            headers = [line for line in handle if line.startswith("=== [")]
        for line in reversed(headers):
            for index, name in enumerate(DEMO_STAGES, start=1):
                if f"] {index}/7 " in line:
                    return name
        return None

    def wait_for_stage(self, stage: str, timeout: float = 1800) -> bool:
        """Until ``stage`` (or a later one) has begun; False when the run ended first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            current = self.current_stage()
            if current is not None and DEMO_STAGES.index(current) >= DEMO_STAGES.index(stage):
                return True
            if self.process.poll() is not None:
                return False
            time.sleep(0.2)
        raise TimeoutError(f"{self.run_dir}: stage {stage} not reached in {timeout} s")

    def target(self, level: str) -> int:
        """The pid that a user stopping ``level`` would signal."""
        if level == "make":
            return self.process.pid
        tagged = processes_of_run(self.tag)
        if level == "pipeline":
            return next(pid for pid, command in tagged if "run_pipeline.sh" in command and command.startswith("bash"))
        # the stage: the newest process that is no supervisor, no make and no shell
        stages = [(pid, command) for pid, command in tagged
                  if "supervise.py" not in command and not command.startswith(("make", "bash", "/bin/sh"))]
        return max(stages)[0] if stages else self.target("pipeline")

    def stop(self, level: str, signal_name: str) -> list[tuple[int, str]]:
        """Send the signal, return what is still alive ``SETTLE_S`` later (then end it, for the next case)."""
        target = self.target(level)
        if level == "make" and signal_name == "INT":
            os.killpg(target, signal.SIGINT)  # Ctrl-C: the terminal signals make's process group
        else:
            os.kill(target, SIGNALS[signal_name])
        deadline = time.monotonic() + SETTLE_S
        while processes_of_run(self.tag) and time.monotonic() < deadline:
            time.sleep(0.1)
        left = processes_of_run(self.tag)
        for pid, _ in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=30)
        return left

    def run_to_end(self, timeout: float = 3600) -> int:
        self.start()
        try:
            return self.process.wait(timeout=timeout)
        finally:
            if self.process.poll() is None:
                self.stop("make", "KILL")


def demo_outcome(run_dir: str, through: str) -> dict:
    """What an interrupted-and-resumed demo must share with an uninterrupted one: the deterministic
    artefacts up to ``through`` (shards, supernet weights and loss log), and no result recorded twice."""
    from evaluation.results import result_key

    outcome = {}
    shards = os.path.join(run_dir, "shards")
    if os.path.isdir(shards):
        outcome["shards"] = DataStage.outcome(DataStage(), shards)
    if DEMO_STAGES.index(through) >= DEMO_STAGES.index("pretraining"):
        outcome["supernet"] = PretrainingStage.outcome(PretrainingStage(), os.path.join(run_dir, "supernet"))
    if through == "report":
        outcome["report"] = os.path.isfile(os.path.join(run_dir, "report", "report.md"))
        outcome["duplicated_results"] = 0  # within one search's results (two searches may score the same arch)
        for path in sorted(glob.glob(os.path.join(run_dir, "output", "*", "subbert.results.jsonl"))):
            keys = [result_key(record) for record in _jsonl(path)]
            outcome["duplicated_results"] += len(keys) - len(set(keys))
    return outcome


def demo_case(work_dir: str, level: str, signal_name: str, seed: int, through: str = "pretraining",
              settings: dict | None = None) -> dict:
    """``make demo`` (STOP_AFTER=through) stopped at ``level`` with the signal at a seeded moment of an
    uninterrupted run's duration, then run again: nothing may be left alive SETTLE_S after the signal,
    and the resumed run must equal the uninterrupted one."""
    settings = dict(TINY_DEMO if settings is None else settings, STOP_AFTER=through)
    reference = DemoRun(os.path.join(work_dir, "demo_reference"), settings)
    shutil.rmtree(reference.run_dir, ignore_errors=True)
    started = time.perf_counter()
    if reference.run_to_end() != 0:
        raise RuntimeError(f"the uninterrupted demo failed: see {reference.log_path}")
    duration = time.perf_counter() - started
    after = random.Random(seed).uniform(0.3, 0.9) * duration
    case = DemoRun(os.path.join(work_dir, f"demo_{level}_{signal_name}_{seed}"), settings)
    shutil.rmtree(case.run_dir, ignore_errors=True)
    case.start()
    time.sleep(after)
    stage = case.current_stage()
    left = case.stop(level, signal_name) if case.process.poll() is None else []
    code = case.run_to_end()
    equal = code == 0 and demo_outcome(case.run_dir, through) == demo_outcome(reference.run_dir, through)
    row = {"stage": stage, "level": level, "signal": signal_name, "after_s": round(after, 1),
           "of_s": round(duration, 1), "left": len(left), "left_commands": [c for _, c in left], "equal": equal}
    print(f"make demo  {level:8s} SIG{signal_name:4s} at {after:6.1f} s of {duration:6.1f} s ({stage}): "
          f"{len(left)} process(es) left after {SETTLE_S:.0f} s; resumed run "
          f"{'equal to the uninterrupted one' if equal else 'DIFFERS'}", flush=True)
    return row


def demo_sweep(work_dir: str, level: str, signal_name: str, seed: int, settings: dict | None = None) -> list[dict]:
    """One ``make demo`` stopped once in every stage (``level``, signal, a seeded delay after the stage
    begins) and re-run each time -- each re-run resumes -- then run to the end."""
    rng = random.Random(seed)
    run = DemoRun(os.path.join(work_dir, f"demo_sweep_{level}_{signal_name}"), dict(settings or TINY_DEMO))
    shutil.rmtree(run.run_dir, ignore_errors=True)
    rows = []
    for stage in DEMO_STAGES:
        run.start()
        if not run.wait_for_stage(stage):
            raise RuntimeError(f"the demo ended before stage {stage}: see {run.log_path}")
        # the data and shard stages of the demo last about a second: stop them at once
        time.sleep(rng.uniform(0.0, 0.1) if stage in ("data", "shards") else rng.uniform(0.5, 3.0))
        if run.process.poll() is not None:
            raise RuntimeError(f"the demo ended in stage {stage}: see {run.log_path}")
        at = run.current_stage()
        left = run.stop(level, signal_name)
        rows.append({"stage": at, "level": level, "signal": signal_name, "left": len(left),
                     "left_commands": [c for _, c in left]})
        print(f"make demo  {level:8s} SIG{signal_name:4s} in {at:11s}: {len(left)} process(es) left after "
              f"{SETTLE_S:.0f} s {[c[:60] for _, c in left] if left else ''}", flush=True)
    code = run.run_to_end()
    outcome = demo_outcome(run.run_dir, "report")
    complete = code == 0 and outcome["report"] and outcome["duplicated_results"] == 0
    rows.append({"stage": "resumed to the end", "level": level, "signal": signal_name, "left": 0, "complete": complete})
    print(f"make demo  {level:8s} SIG{signal_name:4s} resumed after {len(DEMO_STAGES)} stops: "
          f"{'report written, no result recorded twice' if complete else 'FAILED'} (exit {code}, report "
          f"{'written' if outcome['report'] else 'missing'}, {outcome['duplicated_results']} result(s) recorded twice)",
          flush=True)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stages", nargs="*", choices=list(STAGES), default=list(STAGES))
    parser.add_argument("--signals", nargs="+", choices=list(SIGNALS), default=list(SIGNALS))
    parser.add_argument("--moments", type=int, default=2, help="random kill moments per (stage, signal)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work_dir", default=os.path.join("/tmp", "kill_matrix"))
    parser.add_argument("--demo", nargs="*", choices=LEVELS, default=[],
                        help="also stop a whole `make demo` at these levels: once per stage with each signal, "
                             "re-run after every stop (processes left after 5 s; the resumed run completes)")
    parser.add_argument("--demo_scale", choices=("tiny", "ci"), default="tiny",
                        help="tiny: the chain at its smallest (minutes); ci: DEMO_SCALE=ci as CI runs it")
    parser.add_argument("--bad_inputs", action="store_true", help="also run the bad-input cases (bad_inputs.py)")
    args = parser.parse_args()
    rows = matrix(args.stages, args.signals, args.moments, args.seed, args.work_dir)
    bad = [row for row in rows if not row["equal"]]
    print(f"{len(rows) - len(bad)} of {len(rows)} cases equal to the uninterrupted run")
    settings = TINY_DEMO if args.demo_scale == "tiny" else {"DEMO_SCALE": "ci"}
    failed = len(bad)
    for level in args.demo:
        for signal_name in args.signals:
            demo_rows = demo_sweep(args.work_dir, level, signal_name, args.seed, settings)
            failed += sum(1 for row in demo_rows if row["left"] or row.get("complete") is False)
    if args.bad_inputs:
        from bad_inputs import run_cases

        failed += sum(1 for row in run_cases(args.work_dir) if not row["ok"])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
