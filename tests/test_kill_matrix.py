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


@pytest.mark.slow
@pytest.mark.parametrize("level, signal_name", [("make", "KILL")])
def test_make_demo_stopped_leaves_nothing_and_resumes(tmp_path, level, signal_name):
    """`make demo` killed at a seeded moment (the chain through pre-training, at its smallest): no
    process of the run is alive 5 s later, and the re-run ends with the uninterrupted run's weights."""
    row = kill_matrix.demo_case(str(tmp_path), level, signal_name, seed=3, through="pretraining")
    assert row["left"] == 0, row
    assert row["equal"], row


@pytest.mark.slow
def test_bad_inputs_through_the_real_command_lines(tmp_path):
    """Every malformed input of benchmarks/bad_inputs.py: exit 2, one line naming file/line or variable,
    nothing written, no pickled payload run."""
    import bad_inputs

    rows = bad_inputs.run_cases(str(tmp_path))
    assert len(rows) == len(bad_inputs.CASES) and all(row["ok"] for row in rows), [r for r in rows if not r["ok"]]
