"""Files others read: atomic writes, appended JSON lines that survive a kill at any byte, and
one writer per output directory (``output_lock``); files users give: streamed readers and safe
parsing, where any problem is one line naming the file and line (``iter_text_lines``,
``iter_jsonl``, ``loads_json``, ``load_json_file``)."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import sys
import tempfile
from typing import Iterator

from utils.cli import UserError, get_logger, os_problem

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


def lock_held_by_another(directory: str | os.PathLike) -> str | None:
    """Who holds ``output_lock(directory)`` when another process does (its holder line), else None
    (free, missing, or held by this process). A non-blocking probe: it never takes the lock."""
    import fcntl

    directory = os.path.abspath(os.fspath(directory))
    if directory in _HELD_LOCKS:
        return None
    try:
        fd = os.open(os.path.join(directory, LOCK_NAME), os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return os.pread(fd, 4096, 0).decode("utf-8", "replace").strip() or "another process"
    finally:
        os.close(fd)  # also drops the shared probe when it succeeded
    return None


# --------------------------------------------------------------------------------------
# Reading users' files: streamed, and one line naming the file (and line) for any problem
# --------------------------------------------------------------------------------------


def open_input(path: str | os.PathLike, what: str = "file"):
    """``open(path, "rb")`` for a file the user gave: a missing file, a directory, a symbolic-link
    loop, no permission or any other OS refusal is a ``UserError`` naming the path."""
    path = os.fspath(path)
    try:
        return open(path, "rb")
    except FileNotFoundError:
        raise UserError(f"{path}: no such {what}") from None
    except IsADirectoryError:
        raise UserError(f"{path}: is a directory, expected {'an' if what[:1] in 'aeiou' else 'a'} {what}") from None
    except OSError as err:
        raise UserError(f"{path}: cannot read the {what} ({os_problem(err)})") from None


def iter_text_lines(path: str | os.PathLike, what: str = "file") -> Iterator[tuple[int, str]]:
    """``(line_number, text)`` of every line of a UTF-8 file, one line in memory at a time (a
    ``\r\n`` ending reads as ``\n``; the last line may lack its newline). Bytes that are not UTF-8
    are a ``UserError`` naming the file and line."""
    path = os.fspath(path)
    with open_input(path, what) as handle:
        number = 0
        try:
            for number, raw in enumerate(handle, start=1):
                if raw.endswith(b"\r\n"):
                    raw = raw[:-2] + b"\n"
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as err:
                    raise UserError(f"{path}:{number}: not valid UTF-8 (byte {raw[err.start]:#04x} at column "
                                    f"{err.start + 1})") from None
                yield number, text
        except OSError as err:  # e.g. EIO, or a path that only fails on read
            raise UserError(f"{path}:{number + 1}: cannot read the {what} ({err.strerror or err})") from None


def json_problem(err: BaseException) -> str:
    """What is wrong with a text ``json.loads`` refused, in words (for one-line errors)."""
    if isinstance(err, json.JSONDecodeError):
        return f"not valid JSON ({err.msg}, column {err.colno})"
    if isinstance(err, RecursionError):
        return "nested too deeply to read"
    if isinstance(err, MemoryError):
        return "too large to read"
    if isinstance(err, ValueError) and "digits" in str(err):
        return f"holds an integer of more than {sys.get_int_max_str_digits()} digits"
    return f"not valid JSON ({type(err).__name__})"


def loads_json(text: str | bytes, where: str):
    """``json.loads`` whose every refusal (syntax, nesting depth, huge numbers) is a ``UserError``
    prefixed with ``where`` (``file`` or ``file:line``)."""
    try:
        return json.loads(text)
    except (ValueError, RecursionError, MemoryError) as err:
        raise UserError(f"{where}: {json_problem(err)}") from None


def load_json_file(path: str | os.PathLike, what: str = "JSON file"):
    """A whole JSON file (a config, a space file), every problem one line naming it."""
    path = os.fspath(path)
    with open_input(path, what) as handle:
        try:
            data = handle.read()
        except OSError as err:
            raise UserError(f"{path}: cannot read the {what} ({err.strerror or err})") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[:err.start].count(b"\n") + 1
        raise UserError(f"{path}:{line}: not valid UTF-8 (byte {data[err.start]:#04x})") from None
    return loads_json(text, path)


def iter_jsonl(path: str | os.PathLike, drop_truncated_tail: bool = True,
               what: str = "JSON-lines file") -> Iterator[tuple[int, dict]]:
    """``(line_number, record)`` of every JSON line, streamed: memory does not grow with the file.
    A last line cut short by a killed writer (no newline, not valid JSON) is dropped with a warning
    (it is redone on resume); any other bad line -- syntax, encoding, nesting, number size, not an
    object -- is a ``UserError`` naming the file and line."""
    path = os.fspath(path)
    for number, line in iter_text_lines(path, what):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except (ValueError, RecursionError, MemoryError) as err:
            if drop_truncated_tail and not line.endswith("\n") and isinstance(err, json.JSONDecodeError):
                get_logger(__name__).warning("%s:%d: dropping a truncated last line", path, number)
                continue
            raise UserError(f"{path}:{number}: {json_problem(err)}") from None
        if not isinstance(value, dict):
            raise UserError(f"{path}:{number}: expected a JSON object, got {type(value).__name__}")
        yield number, value


def read_jsonl(path: str | os.PathLike, drop_truncated_tail: bool = True,
               with_line_numbers: bool = False) -> list:
    """Every record of a JSON-lines file as a list (``iter_jsonl`` streams them, for big files).
    ``with_line_numbers=True`` returns ``(line_number, record)`` pairs (for later error messages)."""
    records = iter_jsonl(path, drop_truncated_tail)
    return list(records) if with_line_numbers else [record for _, record in records]


def load_weights_only(path: str | os.PathLike, what: str = "checkpoint"):
    """``torch.load(path, weights_only=True)`` on CPU, with one line for any file it cannot take:
    a file holding pickled Python objects is refused (they could run code; it is never loaded
    unsafely), a truncated or foreign file is named as such. torch's own multi-line advice, which
    suggests the unsafe load, and its pickle-protocol warnings are not shown."""
    import pickle
    import warnings

    import torch

    path = os.fspath(path)
    open_input(path, what).close()  # missing, a directory, a link loop: one line
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r"GLOBAL ([\w.]+)", str(err))  # a class or function the file asks to import and call
        if found:
            raise UserError(f"{path}: refused: it holds pickled Python objects ({found.group(1)}) beyond tensors and "
                            f"plain data, which could run code when loaded; a {what} holds only weights") from None
        raise UserError(f"{path}: not a readable {what}: weights-only loading refused it (not a torch file, or "
                        "pickled data beyond tensors); such a file is never loaded unsafely") from None
    except MemoryError:
        raise UserError(f"{path}: not a readable {what} (too large to load)") from None
    except Exception as err:  # a truncated zip, a foreign format: torch's message is long
        raise UserError(f"{path}: not a readable {what} ({type(err).__name__}; truncated or not a torch file)") from None
