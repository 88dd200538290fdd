"""Issue 21: a spare core's worker (``evaluation.spare``) makes the cache entries the running searches
still need -- exactly the entries they would have made -- and touches nothing else; the pipeline's
queue starts it on a slot that falls idle and stops it when the searches end."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

from evaluation.cache import EvaluationCache
from evaluation.evaluate import Evaluator
from evaluation.spare import SpareWorker, live_orders, post_order
from tests.evaluation_fixtures import make_supernet_dir, write_mnli
from tests.test_evaluation_cache import ARCH, OTHER, config, fine_tunes  # noqa: F401 (fixture)
from tests.test_search_core import REPO


@pytest.fixture(scope="module")
def task_inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("spare")
    return {"supernet": make_supernet_dir(str(root / "supernet")),
            "data": write_mnli(str(root / "MNLI"), n_train=48, n_dev=24)}


def _without_timing(record: dict) -> dict:
    """A record's content that does not depend on when or where it was made."""
    drop = {"elapsed_seconds", "train_seconds", "from_cache", "output_dir"}
    return {key: value for key, value in record.items() if key not in drop and "time" not in key}


def test_the_worker_makes_exactly_the_entries_a_search_would(task_inputs, tmp_path, fine_tunes):
    """Entries made by the worker for an order are those the search makes itself (every score and verdict
    equal); the search then fine-tunes nothing and its results are the same."""
    alone = Evaluator(config(task_inputs, tmp_path / "alone", "fp", tmp_path / "c1", extra=("int8",)))
    expected = alone.evaluate([ARCH, OTHER], [42])
    made_alone = list(fine_tunes)
    helped = config(task_inputs, tmp_path / "helped", "fp", tmp_path / "c2", extra=("int8",))
    with post_order(helped, "mnli", [(ARCH, 42), (OTHER, 42)]):
        worker = SpareWorker(str(tmp_path / "c2"), str(tmp_path / "scratch"))
        assert worker.work_once() and worker.work_once()
        assert not worker.work_once()  # nothing left to make
    assert fine_tunes[len(made_alone):] == made_alone  # the worker fine-tuned the same two
    before = len(fine_tunes)
    results = Evaluator(helped).evaluate([ARCH, OTHER], [42])
    assert len(fine_tunes) == before  # the search found both made
    for mine, theirs in zip(results, expected):
        assert mine["from_cache"].startswith(str(tmp_path / "c2"))
        assert _without_timing(mine) == _without_timing(theirs)  # every score, verdict and setting


def test_a_search_posts_what_it_still_needs_while_it_works(task_inputs, tmp_path, monkeypatch):
    """During a search's evaluation its order lists the pairs it has yet to get; after it, no order is left."""
    from evaluation import evaluate as evaluate_module

    seen = []
    real = evaluate_module._through_cache

    def watching(cache, task, arch, seed, *args, **kwargs):
        seen.append([(order["task"], len(order["entries"])) for _, order in live_orders(cache.directory)])
        return real(cache, task, arch, seed, *args, **kwargs)
    monkeypatch.setattr(evaluate_module, "_through_cache", watching)
    cache = tmp_path / "cache"
    Evaluator(config(task_inputs, tmp_path / "out", "ptq", cache)).evaluate([ARCH], [42, 43])
    assert seen == [[("mnli", 2)], [("mnli", 2)]]
    assert live_orders(str(cache)) == [] and os.listdir(cache / "mnli" / "orders") == []


def test_held_entries_and_dead_orders_are_left_alone(task_inputs, tmp_path, fine_tunes):
    """An entry another process holds is skipped (the worker takes the next); an order whose process has
    ended, or that another machine posted, is ignored; the worker writes cache entries only."""
    cache_dir = tmp_path / "cache"
    settings = config(task_inputs, tmp_path / "out", "ptq", cache_dir)
    cache = EvaluationCache(str(cache_dir))
    task_settings = settings.settings(settings.tasks[0])
    worker = SpareWorker(str(cache_dir), str(tmp_path / "scratch"))
    with post_order(settings, "mnli", [(ARCH, 42), (OTHER, 42)]):
        with cache.claim("mnli", cache.key("mnli", ARCH, 42, task_settings), "held by a search"):
            assert worker.work_once()
            assert not worker.work_once()  # the one left is held
    assert [(arch, seed) for arch, seed, _ in fine_tunes] == [("L2/H64/F128/Q64/A4", 42)]
    assert os.path.isfile(cache.path("mnli", cache.key("mnli", OTHER, 42, task_settings)))
    assert not os.path.isfile(cache.path("mnli", cache.key("mnli", ARCH, 42, task_settings)))

    gone = subprocess.Popen(["true"])  # a pid that no longer runs
    gone.wait()
    orders = cache_dir / "mnli" / "orders"
    here = socket.gethostname()
    for name, host, pid in (("dead", here, gone.pid), ("elsewhere", here + "-other", os.getpid())):
        (orders / f"{name}.json").write_text(json.dumps({"format": 1, "host": host, "pid": pid, "task": "mnli",
                                                         "config": settings.to_order(), "entries": [[ARCH, 42]]}))
    assert live_orders(str(cache_dir)) == []
    assert not worker.work_once() and len(fine_tunes) == 1
    assert not (tmp_path / "out").exists()  # no results file, no run_args: only cache entries


def test_the_order_round_trips_the_evaluation_config(task_inputs, tmp_path):
    settings = config(task_inputs, tmp_path / "out", "fp", tmp_path / "cache", extra=("int8",), rung="final")
    again = type(settings).from_order(json.loads(json.dumps(settings.to_order())), str(tmp_path / "out"))
    assert again == settings


def test_the_queue_starts_a_spare_on_an_idle_slot_and_stops_it_at_the_end(tmp_path):
    """baf_run_queue --spare: the spare starts only once every command has started and a slot is idle,
    is stopped when the last command ends, and its status never counts; the commands' status does."""
    log = tmp_path / "log"
    spare = f"echo spare >> {log}; exec sleep 600"
    script = tmp_path / "queue.sh"
    script.write_text(f'set -euo pipefail\nsource "{REPO}/script/lib/common.sh"\n'
                      f'baf_run_queue --spare "{spare}" 2 "echo one >> {log}" "sleep 1.5; echo two >> {log}" '
                      f'"sleep 0.3; echo three >> {log}; exit 3"\n')
    result = subprocess.run(["bash", str(script)], timeout=60, capture_output=True, text=True)
    assert result.returncode == 3
    assert log.read_text().split() == ["one", "three", "spare", "two"]
    alive = subprocess.run(["pgrep", "-f", "sleep 600"], capture_output=True, text=True).stdout.split()
    assert not alive
    script.write_text(f'set -euo pipefail\nsource "{REPO}/script/lib/common.sh"\n'
                      f'baf_run_queue --spare "echo spare >> {log}" 1 "true" "true"\n')
    log.write_text("")
    assert subprocess.run(["bash", str(script)], timeout=60).returncode == 0
    assert log.read_text() == ""  # one slot: never idle while a command runs


@pytest.mark.parametrize("flags, message", [
    (["--cache_dir", "{file}"], "--cache_dir: {file} exists and is not a directory"),
    (["--cache_dir", "{dir}", "--poll_seconds", "0"], "--poll_seconds: must be > 0, got 0.0"),
])
def test_the_worker_refuses_bad_flags_in_one_line(tmp_path, flags, message):
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    argv = [flag.format(file=a_file, dir=tmp_path) for flag in flags]
    result = subprocess.run([sys.executable, "-m", "evaluation.spare", *argv], cwd=REPO, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"spare.py: error: {message.format(file=a_file)}"]
