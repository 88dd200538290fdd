"""The searcher takes its space from the artefacts it reads, refuses a space, scheme or task that
does not belong to the search before writing anything, logs what it really did, and gives the
random baseline and the final top-k selection their own steps."""

import json
import os

import numpy as np
import pytest

import searcher
from evaluation.results import write_results
from search.history import read_search_log
from tests.evaluation_fixtures import make_supernet_dir
from utils import Grid, SearchSpace, arch_key, read_arch_file, run_cli, write_space_record

SEARCH = SearchSpace("tiny_search", Grid(1, 2), Grid(32, 64, 16), Grid(64, 128, 16), Grid(4, 4))
SAMPLER = SearchSpace("tiny_supernet", Grid(1, 2), Grid(32, 64, 8), Grid(64, 128, 8), Grid(4, 4), Grid(32, 64, 8))
LATENCY = SearchSpace("tiny_latency", Grid(1, 2), Grid(32, 64, 32), Grid(64, 128, 32), Grid(4, 4))


def latency_ms(archs):
    return np.array([a["sample_layer_num"] * (a["sample_hidden_size"] * 0.05 + a["sample_intermediate_sizes"][0] * 0.01)
                     for a in archs])


def metadata(backend="torch_dynamic_int8", space=LATENCY):
    return {"backend": backend, "space": space.name, "space_definition": space.to_dict()}


@pytest.fixture
def supernet(tmp_path):
    directory = make_supernet_dir(str(tmp_path / "supernet"))  # L2/H64/F128/Q64/A4
    write_space_record(directory, {"search": SEARCH, "supernet": SAMPLER})
    return directory


@pytest.fixture
def predictor(monkeypatch):
    state = {"metadata": metadata()}
    monkeypatch.setattr(searcher, "load_latency_fn", lambda path: (latency_ms, dict(state["metadata"])))
    return state


def run(argv):
    with pytest.raises(SystemExit) as info:
        run_cli(searcher.main, argv)
    return info.value.code


def args(tmp_path, supernet, *extra, constraint="6", name="kd_ptq_6"):
    return ["--ckpt_path", "p.pt", "--latency_constraint", constraint, "--latency_window_low", "0.5",
            "--candidate_file", str(tmp_path / f"{name}.cands"), "--supernet", supernet, "--seed", "1",
            "--task_name", "mnli", "--scheme", "ptq", *extra]


def test_a_search_with_no_space_given_uses_the_supernets(tmp_path, supernet, predictor):
    assert run(args(tmp_path, supernet, "--method", "Candidate")) == 0
    archs = read_arch_file(tmp_path / "kd_ptq_6.cands")
    assert archs and all(SEARCH.contains(a) for a in archs)  # not paper_search's 12-head archs
    identity = json.load(open(tmp_path / "kd_ptq_6.search.json"))
    assert identity["space"] == SEARCH.to_dict() and identity["task_name"] == "mnli"
    assert identity["scheme"] == "torch_dynamic_int8" and identity["supernet"] == os.path.realpath(supernet)


@pytest.mark.parametrize("space, message", [
    ("paper_search", "exceeds the supernet's"),  # hidden 528 in a H64 supernet
    ({"layer_num": [1, 2], "hidden_size": [16, 64, 16], "intermediate_size": [64, 128, 16],
      "num_attention_heads": [4, 4]}, "never trained (hidden 16..64 vs 32..64"),
    ({"layer_num": [1, 2], "hidden_size": [32, 64, 16], "intermediate_size": [64, 128, 8],
      "num_attention_heads": [4, 4], "qkv_size": [24, 64, 8]}, "never trained (qkv 24..64 vs 32..64"),
])
def test_a_space_the_supernet_cannot_run_is_refused_before_any_file(tmp_path, supernet, predictor, capsys, space,
                                                                    message):
    if isinstance(space, dict):
        path = tmp_path / "space.json"
        path.write_text(json.dumps(space))
        space = str(path)
    capsys.readouterr()
    assert run(args(tmp_path, supernet, "--method", "Candidate", "--space", space)) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err
    assert sorted(os.listdir(tmp_path)) == sorted(n for n in os.listdir(tmp_path) if not n.startswith("kd_ptq_6"))


def test_a_space_beyond_the_predictors_grid_is_refused(tmp_path, supernet, predictor, capsys):
    narrow = SearchSpace("narrow", Grid(1, 1), Grid(32, 32), Grid(64, 64), Grid(4, 4))
    predictor["metadata"] = metadata(space=narrow)
    assert run(args(tmp_path, supernet, "--method", "Candidate")) == 2
    err = capsys.readouterr().err
    assert "reaches outside the latency grid the predictor p.pt was trained on (layers 1..2 vs 1..1" in err
    assert not (tmp_path / "kd_ptq_6.cands").exists()


def test_a_predictor_of_another_scheme_is_refused_naming_both(tmp_path, supernet, predictor, capsys):
    predictor["metadata"] = metadata(backend="torch_fp32")
    assert run(args(tmp_path, supernet, "--method", "Candidate")) == 2
    err = capsys.readouterr().err
    assert "--scheme torch_dynamic_int8 is timed as torch_dynamic_int8" in err and "torch_fp32 table" in err
    assert not (tmp_path / "kd_ptq_6.cands").exists()


def test_two_tasks_at_the_same_budget_never_share_a_search(tmp_path, supernet, predictor, capsys):
    assert run(args(tmp_path, supernet, "--method", "Candidate")) == 0
    before = (tmp_path / "kd_ptq_6.cands").read_bytes()
    argv = args(tmp_path, supernet, "--method", "Candidate")
    argv[argv.index("mnli")] = "rte"
    capsys.readouterr()
    assert run(argv) == 2
    err = capsys.readouterr().err
    assert "was started with task_name='mnli', this step has task_name='rte'" in err and "SEARCH_NAME" in err
    assert (tmp_path / "kd_ptq_6.cands").read_bytes() == before


def _results(path, archs, task="mnli", scheme="torch_dynamic_int8"):
    records = [{"task_name": task, "arch": a, "parameter_size": 1, "infer_cnt": 1, "time_per_batch_infer_ms": 1.0,
                "best_acc": 0.4 + a["sample_hidden_size"] / 1000 + a["sample_intermediate_sizes"][0] / 10000,
                "seed": 1, "scheme": scheme} for a in archs]
    write_results(str(path), records)
    with open(str(path) + ".jsonl", "w") as handle:
        for record in records:
            handle.write(json.dumps(record) + "\n")
    return records


def test_random_baseline_draws_unevaluated_generations_of_the_same_size(tmp_path, supernet, predictor):
    name = "kd_ptq_6_random"
    base = args(tmp_path, supernet, "--strategy", "random", name=name)
    assert run(base + ["--method", "Candidate"]) == 0
    first = tmp_path / "gen0.cands"
    assert run(base + ["--method", "Random", "--gen_size", "3", "--output_file", str(first)]) == 0
    evaluated = read_arch_file(first)
    results = tmp_path / "out" / "subbert.results"
    results.parent.mkdir()
    for generation in (1, 2):
        _results(results, evaluated)
        out = tmp_path / f"gen{generation}.cands"
        assert run(base + ["--method", "Random", "--gen_size", "3", "--arch_perfs_file", str(results),
                           "--output_file", str(out)]) == 0
        new = read_arch_file(out)
        assert len(new) == 3 and not {arch_key(a) for a in new} & {arch_key(a) for a in evaluated}
        evaluated += new
    log = read_search_log(str(tmp_path / f"{name}.search_log.jsonl"))
    assert [(r["generation"], r["method"], len(r["archs"]), r["strategy"]) for r in log] == [
        (0, "Random", 3, "random"), (1, "Random", 3, "random"), (2, "Random", 3, "random")]
    # re-running a step (same output file, same results) keeps its generation: no duplicate row
    assert run(base + ["--method", "Random", "--gen_size", "3", "--arch_perfs_file", str(results),
                       "--output_file", str(tmp_path / "gen2.cands")]) == 0
    assert len(read_search_log(str(tmp_path / f"{name}.search_log.jsonl"))) == 3


def test_fast_top_up_is_logged_as_random(tmp_path, supernet, predictor):
    base = args(tmp_path, supernet)
    assert run(base + ["--method", "Candidate"]) == 0
    assert run(base + ["--method", "Fast", "--gen_size", "20", "--output_file", str(tmp_path / "g0.cands")]) == 0
    (record,) = read_search_log(str(tmp_path / "kd_ptq_6.search_log.jsonl"))
    origins = record["origins"]
    archs = [json.loads(key) for key in record["archs"]]
    fast = [a["sample_intermediate_sizes"][0] >= 1.6 * a["sample_hidden_size"]
            and a["sample_intermediate_sizes"][0] <= 1.9 * a["sample_hidden_size"] for a in archs]
    assert origins == ["fast" if f else "random_top_up" for f in fast] and "random_top_up" in origins


def test_evolved_rerun_without_generation_adds_no_row(tmp_path, supernet, predictor):
    base = args(tmp_path, supernet)
    assert run(base + ["--method", "Candidate"]) == 0
    first = tmp_path / "g0.cands"
    assert run(base + ["--method", "Fast", "--gen_size", "4", "--output_file", str(first)]) == 0
    results = tmp_path / "out" / "subbert.results"
    results.parent.mkdir()
    _results(results, read_arch_file(first))
    evo = ["--method", "Evolved", "--population", "4", "--arch_perfs_file", str(results),
           "--output_file", str(tmp_path / "evo.cands")]
    assert run(base + evo) == 0 and run(base + evo) == 0
    log = read_search_log(str(tmp_path / "kd_ptq_6.search_log.jsonl"))
    assert [r["generation"] for r in log] == [0, 1]


def test_results_of_another_scheme_are_refused_as_fitness(tmp_path, supernet, predictor, capsys):
    base = args(tmp_path, supernet)
    assert run(base + ["--method", "Candidate"]) == 0
    results = tmp_path / "out" / "subbert.results"
    results.parent.mkdir()
    _results(results, read_arch_file(tmp_path / "kd_ptq_6.cands")[:3], scheme="torch_fp32")
    assert run(base + ["--method", "Evolved", "--arch_perfs_file", str(results),
                       "--output_file", str(tmp_path / "evo.cands")]) == 2
    assert "scored with scheme torch_fp32, but this search's scheme is torch_dynamic_int8" in capsys.readouterr().err


def test_top_k_writes_the_fittest_evaluated_archs_of_the_task(tmp_path, supernet, predictor):
    base = args(tmp_path, supernet)
    assert run(base + ["--method", "Candidate"]) == 0
    archs = read_arch_file(tmp_path / "kd_ptq_6.cands")[:6]
    results = tmp_path / "out" / "subbert.results"
    results.parent.mkdir()
    records = _results(results, archs)
    with open(str(results) + ".jsonl", "a") as handle:  # another task's result must not count
        handle.write(json.dumps(dict(records[0], task_name="rte", best_acc=9.0)) + "\n")
    out = tmp_path / "final.cands"
    assert run(base + ["--method", "TopK", "--top_k", "3", "--arch_perfs_file", str(results),
                       "--output_file", str(out)]) == 0
    expected = sorted(records, key=lambda r: -r["best_acc"])[:3]
    assert read_arch_file(out) == [r["arch"] for r in expected]
