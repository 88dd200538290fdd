"""Fine-tunes stand still while another process holds the machine's latency-timing slot, and their
results do not change by it (utils.timing_slot)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
import torch

from utils import lock_held_by_another, output_lock, timing_slot_dir, wait_while_timing

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HOLD = ("import sys, time\nfrom utils import output_lock\nwith output_lock(sys.argv[1], what='timing slot'):\n"
        "    print('held', flush=True)\n    time.sleep(float(sys.argv[2]))\n")


@pytest.fixture
def slot(tmp_path, monkeypatch):
    directory = str(tmp_path / "timing_slot")
    monkeypatch.setenv("BAF_TIMING_LOCK_DIR", directory)
    return directory


def hold_slot(directory: str, seconds: float) -> subprocess.Popen:
    """Another process holding the slot for ``seconds`` (returns once it holds it)."""
    holder = subprocess.Popen([sys.executable, "-c", HOLD, directory, str(seconds)], cwd=ROOT,
                              env=dict(os.environ, PYTHONPATH=ROOT), stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_a_free_slot_or_ones_own_costs_no_wait(slot):
    assert timing_slot_dir() == slot
    assert lock_held_by_another(slot) is None and wait_while_timing() == 0.0  # never created
    with output_lock(slot):  # this process times: its own fine-tune (later) must not wait for itself
        assert lock_held_by_another(slot) is None and wait_while_timing() == 0.0
    assert lock_held_by_another(slot) is None


def test_another_process_timing_makes_the_caller_wait_until_it_is_done(slot):
    holder = hold_slot(slot, 0.8)
    try:
        assert f"pid {holder.pid} " in lock_held_by_another(slot)
        start = time.perf_counter()
        waited = wait_while_timing(poll_s=0.02)
        elapsed = time.perf_counter() - start
    finally:
        holder.wait(timeout=30)
    assert 0.5 <= waited <= elapsed < 5.0  # the holder sleeps 0.8 s after saying it holds the slot
    assert lock_held_by_another(slot) is None and wait_while_timing() == 0.0


def test_a_fine_tune_pauses_for_a_timing_job_and_learns_the_same(tmp_path, slot):
    from evaluation.candidate import evaluate_candidate
    from evaluation.finetune import FinetuneConfig
    from tests.evaluation_fixtures import mnli_task
    from utils import make_arch

    torch.set_num_threads(1)
    supernet, data = mnli_task(str(tmp_path / "task"), n_train=160, n_dev=60)
    arch, config = make_arch(2, 64, 128, 4), FinetuneConfig(2e-3, 1.0, 16, 32, 5)
    alone = evaluate_candidate(supernet, arch, data, config, "cpu", "torch_fp32")
    holder = hold_slot(slot, 1.0)
    try:
        paused = evaluate_candidate(supernet, arch, data, config, "cpu", "torch_fp32")
    finally:
        holder.wait(timeout=30)
    assert alone["paused_seconds"] == 0.0 and 0.5 <= paused["paused_seconds"] < 5.0
    assert paused["train_seconds"] < paused["elapsed_seconds"] - paused["paused_seconds"] + 1e-6
    assert paused["evaluations"] == alone["evaluations"]  # same seed, same steps: the same scores at every check
    assert paused["metrics_by_scheme"] == alone["metrics_by_scheme"]
