"""The stage scripts share one preamble (script/lib/common.sh): they run in the repository's .venv
by default, a missing dependency is one line, and every script checks its inputs naming the
variable before anything is written."""

import os
import shutil
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = sorted(name for name in os.listdir(os.path.join(REPO, "script")) if name.endswith(".sh"))


def run(script, env=None, cwd=None, args=()):
    full = dict(os.environ, **(env or {}))
    return subprocess.run(["bash", script, *args], env=full, cwd=cwd, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("name", SCRIPTS)
def test_every_script_has_help_and_sources_the_shared_preamble(name):
    path = os.path.join(REPO, "script", name)
    text = open(path).read()
    assert "set -euo pipefail" in text and 'source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"' in text
    assert 'baf_init "$@"' in text and "sed -n '2," not in text  # no copied help preamble
    result = run(path, args=("--help",))
    assert result.returncode == 0 and len(result.stdout.splitlines()) >= 3, (name, result.stderr)


@pytest.fixture
def fake_repo(tmp_path):
    """A copy of script/ with a .venv whose python logs that it was used, then runs the real one."""
    shutil.copytree(os.path.join(REPO, "script"), tmp_path / "script")
    bin_dir = tmp_path / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    python = bin_dir / "python"
    python.write_text(f'#!/bin/sh\necho "$0 $*" >> "{tmp_path}/used"\nexec "{sys.executable}" "$@"\n')
    python.chmod(0o755)
    return tmp_path


def test_scripts_pick_the_repository_venv(fake_repo):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHON", "BAF_PYTHON_CHECKED")}
    result = subprocess.run(["bash", str(fake_repo / "script" / "generate_data.sh")], env=dict(env, RAW_DIR="/nonexistent"),
                            capture_output=True, text=True, cwd=str(fake_repo))
    assert (fake_repo / "used").read_text().startswith(str(fake_repo / ".venv" / "bin" / "python"))
    assert result.returncode == 2 and "RAW_DIR" in result.stderr


def test_a_missing_dependency_is_one_line_naming_make_venv(fake_repo, tmp_path):
    bare = tmp_path / "bare"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(bare)], check=True)
    env = {k: v for k, v in os.environ.items() if k != "BAF_PYTHON_CHECKED"}
    result = subprocess.run(["bash", str(fake_repo / "script" / "generate_data.sh")],
                            env=dict(env, PYTHON=str(bare / "bin" / "python")), capture_output=True, text=True)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "lacks torch" in lines[0] and "make venv" in lines[0], result.stderr


@pytest.mark.parametrize("env, message", [
    ({"MODEL_DIR": "/nonexistent/supernet"}, "MODEL_DIR=/nonexistent/supernet: no supernet directory"),
    ({"TASK_NAME": "sts_b"}, "TASK_NAME=sts_b is not a GLUE task; choose one of cola, sst-2, mrpc, sts-b"),
    ({"TYPE": "int4"}, "TYPE must be fp, ptq, ort or fakequant"),
    ({"GEN_SIZE": "ten"}, "GEN_SIZE must be an integer"),
])
def test_search_preflight_names_the_variable_and_writes_nothing(tmp_path, env, message):
    from tests.evaluation_fixtures import make_supernet_dir

    model = make_supernet_dir(str(tmp_path / "supernet"))
    predictor = tmp_path / "p.pt"
    predictor.write_bytes(b"not used: preflight fails first")
    base = {"MODEL_DIR": model, "PREDICTOR": str(predictor), "TASK_NAME": "mnli", "DATA_DIR": str(tmp_path),
            "CANDS_DIR": str(tmp_path / "cands"), "OUTPUT_ROOT": str(tmp_path / "output"), "PYTHON": sys.executable}
    result = run(os.path.join(REPO, "script", "search.sh"), dict(base, **env), args=("cand",))
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert not (tmp_path / "cands").exists() and not (tmp_path / "output").exists()


def test_report_script_preflight(tmp_path):
    result = run(os.path.join(REPO, "script", "report.sh"),
                 {"CANDS_DIR": str(tmp_path / "none"), "PYTHON": sys.executable})
    assert result.returncode == 2 and "CANDS_DIR" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_pipeline_children_end_with_it(tmp_path):
    """SIGTERM to a script stops the jobs it started (baf_spawn / baf_run_queue), grandchildren included."""
    script = tmp_path / "queue.sh"
    marker = tmp_path / "alive"
    script.write_text(f'set -euo pipefail\nsource "{REPO}/script/lib/common.sh"\nbaf_supervise\n'
                      f'baf_run_queue 2 "sleep 60" "bash -c \'sleep 61; touch {marker}\'"\n')
    process = subprocess.Popen(["bash", str(script)], start_new_session=True)
    import time

    time.sleep(1.0)
    process.terminate()
    assert process.wait(timeout=10) == 143
    time.sleep(0.5)
    alive = subprocess.run(["pgrep", "-f", "sleep 6[01]"], capture_output=True, text=True).stdout.split()
    assert not alive


@pytest.mark.parametrize("env, message", [
    ({"BUDGETS": "abc"}, "BUDGETS must be a number, got 'abc'"),
    ({"BUDGETS": "3 -1"}, "BUDGETS must be > 0, got '-1'"),
    ({"BUDGETS": "0"}, "BUDGETS must be > 0, got '0'"),
    ({"BUDGETS": "nan"}, "BUDGETS must be a number, got 'nan'"),
    ({"BUDGETS": "1e999"}, "BUDGETS must be a finite number, got '1e999'"),
    ({"PRETRAIN_SEQ": "10000"}, "PRETRAIN_SEQ must be <= 128, got 10000"),
    ({"PRETRAIN_SEQ": "4"}, "PRETRAIN_SEQ must be >= 5, got 4"),
    ({"CORPUS_MB": "inf"}, "CORPUS_MB must be a number, got 'inf'"),
    ({"CORPUS_MB": "0"}, "CORPUS_MB must be > 0, got '0'"),
    ({"SEEDS": "42 x"}, "SEEDS must hold integers >= 0 and <= 4294967295, got 'x'"),
    ({"SEED": "-3"}, "SEED must be >= 0, got -3"),
    ({"NUM_TRAIN": "99999999999999999999"}, "NUM_TRAIN=99999999999999999999 is out of range"),
    ({"LAT_RUNS": "0"}, "LAT_RUNS must be >= 1, got 0"),  # (LAT_ROUNDS went with the rounds protocol)
    ({"JOBS": "two"}, "JOBS must be an integer, got 'two'"),
    ({"SPARE_CORES": "2"}, "SPARE_CORES must be one of 0 1, got '2'"),
    ({"RESCORE_SEEDS": "1"}, "RESCORE_SEEDS must be >= 2, got 1"),
    ({"RESCORE_TOP": "-1"}, "RESCORE_TOP must be >= 0, got -1"),
    ({"TRAIN_DTYPE": "fp16"}, "TRAIN_DTYPE must be one of auto fp32 bf16, got 'fp16'"),
    ({"RUN_DIR": "{file}"}, "RUN_DIR={file}: exists and is not a directory"),
    ({"RUN_DIR": "/sys/x"}, "RUN_DIR=/sys/x: cannot create or write in it"),
])
def test_pipeline_checks_every_setting_before_any_stage(tmp_path, env, message):
    """A bad setting is one line naming the variable, before the first stage writes anything."""
    existing = tmp_path / "a_file"
    existing.write_text("not a directory")
    env = {key: value.replace("{file}", str(existing)) for key, value in env.items()}
    run_dir = tmp_path / "run"
    # in a session of its own, ended whole if the check ever let the pipeline start
    process = subprocess.Popen(["bash", os.path.join(REPO, "script", "run_pipeline.sh")], start_new_session=True,
                               env={**os.environ, "RUN_DIR": str(run_dir), "PYTHON": sys.executable, "DEMO_SCALE": "ci",
                                    **env},
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        stdout, stderr = process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, 9)
        stdout, stderr = process.communicate()
    result = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr[-2000:]
    assert lines[0] == f"run_pipeline.sh: error: {message.replace('{file}', str(existing))}" or \
        message.replace("{file}", str(existing)) in lines[0], lines
    assert not run_dir.exists() and result.stdout == ""


@pytest.mark.parametrize("script, env, message", [
    ("report.sh", {"LATENCY_DIR": "{file}"}, "LATENCY_DIR={file}: exists and is not a directory"),
    ("report.sh", {"REPORT_DIR": "{file}"}, "REPORT_DIR={file}: exists and is not a directory"),
    ("report.sh", {"SEEDS": "42 4x"}, "SEEDS must hold integers"),
    ("pre_training.sh", {"LR": "nan"}, "LR must be a number, got 'nan'"),
    ("pre_training.sh", {"WARMUP_PROPORTION": "1.5"}, "WARMUP_PROPORTION must be <= 1, got '1.5'"),
    ("pre_training.sh", {"OUTPUT_DIR": "{file}"}, "OUTPUT_DIR={file}: exists and is not a directory"),
    ("generate_data.sh", {"GENERATED_DIR": "/sys/x"}, "GENERATED_DIR=/sys/x: cannot create or write in it"),
    ("bert_tickets.sh", {"PRUNE_FRACTION": "1.2"}, "PRUNE_FRACTION must be <= 1"),
    ("bert_tickets.sh", {"LEARNING_RATE": "-1"}, "LEARNING_RATE must be > 0"),
])
def test_stage_scripts_check_numbers_and_output_directories(tmp_path, script, env, message):
    existing = tmp_path / "a_file"
    existing.write_text("not a directory")
    for name in ("cands", "output", "shards", "model", "MNLI", "raw"):
        (tmp_path / name).mkdir()
    (tmp_path / "vocab.txt").write_text("[PAD]\n")
    (tmp_path / "p.pt").write_bytes(b"")
    base = {"CANDS_DIR": str(tmp_path / "cands"), "OUTPUT_ROOT": str(tmp_path / "output"), "PREDICTORS": str(tmp_path / "p.pt"),
            "LATENCY_DIR": str(tmp_path / "lat"), "REPORT_DIR": str(tmp_path / "report"), "GENERATED_DIR": str(tmp_path / "shards"),
            "OUTPUT_DIR": str(tmp_path / "out"), "TEACHER_MODEL": "", "MLM": "1", "MODEL_DIR": str(tmp_path / "model"),
            "DATA_DIR": str(tmp_path / "MNLI"), "RAW_DIR": str(tmp_path / "raw"), "BERT_MODEL": str(tmp_path / "vocab.txt"),
            "PYTHON": sys.executable}
    env = {key: value.replace("{file}", str(existing)) for key, value in env.items()}
    result = run(os.path.join(REPO, "script", script), dict(base, **env))
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr[-2000:]
    assert message.replace("{file}", str(existing)) in lines[0], lines
    assert not (tmp_path / "lat").exists() and not (tmp_path / "out").exists() and not (tmp_path / "report").exists()


def test_one_pipeline_per_run_directory(tmp_path):
    """A second run on the same directory is refused naming the first (its stages would write beside the
    first's); once the first is gone -- even by SIGKILL -- the lock is free."""
    import time

    script = tmp_path / "run.sh"
    script.write_text(f'set -euo pipefail\nsource "{REPO}/script/lib/common.sh"\n'
                      f'baf_hold_lock "{tmp_path}/.pipeline.lock" "run directory RUN_DIR={tmp_path}"\n'
                      f'echo held\nbaf_run sleep 60\n')
    first = subprocess.Popen(["bash", str(script)], stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert first.stdout.readline().strip() == "held"
        second = run(str(script))
        assert second.returncode == 2 and second.stderr.strip() == (
            f"run.sh: error: the run directory RUN_DIR={tmp_path} is in use by pid {first.pid} since "
            f"{second.stderr.split(' since ')[1].split(';')[0]}; wait for that run or stop it (one run per directory)")
        os.kill(first.pid, 9)
        first.wait()
        deadline = time.monotonic() + 5
        while True:  # the supervisor of `sleep` notices within a fraction of a second, and the lock is free
            third = subprocess.Popen(["bash", str(script)], stdout=subprocess.PIPE, text=True, start_new_session=True)
            if third.stdout.readline().strip() == "held" or time.monotonic() > deadline:
                break
            third.wait()
        assert third.poll() is None, "the lock of a killed run was not released"
        os.killpg(third.pid, 15)
        third.wait()
    finally:
        if first.poll() is None:
            os.killpg(first.pid, 9)


@pytest.mark.parametrize("scale, seed, seeds", [("ci", "42", "43 44"), ("full", "7", "8 9 10 11"),
                                                ("ci", "4294967295", "4294967293 4294967294")])
def test_pipeline_final_seeds_default_to_the_integers_after_the_search_seed(tmp_path, scale, seed, seeds):
    """The demo's candidates are fine-tuned with the finalists' recipe and seed SEED: the default SEEDS never hold
    it (the final step would be served the fine-tune that chose the finalist); at the top of the range, the ones
    before it."""
    result = run(os.path.join(REPO, "script", "run_pipeline.sh"),
                 {"RUN_DIR": str(tmp_path / "run"), "DEMO_SCALE": scale, "SEED": seed, "STOP_AFTER": "data",
                  "CORPUS_MB": "0.05", "NUM_TRAIN": "60", "NUM_DEV": "30", "NUM_DEV_MISMATCHED": "20"})
    assert result.returncode == 0, result.stderr
    assert f"search seed {seed}; final seeds (SEEDS): {seeds}" in result.stdout
