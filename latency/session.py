"""One latency run of protocol ``baf-latency-2`` (``--protocol baf-latency-2``; the default is the
paired ``latency.paired``): archs timed in chunks with the anchor, reference
checkpoints, and the re-measurement of suspect archs, for one or several backends at once.

1. The reference archs (``latency.drift``) are built once for every backend and measured at the
   *start* checkpoint; the anchor's latency there is the table's *base* (a resumed table keeps the
   base it has).
2. Main pass: the archs still missing from a backend's table are built ``interleave`` at a time
   (once per arch, then made ready for each backend: ``latency.backends.prepare_backends``) and
   timed together with the anchor of each backend (``latency.measure.measure``): arch by arch, fp32
   and int8 see the same conditions. One record per arch and backend is appended to that backend's
   table as soon as its chunk is done; after every ``reference_every`` archs, a checkpoint.
3. Re-measure pass, once the run's whole selection is in every table: a *suspect* arch (its rounds
   spread more than ``max_round_spread_pct``, or it lies more than ``max_residual_pct`` -- or 4
   robust standard deviations of the table -- off the Theil-Sen line of its FFN neighbours) is
   measured again, and again while its measurements disagree, in at most ``remeasure_cap`` passes
   (so at most ``remeasure_cap`` re-measurements per arch; a pass picks every arch that needs
   another measurement, including a neighbour whose residual stood out after the previous pass).
   Each re-measurement appends a new record (``measurement`` 2, 3, ...) carrying every measurement
   and the combined figure (``latency.robust.combine``); nothing measured is ever rewritten.
4. The *end* checkpoint, then one ``run_end`` record per table (what was done, seconds, drift),
   and one line for each table whose references drifted beyond the threshold or whose archs hit
   the re-measure cap.
"""

from __future__ import annotations

import os
import time

import numpy as np

from latency import backends, robust
from latency.drift import drift_summary
from latency.measure import CLOCK, Protocol, load_average, measure, utc_now  # noqa: F401 (CLOCK: see tests)
from latency.table import BackendTable, Item, TableRecords  # noqa: F401 (Item: re-exported)
from utils import append_jsonl, arch_key, arch_summary, get_logger

logger = get_logger("latency")


class Session:
    def __init__(self, tables: dict[str, BackendTable], protocol: Protocol, references: list[dict],
                 ort_fields: dict | None = None, run_id: str | None = None, progress: bool = True):
        self.tables = tables
        self.protocol = protocol
        self.references = references
        self.anchor_on = bool(references) and protocol.drift_correction == "anchor"
        self.ort_fields = dict(ort_fields or {})
        self.run_id = run_id or f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"
        self.progress = progress
        self.ref_models: dict[str, list] = {}
        self.refs_warm = False
        self.checkpoints = 0
        self.since_checkpoint = 0
        self.chunks = 0
        self.start = time.perf_counter()

    # ----- building
    def _prepare(self, arch: dict, names: list[str]):
        return backends.prepare_backends(arch, names, self.protocol, **self.ort_fields)

    def _build_references(self) -> None:
        if self.ref_models or not self.references:
            return
        names = list(self.tables)
        built = [self._prepare(arch, names) for arch in self.references]
        self.ref_models = {backend: [prepared[backend] for prepared in built] for backend in names}
        # the start checkpoint sets the table's unit: time it in a warm process (lazy kernel
        # initialisation and first-touch allocations happen here, not in its rounds)
        for models in self.ref_models.values():
            for item in models:
                for _ in range(max(10, 2 * self.protocol.warmup)):
                    item.run()

    # ----- checkpoints
    def checkpoint(self, kind: str) -> None:
        """Time every reference arch in every backend, as one interleaved chunk; record them."""
        if not self.references:
            return
        self._build_references()
        names = list(self.tables)
        runners = [item.run for backend in names for item in self.ref_models[backend]]
        timings = measure(runners, self.protocol, warm=[self.refs_warm] * len(runners))
        self.refs_warm = True
        load = load_average()
        count = len(self.references)
        keys = [arch_key(arch) for arch in self.references]
        for position, backend in enumerate(names):
            table = self.tables[backend]
            own = timings[position * count:(position + 1) * count]
            anchor_rounds = own[0].round_medians(self.protocol.timer)
            if table.base_ms is None and self.anchor_on:
                table.base_ms = robust.headline(anchor_rounds)["value_ms"]
            for index, (arch, timing) in enumerate(zip(self.references, own)):
                rounds = timing.round_medians(self.protocol.timer)
                raw = robust.headline(rounds)
                corrected = (robust.headline(rounds, anchor_rounds, table.base_ms) if self.anchor_on else raw)
                record = dict(table.fixed, record_type="reference", arch=arch, arch_key=keys[index],
                              arch_summary=arch_summary(arch), anchor=index == 0, run_id=self.run_id,
                              checkpoint=self.checkpoints, checkpoint_kind=kind, measured_at=utc_now(),
                              elapsed_s=round(time.perf_counter() - self.start, 2), load_average=load,
                              **self.ref_models[backend][index].info, **timing.statistics(self.protocol.timer))
                record.update(median_ms=raw["value_ms"], round_spread_pct=raw["round_spread_pct"],
                              corrected_ms=corrected["value_ms"],
                              reference_base_ms=table.base_ms if self.anchor_on else None)
                append_jsonl(table.path, record)
                table.references.append(record)
        self.checkpoints += 1
        self.since_checkpoint = 0

    # ----- measuring archs
    def measure_items(self, items: list[Item], bar=None) -> None:
        """Time a chunk of archs (each in its backends) with the anchor of each backend involved."""
        prepared = [self._prepare(item.arch, item.backends) for item in items]
        slots = [(index, backend) for index, item in enumerate(items) for backend in item.backends]
        runners = [prepared[index][backend].run for index, backend in slots]
        anchors = {}
        if self.anchor_on:
            self._build_references()
            for backend in sorted({backend for _, backend in slots}, key=list(self.tables).index):
                anchors[backend] = len(runners)
                runners.append(self.ref_models[backend][0].run)
        warm = [False] * len(slots) + [self.refs_warm] * len(anchors)
        timings = measure(runners, self.protocol, warm=warm)
        load = load_average()
        for slot, (index, backend) in enumerate(slots):
            anchor_timing = timings[anchors[backend]] if backend in anchors else None
            self._record(items[index], backend, prepared[index][backend].info, timings[slot], anchor_timing, load)
        self.chunks += 1
        self.since_checkpoint += len(items)
        if bar is not None:
            bar.update(len(items))
            last = self.tables[items[-1].backends[-1]].latest[arch_key(items[-1].arch)]
            bar.set_postfix_str(f"{arch_summary(items[-1].arch)} {last['median_ms']:.2f} ms")

    def _record(self, item: Item, backend: str, info: dict, timing, anchor_timing, load) -> None:
        table, protocol = self.tables[backend], self.protocol
        key = arch_key(item.arch)
        rounds = timing.round_medians(protocol.timer)
        if anchor_timing is not None:
            anchor_rounds = anchor_timing.round_medians(protocol.timer)
            head = robust.headline(rounds, anchor_rounds, table.base_ms)
        else:
            anchor_rounds, head = None, robust.headline(rounds)
        previous = table.latest.get(key) if backend in item.reasons else None
        measurements = list(previous.get("measurements_ms") or [previous["median_ms"]]) if previous else []
        measurements.append(head["value_ms"])
        count = len(measurements)
        record = dict(table.fixed, record_type="arch", arch=item.arch, arch_key=key, arch_summary=arch_summary(item.arch),
                      measured_at=utc_now(), load_average=load, run_id=self.run_id, chunk=self.chunks, **info,
                      **timing.statistics(protocol.timer))
        record.update(
            median_ms=robust.combine(measurements), measurement_ms=head["value_ms"], measurement=count,
            measurements_ms=measurements, round_values_ms=head["round_values_ms"],
            round_spread_pct=head["round_spread_pct"], reference_ratio=head["reference_ratio"],
            anchor_round_ms=[round(float(v), 5) for v in anchor_rounds] if anchor_rounds is not None else None,
            anchor_ms=float(np.median(anchor_rounds)) if anchor_rounds is not None else None,
            reference_base_ms=table.base_ms if anchor_rounds is not None else None,
            reference_key=arch_key(self.references[0]) if anchor_rounds is not None else None,
            remeasured=count > 1, remeasure_reasons=item.reasons.get(backend, []),
            stable=robust.stable(measurements, protocol.stable_pct) if count > 1 else None,
            remeasure_cap_reached=False)
        if count > 1:
            still = robust.needs_remeasure(measurements, head["round_spread_pct"], None, 0.0,
                                           protocol.max_round_spread_pct, protocol.stable_pct)
            record["remeasure_cap_reached"] = bool(still) and count - 1 >= protocol.remeasure_cap
            table.remeasured += 1
            if record["remeasure_cap_reached"]:
                table.cap_reached[key] = record
        else:
            table.measured += 1
        append_jsonl(table.path, record)
        table.latest[key] = record

    # ----- suspects
    def suspects(self, selected: list[str]) -> dict[str, dict[str, list[str]]]:
        """``{backend: {arch_key: reasons}}`` of the selected archs that need another measurement."""
        protocol, found = self.protocol, {}
        for backend, table in self.tables.items():
            points = {key: (record["arch"], record["median_ms"]) for key, record in table.latest.items()}
            residuals = robust.line_residuals(points)
            limit = robust.residual_threshold(residuals, protocol.max_residual_pct)
            need, unchecked = {}, 0
            for key in selected:
                record = table.latest.get(key)
                if record is None:
                    continue
                measurements = list(record.get("measurements_ms") or [record["median_ms"]])
                reasons = robust.needs_remeasure(measurements, float(record.get("round_spread_pct") or 0.0),
                                                 residuals.get(key), limit, protocol.max_round_spread_pct,
                                                 protocol.stable_pct)
                if not reasons:
                    continue
                if len(measurements) - 1 < protocol.remeasure_cap:
                    need[key] = reasons
                elif protocol.remeasure_cap == 0:
                    unchecked += 1
            table.unchecked = unchecked
            found[backend] = need
        return found

    # ----- the run
    def has_work(self, todo: list[Item], selected: list[str], complete: bool) -> bool:
        return bool(todo) or (complete and self.protocol.remeasure_cap > 0 and any(self.suspects(selected).values()))

    def run(self, todo: list[Item], selected: list[str], complete: bool) -> None:
        """Measure ``todo`` (main pass), then, when ``complete`` (the whole selection is in every
        table after it), re-measure the suspects among ``selected``."""
        from utils.progress import progress

        protocol = self.protocol
        if not self.has_work(todo, selected, complete):
            return
        self.checkpoint("start")
        with progress(total=len(todo), unit="arch", desc="+".join(self.tables),
                      enabled=self.progress and bool(todo)) as bar:
            for begin in range(0, len(todo), protocol.interleave):
                self.measure_items(todo[begin:begin + protocol.interleave], bar)
                if self.since_checkpoint >= protocol.reference_every and begin + protocol.interleave < len(todo):
                    self.checkpoint("interval")
        if complete:
            by_key = {}
            for item in todo:
                by_key[arch_key(item.arch)] = item.arch
            for table in self.tables.values():
                for key, record in table.latest.items():
                    by_key.setdefault(key, record["arch"])
            attempt = 0
            # at most --remeasure_cap passes (so at most that many re-measurements per arch): a pass
            # can make a neighbour's residual stand out, which used to add passes beyond the cap
            while attempt < protocol.remeasure_cap:
                need = self.suspects(selected)
                keys = [key for key in selected if any(key in found for found in need.values())]
                if not keys:
                    break
                attempt += 1
                logger.info("re-measure pass %d: %d suspect arch(s)", attempt, len(keys))
                items = [Item(by_key[key], [b for b in self.tables if key in need[b]],
                              {b: need[b][key] for b in self.tables if key in need[b]}) for key in keys]
                with progress(total=len(items), unit="arch", desc=f"re-measure {attempt}",
                              enabled=self.progress) as bar:
                    for begin in range(0, len(items), protocol.interleave):
                        if self.since_checkpoint >= protocol.reference_every:
                            self.checkpoint("interval")
                        self.measure_items(items[begin:begin + protocol.interleave], bar)
            self.suspects(selected)  # counts what --remeasure_cap 0 left alone
        self.checkpoint("end")
        self.finish()

    def finish(self) -> None:
        seconds = time.perf_counter() - self.start
        archs = max(table.measured for table in self.tables.values()) if self.tables else 0
        for backend, table in self.tables.items():
            whole = TableRecords(list(table.latest.values()), list(table.existing.references) + table.references,
                                 path=table.path)
            drift = drift_summary(whole, self.protocol.drift_threshold_pct)
            run_drift = drift_summary(TableRecords([], table.references, path=table.path),
                                      self.protocol.drift_threshold_pct)
            record = dict(table.fixed, record_type="run_end", run_id=self.run_id, ended_at=utc_now(),
                          seconds=round(seconds, 2), archs_measured=table.measured, remeasurements=table.remeasured,
                          remeasure_cap_reached=len(table.cap_reached), suspects_not_remeasured=table.unchecked,
                          reference_checkpoints=self.checkpoints,
                          seconds_per_arch=round(seconds / archs, 4) if archs else None,
                          run_drift_pct=run_drift["drift_pct"], table_drift_pct=drift["drift_pct"],
                          drift_flagged=drift["flagged"])
            append_jsonl(table.path, record)
            if drift["message"]:
                logger.warning("%s", drift["message"])
            elif drift["drift_pct"] is not None:
                logger.info("%s: reference drift %.2f %% over %d checkpoints (threshold %g %%)", table.name,
                            drift["drift_pct"], drift["checkpoints"], drift["threshold_pct"])
            if table.cap_reached:
                worst = max(table.cap_reached.values(),
                            key=lambda r: max(r["measurements_ms"]) / min(r["measurements_ms"]))
                spread = 100 * (max(worst["measurements_ms"]) / min(worst["measurements_ms"]) - 1)
                logger.warning("%s: %d arch(s) still unstable after %d re-measurement(s) (worst %s: %s ms, spread "
                               "%.1f %%); each keeps the median of its measurements, all of them are in the table",
                               table.name, len(table.cap_reached), self.protocol.remeasure_cap, worst["arch_summary"],
                               ", ".join(f"{v:.3g}" for v in worst["measurements_ms"]), spread)
            if table.unchecked:
                logger.warning("%s: %d suspect arch(s) not re-measured (--remeasure_cap 0)", table.name,
                               table.unchecked)
