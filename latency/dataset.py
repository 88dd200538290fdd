"""The latency-table stage: both ``inference_time_evaluation_quant.py`` (PyTorch fp32 / dynamic
int8) and ``inference_time_evaluation_quant_onnx.py`` (ONNX Runtime dynamic int8) are this module
with a different default backend; ``--backends`` times several backends in one process, arch by
arch, one table per backend. Arch selection, sharding, resume and the records are shared; the
measuring run (chunks, anchor, reference checkpoints, re-measurement) is ``latency.session``.

Every input is checked before the first record is written; the stage holds the output directory
(``utils.output_lock``: one writer per directory) and the machine's timing slot
(``latency.measure.timing_slot``: one latency job per machine) while it measures.
"""

from __future__ import annotations

import argparse
import os
import random
import time

from latency import backends, drift, table
from latency.measure import (DRIFT_CORRECTIONS, TIMING_LOCK_MODES, Protocol, apply_threads, environment,
                             set_cpu_affinity, timing_slot, warn_if_busy)
from latency.session import BackendTable, Item, Session
from quantize_utils import ORT_EXPORTERS, ORT_QUANTIZERS, resolve_scheme
from utils import (
    UserError,
    add_space_arguments,
    arch_key,
    check_arch_schema,
    get_logger,
    iter_arch_lines,
    output_lock,
    read_arch_file,
    recorded_roles,
    space_from_args,
    space_record,
)

logger = get_logger("latency")
ORDERS = ("shuffled", "grid")
DEFAULT_SPACE = "paper_latency"
SPACE_OVERRIDES = ("layer_num_space", "hidden_size_space", "intermediate_size_space", "head_num_space",
                   "qkv_size_space")


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
    proto = parser.add_argument_group("protocol (SPEC section 6; recorded in every record)")
    proto.add_argument("--max_seq_length", type=int, default=128)
    proto.add_argument("--batch_size", type=int, default=1)
    proto.add_argument("--threads", type=int, default=1, help="intra-op threads (inter-op threads are 1)")
    proto.add_argument("--infer_cnt", type=int, default=20, help="timed runs per arch")
    proto.add_argument("--warmup", type=int, default=5, help="untimed runs per arch before timing")
    proto.add_argument("--rounds", type=int, default=4,
                       help="spread the timed runs over this many rounds, each visiting every arch of the chunk and "
                            "the anchor; the headline is the median over rounds (at most --infer_cnt)")
    proto.add_argument("--interleave", type=int, default=8, help="archs per chunk, built and timed together")
    proto.add_argument("--timer", choices=("wall", "cpu"), default="wall",
                       help="clock of the headline figure: wall (perf_counter) or cpu (thread CPU time; for "
                            "single-thread runs on a shared machine). Both medians are always recorded")
    proto.add_argument("--vocab_size", type=int, default=30522, help="embedding rows of the timed model")
    proto.add_argument("--max_position_embeddings", type=int, default=512)
    proto.add_argument("--cpu_affinity", default=None, help="pin the process to these CPUs, e.g. 0 or 0,1")
    proto.add_argument("--seed", type=int, default=0, help="seed of the random weights, --sample and --order")
    control = parser.add_argument_group("drift control and re-measurement (protocol baf-latency-2)")
    control.add_argument("--references", default="auto", metavar="auto|none|FILE",
                         help="reference archs measured at the start, every --reference_every archs and at the end: "
                              "auto (3 archs of --space, the middle one the anchor), none, an arch file (first = "
                              "anchor), or a latency table (its references: use the table you will compare with)")
    control.add_argument("--drift_correction", choices=DRIFT_CORRECTIONS, default="anchor",
                         help="anchor: the first reference is timed in every chunk and each arch's rounds are "
                              "divided by its rounds (the table's unit: the machine as fast as at its start)")
    control.add_argument("--reference_every", type=int, default=50, help="archs between two reference checkpoints")
    control.add_argument("--drift_threshold_pct", type=float, default=drift.DEFAULT_DRIFT_THRESHOLD_PCT,
                         help="references drifting more than this flag the table")
    control.add_argument("--max_round_spread_pct", type=float, default=8.0,
                         help="re-measure an arch whose round values spread more than this (max-min over median)")
    control.add_argument("--max_residual_pct", type=float, default=5.0,
                         help="re-measure an arch further than this (or 4 robust sigmas of the table) from the "
                              "Theil-Sen line of its FFN neighbours")
    control.add_argument("--stable_pct", type=float, default=2.0, help="two measurements this close settle an arch")
    control.add_argument("--remeasure_cap", type=int, default=2, help="re-measurements per arch at most (0: never)")
    control.add_argument("--timing_lock", choices=TIMING_LOCK_MODES, default="wait",
                         help="one latency job per machine: wait for the one timing, fail with one line, or off "
                              "(time concurrently; only where a benchmark showed it changes nothing)")
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


def parse_shard(value: str | None) -> tuple[int, int] | None:
    if value is None:
        return None
    try:
        index, count = (int(part) for part in value.split("/"))
    except ValueError:
        raise UserError(f"--shard: expected I/N such as 0/4, got {value!r}") from None
    if count < 1 or not 0 <= index < count:
        raise UserError(f"--shard {value}: need 0 <= I < N")
    return index, count


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


def explicit_space(args) -> bool:
    return args.space is not None or any(getattr(args, flag, None) is not None for flag in SPACE_OVERRIDES)


def check_in_ranges(space, arch: dict, where: str) -> None:
    """An arch of ``--arch_file`` inside ``space``'s ranges (not necessarily on its grid)."""
    def check(field, value, grid):
        if grid is not None and not grid.start <= value <= grid.stop:
            raise UserError(f"{where}: {field}={value} is outside the {space.name} space's range "
                            f"{grid.start}..{grid.stop}")

    check("sample_layer_num", arch["sample_layer_num"], space.layer_num)
    check("sample_hidden_size", arch["sample_hidden_size"], space.hidden_size)
    for field, grid in (("sample_intermediate_sizes", space.intermediate_size),
                        ("sample_num_attention_heads", space.num_attention_heads), ("sample_qkv_sizes", space.qkv_size)):
        for value in arch[field]:
            check(field, value, grid)
    if space.qkv_size is None:
        for qkv in arch["sample_qkv_sizes"]:
            if qkv != arch["sample_hidden_size"]:
                raise UserError(f"{where}: sample_qkv_sizes={qkv} must equal sample_hidden_size="
                                f"{arch['sample_hidden_size']} in the {space.name} space (qkv tied to hidden)")


def select_archs(args, space, space_given: bool) -> list[dict]:
    """The archs of this run, in measurement order (before sharding and resume)."""
    from transformer.hf_converter import check_hf_compatible

    if args.arch_file:
        archs = read_arch_file(args.arch_file, allow_duplicates=False)
        if not archs:
            raise UserError(f"--arch_file {args.arch_file}: no archs in the file")
        places = [f"{args.arch_file}:{number}" for number, _, _ in iter_arch_lines(args.arch_file)]
        for arch, place in zip(archs, places):
            check_arch_schema(arch, where=place)
            if space_given:
                check_in_ranges(space, arch, place)
    else:
        archs = list(space.grid())
        if args.sample is not None:
            if not 1 <= args.sample <= len(archs):
                raise UserError(f"--sample {args.sample}: the {space.name} space has {len(archs)} archs")
            archs = random.Random(args.seed).sample(archs, args.sample)
        places = [f"the {space.name} space"] * len(archs)
    for arch, place in zip(archs, places):
        try:
            check_hf_compatible(arch)  # the timed model is a plain HF BERT
        except UserError as err:
            raise UserError(f"{place}: {err}") from None
    if args.order == "shuffled":
        archs = archs[:]
        random.Random(f"order-{args.seed}").shuffle(archs)
    return archs


def protocol_from_args(args) -> Protocol:
    rounds = min(args.rounds, args.infer_cnt) if args.rounds >= 1 and args.infer_cnt >= 1 else args.rounds
    return Protocol(warmup=args.warmup, runs=args.infer_cnt, rounds=rounds, interleave=args.interleave,
                    timer=args.timer, threads=args.threads, batch_size=args.batch_size, seq_len=args.max_seq_length,
                    vocab_size=args.vocab_size, max_position_embeddings=args.max_position_embeddings, seed=args.seed,
                    drift_correction=args.drift_correction, reference_every=args.reference_every,
                    max_round_spread_pct=args.max_round_spread_pct, max_residual_pct=args.max_residual_pct,
                    stable_pct=args.stable_pct, remeasure_cap=args.remeasure_cap,
                    drift_threshold_pct=args.drift_threshold_pct)


def resolve_references(args, space, protocol: Protocol) -> list[dict]:
    if args.references == "none":
        if protocol.drift_correction == "anchor":
            raise UserError("--references none leaves no anchor: add --drift_correction none")
        return []
    archs = drift.default_references(space) if args.references == "auto" else drift.read_reference_source(args.references)
    return drift.check_reference_archs(archs, where=f"--references {args.references}")


def run(argv, prog: str, description: str, onnx: bool) -> int:
    """The whole stage; returns the exit code. User mistakes raise ``UserError``."""
    args = build_parser(prog, description, onnx).parse_args(argv)
    names = resolve_backends(args, onnx)
    protocol = protocol_from_args(args)
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
    if os.path.exists(args.save_dir) and not os.path.isdir(args.save_dir):
        raise UserError(f"--save_dir {args.save_dir}: exists and is not a directory")
    ort_fields = {"exporter": args.exporter, "ort_quantizer": args.ort_quantizer}

    with output_lock(args.save_dir, what="latency table directory"):
        table.check_writable(args.save_dir, "--save_dir", "nothing was measured")
        cpus = set_cpu_affinity(args.cpu_affinity)
        apply_threads(protocol.threads)
        # an arch file is checked against a space's ranges only when one is given: record no space otherwise
        recorded_space = space if (space_given or not args.arch_file) else None
        tables = {}
        for backend in names:
            env = environment(backend)
            fixed = dict(protocol.to_record(), backend=backend,
                         space=recorded_space.name if recorded_space else None,
                         space_definition=recorded_space.to_dict() if recorded_space else None,
                         space_family=space_record(recorded_roles(args.space, "latency", recorded_space))
                         if recorded_space else None,
                         reference_keys=[arch_key(arch) for arch in references], **env,
                         **(ort_fields if backend == "ort_dynamic_int8" else {}))
            expected = table.signature(fixed)
            if backend == "ort_dynamic_int8":
                expected.pop("opset")  # known after the first export; checked against the table below
            out_path = os.path.join(args.save_dir, table.table_file_name(backend, shard))
            if os.path.exists(out_path) and not os.access(out_path, os.W_OK):
                raise UserError(f"{out_path}: the table is read-only; nothing was measured")
            tables[backend] = BackendTable(backend, out_path, fixed, table.resume_table(out_path, expected))
        todo, done_everywhere = [], 0
        for arch in archs:
            key = arch_key(arch)
            missing = [backend for backend in names if key not in tables[backend].latest]
            if missing:
                todo.append(Item(arch, missing))
            else:
                done_everywhere += 1
        missing_total = len(todo)
        if args.limit is not None:
            todo = todo[:args.limit]
        complete = len(todo) == missing_total  # after this run, every selected arch is in every table
        logger.info("%s: %d archs selected, %d already measured in %s, %d to measure now (threads %d, %d warm-up + "
                    "%d runs in %d rounds, timer %s, %d reference arch(s), drift correction %s%s)", "+".join(names),
                    len(archs), done_everywhere, args.save_dir, len(todo), protocol.threads, protocol.warmup,
                    protocol.runs, protocol.rounds, protocol.timer, len(references), protocol.drift_correction,
                    f", CPUs {cpus}" if cpus else "")
        backends.import_model_code()
        start = time.perf_counter()
        session = Session(tables, protocol, references, ort_fields, progress=not args.no_progress)
        selected = [arch_key(arch) for arch in archs]
        try:
            if session.has_work(todo, selected, complete):
                with timing_slot(args.timing_lock):
                    warn_if_busy()
                    session.run(todo, selected, complete)
            if not complete:
                logger.info("re-measurement waits until every selected arch is measured (a later run does it)")
        finally:
            if args.legacy_format:
                for backend in names:
                    path = tables[backend].path
                    if os.path.exists(path) and table.read_latency_table(path, allow_empty=True):
                        legacy_path = os.path.join(args.save_dir, table.table_file_name(backend, shard, legacy=True))
                        table.write_legacy(legacy_path, table.read_latency_table(path))
                        logger.info("wrote %s", legacy_path)
    logger.info("measured %d archs in %.1f s -> %s", len(todo), time.perf_counter() - start,
                ", ".join(tables[b].path for b in names))
    return 0
