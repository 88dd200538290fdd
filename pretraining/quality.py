"""How good are the supernet's inherited weights, sub-model by sub-model?

For a fixed *ladder* of archs of a search space -- ``--ladder N`` archs from its smallest to its
largest, every dimension growing together -- the masked-LM loss of each sub-model with the
supernet's weights as they are (no fine-tuning), on held-out shard lines that pre-training never
trained on (``pretraining.data.heldout_split``; the split a supernet was trained with is recorded
in its ``data_split.json``). With ``--results`` (fine-tuned results: ``subbert.results.jsonl`` or
``subbert.results``, records with ``arch`` and ``best_acc``), the same loss for every arch found
there and the Kendall tau between loss and accuracy: -1 when the supernet ranks the archs exactly
as fine-tuning does (lower loss, higher accuracy), 0 when its ranking says nothing.

    python -m pretraining.quality --supernet OUT/final --shards SHARD_DIR --space demo_search --out OUT \\
        [--results output/kd_ptq_5/subbert.results.jsonl ...] [--ladder 6] [--max_sequences 512]

``--space`` (plus the usual range overrides) defaults to the search space matching the space the
supernet was trained with (``paper_supernet`` -> ``paper_search``, ``demo_supernet`` -> ``demo_search``).

Writes ``OUT/subnet_quality.json`` and ``OUT/subnet_quality.png`` (pre_training.py writes the ladder
part into its output directory when it finishes). Every arch sees the same batches with the same
masks; a loss is the token-weighted mean over all masked tokens, its spread the standard deviation
of the per-batch means (``batch_std``) and the standard error of their mean (``sem``).
"""

from __future__ import annotations

import argparse
import json
import math
import os

import numpy as np

from pretraining.checkpointing import QUALITY_JSON, QUALITY_PLOT, read_data_split
from pretraining.data import PretrainingDataset, heldout_split
from pretraining.masking import MaskingConfig, Vocabulary
from pretraining.shard_index import MANIFEST_NAME, VOCAB_NAME, ShardIndex, find_shards
from utils import (
    SearchSpace,
    UserError,
    add_space_arguments,
    arch_key,
    arch_summary,
    atomic_write,
    get_logger,
    load_vocab,
    make_arch,
    read_space_record,
    stage_space,
)

logger = get_logger("subnet_quality")

DEFAULT_HELDOUT_FRACTION = 0.02
# The search space whose archs a supernet trained with a named sampler space is searched in.
def search_space_name(training_space: str) -> str:
    """The search space of a named sampler space's family (itself when none is known, e.g. custom spaces)."""
    from utils import SPACE_FAMILIES

    for roles in SPACE_FAMILIES.values():
        if roles["supernet"] == training_space:
            return roles["search"]
    return training_space


def ladder(space: SearchSpace, steps: int) -> list[dict]:
    """``steps`` archs from the space's smallest to its largest, every dimension growing together:
    arch ``i`` takes grid value ``round(i * (n - 1) / (steps - 1))`` of each dimension (of its
    ``n`` values); qkv follows hidden when tied, else its own grid (kept divisible by the heads)."""
    if steps < 2:
        raise UserError(f"--ladder must be at least 2 (smallest and largest), got {steps}")

    def pick(values: list[int], i: int) -> int:
        return values[round(i * (len(values) - 1) / (steps - 1))]

    archs = []
    for i in range(steps):
        layers, hidden, ffn, heads = (pick(grid.values, i) for grid in (
            space.layer_num, space.hidden_size, space.intermediate_size, space.num_attention_heads))
        if space.qkv_size is None:
            qkv = hidden
        else:
            target = pick(space.qkv_size.values, i)
            choices = [q for q in space.qkv_size.values if q % heads == 0]
            if not choices:
                raise UserError(f"the {space.name} space has no qkv size divisible by {heads} heads")
            qkv = min(choices, key=lambda q: (abs(q - target), q))
        arch = make_arch(layers, hidden, ffn, heads, qkv)
        archs.append(space.validate(arch))
    unique = []
    for arch in archs:  # a coarse dimension repeats values: keep the ladder strictly growing
        if not unique or arch_key(arch) != arch_key(unique[-1]):
            unique.append(arch)
    return unique


# --------------------------------------------------------------------------------------
# Measuring
# --------------------------------------------------------------------------------------


def heldout_batches(shards: ShardIndex, indices: np.ndarray, vocab: Vocabulary, max_seq_length: int,
                    batch_size: int, seed: int = 0, masked_lm_prob: float = 0.15) -> list[dict]:
    """Fixed, masked batches of the held-out sequences (the same for every arch)."""
    dataset = PretrainingDataset(shards, vocab, max_seq_length, MaskingConfig(prob=masked_lm_prob), seed,
                                 indices=indices)
    return [dataset.collate([dataset[(0, p)] for p in range(start, min(start + batch_size, len(dataset)))])
            for start in range(0, len(dataset), batch_size)]


def subnet_mlm_loss(model, arch: dict, batches: list[dict], device) -> dict:
    """Inherited-weight MLM loss of one arch over ``batches`` (eval mode, no gradient)."""
    import torch
    import torch.nn.functional as F

    model.set_sample_config(arch)
    total, count, per_batch = 0.0, 0, []
    with torch.no_grad():
        for batch in batches:
            labels = batch["labels"].to(device)
            out = model(batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device),
                        token_type_ids=batch["token_type_ids"].to(device), labels=labels, mlm=True, kd=False)
            target = labels[labels >= 0]
            loss_sum = float(F.cross_entropy(out.mlm_logits.float(), target, reduction="sum"))
            total += loss_sum
            count += int(target.numel())
            per_batch.append(loss_sum / max(1, int(target.numel())))
    spread = float(np.std(per_batch, ddof=1)) if len(per_batch) > 1 else 0.0
    return {"mlm_loss": total / max(1, count), "batch_std": spread, "sem": spread / math.sqrt(len(per_batch)),
            "batches": len(per_batch), "masked_tokens": count}


def measure_archs(model, archs: list[dict], batches: list[dict], device) -> list[dict]:
    from transformer.modeling_super import count_active_parameters

    was_training = model.training
    model.eval()
    rows = []
    try:
        for arch in archs:
            row = {"arch": arch, "arch_summary": arch_summary(arch), "parameters": count_active_parameters(model, arch)}
            row.update(subnet_mlm_loss(model, arch, batches, device))
            rows.append(row)
            logger.info("%-22s %6.2fM params  held-out MLM loss %.4f (batch std %.4f, sem %.4f)", row["arch_summary"],
                        row["parameters"] / 1e6, row["mlm_loss"], row["batch_std"], row["sem"])
    finally:
        model.train(was_training)
    return rows


def load_accuracies(paths: list[str]) -> dict[str, dict]:
    """``arch_key -> {"arch", "best_acc" (mean over records), "records"}`` from results files."""
    from evaluation.results import load_fitness  # the one parser of subbert.results(.jsonl)

    merged: dict[str, list[float]] = {}
    for path in paths:
        try:
            fitness = load_fitness(path)
        except (KeyError, TypeError, ValueError) as err:
            if isinstance(err, UserError):
                raise
            raise UserError(f"--results {path}: not a results file (records need 'arch' and 'best_acc'; "
                            f"{err.__class__.__name__}: {err})") from None
        for key, value in fitness.items():
            merged.setdefault(key, []).append(value)
    return {key: {"arch": json.loads(key), "best_acc": sum(values) / len(values), "files": len(values)}
            for key, values in merged.items()}


def rank_agreement(rows: list[dict]) -> dict:
    """Kendall tau between held-out loss and fine-tuned accuracy (-1: same ranking)."""
    from scipy.stats import kendalltau

    if len(rows) < 2:
        return {"kendall_tau_loss_vs_accuracy": None, "p_value": None, "count": len(rows)}
    tau = kendalltau([row["mlm_loss"] for row in rows], [row["best_acc"] for row in rows])
    return {"kendall_tau_loss_vs_accuracy": None if math.isnan(tau.statistic) else float(tau.statistic),
            "p_value": None if math.isnan(tau.pvalue) else float(tau.pvalue), "count": len(rows)}


def quality_report(model, space: SearchSpace, ladder_steps: int, batches: list[dict], device,
                   results: dict[str, dict] | None = None, info: dict | None = None) -> dict:
    """The whole report: the ladder and, with ``results``, the archs there and the rank agreement."""
    from transformer.modeling_super import check_arch_fits
    from utils import ArchError

    report = dict(info or {})
    report.update(space=space.name, heldout_sequences=sum(len(b["input_ids"]) for b in batches))
    rows = measure_archs(model, ladder(space, ladder_steps), batches, device)
    report["ladder"] = rows
    losses = [row["mlm_loss"] for row in rows]
    report["ladder_loss_smallest_minus_largest"] = losses[0] - losses[-1]
    report["ladder_loss_non_increasing"] = all(b <= a for a, b in zip(losses, losses[1:]))
    if results:
        fitting = {}
        for key, entry in results.items():
            try:
                check_arch_fits(entry["arch"], model.config)
            except ArchError as err:
                logger.warning("results: skipping %s (%s)", arch_summary(entry["arch"]), err)
                continue
            fitting[key] = entry
        measured = measure_archs(model, [entry["arch"] for entry in fitting.values()], batches, device)
        for row, entry in zip(measured, fitting.values()):
            row["best_acc"] = entry["best_acc"]
        report["results"] = {"archs": measured, **rank_agreement(measured)}
        logger.info("Kendall tau (held-out loss vs fine-tuned accuracy) over %d arch(s): %s", len(measured),
                    report["results"]["kendall_tau_loss_vs_accuracy"])
    return report


def write_report(out_dir: str, report: dict) -> None:
    """``subnet_quality.json`` and ``subnet_quality.png`` in ``out_dir`` (atomically)."""
    os.makedirs(out_dir, exist_ok=True)
    with atomic_write(os.path.join(out_dir, QUALITY_JSON)) as handle:
        json.dump(report, handle, indent=2, sort_keys=True)
        handle.write("\n")
    plot_report(report, os.path.join(out_dir, QUALITY_PLOT))


def plot_report(report: dict, png_path: str) -> None:
    """The ladder's held-out loss against parameters (points numbered, the numbers' archs in a key
    beside the plot: arch names next to close points overlapped) and, with results, loss vs accuracy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    with_results = bool(report.get("results", {}).get("archs"))
    figure, axes = plt.subplots(1, 2 if with_results else 1, figsize=(13 if with_results else 8.5, 4.4),
                                squeeze=False, layout="constrained")
    axis = axes[0][0]
    rows = report["ladder"]
    params = [row["parameters"] / 1e6 for row in rows]
    axis.errorbar(params, [row["mlm_loss"] for row in rows], yerr=[row["sem"] for row in rows], marker="o",
                  capsize=3, linewidth=1.2)
    for number, (x, row) in enumerate(zip(params, rows), start=1):
        axis.annotate(str(number), (x, row["mlm_loss"]), textcoords="offset points", xytext=(5, 5), fontsize=8,
                      fontweight="bold")
    key = [Line2D([], [], linestyle="", marker="", label=f"{number}  {row['arch_summary']}")
           for number, row in enumerate(rows, start=1)]
    axis.legend(handles=key, title="sub-model", loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7,
                title_fontsize=8, handlelength=0, handletextpad=0, frameon=False)
    axis.set_xlabel("sub-model parameters, millions")
    axis.set_ylabel("held-out MLM loss (inherited weights)")
    axis.set_title(f"Held-out loss per sub-model ({report['space']}; bar = ±sem)", fontsize=10)
    axis.grid(alpha=0.3)
    if with_results:
        axis = axes[0][1]
        archs = report["results"]["archs"]
        axis.scatter([row["mlm_loss"] for row in archs], [row["best_acc"] for row in archs], s=30,
                     edgecolors="black", linewidths=0.5)
        tau = report["results"]["kendall_tau_loss_vs_accuracy"]
        axis.set_xlabel("held-out MLM loss (inherited weights)")
        axis.set_ylabel("fine-tuned dev accuracy (best_acc)")
        axis.set_title(f"{len(archs)} evaluated archs: Kendall tau {tau:.3f}" if tau is not None
                       else f"{len(archs)} evaluated arch(s)", fontsize=10)
        axis.grid(alpha=0.3)
    tmp = png_path + ".tmp.png"
    figure.savefig(tmp, dpi=110)
    plt.close(figure)
    os.replace(tmp, png_path)


# --------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pretraining.quality", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--supernet", required=True, help="a supernet directory (OUT/final or a checkpoint)")
    parser.add_argument("--shards", required=True, help="the generate_data.py shards the supernet was trained on")
    parser.add_argument("--out", required=True, help="directory for subnet_quality.json and subnet_quality.png")
    parser.add_argument("--results", nargs="*", default=[],
                        help="fine-tuned results (subbert.results.jsonl or subbert.results) for the Kendall tau")
    parser.add_argument("--ladder", type=int, default=6, help="archs on the ladder (default %(default)s)")
    parser.add_argument("--max_sequences", type=int, default=512, help="held-out sequences used (default %(default)s)")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--max_seq_length", type=int, default=None,
                        help="with [CLS]/[SEP] (default: the shards' max_seq_len, capped by the supernet)")
    parser.add_argument("--heldout_fraction", type=float, default=DEFAULT_HELDOUT_FRACTION,
                        help="only for supernets that do not record their split (data_split.json)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the evaluation masks")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    add_space_arguments(parser, default=None, role="search")
    parser.set_defaults(space=None)  # default: the search space matching the supernet's training space
    return parser


def _shards_fingerprint(shards_dir: str) -> str | None:
    try:
        with open(os.path.join(shards_dir, MANIFEST_NAME), encoding="utf-8") as handle:
            return json.load(handle).get("fingerprint")
    except (OSError, json.JSONDecodeError):
        return None


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    for flag, value, low in (("--ladder", args.ladder, 2), ("--max_sequences", args.max_sequences, 1),
                             ("--batch_size", args.batch_size, 1)):
        if value < low:
            raise UserError(f"{flag} must be at least {low}, got {value}")
    if not 0 < args.heldout_fraction < 1:
        raise UserError(f"--heldout_fraction must be in (0, 1), got {args.heldout_fraction}")
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        raise UserError(f"--out {args.out}: exists and is not a directory")
    for path in args.results:
        if not os.path.isfile(path):
            raise UserError(f"--results: {path}: no such results file")
    import torch

    from pretraining.distributed import pick_device
    from transformer.checkpoint import load_supernet, vocab_path
    from transformer.config import SuperBertConfig
    from utils import output_lock

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    results = load_accuracies(args.results) if args.results else None
    config = SuperBertConfig.load(args.supernet)  # one line for a missing / non-BERT directory
    shards = ShardIndex(find_shards(args.shards, "--shards"))
    split = read_data_split(args.supernet)
    if split is None:
        logger.warning("%s records no held-out split (data_split.json); using --heldout_fraction %g -- these lines "
                       "may have been trained on", args.supernet, args.heldout_fraction)
        split = {"heldout_fraction": args.heldout_fraction}
    elif split.get("shards_fingerprint") and split["shards_fingerprint"] != _shards_fingerprint(args.shards):
        logger.warning("--shards %s are not the shards the supernet was trained on; held-out lines may have been "
                       "trained on", args.shards)
    fraction = float(split["heldout_fraction"])
    if fraction <= 0:
        raise UserError(f"--supernet {args.supernet}: trained on every shard line (heldout_fraction 0); no held-out "
                        "data to measure on")
    _, heldout = heldout_split(shards, fraction)
    if len(heldout) == 0:
        raise UserError(f"--shards {args.shards}: no held-out line (fraction {fraction} of {len(shards)} sequences)")
    vocab_file = vocab_path(args.supernet) or os.path.join(args.shards, VOCAB_NAME)
    if not os.path.isfile(vocab_file):
        raise UserError(f"--supernet {args.supernet}: no vocab.txt (nor in --shards)")
    tokens = load_vocab(vocab_file)
    shard_vocab = os.path.join(args.shards, VOCAB_NAME)
    if os.path.isfile(shard_vocab) and tuple(load_vocab(shard_vocab)) != tuple(tokens):
        raise UserError(f"--shards: {shard_vocab} differs from the supernet's vocab; token ids would not match")
    space, _ = stage_space("search", args, supernet=read_space_record(args.supernet), supernet_name=args.supernet,
                           default=search_space_name(split.get("space", "demo_supernet").split("+")[0]))
    from pretraining.models import check_space_fits

    check_space_fits(space, config)
    max_seq_length = args.max_seq_length
    if max_seq_length is None:
        try:
            with open(os.path.join(args.shards, MANIFEST_NAME), encoding="utf-8") as handle:
                max_seq_length = int(json.load(handle)["max_seq_len"])
        except (OSError, json.JSONDecodeError, KeyError, ValueError):
            max_seq_length = 128
        max_seq_length = min(max_seq_length, config.max_position_embeddings)
    if max_seq_length > config.max_position_embeddings:
        raise UserError(f"--max_seq_length {max_seq_length} exceeds the supernet's max_position_embeddings "
                        f"{config.max_position_embeddings}")
    device = pick_device(args.device, 0)
    with output_lock(args.out, "quality report directory"):
        model = load_supernet(args.supernet).to(device)
        batches = heldout_batches(shards, heldout[: args.max_sequences], Vocabulary.from_tokens(tokens),
                                  max_seq_length, args.batch_size, args.seed)
        info = {"supernet": os.path.abspath(args.supernet), "shards": os.path.abspath(args.shards),
                "heldout_fraction": fraction, "max_seq_length": max_seq_length, "mask_seed": args.seed,
                "results_files": [os.path.abspath(path) for path in args.results]}
        report = quality_report(model, space, args.ladder, batches, device, results, info)
        write_report(args.out, report)
    logger.info("wrote %s and %s", os.path.join(args.out, QUALITY_JSON), os.path.join(args.out, QUALITY_PLOT))
    return 0


if __name__ == "__main__":
    from utils import run_cli

    run_cli(main)
