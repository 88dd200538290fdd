"""One latency run of protocol ``baf-latency-3`` (the default): every arch timed in pairs with a
reference model of the same backend, for one or several backends at once.

1. *Start*: the reference arch (the first of ``--references``; by default the middle of the space)
   is built once for every backend of the run (``latency.backends.prepare_backends``), warmed up and
   timed alone, ``2 x runs`` runs; one ``reference`` record per table. The first run of a table
   sets its *unit*: ``reference_base_ms``, the reference's latency at the table's start; a resumed
   table keeps the unit it has (``BackendTable.base_ms``).
2. Each arch still missing from a backend's table is built once (cheaply) and made ready for each
   backend; per backend, ``latency.measure.time_pairs`` times it in ``runs`` pairs with that
   backend's reference, the order alternating. Its record (``record_type: "arch"``) holds the
   headline ``median_ms`` = median of the per-pair ratios x ``reference_base_ms`` (the table's
   unit), the ratio, its spread and standard error, and the raw runs of arch and reference
   (``raw_median_ms``, ``times_ms``, ``reference_raw_ms``, ``reference_times_ms``): a slowdown that
   lasts a pair moves both runs of the pair and cancels in its ratio; the raw figures keep it.
   Records are appended as soon as an arch is measured (a killed run resumes there).
3. *End*: one ``run_end`` record per table (archs, seconds, how much the reference's speed moved).

There is no re-measurement: the pairing removes the drift that made archs suspect, and every
record says how noisy it was (``ratio_se_pct``).
"""

from __future__ import annotations

import os
import time

import numpy as np

from latency import backends
from latency.measure import Protocol, load_average, time_pairs, time_runs, utc_now
from latency.table import BackendTable, Item, unit_text
from utils import UserError, append_jsonl, arch_key, arch_summary, get_logger

logger = get_logger("latency")


class PairedSession:
    def __init__(self, tables: dict[str, BackendTable], protocol: Protocol, reference: dict,
                 ort_fields: dict | None = None, run_id: str | None = None, progress: bool = True):
        if not protocol.paired:
            raise ValueError(f"PairedSession measures protocol baf-latency-3, not {protocol.version}")
        self.tables = tables
        self.protocol = protocol
        self.reference = reference
        self.reference_key = arch_key(reference)
        self.ort_fields = dict(ort_fields or {})
        self.run_id = run_id or f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"
        self.progress = progress
        self.refs: dict[str, backends.Prepared] = {}
        self.archs_measured = 0
        self.start_time = time.perf_counter()

    # ----- the reference and the table's unit
    def start(self) -> None:
        """Build and warm the reference of every backend, time it alone, record it (the unit)."""
        names = list(self.tables)
        self.refs = backends.prepare_backends(self.reference, names, self.protocol, **self.ort_fields)
        runs = 2 * self.protocol.runs
        for backend in names:
            ref, table = self.refs[backend], self.tables[backend]
            for _ in range(max(10, 2 * self.protocol.warmup)):  # lazy kernel set-up happens here
                ref.run()
            wall, cpu = time_runs(ref.run, runs)
            own = wall if self.protocol.timer == "wall" else cpu
            measured = float(np.median(own))
            if table.base_ms is None:
                table.base_ms = measured
            record = dict(table.fixed, record_type="reference", arch=self.reference, arch_key=self.reference_key,
                          arch_summary=arch_summary(self.reference), anchor=True, run_id=self.run_id, checkpoint=0,
                          checkpoint_kind="start", measured_at=utc_now(), load_average=load_average(), **ref.info,
                          median_ms=measured, times_ms=[round(v, 4) for v in own],
                          wall_median_ms=float(np.median(wall)), cpu_median_ms=float(np.median(cpu)),
                          reference_base_ms=table.base_ms,
                          reference_slowdown_pct=float(100 * (measured / table.base_ms - 1)),
                          unit=unit_text(self.reference, table.base_ms, backend))
            append_jsonl(table.path, record)
            table.references.append(record)
            logger.info("%s: unit = %s%s", table.name, record["unit"],
                        "" if record["reference_slowdown_pct"] == 0 else
                        f" (the reference runs {record['reference_slowdown_pct']:+.1f} % against it now)")

    # ----- measuring archs
    def measure(self, item: Item) -> dict[str, dict]:
        """Time one arch in pairs in each of its backends; append and return its records."""
        protocol = self.protocol
        prepared = backends.prepare_backends(item.arch, item.backends, protocol, **self.ort_fields)
        out = {}
        for backend in item.backends:
            timing = time_pairs(prepared[backend].run, self.refs[backend].run, protocol.runs, protocol.warmup)
            out[backend] = self._record(item.arch, backend, prepared[backend].info, timing)
        self.archs_measured += 1
        return out

    def _record(self, arch: dict, backend: str, info: dict, timing) -> dict:
        table = self.tables[backend]
        key = arch_key(arch)
        previous = table.latest.get(key)
        record = dict(table.fixed, record_type="arch", arch=arch, arch_key=key, arch_summary=arch_summary(arch),
                      measured_at=utc_now(), load_average=load_average(), run_id=self.run_id, **info,
                      **timing.statistics(self.protocol.timer, table.base_ms))
        record.update(measurement=(previous or {}).get("measurement", 0) + 1, reference_key=self.reference_key,
                      unit=unit_text(self.reference, table.base_ms, backend))
        append_jsonl(table.path, record)
        table.latest[key] = record
        table.measured += 1
        return record

    # ----- the run
    def run(self, todo: list[Item]) -> None:
        """Measure every item of ``todo`` (nothing at all when it is empty)."""
        from utils.progress import progress

        if not todo:
            return
        self.start()
        with progress(total=len(todo), unit="arch", desc="+".join(self.tables), enabled=self.progress) as bar:
            for item in todo:
                records = self._measure_or_explain(item)
                bar.update(1)
                last = records[item.backends[-1]]
                bar.set_postfix_str(f"{last['arch_summary']} {last['median_ms']:.2f} ms")
        self.finish()

    def _measure_or_explain(self, item: Item) -> dict[str, dict]:
        """``measure``, with a build or run that fails turned into one line (what is measured stays)."""
        try:
            return self.measure(item)
        except UserError:
            raise
        except Exception as err:  # e.g. an arch too large for this machine's memory
            path = self.tables[item.backends[0]].path
            raise UserError(f"{path}: {arch_summary(item.arch)} cannot be measured ({type(err).__name__}: {err}); the "
                            f"{self.archs_measured} arch(s) measured before it in this run are kept") from None

    def finish(self) -> None:
        seconds = time.perf_counter() - self.start_time
        for table in self.tables.values():
            own = [r for r in table.latest.values() if r.get("run_id") == self.run_id]
            slowdowns = [r["reference_slowdown_pct"] for r in table.references + own if r.get("run_id") == self.run_id]
            moved = float(max(slowdowns) - min(slowdowns)) if len(slowdowns) > 1 else 0.0
            record = dict(table.fixed, record_type="run_end", run_id=self.run_id, ended_at=utc_now(),
                          seconds=round(seconds, 2), archs_measured=table.measured, reference_checkpoints=1,
                          seconds_per_arch=round(seconds / self.archs_measured, 4) if self.archs_measured else None,
                          reference_speed_range_pct=moved,
                          median_ratio_se_pct=float(np.median([r["ratio_se_pct"] for r in own])) if own else None)
            append_jsonl(table.path, record)
            logger.info("%s: %d archs in %.1f s; the reference's speed moved %.1f %% over the run (cancelled pair by "
                        "pair); median standard error of a ratio %.2f %%", table.name, table.measured, seconds, moved,
                        record["median_ratio_se_pct"] or 0.0)
