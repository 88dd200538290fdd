"""A seeded subset of the kill matrix (benchmarks/kill_matrix.py): stages killed at random moments
and resumed end equal to an uninterrupted run (the full matrix is the benchmark)."""

import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))
import kill_matrix  # noqa: E402


@pytest.mark.slow
@pytest.mark.parametrize("stage, signal_name", [("evaluation", "KILL"), ("latency", "KILL"),
                                                ("pretraining", "KILL"), ("data", "TERM")])
def test_killed_and_resumed_equals_uninterrupted(tmp_path, stage, signal_name):
    (row,) = kill_matrix.matrix([stage], [signal_name], moments=1, seed=3, work_dir=str(tmp_path))
    assert row["equal"], row
