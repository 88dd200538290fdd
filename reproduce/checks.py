"""Every input of the stages a ``script/reproduce_paper.sh`` run will do, checked before any work:
the first problem is one line naming the variable, exit status 2, nothing written.

    python -m reproduce.checks NAME=VALUE ...      (the script's resolved variables)

What is checked, per stage in STAGES:
  shards      RAW_DIR is a directory holding at least one file; BERT_MODEL is a vocab.txt or a
              directory holding one.
  pretrain    TEACHER_MODEL is a BERT directory (config.json, vocab.txt) that can teach the paper
              supernet (12 heads as the search space, at least 5 layers, MAX_SEQ_LENGTH positions);
              its vocab.txt equals BERT_MODEL's (the shards' token ids), and so does STUDENT_MODEL's
              when given; without the shards stage, RUN_DIR/shards must hold shards.
  latency     LATENCY_TABLES=authors: AUTHORS_TABLES holds lat_.tmp and lat_quant_.tmp.
  predictors  the tables exist (or the latency stage makes them).
  searches    GLUE_DIR holds MNLI's train.tsv, dev_matched.tsv and dev_mismatched.tsv; TYPES are
              schemes; BUDGETS are numbers (or auto, for SMOKE); without the earlier stages, the
              supernet and predictors exist.
  report      the searches ran (or run now).
With SMOKE=1 the smoke inputs are made from SHARED_DATA, which must hold the samples.
"""

from __future__ import annotations

import os
import sys

from reproduce.settings import (AUTHORS_FP32, AUTHORS_INT8, PREDICTOR_FP32, PREDICTOR_INT8, TYPES, Settings)
from utils import UserError

MNLI_FILES = ("train.tsv", "dev_matched.tsv", "dev_mismatched.tsv")
SHARED_FILES = ("vocab/bert-base-uncased-vocab.txt", "glue/MNLI/textfooler_mnli_matched_1k.tsv",
                "glue/MNLI/textfooler_mnli_mismatched_1k.tsv", "corpus")


def _value(s: Settings, name: str) -> str:
    value = s.get(name)
    if not value:
        raise UserError(f"{name} is empty")
    return value


def check_dir(s: Settings, name: str, what: str) -> str:
    value = s.get(name)
    if not value:
        raise UserError(f"{name} is empty; set it to the {what}")
    if not os.path.isdir(value):
        raise UserError(f"{name}={value}: no such {what}")
    return value


def vocab_tokens(s: Settings, name: str) -> tuple[str, list[str]]:
    """The vocab file a variable names (a vocab.txt or a directory holding one) and its tokens."""
    from utils import load_vocab

    value = _value(s, name)
    path = os.path.join(value, "vocab.txt") if os.path.isdir(value) else value
    if not os.path.isfile(path):
        raise UserError(f"{name}={value}: no vocab.txt there (a vocab file or a BERT directory holding one; "
                        "models are never downloaded)")
    try:
        return path, load_vocab(path)
    except UserError as err:
        raise UserError(f"{name}={value}: {err}") from None


def compare_vocabs(first: str, second: str, first_tokens: list[str], second_tokens: list[str]) -> None:
    if first_tokens == second_tokens:
        return
    if len(first_tokens) != len(second_tokens):
        detail = f"{len(first_tokens)} vs {len(second_tokens)} tokens"
    else:
        index = next(i for i, (a, b) in enumerate(zip(first_tokens, second_tokens)) if a != b)
        detail = f"line {index + 1}: {first_tokens[index]!r} vs {second_tokens[index]!r}"
    raise UserError(f"vocab mismatch between {first} and {second} ({detail}); token ids would not match: "
                    "use the teacher's own vocab.txt for both")


def check_model_dir(s: Settings, name: str, what: str):
    """A BERT checkpoint directory: its config (SuperBertConfig reads HF BERT and supernet configs)."""
    from transformer.config import SuperBertConfig

    value = check_dir(s, name, what)
    if not os.path.isfile(os.path.join(value, "config.json")):
        raise UserError(f"{name}={value}: no config.json; not a BERT checkpoint directory")
    try:
        return SuperBertConfig.load(value)
    except UserError as err:
        raise UserError(f"{name}={value}: {err}") from None


def check_teacher(s: Settings) -> None:
    from utils import resolve_space

    config = check_model_dir(s, "TEACHER_MODEL", "teacher directory (a local BERT, e.g. model/bert-base-uncased)")
    teacher = s.get("TEACHER_MODEL")
    space = resolve_space(s.get("SPACE") or "paper", "supernet", flag="SPACE")
    heads = sorted(set(space.num_attention_heads.values))
    if heads != [config.num_attention_heads]:
        raise UserError(f"TEACHER_MODEL={teacher}: {config.num_attention_heads} attention heads, but the supernet "
                        f"samples {heads}; attention KD compares head by head")
    if config.num_hidden_layers < space.layer_num.stop:
        raise UserError(f"TEACHER_MODEL={teacher}: {config.num_hidden_layers} layers, fewer than the largest "
                        f"student's {space.layer_num.stop}")
    seq = max(s.int("MAX_SEQ_LENGTH", 512), 512 if s.smoke and "paper_step" in s.stages else 0)
    if config.max_position_embeddings < seq:
        raise UserError(f"TEACHER_MODEL={teacher}: {config.max_position_embeddings} positions < MAX_SEQ_LENGTH {seq}")
    teacher_vocab, teacher_tokens = vocab_tokens(s, "TEACHER_MODEL")
    if config.vocab_size != len(teacher_tokens):
        raise UserError(f"TEACHER_MODEL={teacher}: config vocab_size {config.vocab_size} != the {len(teacher_tokens)} "
                        "lines of its vocab.txt")
    _, bert_tokens = vocab_tokens(s, "BERT_MODEL")
    compare_vocabs(f"TEACHER_MODEL={teacher}", f"BERT_MODEL={s.get('BERT_MODEL')}", teacher_tokens, bert_tokens)
    if s.get("STUDENT_MODEL"):
        student = check_model_dir(s, "STUDENT_MODEL", "student directory (e.g. model/KD-S1)")
        _, student_tokens = vocab_tokens(s, "STUDENT_MODEL")
        compare_vocabs(f"TEACHER_MODEL={teacher}", f"STUDENT_MODEL={s.get('STUDENT_MODEL')}", teacher_tokens,
                       student_tokens)
        if student.vocab_size != len(teacher_tokens):
            raise UserError(f"STUDENT_MODEL={s.get('STUDENT_MODEL')}: vocab_size {student.vocab_size} != the "
                            f"teacher's {len(teacher_tokens)}")


def check_corpus(s: Settings) -> None:
    value = check_dir(s, "RAW_DIR", "corpus directory (one text file per document, e.g. BookCorpus books1/epubtxt)")
    if not any(entry.is_file() and not entry.name.startswith(".") for entry in os.scandir(value)):
        raise UserError(f"RAW_DIR={value}: holds no files (one text file per document is expected)")
    vocab_tokens(s, "BERT_MODEL")


def check_mnli(s: Settings) -> None:
    value = check_dir(s, "GLUE_DIR", "GLUE MNLI directory (train.tsv, dev_matched.tsv, dev_mismatched.tsv)")
    for name in MNLI_FILES:
        if not os.path.isfile(os.path.join(value, name)):
            raise UserError(f"GLUE_DIR={value}: no {name} (MNLI needs {', '.join(MNLI_FILES)})")


def check_authors(s: Settings) -> None:
    value = check_dir(s, "AUTHORS_TABLES", "directory of the authors' latency tables")
    for name in (AUTHORS_FP32, AUTHORS_INT8):
        if not os.path.isfile(os.path.join(value, name)):
            raise UserError(f"AUTHORS_TABLES={value}: no {name} (LATENCY_TABLES=authors reads {AUTHORS_FP32} and "
                            f"{AUTHORS_INT8})")


def _made_by(s: Settings, stage: str, path: str, what: str) -> None:
    if stage not in s.stages and not os.path.exists(path):
        raise UserError(f"STAGES: {path} ({what}) does not exist and the {stage} stage is not in STAGES; "
                        f"add {stage} to STAGES")


def check(s: Settings) -> None:
    stages = s.stages
    if s.smoke:
        shared = check_dir(s, "SHARED_DATA", "directory of the real samples (../shared/data) the smoke run needs")
        for name in SHARED_FILES:
            if not os.path.exists(os.path.join(shared, name)):
                raise UserError(f"SHARED_DATA={shared}: no {name} (the smoke run reads the shared samples)")
    if s.get("LATENCY_TABLES") not in ("measure", "authors"):
        raise UserError(f"LATENCY_TABLES must be measure or authors, got {s.get('LATENCY_TABLES')!r}")
    for name in s.types:
        if name not in TYPES:
            raise UserError(f"TYPES: {name!r} is not a search type; choose from {' '.join(TYPES)}")
    if not s.types and "searches" in stages:
        raise UserError("TYPES is empty; set e.g. TYPES=\"fp ptq\"")
    for budget in s.budgets:
        if budget == "auto" and len(s.budgets) == 1:
            continue
        try:
            if float(budget) <= 0:
                raise ValueError
        except ValueError:
            raise UserError(f"BUDGETS: {budget!r} is not a latency in ms (e.g. BUDGETS=\"5 10 15 20\")") from None
    if not s.budgets and "searches" in stages:
        raise UserError("BUDGETS is empty; set e.g. BUDGETS=\"5 10 15 20\"")
    # the smoke inputs exist once the inputs stage ran (the script checks again after it: INPUTS_READY=1)
    inputs_made = s.smoke and "inputs" in stages and not s.flag("INPUTS_READY")
    if "shards" in stages and not inputs_made:
        check_corpus(s)
    if ("pretrain" in stages or "paper_step" in stages) and not inputs_made:
        check_teacher(s)
    if "pretrain" in stages or "paper_step" in stages:
        _made_by(s, "shards", os.path.join(s.path("shards"), "data_manifest.json"), "the training shards")
    if "latency" in stages or "predictors" in stages:
        if s.get("LATENCY_TABLES") == "authors":
            check_authors(s)
        else:
            for table in s.latency_tables:
                _made_by(s, "latency", table, "a latency table")
    if "searches" in stages:
        if not inputs_made:
            check_mnli(s)
        _made_by(s, "pretrain", s.path("supernet", "final", "config.json"), "the supernet")
        for name in (PREDICTOR_FP32, PREDICTOR_INT8):
            _made_by(s, "predictors", s.path("conf_datasets", name), "a latency predictor")
    if "report" in stages:
        _made_by(s, "searches", s.path("cands"), "the searches' candidates")


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if any(arg in ("-h", "--help") for arg in argv):
        print(__doc__)
        return 0
    prog = "reproduce_paper.sh"
    try:
        check(Settings.parse(argv))
    except UserError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
