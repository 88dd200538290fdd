"""script/pre_training.sh and script/generate_data.sh: preflight errors name the variable before
any work, and RESUME=auto resumes every interruption point (before the first checkpoint too)."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from pretraining.shards import GenerateSettings, generate_shards
from pretraining_fixtures import tiny_space_args, write_corpus, write_vocab
from utils import read_jsonl

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_script(name: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", os.path.join(ROOT, "script", name)], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=600)


def one_error_line(done: subprocess.CompletedProcess) -> str:
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2 and len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    return lines[0]


@pytest.mark.parametrize("env,variable", [
    ({"TEACHER_MODEL_KEEP_DEFAULT": "1"}, "TEACHER_MODEL="),
    ({"TEACHER_MODEL": "", "MLM": "1", "STUDENT_MODEL": "model/nope"}, "STUDENT_MODEL="),
    ({"TEACHER_MODEL": "", "MLM": "0"}, "nothing to train"),
    ({"TEACHER_MODEL": "", "MLM": "1", "MAX_STEPS": "many"}, "MAX_STEPS must be an integer"),
])
def test_pre_training_preflight_names_the_variable(tmp_path, env, variable):
    env = {key: value for key, value in env.items() if key != "TEACHER_MODEL_KEEP_DEFAULT"}
    line = one_error_line(run_script("pre_training.sh", {"GENERATED_DIR": str(tmp_path), **env,
                                                         "OUTPUT_DIR": str(tmp_path / "out")}))
    assert line.startswith("pre_training.sh: error:") and variable in line
    assert not os.path.exists(tmp_path / "out")
    missing = one_error_line(run_script("pre_training.sh", {"GENERATED_DIR": str(tmp_path / "none")}))
    assert "GENERATED_DIR=" in missing and "generate_data.sh" in missing


def test_generate_data_preflight_names_the_variable(tmp_path):
    line = one_error_line(run_script("generate_data.sh", {"RAW_DIR": str(tmp_path / "none")}))
    assert "RAW_DIR=" in line
    line = one_error_line(run_script("generate_data.sh", {"RAW_DIR": str(tmp_path), "BERT_MODEL": "model/nope"}))
    assert "BERT_MODEL=model/nope" in line


def test_resume_auto_continues_a_run_interrupted_before_its_first_checkpoint(tmp_path):
    vocab = str(tmp_path / "vocab.txt")
    tokens = write_vocab(vocab)
    write_corpus(str(tmp_path / "raw"), documents=3, seed=5)
    shards = str(tmp_path / "shards")
    generate_shards(str(tmp_path / "raw"), shards, vocab, GenerateSettings(max_seq_len=32, do_lower_case=True,
                                                                           num_shards=2, num_workers=1), progress=False)
    config = {"vocab_size": len(tokens), "hidden_size": 32, "num_hidden_layers": 2, "intermediate_size": 64,
              "qkv_size": 32, "num_attention_heads": 2, "max_position_embeddings": 64}
    out = tmp_path / "supernet"
    env = {"GENERATED_DIR": shards, "OUTPUT_DIR": str(out), "TEACHER_MODEL": "", "MLM": "1",
           "SUPERNET_CONFIG": json.dumps(config), "SPACE": "demo_supernet", "MAX_STEPS": "3", "BATCH_SIZE": "4",
           "MAX_SEQ_LENGTH": "32", "SAVE_STEPS": "100", "THREADS": "1", "LOGGING_STEPS": "100",
           "EXTRA_ARGS": " ".join(tiny_space_args()[2:] + ["--no_progress", "--device", "cpu"])}
    first = run_script("pre_training.sh", {**env, "EXTRA_ARGS": env["EXTRA_ARGS"] + " --stop_after_steps 2"})
    assert first.returncode == 0, first.stderr[-2000:]
    for name in os.listdir(out):  # the kill came before the first checkpoint: only the loss log is left
        if name.startswith("step_"):
            subprocess.run(["rm", "-r", str(out / name)], check=True)
    assert len(read_jsonl(out / "loss_log.jsonl")) == 2
    again = run_script("pre_training.sh", env)  # RESUME=auto
    assert again.returncode == 0, again.stderr[-2000:]
    assert "starting again from step 0" in again.stderr
    assert [row["step"] for row in read_jsonl(out / "loss_log.jsonl")] == [1, 2, 3]
    assert os.path.isfile(out / "final" / "model.safetensors")
    finished = run_script("pre_training.sh", env)
    assert finished.returncode == 0 and "already finished" in finished.stderr, finished.stderr[-2000:]
