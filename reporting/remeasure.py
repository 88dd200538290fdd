"""Re-measure the evaluated archs so the report compares like with like: each predictor's metadata
records the table it was trained on (its protocol, reference arch and unit), and the
re-measurement uses them, one backend after the other in this process, nothing else timed meanwhile.

* A predictor of a ``baf-latency-3`` table: the archs are measured next to that table's reference,
  with its protocol, in its unit (``latency.units.measure_in_unit``): every re-measured latency is
  directly comparable with the predictor's figures (and with the budget).
* A ``baf-latency-2`` table: its protocol and its reference archs (the table itself, or an arch file
  of its recorded references), so ``latency.drift.make_comparable`` can express the re-measurement in
  the table's unit afterwards (``reporting.inputs.load_measured``).
* An original ``.tmp`` table has no unit: the archs are measured with the default protocol (raw,
  as the report says).

``--infer_cnt`` may change the number of timed runs.

    python -m reporting.remeasure --predictors conf_datasets/lat_predictor.pt conf_datasets/lat_predictor_quant.pt \\
        --arch_file evaluated.cands --save_dir latency_evaluated
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os

from utils import SearchSpace, UserError, get_logger, get_space, read_arch_file, run_cli, write_arch_file

logger = get_logger("reporting.remeasure")


def reference_source(metadata: dict, save_dir: str, backend: str) -> str | None:
    """What ``--references`` must be so the re-measurement shares the table's reference archs: the
    predictor's own table when it is still there, else an arch file of its recorded references."""
    for path in metadata.get("source_tables") or []:
        if os.path.isfile(path) and path.endswith(".jsonl"):
            return path
    keys = list(metadata.get("table_references") or {})
    if not keys:
        return None  # an original .tmp table: it has no references, nothing to share
    path = os.path.join(save_dir, f"references_{backend}.cands")
    write_arch_file(path, [json.loads(key) for key in keys])
    return path


def _with_runs(protocol, runs: int | None):
    if not runs:
        return protocol
    return dataclasses.replace(protocol, runs=runs, rounds=min(protocol.rounds, runs))


def previous_protocol_config(metadata: dict, backend: str, archs: list[dict], save_dir: str, runs: int | None):
    """The stage configuration that re-measures a predictor's table without a unit (see the docstring)."""
    from latency import drift
    from latency.dataset import StageConfig
    from latency.protocol import ROUNDS, VERSION_FIELDS, Protocol

    environment = metadata.get("table_environment") or {}
    if environment.get("protocol") == ROUNDS:
        protocol = Protocol.from_record(environment)
        source = reference_source(metadata, save_dir, backend)
        references = drift.check_reference_archs(drift.read_reference_source(source)) if source else []
        if not references:
            protocol = dataclasses.replace(protocol, drift_correction="none")
    else:  # an original .tmp: its threads, sequence, vocab when recorded; the default protocol
        fields = {f: environment[f] for f in VERSION_FIELDS[Protocol().version] if environment.get(f) is not None}
        protocol = Protocol(**fields)
        definition = metadata.get("space_definition")
        space = SearchSpace.from_dict(definition) if isinstance(definition, dict) else get_space("paper_latency")
        references = drift.default_references(space)[:1]
    ort = {f: environment[f] for f in ("exporter", "ort_quantizer") if environment.get(f) is not None}
    return StageConfig(save_dir=save_dir, backends=[backend], protocol=_with_runs(protocol, runs), archs=archs,
                       references=references, space_fields={"space": None, "space_definition": None,
                                                            "space_family": None},
                       ort_fields=dict({"exporter": "torchscript", "ort_quantizer": "fast"}, **ort))


def remeasure(predictor_path: str, archs: list[dict], save_dir: str, runs: int | None = None, predictor=None) -> str:
    """Re-measure ``archs`` for one predictor (see the module docstring; ``predictor``: already loaded);
    returns its backend."""
    from latency.dataset import measure_tables
    from latency.predictor import load_predictor
    from latency.units import measure_in_unit, unit_of_predictor

    predictor = predictor if predictor is not None else load_predictor(predictor_path)
    metadata = predictor.metadata
    backend = metadata.get("backend")
    if backend not in ("torch_fp32", "torch_dynamic_int8", "ort_dynamic_int8"):
        raise UserError(f"--predictors: {predictor_path} does not say which backend its table timed ({backend!r})")
    unit = unit_of_predictor(predictor)
    if unit is not None:
        unit = dataclasses.replace(unit, protocol=_with_runs(unit.protocol, runs))
        logger.info("re-measuring %d archs for %s in the unit of its table: %s", len(archs), backend, unit.describe())
        measure_in_unit(archs, unit, save_dir, progress=True)
        return backend
    config = previous_protocol_config(metadata, backend, archs, save_dir, runs)
    logger.info("re-measuring %d archs for %s with its table's protocol %s (the table has no reference unit)",
                len(archs), backend, config.protocol.version)
    measure_tables(config)
    return backend


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--predictors", nargs="+", required=True, help="predictor checkpoints (one per backend)")
    parser.add_argument("--arch_file", required=True, help="the evaluated archs (python -m evaluation.results)")
    parser.add_argument("--save_dir", required=True, help="where the re-measured tables go (resumed if present)")
    parser.add_argument("--infer_cnt", type=int, default=None, help="timed runs per arch (default: the table's)")
    args = parser.parse_args(argv)
    for path in args.predictors:
        if not os.path.isfile(path):
            raise UserError(f"--predictors: {path}: no such predictor checkpoint")
    if args.infer_cnt is not None and args.infer_cnt < 1:
        raise UserError(f"--infer_cnt must be >= 1, got {args.infer_cnt}")
    archs = read_arch_file(args.arch_file)
    if not archs:
        raise UserError(f"--arch_file {args.arch_file}: no archs in the file")
    from latency.predictor import load_predictor

    predictors = [load_predictor(path) for path in args.predictors]  # a bad checkpoint: one line, nothing written
    os.makedirs(args.save_dir, exist_ok=True)
    for path, predictor in zip(args.predictors, predictors):
        remeasure(path, archs, args.save_dir, args.infer_cnt, predictor)
    return 0


if __name__ == "__main__":
    run_cli(main)
