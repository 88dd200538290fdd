"""A table's unit, and measuring archs in it.

Under protocol ``baf-latency-3`` a latency is "ms on this machine as fast as at the table's start":
the median per-pair ratio of the arch to the table's reference arch, times the reference's latency
at the table's start (``reference_base_ms``). ``TableUnit`` says that in one object (backend,
reference arch, base, the table's protocol and machine); tables, predictors (``metadata
["table_unit"]``) and the report carry it, and a budget given in ms is read in it.

* ``unit_of_table(path_or_records)`` -- the unit of a ``baf-latency-3`` table (one-line error for a
  table of another protocol, or one whose reference measurement is missing);
* ``unit_of_predictor(predictor)`` -- the unit of the table a predictor was trained on (``None``: an
  original ``.tmp`` table or a ``baf-latency-2`` one has none);
* ``measure_in_unit(archs, unit, save_dir)`` -- measure archs with the table's protocol, next to its
  reference, and express them in its unit (ratio x the table's base): what the search does with its
  finalists before naming a winner, and what the report's re-measurement does. Returns one
  ``InUnit`` per arch (in the unit and raw); the records go to ``<save_dir>/lat_<backend>.jsonl``, a
  table of its own whose unit is the source table's (resumed: nothing measured is lost or redone);
* ``rescale_to_unit(tables)`` -- several tables (the shards of one grid, measured in separate runs)
  expressed in the first one's unit.
"""

from __future__ import annotations

import dataclasses
import os

from latency.protocol import PAIRED, Protocol
from latency.table import TableRecords, read_latency_table, unit_text
from utils import UserError, arch_key, arch_summary, check_arch_schema, get_logger

logger = get_logger("latency")


@dataclasses.dataclass(frozen=True)
class TableUnit:
    """The unit of one ``baf-latency-3`` table: its backend's reference arch at the table's start."""

    backend: str
    reference: dict
    base_ms: float
    protocol: Protocol
    source: str  # the table (file) whose start defines the unit
    cpu_model: str | None = None
    measured_at: str | None = None
    ort_fields: dict = dataclasses.field(default_factory=dict)

    @property
    def reference_key(self) -> str:
        return arch_key(self.reference)

    def describe(self) -> str:
        """One line: what a millisecond of this unit is."""
        when = f", {self.measured_at}" if self.measured_at else ""
        return f"{unit_text(self.reference, self.base_ms, self.backend)} ({os.path.basename(self.source)}{when})"

    def to_dict(self) -> dict:
        """Plain values (a predictor checkpoint stores them; ``weights_only`` loads them)."""
        return {"backend": self.backend, "reference": self.reference, "reference_key": self.reference_key,
                "base_ms": self.base_ms, "protocol": self.protocol.to_record(), "source": self.source,
                "cpu_model": self.cpu_model, "measured_at": self.measured_at, "ort_fields": dict(self.ort_fields),
                "text": self.describe()}

    @classmethod
    def from_dict(cls, data: dict) -> "TableUnit":
        return cls(backend=data["backend"], reference=data["reference"], base_ms=float(data["base_ms"]),
                   protocol=Protocol.from_record(data["protocol"]), source=data["source"],
                   cpu_model=data.get("cpu_model"), measured_at=data.get("measured_at"),
                   ort_fields=dict(data.get("ort_fields") or {}))


def _records(table) -> TableRecords:
    return read_latency_table(table) if isinstance(table, (str, os.PathLike)) else table


def unit_of_table(table) -> TableUnit:
    """The unit of a ``baf-latency-3`` table (a path or ``TableRecords``); one-line ``UserError`` when
    it has none."""
    records = _records(table)
    name = records.path or "the latency table"
    sample = (list(records) + list(records.references) or [{}])[0]
    if sample.get("protocol") != PAIRED:
        raise UserError(f"{name}: measured with protocol {sample.get('protocol') or 'unknown (an original .tmp table)'}"
                        f", which has no reference unit that other archs can be measured in (measure the table with "
                        f"the default protocol {PAIRED})")
    starts = [ref for ref in records.references if ref.get("reference_base_ms")]
    if not starts:
        named = (sample.get("reference_keys") or ["its reference"])[0]
        raise UserError(f"{name}: names the reference {named} but holds no measurement of it at the table's start "
                        "(its reference record is missing), so its unit is unknown; measure the table again")
    first = starts[0]
    fields = ("exporter", "ort_quantizer")
    return TableUnit(backend=first["backend"], reference=check_arch_schema(first["arch"], where=name),
                     base_ms=float(first["reference_base_ms"]), protocol=Protocol.from_record(first),
                     source=os.path.abspath(name) if records.path else name, cpu_model=first.get("cpu_model"),
                     measured_at=first.get("measured_at"),
                     ort_fields={f: first[f] for f in fields if first.get(f) is not None})


def unit_of_predictor(predictor) -> TableUnit | None:
    """The unit of the table a predictor (or its ``metadata`` dict) was trained on, as the metadata
    records it (``None``: none)."""
    metadata = predictor if isinstance(predictor, dict) else getattr(predictor, "metadata", None)
    data = (metadata or {}).get("table_unit")
    return TableUnit.from_dict(data) if isinstance(data, dict) else None


def rescale_to_unit(tables: list[TableRecords]) -> tuple[list[dict], TableUnit | None]:
    """The arch records of several tables in the first one's unit (``median_ms`` x its base / their
    base; ``uncorrected_median_ms`` keeps the value as measured). Tables without a unit (another
    protocol) are returned as they are, with ``None``."""
    if not tables or any(t and t[0].get("protocol") != PAIRED for t in tables):
        return [record for t in tables for record in t], None
    units = [unit_of_table(t) for t in tables]
    first = units[0]
    out = []
    for table_records, unit in zip(tables, units):
        if unit.reference_key != first.reference_key:
            raise UserError(f"{unit.source} times the reference {arch_summary(unit.reference)} but {first.source} "
                            f"times {arch_summary(first.reference)}; tables in one unit share their reference "
                            "(--references <the first table>)")
        factor = first.base_ms / unit.base_ms
        if factor != 1.0:
            logger.info("%s: expressed in the unit of %s (x %.4f)", os.path.basename(unit.source),
                        os.path.basename(first.source), factor)
        out += [dict(record, uncorrected_median_ms=record["median_ms"], median_ms=record["median_ms"] * factor,
                     reference_base_ms=first.base_ms) if factor != 1.0 else record for record in table_records]
    return out, first


@dataclasses.dataclass(frozen=True)
class InUnit:
    """One arch measured in a table's unit."""

    arch: dict
    median_ms: float  # in the unit: ratio x the table's base
    raw_median_ms: float  # as timed now (the timer's clock)
    ratio: float  # median per-pair ratio arch / reference
    ratio_se_pct: float
    reference_raw_ms: float  # the reference as timed now, next to the arch
    record: dict  # the table record (all of it)

    @property
    def arch_key(self) -> str:
        return arch_key(self.arch)


def check_same_machine(unit: TableUnit) -> None:
    """A table's unit holds on its own machine: refuse another CPU model in one line."""
    from latency.environment import cpu_model

    here = cpu_model()
    if unit.cpu_model and unit.cpu_model != here:
        raise UserError(f"{unit.source}: its unit ({unit.describe()}) was measured on {unit.cpu_model!r}; this machine "
                        f"is {here!r}, so archs measured here cannot be expressed in it")


def measure_in_unit(archs: list[dict], unit: TableUnit, save_dir: str, progress: bool = False,
                    timing_lock: str = "wait") -> list[InUnit]:
    """Measure ``archs`` with the unit table's protocol next to its reference (built here) and
    express them in its unit. The records go to ``<save_dir>/lat_<backend>.jsonl`` (one writer;
    resumed: archs already there are not measured again). One-line ``UserError`` when the unit
    cannot be expressed here or an arch cannot be measured; what was measured stays in the file."""
    from latency.dataset import StageConfig, measure_tables
    from transformer.hf_converter import check_hf_compatible

    check_same_machine(unit)
    for index, arch in enumerate(archs):
        try:
            check_hf_compatible(check_arch_schema(arch, where=f"arch #{index + 1}"))
        except UserError as err:
            raise UserError(f"{arch_summary(arch) if isinstance(arch, dict) else arch!r}: cannot be measured ({err})")
    config = StageConfig(save_dir=save_dir, backends=[unit.backend], protocol=unit.protocol, archs=list(archs),
                         references=[unit.reference], space_fields={"space": None, "space_definition": None,
                                                                    "space_family": None},
                         progress=progress, timing_lock=timing_lock, ort_fields=dict(unit.ort_fields) or
                         {"exporter": "torchscript", "ort_quantizer": "fast"})
    in_unit = {"base_ms": {unit.backend: unit.base_ms},
               "fixed": {"unit_source": unit.source, "unit_measured_at": unit.measured_at}}
    import torch

    threads = torch.get_num_threads()  # the caller (a search) goes on with its own threads
    try:
        table = measure_tables(config, in_unit)[unit.backend]
    finally:
        torch.set_num_threads(threads)
    out = []
    for arch in archs:
        record = table.latest[arch_key(arch)]
        out.append(InUnit(arch=arch, median_ms=float(record["median_ms"]), raw_median_ms=float(record["raw_median_ms"]),
                          ratio=float(record["ratio"]), ratio_se_pct=float(record["ratio_se_pct"]),
                          reference_raw_ms=float(record["reference_raw_ms"]), record=record))
    return out
