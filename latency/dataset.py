"""The latency-table stage: both ``inference_time_evaluation_quant.py`` (PyTorch fp32 / dynamic
int8) and ``inference_time_evaluation_quant_onnx.py`` (ONNX Runtime dynamic int8) are this module
with a different backend. Arch selection, sharding, resume, the timing loop and the records are
shared; only ``latency.backends.prepare`` differs per backend.
"""

from __future__ import annotations

import argparse
import os
import random
import time

from latency import backends, table
from latency.measure import (Protocol, apply_threads, environment, load_average, measure, set_cpu_affinity,
                             utc_now)
from quantize_utils import ORT_EXPORTERS, ORT_QUANTIZERS
from utils import (
    UserError,
    add_space_arguments,
    append_jsonl,
    arch_key,
    arch_summary,
    get_logger,
    iter_arch_lines,
    read_arch_file,
    space_from_args,
)

logger = get_logger("latency")
ORDERS = ("shuffled", "grid")


def build_parser(prog: str, description: str, onnx: bool) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=description,
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--save_dir", required=True,
                        help="output directory; the table is <save_dir>/lat_<backend>.jsonl (resumed if present)")
    if onnx:
        parser.add_argument("--quant", action="store_true",
                            help="accepted for compatibility: the ONNX Runtime path is always dynamic int8")
        parser.add_argument("--exporter", choices=ORT_EXPORTERS, default="torchscript",
                            help="torch.onnx exporter: torchscript (dynamo=False, fast per arch) or dynamo")
        parser.add_argument("--ort_quantizer", choices=ORT_QUANTIZERS, default="fast",
                            help="fast: the int8 graph built directly; official: onnxruntime.quantization.quantize_dynamic")
    else:
        parser.add_argument("--quant", action="store_true",
                            help="PyTorch dynamic int8 on every nn.Linear (default: fp32)")
    proto = parser.add_argument_group("protocol (SPEC section 6; recorded in every record)")
    proto.add_argument("--max_seq_length", type=int, default=128)
    proto.add_argument("--batch_size", type=int, default=1)
    proto.add_argument("--threads", type=int, default=1, help="intra-op threads (inter-op threads are 1)")
    proto.add_argument("--infer_cnt", type=int, default=20, help="timed runs per arch")
    proto.add_argument("--warmup", type=int, default=5, help="untimed runs per arch before timing")
    proto.add_argument("--rounds", type=int, default=4,
                       help="split the timed runs into this many interleaved rounds over a chunk of archs "
                            "(at most --infer_cnt; 1 = each arch timed in one go)")
    proto.add_argument("--interleave", type=int, default=8,
                       help="archs per chunk, built and timed together so that machine drift hits them alike")
    proto.add_argument("--timer", choices=("wall", "cpu"), default="wall",
                       help="clock of the headline statistics: wall (perf_counter) or cpu (thread CPU time; "
                            "for single-thread runs on a shared machine). Both medians are always recorded")
    proto.add_argument("--vocab_size", type=int, default=30522, help="embedding rows of the timed model")
    proto.add_argument("--max_position_embeddings", type=int, default=512)
    proto.add_argument("--cpu_affinity", default=None, help="pin the process to these CPUs, e.g. 0 or 0,1")
    proto.add_argument("--seed", type=int, default=0, help="seed of the random weights, --sample and --order")
    add_space_arguments(parser, "paper_latency", role="latency")
    pick = parser.add_argument_group("which archs")
    choice = pick.add_mutually_exclusive_group()
    choice.add_argument("--sample", type=int, default=None, metavar="N", help="a seeded random sample of N archs")
    choice.add_argument("--arch_file", default=None, help="archs to measure, one per line (JSON or Python repr)")
    pick.add_argument("--order", choices=ORDERS, default="shuffled",
                      help="measurement order: shuffled (seeded; slow machine drift becomes noise instead of "
                           "a bias shared by neighbouring archs) or grid (the original's L->H->FFN)")
    pick.add_argument("--shard", default=None, metavar="I/N", help="measure only shard I of N (0-based) of the archs")
    pick.add_argument("--limit", type=int, default=None, help="measure at most this many new archs in this run")
    parser.add_argument("--legacy_format", action="store_true",
                        help="also write the original <arch>\\t<ms> lines (lat_.tmp / lat_quant_.tmp)")
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


def select_archs(args, space) -> list[dict]:
    """The archs of this run, in measurement order (before sharding and resume)."""
    from transformer.hf_converter import check_hf_compatible

    if args.arch_file:
        archs = read_arch_file(args.arch_file, space=space, allow_duplicates=False)
        if not archs:
            raise UserError(f"--arch_file {args.arch_file}: no archs in the file")
    else:
        archs = list(space.grid())
        if args.sample is not None:
            if not 1 <= args.sample <= len(archs):
                raise UserError(f"--sample {args.sample}: the {space.name} space has {len(archs)} archs")
            archs = random.Random(args.seed).sample(archs, args.sample)
    line_numbers = [number for number, _, _ in iter_arch_lines(args.arch_file)] if args.arch_file else None
    for index, arch in enumerate(archs):
        try:
            check_hf_compatible(arch)  # the timed model is a plain HF BERT
        except UserError as err:
            source = f"{args.arch_file}:{line_numbers[index]}" if line_numbers else f"the {space.name} space"
            raise UserError(f"{source}: {err}") from None
    if args.order == "shuffled":
        archs = archs[:]
        random.Random(f"order-{args.seed}").shuffle(archs)
    return archs


def protocol_from_args(args) -> Protocol:
    rounds = min(args.rounds, args.infer_cnt) if args.rounds >= 1 and args.infer_cnt >= 1 else args.rounds
    return Protocol(warmup=args.warmup, runs=args.infer_cnt, rounds=rounds, interleave=args.interleave,
                    timer=args.timer, threads=args.threads, batch_size=args.batch_size, seq_len=args.max_seq_length,
                    vocab_size=args.vocab_size, max_position_embeddings=args.max_position_embeddings, seed=args.seed)


def run(argv, prog: str, description: str, onnx: bool) -> int:
    """The whole stage; returns the exit code. User mistakes raise ``UserError``."""
    from tqdm import tqdm

    args = build_parser(prog, description, onnx).parse_args(argv)
    backend = "ort_dynamic_int8" if onnx else ("torch_dynamic_int8" if args.quant else "torch_fp32")
    protocol = protocol_from_args(args)
    space = space_from_args(args)
    shard = parse_shard(args.shard)
    if args.limit is not None and args.limit < 0:
        raise UserError("--limit must be >= 0")
    archs = select_archs(args, space)
    if shard is not None:
        archs = archs[shard[0]::shard[1]]
    if os.path.exists(args.save_dir) and not os.path.isdir(args.save_dir):
        raise UserError(f"--save_dir {args.save_dir}: exists and is not a directory")
    os.makedirs(args.save_dir, exist_ok=True)
    out_path = os.path.join(args.save_dir, table.table_file_name(backend, shard))

    cpus = set_cpu_affinity(args.cpu_affinity)
    apply_threads(protocol.threads)
    env = environment(backend)
    ort_fields = ({"exporter": args.exporter, "ort_quantizer": args.ort_quantizer} if onnx else {})
    fixed = dict(protocol.to_record(), backend=backend, space=space.name,
                 space_definition=space.to_dict(), **env, **ort_fields)
    expected = table.signature(fixed)
    if onnx:
        expected.pop("opset")  # known after the first export; checked against the table below
    done = table.resume_table(out_path, expected)
    todo = [arch for arch in archs if arch_key(arch) not in done]
    if args.limit is not None:
        todo = todo[:args.limit]
    already = sum(1 for arch in archs if arch_key(arch) in done)
    logger.info("%s: %d archs selected, %d already in %s, %d to measure now (threads %d, %d warm-up + %d runs, "
                "timer %s%s)", backend, len(archs), already, out_path, len(todo), protocol.threads, protocol.warmup,
                protocol.runs, protocol.timer, f", CPUs {cpus}" if cpus else "")
    start = time.perf_counter()
    try:
        with tqdm(total=len(todo), unit="arch", desc=backend, dynamic_ncols=True) as bar:
            for begin in range(0, len(todo), protocol.interleave):
                chunk = todo[begin:begin + protocol.interleave]
                prepared = [backends.prepare(arch, backend, protocol, **ort_fields) for arch in chunk]
                timings = measure([item.run for item in prepared], protocol)
                load = load_average()
                for arch, item, timing in zip(chunk, prepared, timings):
                    record = dict(fixed, arch=arch, arch_key=arch_key(arch), arch_summary=arch_summary(arch),
                                  measured_at=utc_now(), load_average=load, **item.info,
                                  **timing.statistics(protocol.timer))
                    append_jsonl(out_path, record)
                    bar.set_postfix_str(f"{arch_summary(arch)} {record['median_ms']:.2f} ms")
                bar.update(len(chunk))
                del prepared
    finally:
        if args.legacy_format and os.path.exists(out_path) and os.path.getsize(out_path):
            legacy_path = os.path.join(args.save_dir, table.table_file_name(backend, shard, legacy=True))
            table.write_legacy(legacy_path, table.read_latency_table(out_path))
            logger.info("wrote %s", legacy_path)
    logger.info("measured %d archs in %.1f s -> %s", len(todo), time.perf_counter() - start, out_path)
    return 0
