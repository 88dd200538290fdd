"""The latency-table stage: both ``inference_time_evaluation_quant.py`` (PyTorch fp32 / dynamic
int8) and ``inference_time_evaluation_quant_onnx.py`` (ONNX Runtime dynamic int8) are this module
with a different default backend; ``--backends`` times several backends in one process, arch by
arch, one table per backend. Arch selection, sharding, resume and the records are shared; the
measuring run is ``latency.paired`` (protocol ``baf-latency-3``, the default: paired runs with a
reference) or ``latency.session`` (``--protocol baf-latency-2``: chunks, anchor, reference checkpoints,
re-measurement). The protocol's settings and defaults are ``latency.protocol.Protocol``'s; a flag not
given leaves its default. ``measure_tables(StageConfig)`` is the typed entry other packages call.

Every input is checked before the first record is written; the stage holds the output directory
(``utils.output_lock``: one writer per directory) and the machine's timing slot
(``latency.environment.timing_slot``: one latency job per machine) while it measures.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time

from latency import backends, drift, table
from latency.environment import (TIMING_LOCK_MODES, apply_threads, environment, set_cpu_affinity, timing_slot,
                                 warn_if_busy)
from latency.paired import PairedSession
from latency.protocol import (DRIFT_CORRECTIONS, FLAGS, PROTOCOL_VERSION, ROUNDS, TIMERS, VERSIONS, Protocol,
                              default_of, flag_version_errors)
from latency.selection import ORDERS, explicit_space, parse_shard, select_archs
from latency.session import Session
from latency.table import BackendTable, Item
from quantize_utils import ORT_EXPORTERS, ORT_QUANTIZERS, resolve_scheme
from utils import (
    UserError,
    add_space_arguments,
    arch_key,
    arch_summary,
    get_logger,
    output_lock,
    recorded_roles,
    space_from_args,
    space_record,
)

logger = get_logger("latency")
DEFAULT_SPACE = "paper_latency"


# the settings of latency.protocol.Protocol as stage flags: field -> argparse dest
PROTOCOL_DESTS = {field: flag[2:] for field, flag in FLAGS.items()}


def _default(field: str, version: str = PROTOCOL_VERSION) -> str:
    return f"default {default_of(field, version)}"


def _add_protocol_arguments(parser: argparse.ArgumentParser) -> None:
    """The protocol's flags; their defaults are ``latency.protocol.Protocol``'s (never repeated here:
    a flag not given leaves the protocol's default)."""
    none = argparse.SUPPRESS  # absent from args unless given
    proto = parser.add_argument_group("protocol (SPEC section 6; recorded in every record)")
    proto.add_argument("--protocol", choices=VERSIONS, default=PROTOCOL_VERSION,
                       help="baf-latency-3: paired runs with a reference (the table's unit); baf-latency-2: the "
                            "previous protocol (rounds, anchor, reference checkpoints, re-measurement)")
    proto.add_argument("--infer_cnt", type=int, default=none,
                       help=f"timed runs per arch and backend; under baf-latency-3 each is paired with a run of the "
                            f"reference ({_default('runs')}; {_default('runs', ROUNDS)} under {ROUNDS})")
    proto.add_argument("--warmup", type=int, default=none,
                       help=f"untimed runs of an arch before its timed ones ({_default('warmup')}; "
                            f"{_default('warmup', ROUNDS)} under {ROUNDS})")
    proto.add_argument("--timer", choices=TIMERS, default=none,
                       help="clock of the headline: wall (perf_counter) or cpu (thread CPU time: time spent "
                            "descheduled does not count; needs --threads 1). Default: cpu with 1 thread, else wall "
                            f"(wall under {ROUNDS}); both clocks are always recorded")
    proto.add_argument("--max_seq_length", type=int, default=none, help=f"tokens per input ({_default('seq_len')})")
    proto.add_argument("--batch_size", type=int, default=none, help=f"({_default('batch_size')})")
    proto.add_argument("--threads", type=int, default=none,
                       help=f"intra-op threads; inter-op threads are 1 ({_default('threads')})")
    proto.add_argument("--vocab_size", type=int, default=none,
                       help=f"embedding rows of the timed model ({_default('vocab_size')})")
    proto.add_argument("--max_position_embeddings", type=int, default=none,
                       help=f"({_default('max_position_embeddings')})")
    proto.add_argument("--seed", type=int, default=none,
                       help=f"seed of the weights, --sample and --order ({_default('seed')})")
    proto.add_argument("--cpu_affinity", default=None, help="pin the process to these CPUs, e.g. 0 or 0,1")
    proto.add_argument("--references", default="auto", metavar="auto|none|FILE",
                       help="the reference arch(s): auto (of --space: the middle of every dimension; baf-latency-2 "
                            "adds a smaller and a larger one), an arch file (first = the reference), or a latency "
                            "table (its reference: use the table you will compare with); none only under "
                            f"{ROUNDS} --drift_correction none")
    proto.add_argument("--timing_lock", choices=TIMING_LOCK_MODES, default="wait",
                       help="one latency job per machine: wait for the one timing, fail with one line, or off "
                            "(time concurrently; only where a benchmark showed it changes nothing)")
    old = parser.add_argument_group(f"protocol {ROUNDS} only (--protocol {ROUNDS})")
    for field, kind, text in (
            ("rounds", int, "spread the timed runs over this many rounds (at most --infer_cnt)"),
            ("interleave", int, "archs per chunk, built and timed together with the anchor"),
            ("drift_correction", str, "anchor | none: divide each arch's rounds by the anchor's"),
            ("reference_every", int, "archs between two reference checkpoints"),
            ("drift_threshold_pct", float, "references drifting more than this flag the table"),
            ("max_round_spread_pct", float, "re-measure an arch whose round values spread more than this"),
            ("max_residual_pct", float, "re-measure an arch further than this (or 4 robust sigmas) from the "
                                        "Theil-Sen line of its FFN neighbours"),
            ("stable_pct", float, "two measurements this close settle an arch"),
            ("remeasure_cap", int, "re-measure passes at most, so re-measurements per arch at most (0: never)")):
        old.add_argument(FLAGS[field], type=kind, default=none, help=f"{text} ({_default(field, ROUNDS)})",
                         **({"choices": DRIFT_CORRECTIONS} if field == "drift_correction" else {}))


def build_parser(prog: str, description: str, onnx: bool) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=description,
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--save_dir", required=True,
                        help="output directory; the tables are <save_dir>/lat_<backend>.jsonl (resumed if present)")
    if onnx:
        parser.add_argument("--quant", action="store_true",
                            help="accepted for compatibility: the ONNX Runtime path is always dynamic int8")
    else:
        parser.add_argument("--quant", action="store_true",
                            help="PyTorch dynamic int8 on every nn.Linear (default: fp32)")
    parser.add_argument("--backends", nargs="+", default=None, metavar="B",
                        help="time these backends in one process, arch by arch, one table each (scheme names or "
                             "aliases: torch_fp32/fp32, torch_dynamic_int8/int8, ort_dynamic_int8/ort); "
                             "default: " + ("ort_dynamic_int8" if onnx else "torch_fp32, or torch_dynamic_int8 with "
                                            "--quant"))
    parser.add_argument("--exporter", choices=ORT_EXPORTERS, default="torchscript",
                        help="ONNX Runtime backend: torch.onnx exporter, torchscript (dynamo=False, fast) or dynamo")
    parser.add_argument("--ort_quantizer", choices=ORT_QUANTIZERS, default="fast",
                        help="ONNX Runtime backend: fast (the int8 graph built directly) or official "
                             "(onnxruntime.quantization.quantize_dynamic)")
    _add_protocol_arguments(parser)
    add_space_arguments(parser, DEFAULT_SPACE, role="latency")
    parser.set_defaults(space=None)  # to tell an explicit --space from the default
    pick = parser.add_argument_group("which archs")
    choice = pick.add_mutually_exclusive_group()
    choice.add_argument("--sample", type=int, default=None, metavar="N", help="a seeded random sample of N archs")
    choice.add_argument("--arch_file", default=None,
                        help="archs to measure, one per line (JSON or Python repr); off-grid archs are fine, "
                             "checked against the ranges of --space only when --space is given")
    pick.add_argument("--order", choices=ORDERS, default="shuffled",
                      help="measurement order: shuffled (seeded; slow machine drift becomes noise instead of "
                           "a bias shared by neighbouring archs) or grid (the original's L->H->FFN)")
    pick.add_argument("--shard", default=None, metavar="I/N", help="measure only shard I of N (0-based) of the archs")
    pick.add_argument("--limit", type=int, default=None, help="measure at most this many new archs in this run")
    parser.add_argument("--legacy_format", action="store_true",
                        help="also write the original <arch>\\t<ms> lines (lat_.tmp / lat_quant_.tmp)")
    parser.add_argument("--no_progress", action="store_true", help="no progress bar")
    parser.add_argument("--bert_model", default=None, help=argparse.SUPPRESS)  # the original's unused flag
    return parser


def resolve_backends(args, onnx: bool) -> list[str]:
    """The latency backends of this run, through the scheme registry (aliases accepted, deduplicated)."""
    if args.backends is None:
        return ["ort_dynamic_int8" if onnx else ("torch_dynamic_int8" if args.quant else "torch_fp32")]
    if args.quant and not onnx:
        raise UserError("--quant and --backends: give the backends with --backends alone")
    names = []
    for name in args.backends:
        for part in name.replace(",", " ").split():
            backend = resolve_scheme(part, flag="--backends").latency_backend
            if backend not in names:
                names.append(backend)
    if not names:
        raise UserError("--backends: no backend given")
    return names


def protocol_from_args(args) -> Protocol:
    """The protocol of this run: the flags given, the protocol's defaults for the rest."""
    given = {field: getattr(args, dest) for field, dest in PROTOCOL_DESTS.items() if hasattr(args, dest)}
    flag_version_errors(given, args.protocol)
    return Protocol(version=args.protocol, **given)


def resolve_references(args, space, protocol: Protocol) -> list[dict]:
    """The reference archs: one (the pairs' reference) under baf-latency-3, up to three before."""
    if args.references == "none":
        if protocol.paired:
            raise UserError(f"--references none: protocol {protocol.version} times every arch next to a reference "
                            f"arch (auto, an arch file or a table); none only under --protocol {ROUNDS}")
        if protocol.drift_correction == "anchor":
            raise UserError("--references none leaves no anchor: add --drift_correction none")
        return []
    archs = drift.default_references(space) if args.references == "auto" else drift.read_reference_source(args.references)
    archs = drift.check_reference_archs(archs, where=f"--references {args.references}")
    return archs[:1] if protocol.paired else archs


@dataclasses.dataclass
class StageConfig:
    """Everything one run of the stage needs, checked (``config_from_args`` builds it from the
    flags; ``reporting.remeasure`` builds it directly)."""

    save_dir: str
    backends: list[str]
    protocol: Protocol
    archs: list[dict]  # in measurement order, after sharding
    references: list[dict]
    space_fields: dict  # space, space_definition, space_family recorded in every record
    shard: tuple[int, int] | None = None
    limit: int | None = None
    legacy_format: bool = False
    progress: bool = True
    timing_lock: str = "wait"
    cpu_affinity: str | None = None
    ort_fields: dict = dataclasses.field(default_factory=lambda: {"exporter": "torchscript", "ort_quantizer": "fast"})


def config_from_args(args, onnx: bool) -> StageConfig:
    names = resolve_backends(args, onnx)
    protocol = protocol_from_args(args)
    args.seed = protocol.seed  # also seeds --sample and --order
    space_given = explicit_space(args)
    if not space_given:
        args.space = DEFAULT_SPACE
    space = space_from_args(args)
    shard = parse_shard(args.shard)
    if args.limit is not None and args.limit < 0:
        raise UserError("--limit must be >= 0")
    archs = select_archs(args, space, space_given)
    if shard is not None:
        archs = archs[shard[0]::shard[1]]
    references = resolve_references(args, space, protocol)
    # an arch file is checked against a space's ranges only when one is given: record no space otherwise
    recorded = space if (space_given or not args.arch_file) else None
    space_fields = {"space": recorded.name if recorded else None,
                    "space_definition": recorded.to_dict() if recorded else None,
                    "space_family": space_record(recorded_roles(args.space, "latency", recorded)) if recorded else None}
    return StageConfig(save_dir=args.save_dir, backends=names, protocol=protocol, archs=archs, references=references,
                       space_fields=space_fields, shard=shard, limit=args.limit, legacy_format=args.legacy_format,
                       progress=not args.no_progress, timing_lock=args.timing_lock, cpu_affinity=args.cpu_affinity,
                       ort_fields={"exporter": args.exporter, "ort_quantizer": args.ort_quantizer})


def open_tables(config: StageConfig, unit: dict | None = None) -> dict[str, BackendTable]:
    """Each backend's table, resumed (refused in one line when measured otherwise). ``unit``
    (``{backend: base_ms}`` and ``fixed`` fields, from ``latency.units``) puts a new table in another
    table's unit instead of measuring its own."""
    tables = {}
    for backend in config.backends:
        fixed = dict(config.protocol.to_record(), backend=backend, **config.space_fields,
                     reference_keys=[arch_key(arch) for arch in config.references], **environment(backend),
                     **(config.ort_fields if backend == "ort_dynamic_int8" else {}), **(unit or {}).get("fixed", {}))
        expected = table.signature(fixed)
        if backend == "ort_dynamic_int8":
            expected.pop("opset")  # known after the first export; checked against the table below
        out_path = os.path.join(config.save_dir, table.table_file_name(backend, config.shard))
        if os.path.exists(out_path) and not os.access(out_path, os.W_OK):
            raise UserError(f"{out_path}: the table is read-only; nothing was measured")
        tables[backend] = BackendTable(backend, out_path, fixed, table.resume_table(out_path, expected))
    return tables


def _todo(config: StageConfig, tables: dict[str, BackendTable]) -> tuple[list[Item], int, bool]:
    """``(items to measure now, archs already in every table, complete after this run)``."""
    todo, done_everywhere = [], 0
    for arch in config.archs:
        key = arch_key(arch)
        missing = [backend for backend in config.backends if key not in tables[backend].latest]
        if missing:
            todo.append(Item(arch, missing))
        else:
            done_everywhere += 1
    missing_total = len(todo)
    if config.limit is not None:
        todo = todo[:config.limit]
    return todo, done_everywhere, len(todo) == missing_total


def _describe(protocol: Protocol, references: list[dict]) -> str:
    if protocol.paired:
        return (f"protocol {protocol.version}: {protocol.warmup} warm-up + {protocol.runs} runs paired with the reference "
                f"{arch_summary(references[0])}, timer {protocol.timer}, threads {protocol.threads}")
    return (f"protocol {protocol.version}: threads {protocol.threads}, {protocol.warmup} warm-up + {protocol.runs} runs "
            f"in {protocol.rounds} rounds, timer {protocol.timer}, {len(references)} reference arch(s), drift "
            f"correction {protocol.drift_correction}")


def measure_tables(config: StageConfig, unit: dict | None = None) -> dict[str, BackendTable]:
    """The stage's work for a checked configuration; returns the backends' tables (what is in them)."""
    if os.path.exists(config.save_dir) and not os.path.isdir(config.save_dir):
        raise UserError(f"--save_dir {config.save_dir}: exists and is not a directory")
    protocol = config.protocol
    with output_lock(config.save_dir, what="latency table directory"):
        table.check_writable(config.save_dir, "--save_dir", "nothing was measured")
        cpus = set_cpu_affinity(config.cpu_affinity)
        apply_threads(protocol.threads)
        tables = open_tables(config, unit)
        for backend, base in ((unit or {}).get("base_ms") or {}).items():  # another table's unit
            own = tables[backend].base_ms
            if own is not None and abs(own - base) > 1e-9 * base:
                raise UserError(f"{tables[backend].path}: holds archs in another unit (its reference measured "
                                f"{own:.4g} ms at its start, not {base:.4g} ms); give another directory")
            tables[backend].base_ms = base
        todo, done_everywhere, complete = _todo(config, tables)
        logger.info("%s: %d archs selected, %d already measured in %s, %d to measure now (%s%s)",
                    "+".join(config.backends), len(config.archs), done_everywhere, config.save_dir, len(todo),
                    _describe(protocol, config.references), f", CPUs {cpus}" if cpus else "")
        backends.import_model_code()
        start = time.perf_counter()
        try:
            _measure(config, tables, todo, complete)
        finally:
            if config.legacy_format:
                _write_legacy(config, tables)
    logger.info("measured %d archs in %.1f s -> %s", len(todo), time.perf_counter() - start,
                ", ".join(tables[b].path for b in config.backends))
    return tables


def _measure(config: StageConfig, tables: dict[str, BackendTable], todo: list[Item], complete: bool) -> None:
    protocol = config.protocol
    if protocol.paired:
        if todo:
            with timing_slot(config.timing_lock):
                warn_if_busy()
                PairedSession(tables, protocol, config.references[0], config.ort_fields,
                              progress=config.progress).run(todo)
        return
    session = Session(tables, protocol, config.references, config.ort_fields, progress=config.progress)
    selected = [arch_key(arch) for arch in config.archs]
    if session.has_work(todo, selected, complete):
        with timing_slot(config.timing_lock):
            warn_if_busy()
            session.run(todo, selected, complete)
    if not complete:
        logger.info("re-measurement waits until every selected arch is measured (a later run does it)")


def _write_legacy(config: StageConfig, tables: dict[str, BackendTable]) -> None:
    for backend in config.backends:
        path = tables[backend].path
        if os.path.exists(path) and table.read_latency_table(path, allow_empty=True):
            legacy_path = os.path.join(config.save_dir, table.table_file_name(backend, config.shard, legacy=True))
            table.write_legacy(legacy_path, table.read_latency_table(path))
            logger.info("wrote %s", legacy_path)


def run(argv, prog: str, description: str, onnx: bool) -> int:
    """The whole stage; returns the exit code. User mistakes raise ``UserError``."""
    args = build_parser(prog, description, onnx).parse_args(argv)
    measure_tables(config_from_args(args, onnx))
    return 0
