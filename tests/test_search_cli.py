"""searcher.py as a command line (in-process), with a latency formula standing in for the predictor."""

import json

import numpy as np
import pytest

import searcher
from evaluation.results import write_results
from search.history import read_search_log
from utils import SPACES, arch_key, read_arch_file, run_cli

SPACE = SPACES["paper_search"]


def latency_ms(archs):
    return np.array([a["sample_layer_num"] * (4 * a["sample_hidden_size"] ** 2
                     + 2 * a["sample_hidden_size"] * a["sample_intermediate_sizes"][0]) * 1e-6 for a in archs])


@pytest.fixture(autouse=True)
def formula_predictor(monkeypatch):
    monkeypatch.setattr(searcher, "load_latency_fn", lambda path: (latency_ms, {"kind": "formula", "space": "paper_latency"}))


def run(argv):
    with pytest.raises(SystemExit) as info:
        run_cli(searcher.main, argv)
    return info.value.code


def common(tmp_path, constraint="5"):
    return ["--ckpt_path", "unused.pt", "--latency_constraint", constraint,
            "--candidate_file", str(tmp_path / "kd_ptq_5.cands"), "--seed", "7"]


def in_window(archs, low=4.25, high=5.5):
    values = latency_ms(archs)
    return bool(np.all((values >= low) & (values <= high)))


def test_candidate_fast_evolved_chain(tmp_path):
    assert run(common(tmp_path) + ["--method", "Candidate"]) == 0
    candidates = read_arch_file(tmp_path / "kd_ptq_5.cands", SPACE)
    assert candidates and in_window(candidates)
    assert open(tmp_path / "kd_ptq_5.cands").readline().startswith('{"sample_hidden_size": ')  # JSON lines

    first = tmp_path / "1st_generation_kd_ptq_5.cands"
    assert run(common(tmp_path) + ["--method", "Fast", "--gen_size", "6", "--output_file", str(first)]) == 0
    generation0 = read_arch_file(first, SPACE)
    assert len(generation0) == 6 and in_window(generation0)

    evaluated = {arch_key(a): a for a in generation0}
    results = tmp_path / "subbert.results"
    for generation in (1, 2):
        records = [{"task_name": "rte", "arch": a, "parameter_size": 1, "infer_cnt": 1, "time_per_batch_infer_ms": 1.0,
                    "best_acc": 0.5 + a["sample_hidden_size"] / 2000} for a in evaluated.values()]
        write_results(str(results), records)
        evo = tmp_path / f"gen{generation}.evo.cands"
        argv = common(tmp_path) + ["--method", "Evolved", "--arch_perfs_file", str(results), "--output_file", str(evo),
                                   "--population", "8", "--crossover_prob", "0.3"]
        assert run(argv) == 0
        children = read_arch_file(evo, SPACE)
        assert len(children) == 8 and in_window(children)
        assert not {arch_key(a) for a in children} & set(evaluated)  # never an evaluated arch
        assert len({arch_key(a) for a in children}) == 8
        again = tmp_path / "again.cands"
        assert run(argv[:-6] + ["--output_file", str(again), "--population", "8", "--crossover_prob", "0.3",
                                "--generation", str(generation)]) == 0
        assert read_arch_file(again) == children  # seeded: same results -> same generation
        evaluated.update({arch_key(a): a for a in children})

    log = read_search_log(str(tmp_path / "kd_ptq_5.search_log.jsonl"))
    assert [r["generation"] for r in log] == [0, 1, 2]
    assert log[0]["method"] == "Fast" and len(log[0]["archs"]) == 6
    last = log[2]
    assert last["evaluated"] == 14 and last["previous_generations"][0]["evaluated"] == 6
    assert last["previous_generations"][1]["evaluated"] == 8
    assert all(4.25 <= ms <= 5.5 for ms in last["pred_latency_ms"])
    assert json.loads(open(tmp_path / "kd_ptq_5.search_log.jsonl").readline())["generation"] == 0


def test_no_arch_in_budget_is_one_line(tmp_path, capsys):
    # the original's window [0.85c, 1.1c] (the default is [0.85c, 1.0c] since issue 24)
    assert run(common(tmp_path, constraint="0.01") + ["--method", "Candidate", "--latency_window_high", "1.1"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "no arch of the paper_search space (4785 archs) has a predicted latency in [0.009, 0.011] ms" in err
    assert "range from 0.120 ms (L1/H144/F128/Q144/A12) to 10.982 ms (L5/H528/F1024/Q528/A12)" in err
    assert not (tmp_path / "kd_ptq_5.cands").exists()


@pytest.mark.parametrize("method, extra, message", [
    ("Fast", [], "run --method Candidate first"),
    ("Evolved", [], "--arch_perfs_file: required"),
    ("Evolved", ["--arch_perfs_file", "nope.results"], "nope.results: no such results file"),
])
def test_bad_input_is_one_line(tmp_path, capsys, method, extra, message):
    if method == "Evolved" and extra:
        assert run(common(tmp_path) + ["--method", "Candidate"]) == 0
    assert run(common(tmp_path) + ["--method", method, "--output_file", str(tmp_path / "o.cands")] + extra) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err


def test_off_space_candidates_are_rejected(tmp_path, capsys):
    (tmp_path / "kd_ptq_5.cands").write_text(
        "{'sample_layer_num': 1, 'sample_num_attention_heads': [12], 'sample_hidden_size': 600, "
        "'sample_intermediate_sizes': [128], 'sample_qkv_sizes': [600]}\n")
    assert run(common(tmp_path) + ["--method", "Random", "--output_file", str(tmp_path / "o.cands")]) == 2
    err = capsys.readouterr().err
    assert "kd_ptq_5.cands:1: sample_hidden_size=600 is outside the paper_search space" in err


def test_empty_results_and_exhausted_candidates(tmp_path, capsys):
    assert run(common(tmp_path) + ["--method", "Candidate"]) == 0
    results = tmp_path / "subbert.results"
    results.write_text("")
    argv = common(tmp_path) + ["--method", "Evolved", "--arch_perfs_file", str(results),
                               "--output_file", str(tmp_path / "o.cands")]
    assert run(argv) == 2
    assert "holds no result" in capsys.readouterr().err
