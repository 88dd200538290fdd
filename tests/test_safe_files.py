"""Appended files survive a kill at any byte, and an output directory has one writer at a time."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from utils import OutputLocked, UserError, append_jsonl, end_partial_line, output_lock, read_jsonl


def _records(n):
    return [{"index": i, "text": "x" * (i % 7)} for i in range(n)]


@pytest.mark.parametrize("cut", range(0, 60, 7))
def test_append_after_a_cut_at_any_byte_keeps_every_line_valid(tmp_path, cut):
    path = tmp_path / "results.jsonl"
    for record in _records(3):
        append_jsonl(path, record)
    full = path.read_bytes()
    lines = full.split(b"\n")
    # cut the file inside (or at the end of) the last record, as a killed writer would
    keep = len(full) - len(lines[-2]) - 1 + min(cut, len(lines[-2]))
    path.write_bytes(full[:keep])
    append_jsonl(path, {"index": 99})
    append_jsonl(path, {"index": 100})
    records = read_jsonl(path)  # every line parses: nothing was written onto a fragment
    indices = [r["index"] for r in records]
    complete_tail = keep >= len(full) - 1  # the cut left the whole JSON of record 2
    assert indices == ([0, 1, 2, 99, 100] if complete_tail else [0, 1, 99, 100])
    assert path.read_bytes().endswith(b"\n")


def test_end_partial_line_leaves_complete_files_alone(tmp_path):
    path = tmp_path / "t.jsonl"
    for record in _records(4):
        append_jsonl(path, record)
    before = path.read_bytes()
    assert end_partial_line(path) is False
    assert path.read_bytes() == before
    assert end_partial_line(tmp_path / "missing.jsonl") is False


def test_end_partial_line_on_a_long_last_line(tmp_path):
    path = tmp_path / "long.jsonl"
    append_jsonl(path, {"a": 1})
    with open(path, "a") as handle:
        handle.write(json.dumps({"b": "y" * 200_000})[:-3])  # 200 kB fragment, no newline
    assert end_partial_line(path) is True
    assert path.read_text() == json.dumps({"a": 1}) + "\n"


def test_second_writer_is_refused_naming_the_holder(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {os.getcwd()!r})
        from utils import output_lock
        with output_lock({str(tmp_path)!r}):
            print("locked", flush=True)
            time.sleep(60)
    """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(OutputLocked) as err:
            with output_lock(tmp_path):
                pass
        assert f"pid {holder.pid}" in str(err.value) and str(tmp_path) in str(err.value)
    finally:
        holder.kill()
        holder.wait()
    with output_lock(tmp_path):  # the kernel released the dead holder's lock
        with output_lock(tmp_path):  # re-entrant in one process
            pass


def test_lock_on_a_file_path_is_one_line(tmp_path):
    path = tmp_path / "file"
    path.write_text("x")
    with pytest.raises(UserError, match="exists and is not a directory"):
        with output_lock(path):
            pass
