"""Files others read: atomic writes, appended JSON lines that survive a kill at any byte, and
one writer per output directory (``output_lock``)."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile

from utils.cli import UserError, get_logger

# --------------------------------------------------------------------------------------
# Files: atomic writes and JSON lines
# --------------------------------------------------------------------------------------


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8"):
    """Write ``path`` through a temporary file in the same directory, renamed on success.

    Readers never see a half-written file, and a failure leaves the previous file untouched.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, mode, encoding=None if "b" in mode else encoding) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        # mkstemp creates 0600 files; give the result the permissions a plain open() would
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def end_partial_line(path: str | os.PathLike) -> bool:
    """Make an appended file end at a line boundary after a writer was killed mid-line.

    A last line without its newline is dropped when it is not valid JSON (the record it held was
    never complete, so the run that wrote it redoes it) and completed with the newline when it is.
    Returns True when the file was changed. Everything before the last line is left untouched.
    """
    path = os.fspath(path)
    try:
        handle = open(path, "rb+")
    except FileNotFoundError:
        return False
    with handle:
        handle.seek(0, os.SEEK_END)
        size = handle.tell()
        if size == 0:
            return False
        handle.seek(size - 1)
        if handle.read(1) == b"\n":
            return False
        # read backwards only as far as the last newline (files can be large)
        block, start, tail = 65536, size, b""
        while start > 0:
            step = min(block, start)
            start -= step
            handle.seek(start)
            tail = handle.read(step) + tail
            cut = tail.rfind(b"\n")
            if cut >= 0:
                start, tail = start + cut + 1, tail[cut + 1:]
                break
        try:
            json.loads(tail.decode("utf-8"))
            handle.seek(0, os.SEEK_END)
            handle.write(b"\n")
        except (ValueError, UnicodeDecodeError):
            get_logger(__name__).warning("%s: dropping a truncated last line (its record is redone)", path)
            handle.truncate(start)
        handle.flush()
        os.fsync(handle.fileno())
    return True


def append_jsonl(path: str | os.PathLike, record: dict) -> None:
    """Append one record as one line with a single write, flushed to disk (resumable tables).

    A partial last line left by a killed writer is ended first (``end_partial_line``), so the new
    record never lands on the same line as a fragment."""
    import fcntl

    line = json.dumps(record, sort_keys=True) + "\n"
    with open(path, "a", encoding="utf-8") as handle:
        # writers of one file (torchrun ranks) take turns, so nobody mistakes another's line in
        # progress for the fragment of a killed writer
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            end_partial_line(path)
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


class OutputLocked(UserError):
    """Another process is writing to the same output directory."""


LOCK_NAME = ".bigger_and_faster.lock"


@contextlib.contextmanager
def output_lock(directory: str | os.PathLike, what: str = "output directory"):
    """Hold an exclusive lock on ``directory`` for as long as the block runs (one writer per
    output directory). A second process gets ``OutputLocked`` naming the holder (pid, host,
    command, start time). The lock is ``flock`` on ``<directory>/.bigger_and_faster.lock``: the
    kernel drops it when the holder dies, so a killed run never leaves a stale lock behind (its
    still-running children, if any, keep it until they end). Re-entrant within one process."""
    import fcntl
    import platform
    import time

    directory = os.path.abspath(os.fspath(directory))
    held = _HELD_LOCKS.get(directory)
    if held is not None:
        _HELD_LOCKS[directory] = (held[0], held[1] + 1)
        try:
            yield
        finally:
            fd, depth = _HELD_LOCKS[directory]
            _HELD_LOCKS[directory] = (fd, depth - 1)
        return
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise UserError(f"{directory}: exists and is not a directory (expected the {what})")
    try:
        os.makedirs(directory, exist_ok=True)
        fd = os.open(os.path.join(directory, LOCK_NAME), os.O_RDWR | os.O_CREAT, 0o666)
    except PermissionError:
        raise UserError(f"{directory}: cannot write to the {what} (permission denied)") from None
    except OSError as err:
        raise UserError(f"{directory}: cannot create the {what} ({err.strerror})") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        try:
            holder = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip() or "another process"
        finally:
            os.close(fd)
        raise OutputLocked(f"{directory}: the {what} is in use by {holder}; wait for it to finish or stop it "
                           "(one writer per directory)") from None
    command = " ".join(os.path.basename(a) if i == 0 else a for i, a in enumerate(sys.argv))[:200]
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()} on {platform.node()} since {time.strftime('%H:%M:%S')} "
                  f"({command})\n".encode(), 0)
    _HELD_LOCKS[directory] = (fd, 1)
    try:
        yield
    finally:
        _HELD_LOCKS.pop(directory, None)
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        os.close(fd)  # closing the descriptor releases the flock


_HELD_LOCKS: dict[str, tuple[int, int]] = {}


def read_jsonl(path: str | os.PathLike, drop_truncated_tail: bool = True,
               with_line_numbers: bool = False) -> list:
    """Read JSON lines. A last line cut short by a killed writer is dropped (it is redone on
    resume); any other bad line is a ``UserError`` naming the file and line.
    ``with_line_numbers=True`` returns ``(line_number, record)`` pairs (for later error messages)."""
    path = os.fspath(path)
    with open(path, encoding="utf-8") as handle:
        lines = handle.readlines()
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as err:
            is_tail = number == len(lines) and not line.endswith("\n")
            if is_tail and drop_truncated_tail:
                get_logger(__name__).warning("%s:%d: dropping a truncated last line", path, number)
                continue
            raise UserError(f"{path}:{number}: not valid JSON ({err.msg})") from None
        if not isinstance(value, dict):
            raise UserError(f"{path}:{number}: expected a JSON object, got {type(value).__name__}")
        records.append((number, value) if with_line_numbers else value)
    return records
