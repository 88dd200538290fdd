"""The GLUE tasks: where their files are, how their TSV columns are laid out, their labels, and
the original evaluator's per-task fine-tuning table.

Files are the standard GLUE ``<TASK>/{train,dev}.tsv`` (MNLI: ``dev_matched.tsv`` and
``dev_mismatched.tsv``), split on TAB with no quoting (as GLUE's own readers). Columns are found
by header name where GLUE files have a header, by position where they do not (CoLA). MNLI also
accepts the header-less ``label<TAB>premise<TAB>hypothesis`` layout (e.g. the 1k MNLI samples in
``shared/data``), detected from the first line. Every problem -- a missing file or column, an
unknown label, a short row -- is a one-line ``UserError`` naming the file and line.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import os

from utils import UserError, get_logger, iter_text_lines

logger = get_logger(__name__)


@dataclasses.dataclass(frozen=True)
class Example:
    guid: str
    text_a: str
    text_b: str | None
    label: str | float


@dataclasses.dataclass(frozen=True)
class HyperParams:
    """The original ``default_params`` entry of a task (epochs come from the command line)."""

    max_seq_length: int
    learning_rate: float
    eval_step: int
    train_batch_size: int = 32


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    name: str
    labels: tuple[str, ...] | None  # None: regression (STS-B)
    columns: tuple[str, str | None, str] | None  # header names of text_a, text_b, label
    positions: tuple[int, int | None, int] | None  # column indices for header-less files
    train_file: str
    dev_files: dict  # name -> file; the first one is the primary dev set
    hparams: HyperParams
    skip_short_rows: bool = False  # QQP's train file has a few malformed rows; GLUE readers skip them
    directory: str = ""  # the GLUE download's directory of the task (data/glue/<directory>)
    score_range: tuple[float, float] | None = None  # regression: the scores a row may hold

    @property
    def num_labels(self) -> int:
        return 1 if self.labels is None else len(self.labels)

    @property
    def is_regression(self) -> bool:
        return self.labels is None

    def label_id(self, label: str | float) -> int | float:
        return float(label) if self.labels is None else self.labels.index(label)


_BINARY = ("0", "1")
_NLI3 = ("contradiction", "entailment", "neutral")
_NLI2 = ("entailment", "not_entailment")

# max_seq / lr / eval_step from the original evaluator's table (reference/original.md section 9).
# WNLI is not in that table (it fell back to the command-line defaults, 128 and 5e-5); its
# eval_step of 10 is our choice for a small dev set. mnli-mm trains as mnli.
TASKS: dict[str, TaskSpec] = {spec.name: spec for spec in (
    TaskSpec("cola", _BINARY, None, (3, None, 1), "train.tsv", {"dev": "dev.tsv"}, HyperParams(64, 1e-5, 50),
             directory="CoLA"),
    TaskSpec("sst-2", _BINARY, ("sentence", None, "label"), None, "train.tsv", {"dev": "dev.tsv"},
             HyperParams(64, 2e-5, 100), directory="SST-2"),
    TaskSpec("mrpc", _BINARY, ("#1 String", "#2 String", "Quality"), None, "train.tsv", {"dev": "dev.tsv"},
             HyperParams(128, 2e-5, 10), directory="MRPC"),
    TaskSpec("sts-b", None, ("sentence1", "sentence2", "score"), None, "train.tsv", {"dev": "dev.tsv"},
             HyperParams(128, 3e-5, 10), directory="STS-B", score_range=(0.0, 5.0)),
    TaskSpec("qqp", _BINARY, ("question1", "question2", "is_duplicate"), None, "train.tsv", {"dev": "dev.tsv"},
             HyperParams(128, 2e-5, 500), skip_short_rows=True, directory="QQP"),
    TaskSpec("mnli", _NLI3, ("sentence1", "sentence2", "gold_label"), None, "train.tsv",
             {"matched": "dev_matched.tsv", "mismatched": "dev_mismatched.tsv"}, HyperParams(128, 3e-5, 500),
             directory="MNLI"),
    TaskSpec("mnli-mm", _NLI3, ("sentence1", "sentence2", "gold_label"), None, "train.tsv",
             {"mismatched": "dev_mismatched.tsv"}, HyperParams(128, 3e-5, 500), directory="MNLI"),
    TaskSpec("qnli", _NLI2, ("question", "sentence", "label"), None, "train.tsv", {"dev": "dev.tsv"},
             HyperParams(128, 2e-5, 500), directory="QNLI"),
    TaskSpec("rte", _NLI2, ("sentence1", "sentence2", "label"), None, "train.tsv", {"dev": "dev.tsv"},
             HyperParams(128, 2e-5, 10), directory="RTE"),
    TaskSpec("wnli", _BINARY, ("sentence1", "sentence2", "label"), None, "train.tsv", {"dev": "dev.tsv"},
             HyperParams(128, 5e-5, 10), directory="WNLI"),
)}


def get_task(name: str) -> TaskSpec:
    try:
        return TASKS[name.lower()]
    except KeyError:
        raise UserError(f"--task_name: unknown task {name!r}; choose one of {', '.join(TASKS)}") from None


def _split_line(line: str) -> list[str]:
    return line.rstrip("\r\n").split("\t")


def _nli_headerless(first: list[str], task: TaskSpec) -> bool:
    """MNLI-style ``label<TAB>premise<TAB>hypothesis`` without a header (detected by content)."""
    return task.labels == _NLI3 and len(first) == 3 and first[0] in task.labels


def read_tsv_examples(task: TaskSpec | str, path: str, split: str = "dev", max_examples: int | None = None) -> list[Example]:
    """Read one GLUE TSV file of ``task``; see the module docstring for the layouts."""
    task = get_task(task) if isinstance(task, str) else task
    if not os.path.isfile(path):
        raise UserError(f"{path}: no such file (task {task.name} needs {task.train_file} and "
                        f"{', '.join(task.dev_files.values())} in its --data_dir)")
    lines = iter_text_lines(path, "GLUE file")  # streamed (MNLI's train.tsv is 400 MB); bad bytes name the line
    _, head = next(lines, (0, None))
    if head is None:
        raise UserError(f"{path}: empty file")
    first = _split_line(head)
    body = lines
    if task.positions is not None:
        positions, body = task.positions, itertools.chain([(1, head)], lines)
    elif task.columns is not None and _nli_headerless(first, task):
        positions, body = (1, 2, 0), itertools.chain([(1, head)], lines)
    else:
        missing = [name for name in task.columns if name is not None and name not in first]
        if missing:
            raise UserError(f"{path}:1: header lacks column {missing[0]!r} needed by task {task.name} "
                            f"(header: {' | '.join(first)[:120]})")
        positions = tuple(None if name is None else first.index(name) for name in task.columns)
    need = max(p for p in positions if p is not None) + 1
    examples, skipped = [], 0
    for number, line in body:
        if not line.strip():
            continue
        fields = _split_line(line)
        where = f"{path}:{number}"
        if len(fields) < need:
            if task.skip_short_rows:
                skipped += 1
                continue
            raise UserError(f"{where}: expected at least {need} tab-separated columns, got {len(fields)}")
        text_a = fields[positions[0]]
        text_b = fields[positions[1]] if positions[1] is not None else None
        raw_label = fields[positions[2]].strip()
        if task.labels is None:
            try:
                label: str | float = float(raw_label)
            except ValueError:
                raise UserError(f"{where}: score {raw_label!r} is not a number (task {task.name})") from None
            low, high = task.score_range or (-math.inf, math.inf)
            if not math.isfinite(label) or not low <= label <= high:
                raise UserError(f"{where}: score {raw_label!r} is outside [{low:g}, {high:g}] (task {task.name})")
        else:
            if raw_label == "-" and task.labels == _NLI3:
                skipped += 1  # MultiNLI rows without a gold label; GLUE's files have none
                continue
            if raw_label not in task.labels:
                raise UserError(f"{where}: unknown label {raw_label!r} for task {task.name} "
                                f"(expected one of {', '.join(task.labels)})")
            label = raw_label
        examples.append(Example(f"{split}-{number}", text_a, text_b, label))
        if max_examples is not None and len(examples) >= max_examples:
            break
    if skipped:
        logger.warning("%s: skipped %d row(s) (short rows or no gold label)", path, skipped)
    if not examples:
        raise UserError(f"{path}: no examples")
    return examples


def read_split(task: TaskSpec | str, data_dir: str, split: str, max_examples: int | None = None) -> list[Example]:
    """``split`` is ``train`` or one of ``task.dev_files`` (e.g. ``dev``, ``matched``, ``mismatched``)."""
    task = get_task(task) if isinstance(task, str) else task
    if not os.path.isdir(data_dir):
        raise UserError(f"--data_dir: {data_dir}: no such directory")
    filename = task.train_file if split == "train" else task.dev_files[split]
    return read_tsv_examples(task, os.path.join(data_dir, filename), split, max_examples)
