"""Every default the docs and --help state is the one the code applies (issue 24).

Each documented value is read from the page a user reads (README.md, docs/*.md, a script's --help)
and each applied value from the code that applies it: the argparse default of the stage, the search
plan built from an empty environment, the shell script run with a stub interpreter. A default
changed in one place and not in the other fails here, naming both.
"""

from __future__ import annotations

import os
import re
import stat
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def read(relative: str) -> str:
    with open(os.path.join(ROOT, relative), encoding="utf-8") as handle:
        return " ".join(handle.read().split())  # one line: statements may wrap anywhere


def script_help(name: str) -> str:
    done = subprocess.run(["bash", os.path.join(ROOT, "script", name), "--help"], capture_output=True, text=True,
                          check=True)
    return " ".join(done.stdout.split())


def documented(text: str, variable: str, where: str) -> str:
    """The value in ``VARIABLE (value...)``, ```VARIABLE` (value...)`` or ``VARIABLE (label: value)``."""
    found = re.search(rf"`?\b{re.escape(variable)}\b`? \((?:[a-z ]+: )?\"?([^\"():;,|]+?)\"?[):;,]", text)
    assert found, f"{where} does not state the default of {variable}"
    return found.group(1).strip()


# ---------------------------------------------------------------------------- search window


def searcher_window() -> tuple[float, float]:
    import searcher

    parser = searcher.build_parser()
    return parser.get_default("latency_window_low"), parser.get_default("latency_window_high")


def test_search_window_is_the_documented_one():
    text = read("docs/search-and-report.md")
    found = re.search(r"the window is `\[([0-9.]+)c, ([0-9.]+)c\]`", text)
    assert found, "docs/search-and-report.md does not state the searcher's window"
    assert (float(found.group(1)), float(found.group(2))) == searcher_window()


def test_demo_window_in_the_readme_is_the_one_the_demo_applies():
    """The README's Quick start states the demo's window; the demo passes SEARCH_ARGS or takes the default."""
    found = re.search(r"window \[([0-9.]+)c, ([0-9.]+)c\]", read("README.md"))
    assert found, "README.md does not state the demo's search window"
    pipeline = read("script/run_pipeline.sh")
    low, high = searcher_window()
    args = re.search(r"SEARCH_ARGS='([^']*)'", pipeline)
    if args:
        flags = args.group(1).split()
        for flag, value in zip(flags, flags[1:]):
            low = float(value) if flag == "--latency_window_low" else low
            high = float(value) if flag == "--latency_window_high" else high
    assert (float(found.group(1)), float(found.group(2))) == (low, high)


# ---------------------------------------------------------------------------- search plan


@pytest.fixture(scope="module")
def plan(tmp_path_factory):
    """The search plan of an environment that sets only the inputs that must exist."""
    from search.plan import plan_from_env

    root = tmp_path_factory.mktemp("plan")
    (root / "p.pt").write_bytes(b"")
    (root / "supernet").mkdir()
    (root / "supernet" / "config.json").write_text("{}")
    return plan_from_env({"PREDICTOR": str(root / "p.pt"), "MODEL_DIR": str(root / "supernet")}, str(root), "cand")


def test_search_variables_are_the_documented_ones(plan):
    applied = {"GEN_SIZE": str(plan.gen_size), "POPULATION": str(plan.population), "TOP_K": str(plan.top_k),
               "SEEDS": " ".join(map(str, plan.seeds)), "SEED": str(plan.seed), "GENERATIONS": str(plan.generations),
               "NUM_TRAIN_EPOCHS": f"{plan.num_train_epochs:g}", "SAVE_MODELS": "1" if plan.save_models else "0",
               "RESCORE_TOP": str(plan.rescore_top), "RESCORE_SEEDS": str(plan.rescore_seeds)}
    docs = read("docs/search-and-report.md")
    helps = {name: script_help(name) for name in ("run_search.sh", "search.sh")}
    for variable, value in applied.items():
        assert documented(docs, variable, "docs/search-and-report.md") == value, variable
        for name, text in helps.items():
            if re.search(rf"\b{variable} \(", text):
                assert documented(text, variable, f"script/{name} --help") == value, (name, variable)
    assert re.search(r"\bSAVE_MODELS \(", helps["search.sh"]), "search.sh --help does not state SAVE_MODELS"


# ---------------------------------------------------------------------------- latency stage


def test_remeasure_cap_is_the_documented_one():
    """The previous protocol's re-measurement cap (the paired protocol re-measures nothing)."""
    from latency.protocol import Protocol

    found = re.search(r"at most `--remeasure_cap (\d+)` passes", read("docs/latency.md"))
    assert found, "docs/latency.md does not state the re-measurement cap"
    assert int(found.group(1)) == Protocol(version="baf-latency-2").remeasure_cap


def test_legacy_default_is_the_documented_one(tmp_path):
    """Run lat_dataset_gen.sh with a stub interpreter that records its command line."""
    calls = tmp_path / "calls.txt"
    stub = tmp_path / "python"
    stub.write_text(f"#!/usr/bin/env bash\necho \"$*\" >> '{calls}'\n")
    stub.chmod(stub.stat().st_mode | stat.S_IEXEC)
    env = {key: value for key, value in os.environ.items() if key != "LEGACY"}
    env.update(PYTHON=str(stub), BAF_PYTHON_CHECKED=str(stub), SAVE_DIR=str(tmp_path / "tables"))
    subprocess.run(["bash", os.path.join(ROOT, "script", "lat_dataset_gen.sh")], env=env, cwd=tmp_path, check=True,
                   capture_output=True, text=True)
    stage = [line for line in calls.read_text().splitlines() if "inference_time_evaluation_quant" in line]
    assert len(stage) == 1
    applied = "1" if "--legacy_format" in stage[0].split() else "0"
    assert documented(read("docs/latency.md"), "LEGACY", "docs/latency.md") == applied
    assert documented(script_help("lat_dataset_gen.sh"), "LEGACY", "lat_dataset_gen.sh --help") == applied


# ---------------------------------------------------------------------------- fine-tune recipes


def test_fine_tune_recipe_table_is_the_applied_one():
    from glue.recipes import MIN_FINETUNE_STEPS
    from glue.tasks import TASKS

    with open(os.path.join(ROOT, "docs", "fine-tuning.md"), encoding="utf-8") as handle:
        rows = [line for line in handle if re.match(r"\| `[a-z0-9-]+` \|", line)]
    table = {}
    for row in rows:
        cells = [cell.strip() for cell in row.strip().strip("|").split("|")]
        table[cells[0].strip("`")] = (float(cells[1]), int(cells[2]), int(cells[3]), int(cells[4]))
    assert set(table) == set(TASKS)
    for name, task in TASKS.items():
        hp = task.hparams
        assert table[name] == (hp.learning_rate, hp.train_batch_size, hp.max_seq_length, hp.eval_step), name
    text = read("docs/fine-tuning.md")
    assert f"fewer than {MIN_FINETUNE_STEPS} optimizer steps" in text


def test_fine_tune_common_settings_are_the_applied_ones(plan):
    from evaluation.runner import build_parser

    parser = build_parser("torch_dynamic_int8", description="")
    text = read("docs/fine-tuning.md")
    epochs = re.search(r"\*\*([0-9.]+) epochs?\*\* \(`--num_train_epochs ([0-9.]+)`; the search scripts' "
                       r"`NUM_TRAIN_EPOCHS`, default ([0-9.]+)\)", text)
    assert epochs, "docs/fine-tuning.md does not state the default epochs"
    assert {float(value) for value in epochs.groups()} == {parser.get_default("num_train_epochs"),
                                                           float(plan.num_train_epochs)}
    warmup = re.search(r"first \*\*([0-9.]+)\*\* of the steps then linear decay \(`--warmup_proportion`\)", text)
    decay = re.search(r"weight decay \*\*([0-9.]+)\*\* except biases and LayerNorm \(`--weight_decay`\)", text)
    assert warmup and float(warmup.group(1)) == parser.get_default("warmup_proportion")
    assert decay and float(decay.group(1)) == parser.get_default("weight_decay")
    assert f"evaluation batch {parser.get_default('eval_batch_size')}" in text
