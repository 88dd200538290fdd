"""The original ``subbert.results`` text format: one block per evaluated candidate, written in the
original evaluator's layout (byte-compatible) and parsed with one fitness per block (see
``evaluation.results`` for the JSONL record that the text file is a view of)."""

from __future__ import annotations

import dataclasses
import os

from utils import UserError, arch_to_legacy_repr, get_logger, parse_arch

logger = get_logger(__name__)

RESULTS_NAME = "subbert.results"
BLOCK_START = "**************S*************"
BLOCK_END = "**************E*************"
_REQUIRED = ("task_name", "architecture", "best_acc")


@dataclasses.dataclass
class ResultBlock:
    """One parsed block. ``best_acc`` is the raw text (a float, or ``f1: X; em: Y`` for SQuAD)."""

    task_name: str
    arch: dict
    best_acc: str
    parameter_size: int | None = None
    time_per_batch_infer_ms: float | None = None
    infer_cnt: int | None = None
    line: int = 0  # where the block starts (1-based)

    @property
    def fitness(self) -> float:
        return parse_best_acc(self.best_acc, where=f"block at line {self.line}")


def parse_best_acc(text: str, where: str = "") -> float:
    """A block's fitness: the float, or F1 for the SQuAD form ``f1: X; em: Y``."""
    text = text.strip()
    try:
        return float(text)
    except ValueError:
        pass
    parts = dict(part.strip().split(":", 1) for part in text.split(";") if ":" in part)
    if "f1" in parts:
        try:
            return float(parts["f1"])
        except ValueError:
            pass
    raise UserError(f"{where}: best_acc {text!r} is not a number")


def format_block(task_name: str, arch: dict, parameter_size: int, best_acc: float | str,
                 time_per_batch_infer_ms: float, infer_cnt: int) -> str:
    """One block in the original layout (``str(float)`` accuracy, ``%.3f`` ms), with its blank line."""
    lines = [
        BLOCK_START,
        f"task_name = {task_name}",
        f"architecture = {arch_to_legacy_repr(arch)}",
        f"parameter size = {int(parameter_size)}",
        f"best_acc = {best_acc}",
        f"time_per_batch_infer = {time_per_batch_infer_ms:.3f} ms",
        f"infer_cnt = {int(infer_cnt)}",
        BLOCK_END,
    ]
    return "\n".join(lines) + "\n\n"


def parse_results(path: str) -> list[ResultBlock]:
    """Every complete block of a ``subbert.results`` file, one entry per block.

    A block cut short by a killed writer (no end marker before the next start or the end of
    the file) is dropped with a warning; anything else malformed is a ``UserError`` naming the
    file and line.
    """
    if not os.path.isfile(path):
        raise UserError(f"{path}: no such results file")
    blocks: list[ResultBlock] = []
    fields: dict | None = None
    problem: str | None = None  # a malformed line is only an error if its block is complete
    start = 0
    with open(path, encoding="utf-8") as handle:
        lines = handle.read().split("\n")
    for number, raw in enumerate(lines, start=1):
        line = raw.strip()
        if line == BLOCK_START:
            if fields is not None:
                logger.warning("%s:%d: dropping a block cut short (no end marker)", path, start)
            fields, start, problem = {}, number, None
        elif line == BLOCK_END:
            if fields is None:
                raise UserError(f"{path}:{number}: end marker without a start marker")
            if problem:
                raise UserError(problem)
            blocks.append(_make_block(fields, path, start))
            fields = None
        elif not line:
            continue
        elif fields is None:
            raise UserError(f"{path}:{number}: text outside a {BLOCK_START} ... {BLOCK_END} block")
        elif " = " not in line:
            problem = problem or f"{path}:{number}: expected 'key = value', got {line[:60]!r}"
        else:
            key, value = line.split(" = ", 1)
            fields[key.strip()] = (value.strip(), number)
    if fields is not None:
        logger.warning("%s:%d: dropping a block cut short (no end marker)", path, start)
    return blocks


def _make_block(fields: dict, path: str, start: int) -> ResultBlock:
    missing = [key for key in _REQUIRED if key not in fields]
    if missing:
        raise UserError(f"{path}:{start}: block lacks {', '.join(missing)}")
    arch_text, arch_line = fields["architecture"]
    block = ResultBlock(task_name=fields["task_name"][0], arch=parse_arch(arch_text, where=f"{path}:{arch_line}"),
                        best_acc=fields["best_acc"][0], line=start)
    try:
        if "parameter size" in fields:
            block.parameter_size = int(fields["parameter size"][0])
        if "time_per_batch_infer" in fields:
            block.time_per_batch_infer_ms = float(fields["time_per_batch_infer"][0].split()[0])
        if "infer_cnt" in fields:
            block.infer_cnt = int(fields["infer_cnt"][0])
    except (ValueError, IndexError) as err:
        raise UserError(f"{path}:{start}: bad number in block ({err})") from None
    parse_best_acc(block.best_acc, where=f"{path}:{fields['best_acc'][1]}")  # fail now, naming the line
    return block
