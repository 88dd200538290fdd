"""subbert.results: the original block layout, the parser (one fitness per block), the JSONL twin,
resume keys and crash reconciliation."""

import json

import pytest

from evaluation.results import (
    ResultsStore,
    format_block,
    load_fitness,
    parse_results,
    result_key,
    write_results,
)
from utils import UserError, arch_key, make_arch

# Three blocks exactly as the original evaluator appended them (str(dict) in its key order).
ORIGINAL_TEXT = """**************S*************
task_name = rte
architecture = {'sample_layer_num': 4, 'sample_num_attention_heads': [12, 12, 12, 12], 'sample_hidden_size': 264, 'sample_intermediate_sizes': [512, 512, 512, 512], 'sample_qkv_sizes': [264, 264, 264, 264]}
parameter size = 11543112
best_acc = 0.5740072202166066
time_per_batch_infer = 12.345 ms
infer_cnt = 9
**************E*************

**************S*************
task_name = rte
architecture = {'sample_layer_num': 3, 'sample_num_attention_heads': [12, 12, 12], 'sample_hidden_size': 312, 'sample_intermediate_sizes': [576, 576, 576], 'sample_qkv_sizes': [312, 312, 312]}
parameter size = 13001111
best_acc = 0.5270758122743683
time_per_batch_infer = 10.000 ms
infer_cnt = 9
**************E*************

**************S*************
task_name = rte
architecture = {'sample_layer_num': 2, 'sample_num_attention_heads': [12, 12], 'sample_hidden_size': 144, 'sample_intermediate_sizes': [256, 256], 'sample_qkv_sizes': [144, 144]}
parameter size = 5000000
best_acc = 0.6
time_per_batch_infer = 3.250 ms
infer_cnt = 9
**************E*************

"""
A1, A2, A3 = make_arch(4, 264, 512, 12), make_arch(3, 312, 576, 12), make_arch(2, 144, 256, 12)


def _record(arch, acc, task="rte", seed=42, scheme="torch_dynamic", params=1000, ms=1.5, cnt=3):
    return {"task_name": task, "arch": arch, "seed": seed, "scheme": scheme, "parameter_size": params,
            "best_acc": acc, "time_per_batch_infer_ms": ms, "infer_cnt": cnt}


def test_writer_reproduces_the_original_bytes(tmp_path):
    text = "".join([
        format_block("rte", A1, 11543112, 0.5740072202166066, 12.345, 9),
        format_block("rte", A2, 13001111, 0.5270758122743683, 10.0, 9),
        format_block("rte", A3, 5000000, 0.6, 3.25, 9),
    ])
    assert text == ORIGINAL_TEXT


def test_parser_gives_one_fitness_per_block(tmp_path):
    path = tmp_path / "subbert.results"
    path.write_text(ORIGINAL_TEXT)
    blocks = parse_results(str(path))
    assert [b.arch for b in blocks] == [A1, A2, A3]
    assert [b.fitness for b in blocks] == [0.5740072202166066, 0.5270758122743683, 0.6]
    assert [b.parameter_size for b in blocks] == [11543112, 13001111, 5000000]
    assert [b.time_per_batch_infer_ms for b in blocks] == [12.345, 10.0, 3.25]
    assert [b.line for b in blocks] == [1, 10, 19]
    # the original emitted an entry every *two* best_acc lines and averaged them; we keep all three
    assert load_fitness(str(path)) == {arch_key(A1): 0.5740072202166066, arch_key(A2): 0.5270758122743683,
                                       arch_key(A3): 0.6}


def test_round_trip_through_records(tmp_path):
    records = [_record(A1, 0.81, params=123, ms=2.0, cnt=4), _record(A2, 0.75, task="mnli"),
               _record(A1, 0.79, seed=43)]
    path = str(tmp_path / "subbert.results")
    write_results(path, records)
    blocks = parse_results(path)
    assert [(b.task_name, b.arch, b.fitness, b.parameter_size, b.time_per_batch_infer_ms, b.infer_cnt)
            for b in blocks] == [(r["task_name"], r["arch"], r["best_acc"], r["parameter_size"],
                                  r["time_per_batch_infer_ms"], r["infer_cnt"]) for r in records]
    fitness = load_fitness(path)
    assert fitness[arch_key(A1)] == pytest.approx(0.80)  # two seeds: mean of their blocks
    assert load_fitness(path, task_name="mnli") == {arch_key(A2): 0.75}


def test_truncated_blocks_are_dropped_not_fatal(tmp_path):
    cut = ORIGINAL_TEXT.index("best_acc = 0.6")
    path = tmp_path / "subbert.results"
    path.write_text(ORIGINAL_TEXT[:cut])  # a writer killed mid-block
    assert len(parse_results(str(path))) == 2
    # a block cut short in the middle of the file (a new one started after it)
    second = ORIGINAL_TEXT.index("**************S", 10)
    path.write_text(ORIGINAL_TEXT[:second - 40] + "\n" + ORIGINAL_TEXT[second:])
    assert [b.arch for b in parse_results(str(path))] == [A2, A3]


@pytest.mark.parametrize("text, message", [
    ("hello\n", ":1: text outside a"),
    (ORIGINAL_TEXT.replace("best_acc = 0.6", "best_acc = high"), "best_acc 'high' is not a number"),
    (ORIGINAL_TEXT.replace("task_name = rte\narchitecture = {'sample_layer_num': 2", "architecture = {'sample_layer_num': 2"),
     ":19: block lacks task_name"),
    (ORIGINAL_TEXT.replace("'sample_hidden_size': 144", "'sample_hidden_size': 'big'"), ":21: 'sample_hidden_size'"),
    ("**************E*************\n", ":1: end marker without a start marker"),
])
def test_malformed_results_name_file_and_line(tmp_path, text, message):
    path = tmp_path / "subbert.results"
    path.write_text(text)
    with pytest.raises(UserError) as info:
        parse_results(str(path))
    assert message in str(info.value) and str(info.value).startswith(str(path))


def test_squad_style_best_acc_uses_f1(tmp_path):
    path = tmp_path / "subbert.results"
    path.write_text(ORIGINAL_TEXT.replace("best_acc = 0.6", "best_acc = f1: 80.5; em: 71.25"))
    assert parse_results(str(path))[2].fitness == 80.5


def test_store_appends_both_files_and_resume_keys(tmp_path):
    store = ResultsStore(str(tmp_path / "out"))
    first, second = _record(A1, 0.7), _record(A2, 0.6, scheme="fp32")
    store.append(first)
    store.append(second)
    assert [json.loads(line)["best_acc"] for line in open(store.jsonl_path)] == [0.7, 0.6]
    assert parse_results(store.results_path)[1].arch == A2
    assert store.done_keys() == {result_key(first), result_key(second)}
    assert result_key(first) != result_key(dict(first, seed=43)) != result_key(dict(first, scheme="fp32"))
    assert load_fitness(store.jsonl_path) == load_fitness(store.results_path)


def test_reconcile_rebuilds_a_block_lost_between_the_two_writes(tmp_path):
    store = ResultsStore(str(tmp_path))
    store.append(_record(A1, 0.7))
    store.append(_record(A2, 0.6))
    with open(store.jsonl_path, "a") as handle:  # crash after the JSONL write, mid-way through the block
        handle.write(json.dumps(_record(A3, 0.5)) + "\n")
    with open(store.results_path, "a") as handle:
        handle.write("**************S*************\ntask_name = rte\narchi")
    complete = store.results_path + ".expected"
    write_results(complete, [_record(A1, 0.7), _record(A2, 0.6), _record(A3, 0.5)])
    assert store.reconcile() == 1
    assert [b.arch for b in parse_results(store.results_path)] == [A1, A2, A3]
    assert store.reconcile() == 0  # idempotent


def test_legacy_blocks_without_twin_are_reported(tmp_path):
    store = ResultsStore(str(tmp_path))
    (tmp_path / "subbert.results").write_text(ORIGINAL_TEXT)
    assert store.legacy_archs() == {("rte", arch_key(a)) for a in (A1, A2, A3)}
    assert store.reconcile() == 0 and (tmp_path / "subbert.results").read_text() == ORIGINAL_TEXT


def test_a_jsonl_that_lost_its_last_records_is_the_record(tmp_path):
    """The text kept blocks whose JSONL records were lost: they are not done (redone by the run),
    the text is written anew from the JSONL and the old one kept aside."""
    store = ResultsStore(str(tmp_path))
    for arch, acc in ((A1, 0.7), (A2, 0.6), (A3, 0.5)):
        store.append(_record(arch, acc))
    full_text = (tmp_path / "subbert.results").read_text()
    lines = open(store.jsonl_path).readlines()
    with open(store.jsonl_path, "w") as handle:  # the JSONL lost its last record, the text kept it
        handle.writelines(lines[:2])
    assert store.legacy_archs() == set()  # not counted as done through the text file
    assert store.done_keys() == {result_key(_record(A1, 0.7)), result_key(_record(A2, 0.6))}
    assert store.reconcile() == 0
    assert [b.arch for b in parse_results(store.results_path)] == [A1, A2]
    (aside,) = [p for p in tmp_path.iterdir() if p.name.startswith("subbert.results.unrecorded-")]
    assert aside.read_text() == full_text  # nothing lost
    assert store.reconcile() == 0 and [b.arch for b in parse_results(store.results_path)] == [A1, A2]


def test_an_unreadable_text_view_is_rebuilt_from_the_record(tmp_path):
    store = ResultsStore(str(tmp_path))
    store.append(_record(A1, 0.7))
    (tmp_path / "subbert.results").write_text("garbage\n")
    assert store.reconcile() == 1
    assert [b.arch for b in parse_results(store.results_path)] == [A1]
