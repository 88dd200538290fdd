"""Arch files: one arch per line (JSON lines; the original's Python-repr lines and latency-table lines
``<arch>\t<ms>`` are read too), validated against a space where the caller gives one."""

from __future__ import annotations

import os
from typing import Iterable, Iterator

from utils.arch import arch_key, arch_to_json, parse_arch
from utils.cli import ArchError, UserError
from utils.files import atomic_write, iter_text_lines
from utils.space import SearchSpace


def iter_arch_lines(path: str | os.PathLike) -> Iterator[tuple[int, dict, list[str]]]:
    """Yield ``(line_number, arch, extra_fields)`` for every non-blank line of an arch file.

    A line is an arch (JSON or Python repr) optionally followed by TAB-separated fields, which
    covers ``.cands`` files and the original latency tables (``<arch>\\t<ms>``).
    """
    path = os.fspath(path)
    for number, line in iter_text_lines(path, "arch file"):  # encoding, link loops, ...: one line
        if not line.strip():
            continue
        arch_text, *extra = line.rstrip("\n").split("\t")
        yield number, parse_arch(arch_text, where=f"{path}:{number}"), extra


def read_arch_file(path: str | os.PathLike, space: SearchSpace | None = None,
                   allow_duplicates: bool = True) -> list[dict]:
    """Read every arch of a file; validate against ``space`` when given."""
    archs, seen = [], {}
    for number, arch, _extra in iter_arch_lines(path):
        if space is not None:
            space.validate(arch, where=f"{path}:{number}")
        key = arch_key(arch)
        if key in seen and not allow_duplicates:
            raise ArchError(f"{path}:{number}: duplicate arch (first seen on line {seen[key]})")
        seen.setdefault(key, number)
        archs.append(arch)
    return archs


def write_arch_file(path: str | os.PathLike, archs: Iterable[dict]) -> None:
    """Write archs as JSON lines, atomically."""
    with atomic_write(path) as handle:
        for arch in archs:
            handle.write(arch_to_json(arch) + "\n")


def load_arch_argument(value: str, flag: str = "--arch") -> dict:
    """A CLI arch argument: an inline JSON/repr dict, or a file holding exactly one arch."""
    if value.lstrip().startswith("{"):
        return parse_arch(value, where=flag)
    if not os.path.lexists(value):  # lexists: a link loop is read, and named as one
        raise UserError(f"{flag}: {value!r} is neither an arch dict nor an existing file")
    archs = read_arch_file(value)
    if len(archs) != 1:
        raise UserError(f"{flag}: {value} holds {len(archs)} archs; pass a file with exactly one")
    return archs[0]
