"""Malformed input of any kind -- bytes that are not UTF-8, symbolic-link loops, nesting 100,000 deep,
5,000-digit numbers, NaN or absurd model sizes, huge grids, pickled objects -- is one line naming the
file (and line), never a traceback; and inputs are streamed, so reading one costs no memory that
grows with its size."""

import json
import os
import sys
import tracemalloc

import pytest

import latency_predictor
from latency.table import read_latency_table
from pretraining.models import parse_config_overrides
from pretraining.shards import list_documents
from transformer.config import SuperBertConfig
from utils import (
    UserError,
    arch_key,
    iter_jsonl,
    load_space_file,
    load_weights_only,
    make_arch,
    read_arch_file,
    read_jsonl,
    run_cli,
)

ARCH = json.dumps(make_arch(2, 64, 128, 4), sort_keys=True)


def _one_line(error) -> str:
    text = str(error.value)
    assert "\n" not in text and "Traceback" not in text
    return text


def _cli_error(capfd, main) -> str:
    """Run ``main`` as a stage's command line (run_cli): exit 2 and exactly one line on stderr."""
    with pytest.raises(SystemExit) as info:
        run_cli(main, [])
    err = capfd.readouterr().err
    assert info.value.code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize("second_line, message", [
    (b"\xff\xfe{}", ":2: not valid UTF-8 (byte 0xff at column 1)"),
    ((b"[" * 100_000) + (b"]" * 100_000), ":2: nested too deeply to read"),
    (b'{"sample_layer_num": ' + b"9" * 5000 + b"}", ":2: holds an integer of more than 4300 digits"),
    (b"[" * 100_000, ":2: nested too deeply to read"),
    (b"{'sample_layer_num': " + b"(" * 1000 + b"1" + b")" * 1000 + b"}", ":2: not a JSON or Python-literal arch dict"),
])
def test_a_malformed_cands_line_is_one_line_naming_file_and_line(tmp_path, second_line, message):
    path = tmp_path / "bad.cands"
    path.write_bytes(ARCH.encode() + b"\n" + second_line + b"\n")
    with pytest.raises(UserError) as info:
        read_arch_file(str(path))
    assert _one_line(info).startswith(f"{path}{message}")


def test_a_cands_file_or_corpus_document_that_is_a_link_loop(tmp_path):
    os.symlink(tmp_path / "b.cands", tmp_path / "a.cands")
    os.symlink(tmp_path / "a.cands", tmp_path / "b.cands")
    with pytest.raises(UserError) as info:
        read_arch_file(str(tmp_path / "a.cands"))
    assert _one_line(info) == f"{tmp_path / 'a.cands'}: cannot read the arch file (a loop of symbolic links)"
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "doc.txt").write_text("a document.\n")
    os.symlink(corpus / "loop2", corpus / "loop1")
    os.symlink(corpus / "loop1", corpus / "loop2")
    with pytest.raises(UserError) as info:
        list_documents(str(corpus))
    assert "loop1: cannot read the document (a loop of symbolic links)" in _one_line(info)


def _table(path, lines):
    """A valid table of our format (a few archs), then ``lines``."""
    with open(path, "wb") as handle:
        for layers in (1, 2):
            for hidden in (64, 128):
                arch = make_arch(layers, hidden, 128, 4)
                record = {"arch": arch, "arch_key": arch_key(arch), "backend": "torch_dynamic_int8",
                          "median_ms": 0.5 * layers * hidden / 64, "cpu_model": "test CPU", "threads": 1}
                handle.write((json.dumps(record, sort_keys=True) + "\n").encode())
        handle.writelines(lines)
    return str(path)


def test_a_latency_table_with_bad_bytes_is_one_line_for_the_predictor(tmp_path, capfd):
    table = _table(tmp_path / "t.jsonl", [b'{"record_type": "run_end", "note": "\xe9t\xe9"}\n'])
    count = sum(1 for _ in open(table, "rb"))
    with pytest.raises(UserError) as info:
        read_latency_table(table)
    assert _one_line(info).startswith(f"{table}:{count}: not valid UTF-8")
    line = _cli_error(capfd, lambda _: latency_predictor.main(["--lat_dataset_path", table, "--ckpt_path",
                                                                 str(tmp_path / "p.pt"), "--quiet"]))
    assert f"{table}:{count}: not valid UTF-8" in line and not (tmp_path / "p.pt").exists()


@pytest.mark.parametrize("line, message", [
    (b"[" * 100_000 + b"\n", "nested too deeply to read"),
    (b'{"x": ' + b"1" * 5000 + b"}\n", "holds an integer of more than 4300 digits"),
    (b"\xc3\x28\n", "not valid UTF-8 (byte 0xc3 at column 1)"),
])
def test_a_jsonl_line_of_any_kind_of_malformation(tmp_path, line, message):
    path = tmp_path / "r.jsonl"
    path.write_bytes(b'{"a": 1}\n' + line + b'{"a": 2}\n')
    with pytest.raises(UserError) as info:
        read_jsonl(path)
    assert _one_line(info) == f"{path}:2: {message}"


@pytest.mark.parametrize("field, value, message", [
    ("hidden_size", "NaN", "hidden_size must be an integer, got nan"),
    ("hidden_size", "1000000000000", "more than this machine's memory"),
    ("num_hidden_layers", "-2", "num_hidden_layers must be at least 1, got -2"),
    ("hidden_dropout_prob", "Infinity", "hidden_dropout_prob must be a finite number, got inf"),
    ("layer_norm_eps", "0", "layer_norm_eps must be in (0, 1], got 0"),
    ("vocab_size", '"30522"', "vocab_size must be an integer, got '30522'"),
    ("hidden_size", "1" * 5000, "holds an integer of more than 4300 digits"),
])
def test_config_json_values_are_checked_in_one_line(tmp_path, field, value, message):
    config = SuperBertConfig(vocab_size=100, hidden_size=64, num_hidden_layers=2, intermediate_size=128, qkv_size=64,
                             num_attention_heads=4, max_position_embeddings=64, kd_hidden_size=64).to_dict()
    text = json.dumps(config).replace(f'"{field}": {json.dumps(config[field])}', f'"{field}": {value}')
    (tmp_path / "config.json").write_text(text)
    with pytest.raises(UserError) as info:
        SuperBertConfig.load(str(tmp_path))
    assert _one_line(info).startswith(str(tmp_path / "config.json")) and message in str(info.value)
    if field == "hidden_size" and value == "NaN":  # the pre-training flag takes the same check
        with pytest.raises(UserError) as info:
            SuperBertConfig(**parse_config_overrides('{"hidden_size": NaN}', {}))
        assert "hidden_size must be an integer, got nan" in _one_line(info)


@pytest.mark.parametrize("grid, message", [
    ("[1, 1000000000]", "has 1,000,000,000 values"),
    ("[1, 1e9]", "must be [start, stop] or [start, stop, step] of integers"),
    ("[1, 500000, 100000]", "each at most 100,000"),
])
def test_a_space_file_with_a_huge_grid_is_refused_before_any_list_is_built(tmp_path, grid, message):
    path = tmp_path / "space.json"
    path.write_text('{"layer_num": %s, "hidden_size": [64, 128, 64], "intermediate_size": [128, 256, 128], '
                    '"num_attention_heads": [4, 4]}' % grid)
    with pytest.raises(UserError) as info:
        load_space_file(str(path))
    assert _one_line(info).startswith(str(path)) and message in str(info.value)


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))  # would create the marker file if it were ever unpickled


def test_a_pickled_object_is_refused_in_one_line_that_never_suggests_the_unsafe_load(tmp_path, capfd):
    import torch

    marker = tmp_path / "executed"
    path = tmp_path / "lat_predictor.pt"
    torch.save({"format": "x", "payload": _Payload(str(marker))}, str(path))
    line = _cli_error(capfd, lambda _: latency_predictor.LatencyPredictor.load(str(path)))
    assert f"{path}: refused: it holds pickled Python objects (io.open)" in line
    torch.save({"format": "x", "payload": _Payload(str(marker))}, str(path), pickle_protocol=4)  # another refusal
    line += _cli_error(capfd, lambda _: latency_predictor.LatencyPredictor.load(str(path)))
    assert "weights-only loading refused it" in line
    assert "weights_only" not in line and "will likely succeed" not in line
    assert not marker.exists()
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="not a readable training state"):
        load_weights_only(str(tmp_path / "junk.pt"), "training state")


@pytest.mark.skipif(not sys.platform.startswith("linux") or not os.path.isdir("/sys/kernel"),
                    reason="needs Linux's sysfs (no file can be created there)")
def test_an_unwritable_path_is_one_line_not_a_traceback(capfd):
    """What no check can rule out (CANDS_DIR=/sys/x): an OSError naming a path is one line too."""
    line = _cli_error(capfd, lambda _: os.makedirs("/sys/bigger_and_faster_test/x"))
    assert ": error: /sys/bigger_and_faster_test" in line


def test_json_lines_are_streamed(tmp_path):
    """Reading a 24 MB file allocates what one line needs, not what the file holds (readlines did)."""
    path = tmp_path / "big.jsonl"
    line = json.dumps({"index": 0, "padding": "x" * 1000}) + "\n"
    with open(path, "w") as handle:
        for _ in range(24_000):
            handle.write(line)
    tracemalloc.start()
    try:
        count = sum(1 for _ in iter_jsonl(path))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == 24_000 and peak < 1_000_000, peak
