"""The shards' file names and their lazy reading (``ShardIndex``): one pass finds each line's byte
offset; a line is read (``os.pread``) and parsed only when training asks for it, so a corpus far larger
than RAM trains fine."""

from __future__ import annotations

import json
import os
import re
from typing import Sequence

import numpy as np

from utils import UserError

SHARD_TEMPLATE = "train_doc_tokens_ngrams_{}.json"
SHARD_PATTERN = re.compile(r"^train_doc_tokens_ngrams_(\d+)\.json$")
MANIFEST_NAME = "data_manifest.json"
VOCAB_NAME = "vocab.txt"


def find_shards(directory: str, flag: str = "--pregenerated_data") -> list[str]:
    """The shard files of ``directory`` in shard-number order."""
    if not os.path.isdir(directory):
        raise UserError(f"{flag}: {directory}: no such directory")
    named = [(int(SHARD_PATTERN.match(name).group(1)), name) for name in os.listdir(directory)
             if SHARD_PATTERN.match(name)]
    if not named:
        raise UserError(f"{flag}: {directory} holds no {SHARD_TEMPLATE.format('{i}')} shards "
                        "(run generate_data.py first)")
    return [os.path.join(directory, name) for _, name in sorted(named)]


def _line_starts(path: str, chunk: int = 1 << 24) -> tuple[np.ndarray, np.ndarray]:
    """Start and end byte offsets of the non-empty lines of ``path`` (one binary pass)."""
    newline_positions = []
    offset = 0
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            newline_positions.append(np.flatnonzero(np.frombuffer(block, dtype=np.uint8) == 10) + offset)
            offset += len(block)
    ends = np.concatenate(newline_positions) if newline_positions else np.zeros(0, dtype=np.int64)
    ends = ends.astype(np.int64)
    if offset and (len(ends) == 0 or ends[-1] != offset - 1):
        ends = np.append(ends, offset)  # a last line without a newline
    starts = np.concatenate(([0], ends[:-1] + 1)).astype(np.int64) if len(ends) else ends
    keep = ends > starts  # drop blank lines
    return starts[keep], ends[keep]


class ShardIndex:
    """Random access to the sequences of a set of shards without loading them.

    ``tokens(i)`` reads and parses only line ``i`` (global order: shard 0's lines, then shard
    1's, ...). A line that is not a ``{"tokens": [...]}`` JSON object raises a ``UserError``
    naming the file and line. File descriptors are opened per process (DataLoader workers).
    """

    def __init__(self, paths: Sequence[str]):
        self.paths = list(paths)
        self.starts, self.ends = [], []
        for path in self.paths:
            starts, ends = _line_starts(path)
            self.starts.append(starts)
            self.ends.append(ends)
        counts = np.array([len(s) for s in self.starts], dtype=np.int64)
        self.offsets = np.concatenate(([0], np.cumsum(counts)))
        self._fds: dict[int, int] = {}
        self._pid = None
        if self.offsets[-1] == 0:
            raise UserError(f"{os.path.dirname(self.paths[0]) or '.'}: the shards hold no sequences")

    @classmethod
    def from_directory(cls, directory: str, flag: str = "--pregenerated_data") -> "ShardIndex":
        return cls(find_shards(directory, flag))

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_fds"], state["_pid"] = {}, None  # descriptors do not travel to other processes
        return state

    def _fd(self, shard: int) -> int:
        if self._pid != os.getpid():
            self._fds, self._pid = {}, os.getpid()
        if shard not in self._fds:
            self._fds[shard] = os.open(self.paths[shard], os.O_RDONLY)
        return self._fds[shard]

    def locate(self, index: int) -> tuple[int, int]:
        if not 0 <= index < len(self):
            raise IndexError(index)
        shard = int(np.searchsorted(self.offsets, index, side="right") - 1)
        return shard, index - int(self.offsets[shard])

    def _line_number(self, shard: int, local: int) -> int:
        """1-based line number in the file (blank lines count), for error messages."""
        start = int(self.starts[shard][local])
        with open(self.paths[shard], "rb") as handle:
            return handle.read(start).count(b"\n") + 1

    def tokens(self, index: int) -> list[str]:
        shard, local = self.locate(index)
        start, end = int(self.starts[shard][local]), int(self.ends[shard][local])
        raw = os.pread(self._fd(shard), end - start, start)
        where = lambda: f"{self.paths[shard]}:{self._line_number(shard, local)}"  # noqa: E731
        try:
            record = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            reason = err.msg if isinstance(err, json.JSONDecodeError) else "not UTF-8"
            raise UserError(f"{where()}: not valid JSON ({reason})") from None
        tokens = record.get("tokens") if isinstance(record, dict) else None
        if not isinstance(tokens, list) or not all(isinstance(token, str) for token in tokens):
            raise UserError(f'{where()}: expected {{"tokens": [strings]}}')
        return tokens

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds = {}
