"""Latency predictor (stage 4): train an MLP on a latency table and save one self-describing
checkpoint.

    python latency_predictor.py --lat_dataset_path conf_datasets/lat_torch_dynamic_int8.jsonl \\
        --ckpt_path conf_datasets/lat_predictor_quant.pt [--recipe default|original] [--seed 0]

Reads our JSONL tables or the original ``lat_.tmp`` / ``lat_quant_.tmp`` unchanged (several paths:
the shards of one grid, expressed in the first one's unit). The checkpoint records the table's unit
(``metadata["table_unit"]``: its reference arch and that arch's latency at the table's start), so a
predicted millisecond, a search's budget and the finalists' measurement all mean the same thing.
Holds the checkpoint's directory as its one writer; refused while a search reads its predictors.
Seeded 80/10/10 split; prints and writes test RMSE (ms), MAPD (%) and Kendall tau to ``<ckpt>.metrics.json`` and a predicted-vs-measured PNG to ``<ckpt>.png``.

Other stages use the checkpoint through::

    from latency.predictor import load_predictor
    p = load_predictor("conf_datasets/lat_predictor_quant.pt")
    p.predict(arch) -> ms;  p.predict_many(archs) -> numpy array;  p.metadata -> dict
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os

from latency.drift import drift_summary, reference_values
from latency.noise import second_difference_noise
from latency.predictor import RECIPES, LatencyPredictor, plot_predictions, train_predictor
from latency.predictor.lock import writing
from latency.table import (check_consistent, check_writable, read_latency_table, table_environment, table_pairs,
                           table_space)
from latency.units import rescale_to_unit
from utils import UserError, arch_summary, atomic_write, get_logger, get_space, run_cli

__all__ = ["LatencyPredictor", "main"]

logger = get_logger("latency_predictor")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="latency_predictor.py", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--lat_dataset_path", nargs="+", required=True,
                        help="latency table(s): our JSONL or the original <arch>\\t<ms> .tmp; several = one table")
    parser.add_argument("--ckpt_path", required=True, help="output checkpoint (.pt); metrics and PNG go next to it")
    parser.add_argument("--recipe", choices=sorted(RECIPES), default="default",
                        help="default: ours; original: the authors' 4->2000x4->1 MLP, Adam 1e-5, 5000 steps")
    parser.add_argument("--seed", type=int, default=0, help="seed of the split and of the initial weights")
    parser.add_argument("--space", default=None,
                        help="check every arch against this named space (default: the space recorded in the "
                             "table, else paper_latency for an original .tmp table)")
    parser.add_argument("--backend", default=None,
                        help="backend name to record when the table does not say (original .tmp files named otherwise)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads for training (the model is small)")
    override = parser.add_argument_group("recipe overrides")
    for flag, kind in (("max_steps", int), ("lr", float), ("hidden_dim", int), ("hidden_layers", int),
                       ("batch_size", int), ("patience", int), ("eval_every", int), ("line_l2", float)):
        override.add_argument(f"--{flag}", type=kind, default=None)
    override.add_argument("--no_line_effects", action="store_true", help="train the smooth MLP alone")
    parser.add_argument("--plot_path", default=None, help="PNG path (default <ckpt_path>.png)")
    parser.add_argument("--no_plot", action="store_true")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def resolve_recipe(args):
    recipe = RECIPES[args.recipe]
    changes = {name: getattr(args, name) for name in ("max_steps", "lr", "hidden_dim", "hidden_layers", "batch_size",
                                                       "patience", "eval_every", "line_l2")
               if getattr(args, name) is not None}
    for name, value in changes.items():
        if name not in ("lr", "line_l2", "patience", "batch_size") and value < 1:
            raise UserError(f"--{name} must be >= 1, got {value}")
        if name in ("patience", "batch_size", "line_l2") and value < 0:
            raise UserError(f"--{name} must be >= 0, got {value}")
        if name == "lr" and not value > 0:
            raise UserError(f"--lr must be > 0, got {value}")
    if args.no_line_effects:
        changes["line_effects"] = False
    return dataclasses.replace(recipe, **changes)


def main(argv=None) -> int:
    import torch

    args = build_parser().parse_args(argv)
    recipe = resolve_recipe(args)
    if args.threads < 1:
        raise UserError("--threads must be >= 1")
    if os.path.isdir(args.ckpt_path):
        raise UserError(f"--ckpt_path {args.ckpt_path}: is a directory, expected a file path")
    torch.set_num_threads(args.threads)
    check_writable(os.path.dirname(os.path.abspath(args.ckpt_path)), "--ckpt_path", "nothing was trained")
    if args.plot_path and not args.no_plot:
        check_writable(os.path.dirname(os.path.abspath(args.plot_path)), "--plot_path", "nothing was trained")
    with writing(os.path.dirname(os.path.abspath(args.ckpt_path))):  # one writer; never while searches read it
        return train_and_write(args, recipe)


def read_tables(args):
    """The table(s) in one unit, their drift, space and backend (every check before training)."""
    tables = [read_latency_table(path) for path in args.lat_dataset_path]
    check_consistent([record for table in tables for record in list(table) + table.references])  # one machine, protocol
    records, unit = rescale_to_unit(tables)
    drifts = {}
    for path, table in zip(args.lat_dataset_path, tables):
        drifts[os.path.abspath(path)] = drift = drift_summary(table)
        if drift["message"]:
            logger.warning("%s", drift["message"])
    space = get_space(args.space) if args.space else table_space(records)
    if space is None:
        space = get_space("paper_latency")  # the original tables' grid
    for record in records:
        space.validate(record["arch"], where=record["_where"])
    backends = {record.get("backend", "unknown") for record in records}
    backend = args.backend or (backends.pop() if len(backends) == 1 else "unknown")
    references = {}
    for table in tables:
        references.update(reference_values(table))
    if unit is not None:
        references = {unit.reference_key: unit.base_ms}  # the shards' references, in the first one's unit
    return records, unit, drifts, space, backend, references


def train_and_write(args, recipe) -> int:
    records, unit, drifts, space, backend, references = read_tables(args)
    noise = second_difference_noise(table_pairs(records))
    metadata = {
        "backend": backend,
        "source_table": ", ".join(os.path.abspath(path) for path in args.lat_dataset_path),
        "source_tables": [os.path.abspath(path) for path in args.lat_dataset_path],
        "table_environment": table_environment(records),
        "space": space.name,
        "space_definition": space.to_dict(),
        # the table's family (search / latency / supernet spaces), so the searcher can default to it
        "space_family": records[0].get("space_family"),
        "target_field": "median_ms",
        "table_records": len(records),
        "table_noise": noise,
        "recipe_name": args.recipe,
        "table_drift": drifts,
        "table_references": references,
        # what a predicted millisecond is (None: the table has no unit, e.g. an original .tmp)
        "table_unit": unit.to_dict() if unit is not None else None,
        "unit": unit.describe() if unit is not None else "raw ms of the table (no reference unit)",
    }
    logger.info("%d records (%s, space %s); unit: %s; table noise (second differences) %.2f %% per point",
                len(records), backend, space.name, metadata["unit"], noise["median_abs_pct"] or float("nan"))
    predictor, data, metrics = train_predictor(records, recipe, seed=args.seed, metadata=metadata,
                                               progress=not args.quiet)
    test = metrics["test"]
    logger.info("test: RMSE %.4f ms, MAPD %.3f %%, Kendall tau %.4f (n=%d); val MAPD %.3f %%; %.1f s, %d steps",
                test["rmse_ms"], test["mapd_pct"], test["kendall_tau"], test["n"], metrics["val"]["mapd_pct"],
                metrics["train_seconds"], metrics["steps_run"])
    write_outputs(args, predictor, data, metrics, metadata)
    print(json.dumps({"test_rmse_ms": test["rmse_ms"], "test_mapd_pct": test["mapd_pct"],
                      "train_mapd_pct": metrics["train_mapd_pct"], "val_mapd_pct": metrics["val_mapd_pct"],
                      "test_kendall_tau": test["kendall_tau"], "test_n": test["n"],
                      "train_seconds": metrics["train_seconds"], "unit": metadata["unit"]}))
    return 0


def write_outputs(args, predictor, data, metrics: dict, metadata: dict) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(args.ckpt_path)), exist_ok=True)
    predictor.save(args.ckpt_path)
    report = dict(metrics, backend=metadata["backend"], recipe=args.recipe, space=metadata["space"],
                  table_noise=metadata["table_noise"], source_tables=metadata["source_tables"],
                  table_drift=metadata["table_drift"], unit=metadata["unit"], table_unit=metadata["table_unit"])
    with atomic_write(args.ckpt_path + ".metrics.json") as handle:
        json.dump(report, handle, indent=2, sort_keys=True)
        handle.write("\n")
    if not args.no_plot:
        plot_path = args.plot_path or args.ckpt_path + ".png"
        test = metrics["test"]
        archs = [data.archs[i] for i in data.test]
        unit = metadata["table_unit"]
        plot_predictions(plot_path, data.ms[data.test], predictor.predict_many(archs),
                         f"{metadata['backend']} ({args.recipe}): test MAPD {test['mapd_pct']:.2f} %, "
                         f"Kendall tau {test['kendall_tau']:.3f}, n={test['n']}"
                         + (f"; unit: reference {arch_summary(unit['reference'])} = {unit['base_ms']:.4g} ms at the "
                            "table's start" if unit else ""),
                         unit="ms, table unit" if unit else "ms")
        logger.info("wrote %s, %s.metrics.json and %s", args.ckpt_path, args.ckpt_path, plot_path)


if __name__ == "__main__":
    run_cli(main)
