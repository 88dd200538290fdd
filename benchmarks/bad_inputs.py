"""Malformed inputs through the real command lines: each must end with exit code 2 and exactly one
line on stderr naming the file (and line) or the variable -- no traceback -- and write nothing.

    python benchmarks/bad_inputs.py [--work_dir /tmp/bad_inputs] [--only NAME...]

Also run by ``benchmarks/kill_matrix.py --bad_inputs`` and (a seeded subset) by
``tests/test_kill_matrix.py``. Each case prints one line: its name, verdict and the error line.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Callable

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))


@dataclass
class Case:
    name: str
    command: Callable[[str], list[str]]  # work dir -> argv
    expect: str  # a part of the one error line ({work} is the work dir)
    prepare: Callable[[str], None] = lambda work: None
    env: dict = field(default_factory=dict)
    untouched: str = "out"  # a path (under work) that must not be created


def _python(script: str, *args: str) -> list[str]:
    return [sys.executable, os.path.join(ROOT, script), *args]


def _write(path: str, data: bytes) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if os.path.lexists(path):  # e.g. a link another case left
        os.unlink(path)
    with open(path, "wb") as handle:
        handle.write(data)


def _supernet(work: str) -> str:
    """A tiny supernet (made once per work dir) and a copy whose config.json the case edits."""
    from evaluation_fixtures import make_supernet_dir

    model = os.path.join(work, "supernet")
    if not os.path.isdir(model):
        make_supernet_dir(model)
    return model


def _model_with_config(work: str, field_name: str, raw_value: str) -> None:
    model = _supernet(work)
    bad = os.path.join(work, "bad_model")
    shutil.rmtree(bad, ignore_errors=True)
    shutil.copytree(model, bad)
    path = os.path.join(bad, "config.json")
    config = json.load(open(path))
    text = json.dumps(config).replace(f'"{field_name}": {json.dumps(config[field_name])}', f'"{field_name}": {raw_value}')
    _write(path, text.encode())


def _model_with_pickle(work: str) -> None:
    import torch

    model = _supernet(work)
    bad = os.path.join(work, "bad_model")
    shutil.rmtree(bad, ignore_errors=True)
    shutil.copytree(model, bad)
    os.unlink(os.path.join(bad, "model.safetensors"))
    torch.save({"weight": torch.zeros(1), "payload": _Payload(os.path.join(work, "executed"))},
               os.path.join(bad, "pytorch_model.bin"))


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))  # creates the marker if it is ever unpickled


ARCH = json.dumps({"sample_hidden_size": 32, "sample_intermediate_sizes": [64], "sample_layer_num": 1,
                   "sample_num_attention_heads": [4], "sample_qkv_sizes": [32]}, sort_keys=True).encode()


def _extract(arch: str = "{work}/bad.cands", model: str = "{work}/supernet") -> Callable[[str], list[str]]:
    return lambda work: _python("submodel_extractor.py", "--model", model.replace("{work}", work), "--arch",
                                arch.replace("{work}", work), "--output", os.path.join(work, "out"))


def _cands(data: bytes) -> Callable[[str], None]:
    def prepare(work):
        _supernet(work)
        _write(os.path.join(work, "bad.cands"), data)
    return prepare


def _link_loop(work: str) -> None:
    _supernet(work)
    for name, other in (("bad.cands", "loop.cands"), ("loop.cands", "bad.cands")):
        path = os.path.join(work, name)
        if os.path.lexists(path):
            os.unlink(path)
        os.symlink(os.path.join(work, other), path)


def _corpus_with_loop(work: str) -> None:
    corpus = os.path.join(work, "corpus")
    shutil.rmtree(corpus, ignore_errors=True)
    os.makedirs(corpus)
    _write(os.path.join(corpus, "doc.txt"), b"one sentence. another one.\n")
    os.symlink(os.path.join(corpus, "b"), os.path.join(corpus, "a"))
    os.symlink(os.path.join(corpus, "a"), os.path.join(corpus, "b"))
    from evaluation_fixtures import write_vocab

    write_vocab(os.path.join(work, "vocab.txt"))


def _latency_table(work: str) -> None:
    record = {"arch": json.loads(ARCH), "backend": "torch_dynamic_int8", "median_ms": 1.0, "cpu_model": "x",
              "threads": 1}
    _write(os.path.join(work, "lat.jsonl"), (json.dumps(record) + "\n").encode() + b'{"median_ms": "\xff"}\n')


def _predictor_pickle(work: str) -> None:
    import torch

    torch.save({"format": "baf-latency-predictor", "payload": _Payload(os.path.join(work, "executed"))},
               os.path.join(work, "lat_predictor.pt"))
    _write(os.path.join(work, "archs.cands"), ARCH + b"\n")


def _file(work: str) -> None:
    _write(os.path.join(work, "a_file"), b"not a directory\n")


def _space(grid: str) -> Callable[[str], None]:
    return lambda work: _write(os.path.join(work, "space.json"), (
        '{"layer_num": %s, "hidden_size": [64, 128, 64], "intermediate_size": [128, 256, 128], '
        '"num_attention_heads": [4, 4]}' % grid).encode())


def _pipeline(**env: str) -> dict:
    return dict(env, RUN_DIR=env.get("RUN_DIR", "{work}/out"), DEMO_SCALE="ci")


CASES = [
    Case("cands: invalid UTF-8", _extract(), "bad.cands:2: not valid UTF-8 (byte 0xff", _cands(ARCH + b"\n\xff{}\n")),
    Case("cands: nested 100,000 deep", _extract(), "bad.cands:1: nested too deeply to read",
         _cands(b"[" * 100_000 + b"]" * 100_000 + b"\n")),
    Case("cands: 5,000-digit integer", _extract(), "bad.cands:1: holds an integer of more than 4300 digits",
         _cands(b'{"sample_layer_num": ' + b"7" * 5000 + b"}\n")),
    Case("cands: a loop of symbolic links", _extract(), "bad.cands: cannot read the arch file (a loop of symbolic links)",
         _link_loop),
    Case("config.json: hidden_size NaN", _extract(arch=ARCH.decode(), model="{work}/bad_model"),
         "config.json: hidden_size must be an integer, got nan", lambda w: _model_with_config(w, "hidden_size", "NaN")),
    Case("config.json: hidden_size 10^12", _extract(arch=ARCH.decode(), model="{work}/bad_model"),
         "more than this machine's memory", lambda w: _model_with_config(w, "hidden_size", "1000000000000")),
    Case("pytorch_model.bin: a pickled object", _extract(arch=ARCH.decode(), model="{work}/bad_model"),
         "pytorch_model.bin: refused: it holds pickled Python objects", _model_with_pickle),
    Case("predictor: a pickled object", lambda w: [sys.executable, "-m", "reporting.remeasure", "--predictors",
                                                   os.path.join(w, "lat_predictor.pt"), "--arch_file",
                                                   os.path.join(w, "archs.cands"), "--save_dir", os.path.join(w, "out")],
         "lat_predictor.pt: refused: it holds pickled Python objects", _predictor_pickle),
    Case("latency table: invalid UTF-8", lambda w: _python("latency_predictor.py", "--lat_dataset_path",
                                                           os.path.join(w, "lat.jsonl"), "--ckpt_path",
                                                           os.path.join(w, "out", "p.pt"), "--quiet"),
         "lat.jsonl:2: not valid UTF-8", _latency_table, untouched="out/p.pt"),  # (its directory is probed first)
    Case("corpus: a loop of symbolic links", lambda w: _python("generate_data.py", "--train_corpus",
                                                               os.path.join(w, "corpus"), "--output_dir",
                                                               os.path.join(w, "out"), "--bert_model",
                                                               os.path.join(w, "vocab.txt")),
         "cannot read the document (a loop of symbolic links)", _corpus_with_loop),
    Case("space file: a grid of 10^9 values", lambda w: _python("inference_time_evaluation_quant.py", "--save_dir",
                                                                os.path.join(w, "out"), "--space",
                                                                os.path.join(w, "space.json")),
         "has 1,000,000,000 values", _space("[1, 1000000000]")),
    Case("BUDGETS=abc", lambda w: ["bash", os.path.join(ROOT, "script", "run_pipeline.sh")],
         "BUDGETS must be a number, got 'abc'", env=_pipeline(BUDGETS="abc")),
    Case("BUDGETS=0", lambda w: ["bash", os.path.join(ROOT, "script", "run_pipeline.sh")],
         "BUDGETS must be > 0, got '0'", env=_pipeline(BUDGETS="0")),
    Case("PRETRAIN_SEQ=10000", lambda w: ["bash", os.path.join(ROOT, "script", "run_pipeline.sh")],
         "PRETRAIN_SEQ must be <= 128, got 10000", env=_pipeline(PRETRAIN_SEQ="10000")),
    Case("RUN_DIR names a file", lambda w: ["bash", os.path.join(ROOT, "script", "run_pipeline.sh")],
         "RUN_DIR={work}/a_file: exists and is not a directory", _file, env=_pipeline(RUN_DIR="{work}/a_file")),
    Case("LATENCY_DIR names a file", lambda w: ["bash", os.path.join(ROOT, "script", "report.sh")],
         "LATENCY_DIR={work}/a_file: exists and is not a directory",
         lambda w: (_file(w), os.makedirs(os.path.join(w, "cands"), exist_ok=True),
                    _write(os.path.join(w, "p.pt"), b"")),
         env={"LATENCY_DIR": "{work}/a_file", "CANDS_DIR": "{work}/cands", "OUTPUT_ROOT": "{work}/cands",
              "PREDICTORS": "{work}/p.pt", "REPORT_DIR": "{work}/out"}),
]


def run_case(case: Case, work: str) -> dict:
    os.makedirs(work, exist_ok=True)
    shutil.rmtree(os.path.join(work, case.untouched.split("/")[0]), ignore_errors=True)
    case.prepare(work)
    env = dict(os.environ, PYTHONPATH=ROOT, BAF_LOG_LEVEL="WARNING", PYTHON=sys.executable,
               **{key: value.format(work=work) for key, value in case.env.items()})
    # its own session, ended whole if a check ever let a pipeline start
    process = subprocess.Popen(case.command(work), env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, start_new_session=True)
    try:
        _, stderr = process.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, 9)
        _, stderr = process.communicate()
    lines = [line for line in stderr.splitlines() if line.strip()]
    expect = case.expect.format(work=work)
    problems = []
    if process.returncode != 2:
        problems.append(f"exit {process.returncode}")
    if len(lines) != 1:
        problems.append(f"{len(lines)} lines on stderr")
    if "Traceback" in stderr:
        problems.append("a traceback")
    if not any(expect in line for line in lines):
        problems.append(f"no {expect!r}")
    if os.path.exists(os.path.join(work, case.untouched)):
        problems.append(f"{case.untouched} was written")
    if os.path.exists(os.path.join(work, "executed")):
        problems.append("the pickled payload ran")
    return {"case": case.name, "ok": not problems, "problems": problems, "line": lines[-1] if lines else ""}


def run_cases(work_dir: str, only: list[str] | None = None) -> list[dict]:
    rows = []
    for index, case in enumerate(CASES):
        if only and case.name not in only:
            continue
        row = run_case(case, os.path.join(work_dir, "bad_inputs"))
        rows.append(row)
        verdict = "one line" if row["ok"] else "FAILED: " + ", ".join(row["problems"])
        print(f"bad input  {case.name:38s} {verdict}: {row['line'][:150]}", flush=True)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work_dir", default="/tmp/bad_inputs")
    parser.add_argument("--only", nargs="*", default=None, help="case names (default: all)")
    args = parser.parse_args()
    rows = run_cases(args.work_dir, args.only)
    failed = [row for row in rows if not row["ok"]]
    print(f"{len(rows) - len(failed)} of {len(rows)} bad inputs refused in one line, nothing written")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
