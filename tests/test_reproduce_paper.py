"""script/reproduce_paper.sh: the plan names every stage and its files; bad input is one line naming
the variable before any work; LATENCY_TABLES=authors trains predictors that meet the bar on the
authors' tables; a killed smoke run (paper geometry, tiny counts, ../shared/data) resumes and ends
with the report and the per-stage costs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from reproduce.costs import latency_arch_seconds, pretraining_step_seconds, summarize
from reproduce.settings import STAGE_ORDER, Settings
from utils import read_jsonl

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "script", "reproduce_paper.sh")
SHARED = os.path.join(ROOT, "..", "shared", "data")
HAVE_SHARED = os.path.isdir(os.path.join(SHARED, "glue", "MNLI")) and os.path.isdir(os.path.join(SHARED, "corpus"))
needs_shared = pytest.mark.skipif(not HAVE_SHARED, reason="../shared/data (real samples) is absent")
# variables a caller's environment might hold that would change these runs
CLEAN = ("SMOKE", "RUN_DIR", "STAGES", "BUDGETS", "TYPES", "SAMPLE", "MAX_STEPS", "PROBE", "PLAN_ONLY", "EVAL_ARGS")


def run(env: dict, timeout: int = 900) -> subprocess.CompletedProcess:
    base = {key: value for key, value in os.environ.items() if key not in CLEAN}
    return subprocess.run(["bash", SCRIPT], cwd=ROOT, capture_output=True, text=True, env={**base, **env},
                          timeout=timeout)


def one_error_line(done: subprocess.CompletedProcess) -> str:
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2 and len(lines) == 1 and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert lines[0].startswith("reproduce_paper.sh: error:")
    return lines[0]


VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"word{i}" for i in range(40)]


def write_bert_dir(path, vocab=VOCAB, heads=12, layers=6, positions=512):
    os.makedirs(path, exist_ok=True)
    config = {"model_type": "bert", "vocab_size": len(vocab), "hidden_size": 48, "num_hidden_layers": layers,
              "num_attention_heads": heads, "intermediate_size": 96, "max_position_embeddings": positions}
    with open(os.path.join(path, "config.json"), "w") as handle:
        json.dump(config, handle)
    with open(os.path.join(path, "vocab.txt"), "w") as handle:
        handle.write("\n".join(vocab) + "\n")
    return str(path)


@pytest.fixture
def full_inputs(tmp_path):
    """The inputs of a full-scale run, as small files: the checks read them, nothing trains."""
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "book1.txt").write_text("word1 word2 word3\n")
    teacher = write_bert_dir(tmp_path / "teacher")
    glue = tmp_path / "MNLI"
    glue.mkdir()
    for name in ("train.tsv", "dev_matched.tsv", "dev_mismatched.tsv"):
        (glue / name).write_text("entailment\tword1 word2\tword3\n" * 5)
    return {"SMOKE": "0", "RAW_DIR": str(raw), "BERT_MODEL": teacher, "TEACHER_MODEL": teacher,
            "GLUE_DIR": str(glue), "RUN_DIR": str(tmp_path / "run"), "PROBE": "0", "PLAN_ONLY": "1"}


# ---------------------------------------------------------------------------------------------
# the plan
# ---------------------------------------------------------------------------------------------


def test_full_plan_has_the_papers_counts_and_every_stage(full_inputs):
    done = run(full_inputs)
    assert done.returncode == 0, done.stderr[-3000:]
    run_dir = full_inputs["RUN_DIR"]
    plan = json.load(open(os.path.join(run_dir, "plan.json")))
    names = [row["stage"] for row in plan["stages"]]
    assert names == ["shards", "pretrain", "latency", "predictors", "searches", "report"]
    searches = next(row for row in plan["stages"] if row["stage"] == "searches")
    # 4 budgets x (fp, ptq), each 10 + 3 x 25 + 3 x (3 - 1) candidates
    assert searches["searches"] == [f"kd_{t}_{b}" for b in (5, 10, 15, 20) for t in ("fp", "ptq")]
    assert searches["candidates_per_search"] == 91 and "= 728 fine-tunes" in searches["units"]
    latency = next(row for row in plan["stages"] if row["stage"] == "latency")
    assert "all 14,250 archs" in latency["units"]
    for path in (os.path.join(run_dir, "shards"), os.path.join(run_dir, "supernet", "final"),
                 os.path.join(run_dir, "latency", "lat_torch_dynamic_int8.jsonl"),
                 os.path.join(run_dir, "conf_datasets", "lat_predictor_quant.pt"), os.path.join(run_dir, "cands"),
                 os.path.join(run_dir, "report", "report.md")):
        assert path in done.stdout
    assert "PLAN_ONLY=1: stopping before the first stage" in done.stdout
    assert sorted(os.listdir(run_dir)) == ["plan.json", "plan.txt"]  # nothing but the plan


def test_authors_tables_replace_the_latency_stage_in_the_plan(full_inputs, tmp_path):
    tables = tmp_path / "tables"
    tables.mkdir()
    for name in ("lat_.tmp", "lat_quant_.tmp"):
        (tables / name).write_text("")
    done = run({**full_inputs, "LATENCY_TABLES": "authors", "AUTHORS_TABLES": str(tables), "RANDOM_BASELINE": "1",
                "BUDGETS": "10"})
    assert done.returncode == 0, done.stderr[-3000:]
    plan = json.load(open(os.path.join(full_inputs["RUN_DIR"], "plan.json")))
    rows = {row["stage"]: row for row in plan["stages"]}
    assert rows["latency"]["writes"] == [] and rows["latency"]["estimate_s"] == 0.0
    assert rows["predictors"]["reads"] == [str(tables / "lat_.tmp"), str(tables / "lat_quant_.tmp")]
    assert rows["searches"]["searches"] == ["kd_fp_10", "kd_ptq_10", "kd_ptq_10_random"]


@needs_shared
def test_smoke_plan_names_every_stage_and_its_files(tmp_path):
    run_dir = str(tmp_path / "smoke")
    done = run({"SMOKE": "1", "RUN_DIR": run_dir, "PROBE": "0", "PLAN_ONLY": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    plan = json.load(open(os.path.join(run_dir, "plan.json")))
    assert [row["stage"] for row in plan["stages"]] == list(STAGE_ORDER)
    text = done.stdout
    for number, stage in enumerate(STAGE_ORDER, start=1):
        assert f"[{number}] {stage}:" in text
    for row in plan["stages"]:
        for path in row["writes"]:
            assert path in text
    rows = {row["stage"]: row for row in plan["stages"]}
    assert rows["pretrain"]["units"].startswith("4 steps (MAX_STEPS), batch 12 x seq 128")
    assert rows["paper_step"]["units"] == "3 steps, batch 12 x seq 512"
    assert "a seeded sample of 36 archs of paper_latency" in rows["latency"]["units"]
    # fp, ptq and the random baseline at one budget, 2 + 1 x 2 + 1 x (2 - 1) candidates each
    assert rows["searches"]["candidates_per_search"] == 5 and "3 searches" in rows["searches"]["units"]
    assert rows["inputs"]["writes"] == [os.path.join(run_dir, "smoke_inputs", name) for name in ("teacher", "MNLI",
                                                                                                  "corpus")]
    assert sorted(os.listdir(run_dir)) == ["plan.json", "plan.txt"]


def test_plan_estimates_extrapolate_the_probe(full_inputs):
    """Units times the probe's per-unit costs, plus its start-up overheads."""
    from reproduce.plan import build_plan

    settings = Settings.parse([f"{k}={v}" for k, v in {**full_inputs, "STAGES": "all", "EPOCHS": "4",
                                                        "MAX_STEPS": "100", "BATCH_SIZE": "12", "MAX_SEQ_LENGTH": "512",
                                                        "SAMPLE": "", "GEN_SIZE": "10", "POPULATION": "25",
                                                        "GENERATIONS": "3", "TOP_K": "3", "SEEDS": "42 43 44",
                                                        "BUDGETS": "5 10", "TYPES": "fp ptq", "JOBS": "2",
                                                        "LATENCY_TABLES": "measure"}.items()])
    probe = {"seconds": {"pretrain": 30.0, "latency": 10.0, "finetune": 12.0, "shards": 1.0}, "device": "test",
             "pretrain": {"steps": 3, "first_step_seconds": 4.0, "seconds_per_step": 2.0, "batch_size": 12,
                          "max_seq_length": 512},
             "latency": {"seconds_per_arch": 1.0, "checkpoint_seconds": 3.0, "reference_every": 50},
             "finetune": {"train_seconds_per_1k_examples": 100.0, "eval_fp32_seconds_per_1k_examples": 10.0,
                          "eval_int8_seconds_per_1k_examples": 5.0, "seconds_per_candidate": 4.0},
             "shards": {"bytes": 1000, "seconds": 1.0, "tokens": 250, "sequences": 1, "tokens_per_byte": 0.25}}
    rows = {row["stage"]: row for row in build_plan(settings, probe)["stages"]}
    # 30 s wall - (4 + 2 x 2) s of steps = 22 s overhead; + 100 steps x 2 s
    assert rows["pretrain"]["estimate_s"] == pytest.approx(222.0)
    # overhead 10 - (1 + 2 x 3) = 3 s; 14,250 archs x 1 s + (2 + 285) checkpoints x 3 s
    assert rows["latency"]["estimate_s"] == pytest.approx(3 + 14250 + 287 * 3)
    # a candidate: 5 train examples x 0.1 s + 1 evaluation x 5 dev x 0.01 s + 10 dev x 0.015 s = 0.7 s;
    # 4 searches x 91 candidates, 4 x 5 evaluator starts of 8 s, 2 at a time
    assert rows["searches"]["estimate_s"] == pytest.approx((4 * 91 * 0.7 + 20 * 8.0) / 2)


# ---------------------------------------------------------------------------------------------
# bad input: one line naming the variable, before anything is written
# ---------------------------------------------------------------------------------------------


def _mismatched_teacher(tmp_path):
    return write_bert_dir(tmp_path / "other_teacher", vocab=VOCAB[:-1] + ["different"])


@pytest.mark.parametrize("change,expected", [
    (lambda p, e: {"RAW_DIR": str(p / "no_corpus")}, ["RAW_DIR=", "no such corpus directory"]),
    (lambda p, e: {"TEACHER_MODEL": str(p / "no_teacher")}, ["TEACHER_MODEL=", "no such teacher directory"]),
    (lambda p, e: {"TEACHER_MODEL": write_bert_dir(p / "t4", heads=4)}, ["TEACHER_MODEL=", "4 attention heads"]),
    (lambda p, e: {"GLUE_DIR": str(p / "no_glue")}, ["GLUE_DIR=", "no such GLUE MNLI directory"]),
    (lambda p, e: os.remove(os.path.join(e["GLUE_DIR"], "dev_mismatched.tsv")) or {},
     ["GLUE_DIR=", "no dev_mismatched.tsv"]),
    (lambda p, e: {"TEACHER_MODEL": _mismatched_teacher(p)},
     ["vocab mismatch between TEACHER_MODEL=", "BERT_MODEL=", "line 45: 'different' vs 'word39'"]),
    (lambda p, e: {"STUDENT_MODEL": write_bert_dir(p / "student", vocab=VOCAB + ["extra"])},
     ["vocab mismatch between TEACHER_MODEL=", "STUDENT_MODEL=", "45 vs 46 tokens"]),
    (lambda p, e: {"LATENCY_TABLES": "authors", "AUTHORS_TABLES": str(p)}, ["AUTHORS_TABLES=", "no lat_.tmp"]),
    (lambda p, e: {"TYPES": "fp int4"}, ["TYPES: 'int4' is not a search type"]),
    (lambda p, e: {"BUDGETS": "5 fast"}, ["BUDGETS: 'fast' is not a latency"]),
    (lambda p, e: {"STAGES": "searches"}, ["STAGES:", "supernet", "add pretrain to STAGES"]),
    (lambda p, e: {"JOBS": "0"}, ["JOBS must be >= 1"]),
])
def test_bad_input_is_one_line_naming_the_variable_before_any_work(full_inputs, tmp_path, change, expected):
    env = dict(full_inputs, PLAN_ONLY="0")
    env.update(change(tmp_path, env))
    line = one_error_line(run(env))
    for text in expected:
        assert text in line, line
    assert not os.path.exists(env["RUN_DIR"])


@needs_shared
def test_smoke_without_the_shared_samples_is_one_line(tmp_path):
    line = one_error_line(run({"SMOKE": "1", "RUN_DIR": str(tmp_path / "run"), "SHARED_DATA": str(tmp_path / "none")}))
    assert "SHARED_DATA=" in line and "../shared/data" in line
    assert not os.path.exists(tmp_path / "run")


# ---------------------------------------------------------------------------------------------
# costs
# ---------------------------------------------------------------------------------------------


def test_timed_attempts_record_wall_time_peak_memory_and_interruptions(tmp_path):
    record = str(tmp_path / "stages" / "demo.cost.jsonl")
    # a child that holds ~200 MB: its peak RSS is what the record says (ru_maxrss of the wrapper's children;
    # the wrapper is a fresh process, as the script runs it)
    code = "import time; block = bytearray(200 * 2**20); block[::4096] = b'x' * len(block[::4096]); time.sleep(0.2)"

    def wrapped(*command):
        return subprocess.run([sys.executable, "-m", "reproduce.costs", "run", "--record", record, "--", *command],
                              cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT}).returncode

    assert wrapped("python3", "-c", code) == 0
    assert wrapped("python3", "-c", "import sys; sys.exit(3)") == 3
    first, second = read_jsonl(record)
    assert first["completed"] and 200 <= first["peak_rss_mb"] < 400 and first["seconds"] >= 0.2
    assert not second["completed"] and second["returncode"] == 3
    rows = summarize(str(tmp_path))
    assert rows[0]["stage"] == "demo" and rows[0]["seconds"] == pytest.approx(first["seconds"] + second["seconds"], abs=0.1)
    assert "2 attempts" in rows[0]["note"] and "not finished" in rows[0]["note"]


def test_unit_costs_from_the_artefacts(tmp_path):
    out = tmp_path / "pretrain"
    out.mkdir()
    with open(out / "loss_log.jsonl", "w") as handle:
        for step, seconds in ((1, 9.0), (2, 2.0), (3, 4.0)):
            handle.write(json.dumps({"step": step, "seconds": seconds, "loss": 1.0}) + "\n")
    info = pretraining_step_seconds(str(out))
    assert info["steps"] == 3 and info["timed_steps"] == 2 and info["seconds_per_step"] == pytest.approx(3.0)
    tables = []
    for name, prepare, timing in (("lat_torch_fp32.jsonl", 0.5, 1.0), ("lat_torch_dynamic_int8.jsonl", 0.7, 0.6)):
        path = tmp_path / name
        rows = [{"record_type": "arch", "arch_key": "a", "measurement": 1, "prepare_s": prepare, "timing_s": timing,
                 "interleave": 4, "reference_every": 50},
                {"record_type": "reference", "run_id": "r", "checkpoint": 0, "timing_s": 2.0}]
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
        tables.append(str(path))
    latency = latency_arch_seconds(tables)
    # one build (0.5) + int8's own conversion (0.2) + timing 1.6 x (1 + 1/4) for the anchor's share
    assert latency["archs"] == 1 and latency["seconds_per_arch"] == pytest.approx(0.5 + 0.2 + 1.6 * 1.25)
    assert latency["checkpoint_seconds"] == pytest.approx(4.0)


# ---------------------------------------------------------------------------------------------
# the authors' tables
# ---------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isfile(os.path.join(SHARED, "original_latency", "lat_quant_.tmp")),
                    reason="the authors' latency tables (../shared/data) are absent")
def test_authors_tables_train_predictors_that_meet_the_bar(tmp_path):
    run_dir = str(tmp_path / "run")
    env = {"SMOKE": "0", "RUN_DIR": run_dir, "LATENCY_TABLES": "authors", "STAGES": "latency predictors", "PROBE": "0"}
    done = run(env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "LATENCY_TABLES=authors" in done.stdout
    fp32 = json.load(open(os.path.join(run_dir, "conf_datasets", "lat_predictor.pt.metrics.json")))
    int8 = json.load(open(os.path.join(run_dir, "conf_datasets", "lat_predictor_quant.pt.metrics.json")))
    # the bar set on these tables (BENCHMARKS.md): int8 test MAPD <= 3.0 %, fp32 <= 1.0 %, on 1,425 test archs
    assert int8["test"]["n"] == 1425 and int8["test"]["mapd_pct"] <= 3.0
    assert fp32["test"]["n"] == 1425 and fp32["test"]["mapd_pct"] <= 1.0
    costs = open(os.path.join(run_dir, "stage_costs.tsv")).read().splitlines()
    predictors = [line.split("\t") for line in costs if line.startswith("predictors\t")][0]
    assert float(predictors[1]) > 0 and float(predictors[2]) > 50 and predictors[3] == "2"
    again = run(env)  # resumes: the finished stage is skipped
    assert again.returncode == 0 and "predictors: done before" in again.stdout


# ---------------------------------------------------------------------------------------------
# a killed smoke run resumes
# ---------------------------------------------------------------------------------------------

# paper geometry (supernet, teacher, vocab, spaces) with the fewest units: batch 4, one int8 search of
# 1 + 0 generations + 1 final re-evaluation (the paper_step stage, a pure measurement, is left out)
TINY_SMOKE = {"SMOKE": "1", "STAGES": "inputs shards pretrain latency predictors searches report", "NUM_SHARDS": "2",
              "SMOKE_TRAIN": "64", "SMOKE_DEV": "32", "MAX_STEPS": "3", "SAVE_STEPS": "1", "BATCH_SIZE": "4",
              "PROBE_STEPS": "2", "PROBE_FINETUNE_EXAMPLES": "32", "PROBE_EVAL_EXAMPLES": "32", "SAMPLE": "16",
              "INFER_CNT": "4", "WARMUP": "1", "TYPES": "ptq", "RANDOM_BASELINE": "0", "GEN_SIZE": "1",
              "POPULATION": "1", "GENERATIONS": "0", "TOP_K": "1", "SEEDS": "42 43", "JOBS": "1",
              "PRETRAIN_ARGS": "--quality_ladder 2 --quality_sequences 8", "EVAL_ARGS": "--max_train_examples 32 --eval_step 1"}


@pytest.mark.slow
@needs_shared
def test_a_killed_smoke_run_resumes_and_skips_finished_stages(tmp_path):
    run_dir = str(tmp_path / "smoke")
    env = {key: value for key, value in os.environ.items() if key not in CLEAN}
    env.update(TINY_SMOKE, RUN_DIR=run_dir)
    process = subprocess.Popen(["bash", SCRIPT], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, start_new_session=True)
    checkpoint = os.path.join(run_dir, "supernet", "step_1")
    deadline = time.time() + 600
    try:
        while not os.path.isdir(checkpoint) and process.poll() is None and time.time() < deadline:
            time.sleep(0.5)
        assert process.poll() is None, process.stdout.read()[-3000:]
        assert os.path.isdir(checkpoint), "the pre-training stage never saved its first step"
        process.send_signal(signal.SIGTERM)  # the script stops its stage and every child
        first = process.communicate(timeout=120)[0]
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    assert process.returncode == 143, first[-3000:]
    assert "[1] inputs:" in first and "[7] report:" in first  # the plan came first
    assert not os.path.exists(os.path.join(run_dir, "stages", "pretrain.done"))
    attempts = read_jsonl(os.path.join(run_dir, "stages", "pretrain.cost.jsonl"))
    assert len(attempts) == 1 and not attempts[0]["completed"] and attempts[0]["signal"] == signal.SIGTERM

    done = run({**TINY_SMOKE, "RUN_DIR": run_dir})
    assert done.returncode == 0, (done.stdout[-3000:], done.stderr[-3000:])
    out = done.stdout
    assert "inputs: done before" in out and "shards: done before" in out
    assert "probe.json holds this probe's results; reused" in done.stdout + done.stderr
    # pre-training continued from its step-1 checkpoint: one row per step, steps 1..3
    steps = [row["step"] for row in read_jsonl(os.path.join(run_dir, "supernet", "loss_log.jsonl"))]
    assert steps == [1, 2, 3]
    final = json.load(open(os.path.join(run_dir, "supernet", "final", "trainer_state.json")))
    assert final["global_step"] == 3
    report = open(os.path.join(run_dir, "report", "report.md")).read()
    assert "stand-in task" in report.splitlines()[0]
    budget = open(os.path.join(run_dir, "budgets.txt")).read().split()
    assert len(budget) == 1 and f"| {budget[0]} | Bigger&Faster (int8 search" in report
    rows = {line.split("\t")[0]: line.split("\t") for line in open(os.path.join(run_dir, "stage_costs.tsv"))}
    for stage in ("inputs", "shards", "pretrain", "latency", "predictors", "searches", "report"):
        assert float(rows[stage][1]) > 0 and float(rows[stage][2]) > 0, rows[stage]
    assert "2 attempts" in rows["pretrain"][7]
    units = json.load(open(os.path.join(run_dir, "unit_costs.json")))
    assert units["pretrain_step_b4_s128"]["steps"] == 3
    assert units["latency_arch"]["archs"] == 16 and units["latency_arch"]["seconds_per_arch"] > 0
    # GEN_SIZE 1 + TOP_K 1 x (2 seeds - 1) fine-tunes, each on 32 training examples
    assert units["candidate_finetune"]["candidates"] == 2
    assert units["candidate_finetune"]["train_seconds_per_1k_examples"] > 0
    # the stand-in task: disjoint train / dev lines of the matched sample, and what each file is
    standin = json.load(open(os.path.join(run_dir, "smoke_inputs", "MNLI", "standin.json")))
    assert standin["train.tsv"] == "lines 1-64 of textfooler_mnli_matched_1k.tsv"
    assert standin["dev_matched.tsv"] == "lines 969-1000 of textfooler_mnli_matched_1k.tsv"
