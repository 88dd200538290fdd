"""Re-measure the evaluated archs with the protocol of the predictors' own tables, so the report
compares like with like: each predictor's metadata records the protocol its table was measured
with (threads, batch, sequence, vocab, warm-up, runs, rounds, timer); the re-measurement uses it
unchanged (``--infer_cnt`` may raise the runs), one backend after the other in this process, with
nothing else timed meanwhile, and with the same reference archs as the table (its anchor and
checkpoints), so ``latency.drift.make_comparable`` can express the re-measurement in the table's unit.

    python -m reporting.remeasure --predictors conf_datasets/lat_predictor.pt conf_datasets/lat_predictor_quant.pt \\
        --arch_file evaluated.cands --save_dir latency_evaluated
"""

from __future__ import annotations

import argparse
import os

from utils import UserError, get_logger, run_cli

logger = get_logger("reporting.remeasure")

# Protocol fields of a table and the latency stage's flag for each.
PROTOCOL_FLAGS = (("threads", "--threads"), ("batch_size", "--batch_size"), ("seq_len", "--max_seq_length"),
                  ("vocab_size", "--vocab_size"), ("max_position_embeddings", "--max_position_embeddings"),
                  ("warmup", "--warmup"), ("runs", "--infer_cnt"), ("rounds", "--rounds"),
                  ("interleave", "--interleave"), ("timer", "--timer"), ("drift_correction", "--drift_correction"),
                  ("remeasure_cap", "--remeasure_cap"), ("max_round_spread_pct", "--max_round_spread_pct"),
                  ("max_residual_pct", "--max_residual_pct"), ("stable_pct", "--stable_pct"))


def stage_arguments(metadata: dict, infer_cnt: int | None = None) -> list[str]:
    """Latency-stage flags that reproduce the protocol recorded in a predictor's metadata."""
    environment = metadata.get("table_environment") or {}
    argv = []
    for field, flag in PROTOCOL_FLAGS:
        value = environment.get(field)
        if field == "runs" and infer_cnt:
            value = infer_cnt
        if value is not None:
            argv += [flag, str(value)]
    for field in ("exporter", "ort_quantizer"):
        if environment.get(field) is not None:
            argv += [f"--{field}", str(environment[field])]
    return argv


def reference_source(metadata: dict, save_dir: str, backend: str) -> str | None:
    """What ``--references`` must be so the re-measurement shares the table's reference archs: the
    predictor's own table when it is still there, else an arch file of its recorded references."""
    import json

    from utils import write_arch_file

    for path in metadata.get("source_tables") or []:
        if os.path.isfile(path) and path.endswith(".jsonl"):
            return path
    keys = list(metadata.get("table_references") or {})
    if not keys:
        return None  # an original .tmp table: it has no references, nothing to share
    path = os.path.join(save_dir, f"references_{backend}.cands")
    write_arch_file(path, [json.loads(key) for key in keys])
    return path


def main(argv=None) -> int:
    from latency.dataset import run as run_stage
    from latency.predictor import load_predictor

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--predictors", nargs="+", required=True, help="predictor checkpoints (one per backend)")
    parser.add_argument("--arch_file", required=True, help="the evaluated archs (python -m evaluation.results)")
    parser.add_argument("--save_dir", required=True, help="where the re-measured tables go (resumed if present)")
    parser.add_argument("--infer_cnt", type=int, default=None, help="timed runs per arch (default: the table's)")
    args = parser.parse_args(argv)
    plans = []
    for path in args.predictors:
        if not os.path.isfile(path):
            raise UserError(f"--predictors: {path}: no such predictor checkpoint")
        metadata = load_predictor(path).metadata
        backend = metadata.get("backend")
        if backend not in ("torch_fp32", "torch_dynamic_int8", "ort_dynamic_int8"):
            raise UserError(f"--predictors: {path} does not say which backend its table timed ({backend!r})")
        flags = stage_arguments(metadata, args.infer_cnt)
        os.makedirs(args.save_dir, exist_ok=True)
        source = reference_source(metadata, args.save_dir, backend)
        flags += ["--references", source] if source else ["--references", "none", "--drift_correction", "none"]
        plans.append((path, backend, flags))
    for path, backend, flags in plans:
        logger.info("re-measuring %s for %s with its table's protocol: %s", args.arch_file, backend, " ".join(flags))
        stage_argv = ["--save_dir", args.save_dir, "--arch_file", args.arch_file] + flags
        if backend == "torch_dynamic_int8":
            stage_argv.append("--quant")
        run_stage(stage_argv, prog="reporting.remeasure", description="", onnx=backend == "ort_dynamic_int8")
    return 0


if __name__ == "__main__":
    run_cli(main)
