"""Stopping any level of a run -- ``make demo``, the pipeline script, a stage script, a stage's
process -- with SIGINT, SIGTERM or SIGKILL leaves no process of the run alive within a few seconds
(script/lib/supervise.py under every job of script/lib/common.sh, and under ``make demo``).

The run here is a stand-in with the real structure (make -> pipeline script -> stage script -> jobs
and a Python process), so that each case takes seconds; benchmarks/kill_matrix.py kills the real
``make demo`` the same way."""

import os
import signal
import subprocess
import sys
import time
import uuid

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "benchmarks"))
from kill_matrix import processes_of_run  # noqa: E402

SIGNALS = {"INT": signal.SIGINT, "TERM": signal.SIGTERM, "KILL": signal.SIGKILL}


def _write_run(tmp_path):
    """pipeline.sh -> stage.sh (two queued jobs, one of them a shell with a child) -> leaf.py."""
    common = os.path.join(REPO, "script", "lib", "common.sh")
    (tmp_path / "leaf.py").write_text(
        "import os, sys, time\n"
        "open(sys.argv[1], 'w').write(str(os.getpid()))\n"
        "time.sleep(120)\n")
    (tmp_path / "stage.sh").write_text(
        f'set -euo pipefail\nsource "{common}"\n'
        f'echo $$ > "{tmp_path}/stage.pid"\n'
        f'baf_spawn bash -c "sleep 121; touch {tmp_path}/survived"\n'
        f'baf_run "{sys.executable}" "{tmp_path}/leaf.py" "{tmp_path}/leaf.pid"\n')
    (tmp_path / "pipeline.sh").write_text(
        f'set -euo pipefail\nsource "{common}"\nbaf_supervise\n'
        f'echo $$ > "{tmp_path}/pipeline.pid"\n'
        f'baf_run bash "{tmp_path}/stage.sh"\n'
        f'touch "{tmp_path}/finished"\n')


def _start(tmp_path, via_make: bool):
    tag = uuid.uuid4().hex
    env = dict(os.environ, BAF_RUN_TAG=tag, PYTHON=sys.executable, BAF_KILL_GRACE="2")
    if via_make:  # the real Makefile recipe, with the stand-in pipeline and this interpreter
        command = ["make", "--no-print-directory", "-C", REPO, "-o", ".venv/.installed", "demo",
                   f"PY={sys.executable}", f"DEMO_SCRIPT={tmp_path / 'pipeline.sh'}"]
    else:
        command = ["bash", str(tmp_path / "pipeline.sh")]
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    deadline = time.monotonic() + 30
    while not (tmp_path / "leaf.pid").exists():
        if time.monotonic() > deadline or process.poll() is not None:
            _kill_all(tag)
            pytest.fail("the stand-in run did not start")
        time.sleep(0.05)
    time.sleep(0.3)  # the leaf's pid is written: every level is up
    return process, tag


def _kill_all(tag):
    for pid, _ in processes_of_run(tag):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _pid(tmp_path, name):
    return int((tmp_path / f"{name}.pid").read_text())


def _left_after(tag, seconds):
    deadline = time.monotonic() + seconds
    while processes_of_run(tag) and time.monotonic() < deadline:
        time.sleep(0.1)
    return processes_of_run(tag)


@pytest.mark.parametrize("level", ["make", "pipeline", "stage", "leaf"])
@pytest.mark.parametrize("signal_name", ["KILL", "TERM", "INT"])
def test_stopping_any_level_leaves_no_process(tmp_path, level, signal_name):
    _write_run(tmp_path)
    process, tag = _start(tmp_path, via_make=True)
    try:
        assert len(processes_of_run(tag)) >= 8  # make, 3 supervisors, 2 scripts, leaf, the queued job...
        target = process.pid if level == "make" else _pid(tmp_path, level)
        if level == "make" and signal_name == "INT":
            os.killpg(target, signal.SIGINT)  # Ctrl-C: the terminal signals make's whole process group
        else:
            os.kill(target, SIGNALS[signal_name])
        left = _left_after(tag, 5.0)
        assert not left, f"alive 5 s after SIG{signal_name} of {level}: {left}"
        process.wait(timeout=5)
        assert process.returncode != 0 and not (tmp_path / "finished").exists()
        assert not (tmp_path / "survived").exists()
    finally:
        _kill_all(tag)


def test_ctrl_c_of_the_pipeline_script_run_by_hand(tmp_path):
    _write_run(tmp_path)
    process, tag = _start(tmp_path, via_make=False)
    try:
        os.killpg(process.pid, signal.SIGINT)  # the terminal's foreground group: the script and its supervisors
        assert not _left_after(tag, 5.0)
        assert process.wait(timeout=5) == 130
    finally:
        _kill_all(tag)


def test_a_killed_supervisor_takes_its_job_with_it(tmp_path):
    """SIGKILL of the supervisor itself (no trap possible): its job gets SIGTERM from the kernel."""
    _write_run(tmp_path)
    process, tag = _start(tmp_path, via_make=False)
    try:
        stage = _pid(tmp_path, "stage")
        with open(f"/proc/{stage}/stat") as handle:
            supervisor = int(handle.read().rsplit(")", 1)[1].split()[1])  # the stage script's parent
        assert "supervise.py" in open(f"/proc/{supervisor}/cmdline").read()
        os.kill(supervisor, signal.SIGKILL)
        assert not _left_after(tag, 5.0)
        assert process.wait(timeout=5) != 0
    finally:
        _kill_all(tag)


def test_a_finished_job_leaves_nothing_in_its_group(tmp_path):
    """A job that ends while something it started still runs in its group: that is stopped too."""
    script = tmp_path / "leaves.sh"
    script.write_text(f'set -euo pipefail\nsource "{REPO}/script/lib/common.sh"\n'
                      f'baf_run bash -c "sleep 119 & echo started"\n')
    tag = uuid.uuid4().hex
    result = subprocess.run(["bash", str(script)], env=dict(os.environ, BAF_RUN_TAG=tag, BAF_KILL_GRACE="2"),
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0 and result.stdout.strip() == "started"
    assert not _left_after(tag, 3.0)


def test_exit_status_is_the_commands(tmp_path):
    supervise = os.path.join(REPO, "script", "lib", "supervise.py")
    assert subprocess.run([sys.executable, supervise, "--", "bash", "-c", "exit 7"]).returncode == 7
    assert subprocess.run([sys.executable, supervise, "--", "bash", "-c", "kill -TERM $$"]).returncode == 143
    missing = subprocess.run([sys.executable, supervise, "--", str(tmp_path / "nothing")], capture_output=True,
                             text=True)
    assert missing.returncode == 127 and len(missing.stderr.strip().splitlines()) == 1


def test_a_queued_job_stopped_by_a_signal_stops_the_queue(tmp_path):
    """Killing one of the searches (a queued job) stops the run; an ordinary failure does not stop the others."""
    script = tmp_path / "queue.sh"
    script.write_text(f'set -euo pipefail\nsource "{REPO}/script/lib/common.sh"\n'
                      f'baf_run_queue 2 "sleep 0.5; kill -KILL \\$\\$" "sleep 117" "touch {tmp_path}/third"\n')
    tag = uuid.uuid4().hex
    result = subprocess.run(["bash", str(script)], env=dict(os.environ, BAF_RUN_TAG=tag), timeout=60)
    assert result.returncode == 137 and not (tmp_path / "third").exists()
    assert not _left_after(tag, 3.0)
    script.write_text(f'set -euo pipefail\nsource "{REPO}/script/lib/common.sh"\n'
                      f'baf_run_queue 1 "exit 3" "touch {tmp_path}/second"\n')
    result = subprocess.run(["bash", str(script)], timeout=60)
    assert result.returncode == 3 and (tmp_path / "second").exists()
