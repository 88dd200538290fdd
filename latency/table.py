"""Latency tables: our JSONL records and the original's ``<arch>\\t<ms>`` lines (``lat_.tmp``).

A JSONL table holds three kinds of records (``record_type``; records without one are arch records):

* ``arch`` -- one measurement of one arch: ``arch``, ``arch_key``, ``backend``, the headline
  ``median_ms`` in the table's unit, the raw statistics (``raw_median_ms``, ``p10_ms``, ...), the
  protocol and the environment (``latency.protocol``, ``latency.environment``). Protocol
  ``baf-latency-3`` (``latency.paired``): ``median_ms`` = ``ratio`` (median of the per-pair ratios
  arch / reference) x ``reference_base_ms`` (the reference's latency at the table's start), with
  ``pair_ratios``, ``ratio_se_pct``, ``times_ms`` / ``reference_times_ms`` (raw runs),
  ``reference_raw_ms`` and ``unit`` (the unit in words). Protocol ``baf-latency-2``
  (``latency.session``): the robust, drift-corrected figure of ``latency.robust``, combined over the
  arch's measurements. An arch measured again has several records (``measurement`` 1, 2, ...);
  readers see the latest (under ``baf-latency-2`` it carries all of them: ``measurements_ms``).
* ``reference`` -- the reference arch measured alone at the start of a run (``baf-latency-3``: its
  ``reference_base_ms`` is the table's unit) or at a checkpoint (``baf-latency-2``, ``latency.drift``).
* ``run_end`` -- what one run did (archs, seconds, drift, re-measurements).

``read_latency_table`` returns the arch records (one per arch) as a list that also carries
``.references``, ``.runs`` and ``.path``. The original's lines are read unchanged (Python-repr arch
parsed with ``ast.literal_eval``); their one number becomes ``median_ms``.

A table never mixes machines or protocols: ``signature(record)`` is what must agree, and
``check_consistent`` / ``resume_table`` refuse a table (or an append) where it does not, naming both
records (a ``baf-latency-2`` table is read as before, and refused where mixed with a
``baf-latency-3`` one). The host name is recorded but not compared, so that identical machines can
split a grid (``--shard``).
"""

from __future__ import annotations

import dataclasses
import math
import os
import tempfile
from typing import Iterable, Iterator

from quantize_utils import DEPLOYED
from utils import (
    ArchError,
    SearchSpace,
    UserError,
    arch_key,
    arch_summary,
    arch_to_legacy_repr,
    atomic_write,
    check_arch_schema,
    end_partial_line,
    get_logger,
    iter_arch_lines,
    iter_jsonl,
    iter_text_lines,
)

logger = get_logger(__name__)

# Fields that must agree between the records of one table (ORT-only ones apply to ORT tables).
SIGNATURE_FIELDS = ("backend", "protocol", "cpu_model", "threads", "batch_size", "seq_len", "vocab_size",
                    "max_position_embeddings", "warmup", "runs", "rounds", "interleave", "timer",
                    "torch_version", "quant_engine", "drift_correction", "reference_keys", "remeasure_cap",
                    "max_round_spread_pct", "max_residual_pct", "stable_pct")
ORT_SIGNATURE_FIELDS = ("onnxruntime_version", "exporter", "opset", "ort_quantizer", "ort_dynamic_axes")
# The original's file names, per backend (the ORT one is ours: the original reused lat_quant_.tmp).
RECORD_TYPES = ("arch", "reference", "run_end")
LEGACY_FILE_NAMES = {scheme.latency_backend: scheme.legacy_table for scheme in DEPLOYED}  # the registry's names


def table_file_name(backend: str, shard: tuple[int, int] | None = None, legacy: bool = False) -> str:
    """``lat_<backend>.jsonl`` (or the legacy name), with ``.shard<i>of<n>`` when sharded."""
    name = LEGACY_FILE_NAMES[backend] if legacy else f"lat_{backend}.jsonl"
    if shard is None:
        return name
    stem, ext = os.path.splitext(name)
    return f"{stem}.shard{shard[0]}of{shard[1]}{ext}"


def signature(record: dict) -> dict:
    """The fields of a record that identify its machine and protocol."""
    fields = SIGNATURE_FIELDS + (ORT_SIGNATURE_FIELDS if record.get("backend") == "ort_dynamic_int8" else ())
    return {field: record.get(field) for field in fields}


def where(record: dict) -> str:
    return record.get("_where", "?")


# --------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------


def detect_format(path: str) -> str:
    """``jsonl`` or ``legacy``: by extension, else by the first non-blank line."""
    lower = path.lower()
    if lower.endswith((".jsonl", ".json")):
        return "jsonl"
    if lower.endswith((".tmp", ".txt", ".tsv")):
        return "legacy"
    for _, line in iter_text_lines(path, "latency table"):
        if line.strip():
            return "legacy" if "\t" in line else "jsonl"
    return "jsonl"


def backend_from_legacy_name(path: str) -> str | None:
    """The backend the original's file name stands for (``lat_quant_.tmp`` -> int8), if any."""
    base = os.path.basename(path)
    for backend, name in LEGACY_FILE_NAMES.items():
        stem = os.path.splitext(name)[0]
        if base == name or (base.startswith(stem + ".shard") and base.endswith(".tmp")):
            return backend
    return None


def _positive_ms(value, place: str, field: str = "median_ms") -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise UserError(f"{place}: {field} must be a number of milliseconds, got {value!r}") from None
    if not math.isfinite(number) or number <= 0:
        raise UserError(f"{place}: {field} must be a positive finite number of milliseconds, got {value!r}")
    return number


def _read_legacy(path: str) -> list[dict]:
    backend = backend_from_legacy_name(path) or "unknown"
    records = []
    for number, arch, extra in iter_arch_lines(path):
        place = f"{path}:{number}"
        if len(extra) != 1:
            raise UserError(f"{place}: expected '<arch>\\t<ms>' (one TAB-separated number), got {len(extra)} field(s)")
        records.append({"arch": arch, "arch_key": arch_key(arch), "median_ms": _positive_ms(extra[0], place),
                        "backend": backend, "source_format": "legacy_tmp", "_where": place})
    return records


def record_type(record: dict) -> str:
    return record.get("record_type", "arch")


def _read_jsonl(path: str) -> Iterator[dict]:
    """The records of a JSONL table, streamed (a big table is never held as text)."""
    for number, record in iter_jsonl(path, what="latency table"):
        place = f"{path}:{number}"
        kind = record_type(record) if isinstance(record, dict) else None
        if kind not in RECORD_TYPES:
            raise UserError(f"{place}: not a latency record (record_type {kind!r}; expected one of "
                            f"{', '.join(RECORD_TYPES)})")
        if kind == "run_end":
            yield dict(record, _where=place)
            continue
        if "arch" not in record:
            raise UserError(f"{place}: latency record without an 'arch' field")
        arch = check_arch_schema(record["arch"], where=place)
        record = dict(record, arch=arch, arch_key=arch_key(arch), _where=place)
        record["median_ms"] = _positive_ms(record.get("median_ms"), place)
        yield record


class TableRecords(list):
    """The arch records of a table (one per arch), plus ``references`` (the reference records),
    ``runs`` (the ``run_end`` records) and ``path``."""

    def __init__(self, records=(), references=(), runs=(), path: str | None = None):
        super().__init__(records)
        self.references = list(references)
        self.runs = list(runs)
        self.path = path


def _keep_latest(out: list[dict], index: dict, record: dict) -> None:
    if "measurement" not in record:
        out.append(record)
        return
    key = record["arch_key"]
    if key not in index:
        index[key] = len(out)
        out.append(record)
    elif record["measurement"] >= out[index[key]].get("measurement", 1):
        out[index[key]] = record


def latest_measurements(records: Iterable[dict]) -> list[dict]:
    """One record per re-measured arch: the one with the highest ``measurement`` (later wins a tie),
    at the place of the arch's first record. Records without ``measurement`` (protocol 1, the
    original's lines) are all kept."""
    out, index = [], {}
    for record in records:
        _keep_latest(out, index, record)
    return out


def split_records(records: Iterable[dict], path: str | None = None) -> TableRecords:
    """All records of a file -> ``TableRecords`` (latest measurement per arch, references, runs), in
    one pass: older measurements are not kept."""
    archs, index, references, runs = [], {}, [], []
    for record in records:
        kind = record_type(record)
        if kind == "arch":
            _keep_latest(archs, index, record)
        elif kind == "reference":
            references.append(record)
        elif kind == "run_end":
            runs.append(record)
    return TableRecords(archs, references, runs, path)


def _consistent(records: Iterable[dict]) -> Iterator[dict]:
    """``records``, passed on one by one, each checked against the first as ``check_consistent`` does."""
    first = None
    for record in records:
        if record_type(record) != "run_end":
            if first is None:
                first = record
            else:
                check_consistent([first, record])
        yield record


def read_latency_table(path: str | os.PathLike, space: SearchSpace | None = None,
                       allow_empty: bool = False) -> TableRecords:
    """Every arch of one table (our JSONL or an original ``.tmp``), in file order.

    Each record has at least ``arch``, ``arch_key``, ``median_ms`` and ``backend`` (``"unknown"`` for
    a ``.tmp`` file whose name does not say), plus ``_where`` = ``"file:line"``; a re-measured arch
    appears once, as its latest record. ``.references`` holds the reference measurements. Archs are
    checked against ``space`` when given. A bad line, an empty table or mixed machines/protocols is
    a one-line ``UserError``.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise UserError(f"{path}: no such latency table")
    if os.path.isdir(path):
        raise UserError(f"{path}: is a directory, expected a latency table file")
    records = _read_jsonl(path) if detect_format(path) == "jsonl" else _read_legacy(path)
    table = split_records(_consistent(records), path)  # streamed: memory holds the kept records only
    if not table and not allow_empty:
        raise UserError(f"{path}: empty latency table (no arch records)")
    if space is not None:
        for record in table:
            space.validate(record["arch"], where=where(record))
    return table


def read_latency_tables(paths, space: SearchSpace | None = None) -> TableRecords:
    """Several tables (e.g. the shards of one grid) read as one; they must agree like one table."""
    merged = TableRecords()
    for path in paths:
        table = read_latency_table(path, space)
        merged.extend(table)
        merged.references.extend(table.references)
        merged.runs.extend(table.runs)
        merged.path = path if merged.path is None else merged.path
    check_consistent(list(merged) + merged.references)
    return merged


def unit_text(reference: dict, base_ms: float, backend: str) -> str:
    """A table's unit in words: the machine as fast as at the table's start, which its reference arch
    measured (protocol ``baf-latency-3``; every arch record and the predictors say it)."""
    return (f"ms at the table's start: {backend} reference {arch_summary(reference)} = {base_ms:.4g} ms")


def table_pairs(records: list[dict]) -> list[tuple[dict, float]]:
    """``[(arch, median_ms)]`` of records (the simple view of a table)."""
    return [(record["arch"], record["median_ms"]) for record in records]


def check_consistent(records: list[dict]) -> dict:
    """Raise if records come from different machines or protocols; return the shared signature.

    Records without environment (original ``.tmp`` lines) cannot be checked field by field; they
    may not be mixed with measured records of ours, nor with a ``.tmp`` of another backend.
    """
    if not records:
        return {}
    first = records[0]
    legacy = [record.get("source_format") == "legacy_tmp" for record in records]
    if any(legacy) and not all(legacy):
        odd = records[legacy.index(not legacy[0])]
        raise UserError(f"{where(odd)}: mixes an original .tmp table with measured JSONL records "
                        f"({where(first)}); a predictor is trained on one machine's table")
    reference = signature(first)
    for record in records[1:]:
        current = signature(record)
        for field, value in reference.items():
            if current.get(field) != value:
                raise UserError(f"{where(record)}: measured with {field}={current.get(field)!r} but "
                                f"{where(first)} with {field}={value!r}; one table holds one machine and protocol")
    return reference


def table_environment(records: list[dict]) -> dict:
    """The shared environment of a table (signature plus host names), for predictor metadata."""
    env = check_consistent(records)
    hosts = sorted({record["hostname"] for record in records if record.get("hostname")})
    return {key: value for key, value in dict(env, hostnames=hosts).items() if value not in (None, [])}


def table_space(records: list[dict]) -> SearchSpace | None:
    """The search space the records were measured for, when they say so (our JSONL)."""
    definition = records[0].get("space_definition") if records else None
    return SearchSpace.from_dict(definition) if isinstance(definition, dict) else None


# --------------------------------------------------------------------------------------
# Writing and resuming
# --------------------------------------------------------------------------------------


def resume_table(path: str, expected: dict) -> TableRecords:
    """Prepare ``path`` for appending records whose signature is ``expected``; return what is
    already there (``TableRecords``: the latest record of every measured arch, the references).
    Refuses a table of another machine or protocol with one line naming the differing field."""
    if not os.path.exists(path):
        return TableRecords(path=path)
    if detect_format(path) != "jsonl":
        raise UserError(f"{path}: not a JSONL latency table; refusing to append to it")
    end_partial_line(path)
    if os.path.getsize(path) == 0:
        return TableRecords(path=path)
    for number, record in iter_jsonl(path, what="latency table"):  # streamed
        current = signature(record) if isinstance(record, dict) else {}
        for field, value in expected.items():
            if current.get(field) != value:
                hint = (f"--protocol {current.get(field)}" if field == "protocol" and current.get(field) else
                        "the same settings")
                raise UserError(f"{path}:{number}: this table was measured with {field}={current.get(field)!r}, "
                                f"this run has {field}={value!r}; use another --save_dir or {hint}")
        try:
            if record_type(record) != "run_end":
                arch_key(record["arch"])
        except (KeyError, ArchError) as err:
            raise UserError(f"{path}:{number}: not a latency record ({err})") from None
    return read_latency_table(path, allow_empty=True)


def write_legacy(path: str, records: list[dict]) -> None:
    """The original's ``<str(arch)>\\t<ms>`` lines (the median), written atomically."""
    with atomic_write(path) as handle:
        for record in records:
            handle.write(f"{arch_to_legacy_repr(record['arch'])}\t{record['median_ms']}\n")


def check_writable(directory: str, flag: str, consequence: str) -> None:
    """One line, before any work, when files cannot be written in ``directory`` (created if missing)."""
    try:
        os.makedirs(directory, exist_ok=True)
        handle, probe = tempfile.mkstemp(prefix=".write_probe.", dir=directory)
        os.close(handle)
        os.unlink(probe)
    except OSError as err:
        raise UserError(f"{flag}: cannot write to {directory} ({err.strerror or err}); {consequence}") from None


# --------------------------------------------------------------------------------------
# A table during a measuring run
# --------------------------------------------------------------------------------------


@dataclasses.dataclass
class BackendTable:
    """One backend's table during a run."""

    backend: str
    path: str
    fixed: dict  # the fields every record of this table carries (protocol, environment, ...)
    existing: TableRecords
    latest: dict = dataclasses.field(default_factory=dict)  # arch_key -> latest arch record
    base_ms: float | None = None  # the reference's (anchor's) latency at the table's start: its unit
    measured: int = 0
    remeasured: int = 0
    references: list = dataclasses.field(default_factory=list)  # this run's reference records
    cap_reached: dict = dataclasses.field(default_factory=dict)  # arch_key -> record
    unchecked: int = 0  # suspects left alone because --remeasure_cap is 0

    def __post_init__(self):
        self.latest = {record["arch_key"]: record for record in self.existing}
        for record in list(self.existing.references) + list(self.existing):
            if record.get("reference_base_ms"):
                self.base_ms = float(record["reference_base_ms"])
                break

    @property
    def name(self) -> str:
        return os.path.basename(self.path)


@dataclasses.dataclass
class Item:
    """One arch to time in a chunk, in some backends; ``reasons`` per backend for a re-measurement."""

    arch: dict
    backends: list
    reasons: dict = dataclasses.field(default_factory=dict)
