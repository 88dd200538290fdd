"""The timing probe that ``script/reproduce_paper.sh`` runs before its plan: a few units of each
expensive stage, through the real stage scripts, on this machine, under ``RUN/probe/``.

    python -m reproduce.probe NAME=VALUE ...        (the script's resolved variables)

1. shards: the first files of RAW_DIR (linked, not copied; enough text for the probe's steps) ->
   one shard (``script/generate_data.sh``): tokens per byte and tokenising speed.
2. pre-training: PROBE_STEPS steps of the paper supernet with TEACHER_MODEL at the configured
   BATCH_SIZE x MAX_SEQ_LENGTH (``script/pre_training.sh``, one process, on this device): seconds per
   step from its loss log, the first step left out.
3. latency: one mid-size arch of the paper search space in fp32 and int8 with the configured protocol
   (``script/lat_dataset_gen.sh``, with its reference checkpoints): seconds per arch and per checkpoint.
4. fine-tune: that arch fine-tuned on PROBE_FINETUNE_EXAMPLES training examples of GLUE_DIR and scored
   on PROBE_EVAL_EXAMPLES dev examples, fp32 and int8 (the ptq evaluator on the probe's supernet):
   seconds per 1k training / dev examples.
Only the parts the selected STAGES need run (1-2 for pretrain / paper_step, 3 for latency / report, 4 for
searches, on the run's own supernet when it exists). Writes ``RUN/probe/probe.json``; a re-run with the
same settings reuses it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from reproduce.costs import finetune_seconds, latency_arch_seconds, pretraining_step_seconds
from reproduce.settings import FP32_TABLE, INT8_TABLE, Settings
from utils import UserError, atomic_write, get_logger, write_arch_file

logger = get_logger("reproduce.probe")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROBE_JSON = "probe.json"
BYTES_PER_TOKEN_GUESS = 6  # generous: English WordPiece text is 4-5 bytes per token


def probe_arch() -> dict:
    """The middle of the paper search space (L3/H336/F576/Q336, 12 heads)."""
    from utils import get_space, make_arch

    space = get_space("paper_search")

    def middle(values):
        return values[len(values) // 2]

    hidden = middle(space.hidden_size.values)
    return make_arch(middle(space.layer_num.values), hidden, middle(space.intermediate_size.values),
                     middle(space.num_attention_heads.values), hidden)


def run_script(name: str, env: dict, log_name: str) -> float:
    """Run a stage script with ``env`` on top of this environment; its output goes to our stdout."""
    started = time.perf_counter()
    command = ["bash", os.path.join(ROOT, "script", name)]
    logger.info("probe: %s", name)
    done = subprocess.run(command, env={**os.environ, **{k: str(v) for k, v in env.items()}}, cwd=ROOT)
    if done.returncode != 0:
        raise UserError(f"probe ({log_name}): script/{name} failed with exit status {done.returncode} (its message is "
                        "above); PROBE=0 skips the probe")
    return time.perf_counter() - started


def link_first_documents(raw_dir: str, output_dir: str, need_bytes: int) -> int:
    """Link the first documents of ``raw_dir`` (generate_data.py's order) until ``need_bytes``."""
    from pretraining.shards import list_documents

    os.makedirs(output_dir, exist_ok=True)
    total = 0
    for path in list_documents(raw_dir, flag="RAW_DIR"):
        link = os.path.join(output_dir, os.path.basename(path))
        if not os.path.lexists(link):
            os.symlink(os.path.abspath(path), link)
        total += os.path.getsize(path)
        if total >= need_bytes:
            break
    return total


def vocab_size(bert_model: str) -> int:
    from pretraining.tokenizing import resolve_vocab
    from utils import load_vocab

    return len(load_vocab(resolve_vocab(bert_model, "BERT_MODEL")))


def run_probe(s: Settings) -> dict:
    probe_dir = s.path("probe")
    os.makedirs(probe_dir, exist_ok=True)
    result_path = os.path.join(probe_dir, PROBE_JSON)
    previous = {}
    if os.path.isfile(result_path):
        with open(result_path, encoding="utf-8") as handle:
            previous = json.load(handle)
    wanted = {"batch_size": s.int("BATCH_SIZE"), "max_seq_length": s.int("MAX_SEQ_LENGTH"),
              "steps": s.int("PROBE_STEPS", 3), "infer_cnt": s.int("INFER_CNT"), "warmup": s.int("WARMUP"),
              "finetune_examples": s.int("PROBE_FINETUNE_EXAMPLES", 128),
              "eval_examples": s.int("PROBE_EVAL_EXAMPLES", 64), "teacher": os.path.abspath(s.get("TEACHER_MODEL")),
              "glue_dir": os.path.abspath(s.get("GLUE_DIR")), "precision": s.get("PRECISION", "auto"),
              "stages": s.stages, "latency_tables": s.get("LATENCY_TABLES")}
    if previous.get("settings") == wanted and previous.get("complete"):
        logger.info("probe: %s holds this probe's results; reused", result_path)
        return previous
    seconds = {}
    stages = s.stages
    supernet = s.path("supernet", "final")
    want_pretrain = bool({"pretrain", "paper_step"} & set(stages)) or (
        "searches" in stages and not os.path.isfile(os.path.join(supernet, "config.json")))
    want_latency = ("latency" in stages and s.get("LATENCY_TABLES") != "authors") or "report" in stages
    want_finetune = "searches" in stages
    manifest = pretrain = latency = finetune = None
    corpus_bytes = 0
    if want_pretrain:
        manifest, pretrain, supernet, corpus_bytes = _probe_pretraining(s, probe_dir, wanted, seconds)
    arch = probe_arch()
    arch_file = os.path.join(probe_dir, "probe_arch.cands")
    write_arch_file(arch_file, [arch])
    if want_latency:
        latency = _probe_latency(s, probe_dir, arch_file, seconds)
    if want_finetune:
        finetune = _probe_finetune(s, probe_dir, arch_file, supernet, wanted, seconds)

    result = {"settings": wanted, "complete": True, "seconds": {k: round(v, 2) for k, v in seconds.items()},
              "arch": arch,
              "shards": {"bytes": corpus_bytes, "tokens": manifest["tokens"], "sequences": manifest["sequences"],
                         "seconds": manifest["seconds"], "tokens_per_byte": manifest["tokens"] / max(corpus_bytes, 1)}
              if manifest else None,
              "pretrain": pretrain, "latency": latency, "finetune": finetune,
              "device": _device_name()}
    with atomic_write(result_path) as handle:
        json.dump(result, handle, indent=2, sort_keys=True)
        handle.write("\n")
    return result


def _probe_pretraining(s: Settings, probe_dir: str, wanted: dict, seconds: dict):
    """Shards of the first documents, then a few pre-training steps: ``(manifest, step figures, the
    supernet the fine-tune probe uses, corpus bytes)``."""
    batch, seq, steps = wanted["batch_size"], wanted["max_seq_length"], wanted["steps"]
    need = max(200_000, int((steps + 2) * batch * seq * BYTES_PER_TOKEN_GUESS * 1.1))
    corpus_dir, shards_dir = os.path.join(probe_dir, "corpus"), os.path.join(probe_dir, f"shards_s{seq}")
    corpus_bytes = link_first_documents(s.get("RAW_DIR"), corpus_dir, need)
    seconds["shards"] = run_script("generate_data.sh", {
        "RAW_DIR": corpus_dir, "GENERATED_DIR": shards_dir, "BERT_MODEL": s.get("BERT_MODEL"),
        "MAX_SEQ_LEN": seq, "NUM_SHARDS": 1, "NUM_WORKERS": 1, "OVERWRITE": 1, "EXTRA_ARGS": "--no_progress"},
        "shards")
    with open(os.path.join(shards_dir, "data_manifest.json"), encoding="utf-8") as handle:
        manifest = json.load(handle)
    pretrain_dir = os.path.join(probe_dir, f"pretrain_b{batch}_s{seq}")
    seconds["pretrain"] = run_script("pre_training.sh", {
        "GENERATED_DIR": shards_dir, "OUTPUT_DIR": pretrain_dir, "TEACHER_MODEL": s.get("TEACHER_MODEL"),
        "STUDENT_MODEL": s.get("STUDENT_MODEL"), "MLM": 0, "SPACE": s.get("SPACE", "paper"), "SUPERNET_CONFIG": "",
        "EPOCHS": 1, "MAX_STEPS": steps, "BATCH_SIZE": batch, "ACC_STEPS": 1, "LR": s.get("LR", "1e-4"),
        "MAX_SEQ_LENGTH": seq, "PRECISION": s.get("PRECISION", "auto"), "SEED": s.get("SEED", "42"),
        "SAVE_STEPS": 0, "LOGGING_STEPS": 1, "THREADS": s.get("THREADS", "0"), "NPROC": 1, "RESUME": "auto",
        "MASKED_UPDATES": "auto", "EXTRA_ARGS": "--quality_ladder 0 --no_progress"}, "pre-training")
    # the fine-tune probe's supernet: this one (same shape)
    return manifest, pretraining_step_seconds(pretrain_dir), os.path.join(pretrain_dir, "final"), corpus_bytes


def _probe_latency(s: Settings, probe_dir: str, arch_file: str, seconds: dict) -> dict:
    """The latency of one mid-size arch, both backends, paired with the table's reference."""
    latency_dir = os.path.join(probe_dir, "latency")
    seconds["latency"] = run_script("lat_dataset_gen.sh", {
        "BACKEND": "fp32 int8", "SAVE_DIR": latency_dir, "SPACE": "", "SAMPLE": "", "ARCH_FILE": arch_file,
        "REFERENCES": "auto", "SEED": 0, "THREADS": s.get("LAT_THREADS", "1"), "INFER_CNT": s.get("INFER_CNT"),
        "WARMUP": s.get("WARMUP"), "VOCAB_SIZE": vocab_size(s.get("BERT_MODEL")), "SHARD": "", "LEGACY": 0,
        "EXTRA_ARGS": ""}, "latency")
    return latency_arch_seconds([os.path.join(latency_dir, FP32_TABLE), os.path.join(latency_dir, INT8_TABLE)])


def _probe_finetune(s: Settings, probe_dir: str, arch_file: str, supernet: str, wanted: dict, seconds: dict) -> dict:
    """A short fine-tune of the same arch (on the probe's supernet, or the run's own), timed as the
    evaluator's own process: its start-up is part of what a search pays."""
    finetune_dir = os.path.join(probe_dir, "finetune")
    started = time.perf_counter()
    command = [sys.executable, os.path.join(ROOT, "superbert_run_en_classifier_ptq.py"),
               "--model", supernet, "--data_dir", s.get("GLUE_DIR"), "--task_name", "mnli",
               "--arches_file", arch_file, "--output_dir", finetune_dir, "--num_train_epochs", "1", "--seed", "42",
               "--do_lower_case", "--max_train_examples", str(wanted["finetune_examples"]),
               "--max_eval_examples", str(wanted["eval_examples"]), "--eval_step", "1000000",
               "--num_threads", s.get("NUM_THREADS", "0")]
    logger.info("probe: candidate fine-tune")
    done = subprocess.run(command, cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT})
    if done.returncode != 0:
        raise UserError(f"probe (fine-tune): the ptq evaluator failed with exit status {done.returncode} (its "
                        "message is above); PROBE=0 skips the probe")
    seconds["finetune"] = time.perf_counter() - started
    return finetune_seconds([os.path.join(finetune_dir, "subbert.results.jsonl")])


def _device_name() -> str:
    import torch

    if torch.cuda.is_available():
        return f"{torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}"
    from latency.measure import cpu_model

    return f"CPU ({cpu_model()}, {os.cpu_count()} cores)"


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if any(arg in ("-h", "--help") for arg in argv):
        print(__doc__)
        return 0
    try:
        run_probe(Settings.parse(argv))
    except UserError as err:
        print(f"reproduce_paper.sh: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
