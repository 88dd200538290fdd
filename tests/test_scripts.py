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
