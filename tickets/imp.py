"""Iterative magnitude pruning (IMP) with rewinding to the pre-trained weights (BERT-Tickets).

Round 0 fine-tunes the dense pre-trained model (the baseline). Round r >= 1:

1. prune: from round r-1's fine-tuned ticket, remove ``prune_fraction`` of the encoder weights
   still alive, globally by magnitude (``tickets.pruning``), capped at ``target_sparsity``;
2. rewind: reload the pre-trained weights (and the seeded initial classifier) and attach the masks,
   so every surviving weight starts again from its pre-trained value;
3. fine-tune with the masks (pruned weights stay zero), keep the best dev checkpoint, evaluate it
   in fp32 and in dynamic int8 (with a verdict on whether it learned: ``evaluation.learning``; a
   round any of whose seeds did not learn is recorded so and cannot be selected), time it with the
   latency tables' protocol, and save it.

Rounds stop after ``rounds`` pruning rounds or when ``target_sparsity`` is reached. Several
``seeds`` fine-tune the same subnetwork several times (its spread); the first seed's ticket is the
one saved and the one the next round's mask is computed from.

Output directory::

    settings.json                what the run is (a resume must match it)
    tickets.jsonl                one record per finished round (appended last: the commit point)
    masks/round_RR.safetensors   the round's masks (bool, keyed by parameter name)
    subnetworks/round_RR/        the round's fine-tuned ticket: a Hugging Face directory
                                 (config.json, model.safetensors with pruned weights as zeros,
                                 vocab.txt) + ticket.json
    pretrained/                  only for a supernet --model: the extracted arch (the rewind point)

A killed run continues at the first round without a record; finished rounds are never redone.
Every round is a function of the settings and the previous round's saved ticket and masks, so a
resumed run ends equal to an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import time

import numpy as np
import torch

from evaluation.finetune import evaluate, finetune
from evaluation.learning import split_verdicts
from tickets.pruning import (
    apply_masks,
    dense_masks,
    make_permanent,
    next_pruned_total,
    prunable_count,
    prune_by_magnitude,
    pruned_count,
)
from tickets.setup import SETTINGS_NAME, TICKET_INFO, Context, RunOptions, prepare  # noqa: F401 (RunOptions: the CLI's)
from tickets.storage import load_masks, save_masks, storage_sizes
from tickets.timing import time_hf_model, to_int8
from utils import (
    UserError,
    append_jsonl,
    arch_summary,
    atomic_write,
    get_logger,
    output_lock,
    set_seed,
)
from utils.progress import progress as progress_bar

logger = get_logger("bert_tickets")

# --------------------------------------------------------------------------------------
# Models: the rewind point, a ticket, the next masks
# --------------------------------------------------------------------------------------


def _extract_pretrained(context: Context) -> None:
    """A supernet --model: write the chosen arch as a plain HF directory once (the rewind point)."""
    from transformer.checkpoint import save_hf_directory
    from transformer.checkpoint import load_supernet
    from transformer.hf_converter import to_hf_model

    if os.path.isfile(os.path.join(context.pretrained_dir, "config.json")):
        return
    supernet = load_supernet(context.options.model).eval()
    model = to_hf_model(supernet, context.supernet_arch, head="cls", num_labels=context.task.num_labels)
    with quiet_transformers():
        save_hf_directory(model, context.pretrained_dir, context.vocab_file, overwrite=True)
    logger.info("extracted %s from the supernet into %s", arch_summary(context.supernet_arch), context.pretrained_dir)


def _init_classifier(model, seed: int) -> None:
    """The task head starts from the same seeded values in every round (part of the rewind)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        weight = model.classifier.weight
        weight.copy_(torch.randn(weight.shape, generator=generator) * model.config.initializer_range)
        model.classifier.bias.zero_()


@contextlib.contextmanager
def quiet_transformers():
    """No per-file progress bars or "newly initialized classifier" warnings from transformers
    (a ticket run loads and saves a model several times per round; it says what matters itself)."""
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def load_classifier_model(directory: str, num_labels: int):
    """``BertForSequenceClassification`` from a local directory, fp32; returns ``(model, loading_info)``."""
    from transformers import BertForSequenceClassification

    with quiet_transformers():
        return BertForSequenceClassification.from_pretrained(
            directory, num_labels=num_labels, local_files_only=True, ignore_mismatched_sizes=True,
            dtype=torch.float32, output_loading_info=True)


def rewound_model(context: Context, seed: int, masks: dict[str, torch.Tensor]):
    """The pre-trained weights, the seeded classifier and ``masks`` attached: a round's start."""
    set_seed(seed)  # also seeds any tensor the checkpoint lacks (e.g. a pooler) the same way each round
    model, info = load_classifier_model(context.pretrained_dir, context.task.num_labels)
    fresh = sorted(key for key in info.get("missing_keys", ()) if not key.startswith("classifier."))
    if fresh:
        logger.debug("%s lacks %d tensor(s), seeded fresh: %s", context.pretrained_dir, len(fresh), ", ".join(fresh[:4]))
    _init_classifier(model, seed)
    return apply_masks(model, masks)


def _metrics_record(results) -> dict:
    return {name: dict(result.metrics, primary=result.primary) for name, result in results.items()}


def finetune_ticket(context: Context, masks: dict[str, torch.Tensor], seed: int):
    """Rewind, fine-tune with ``masks``, keep the best dev checkpoint; evaluate fp32 and int8.
    Returns ``(model with the masks attached, per-seed record)``."""
    task, data = context.task, context.data
    config = context.finetune_configs[seed]
    model = rewound_model(context, seed, masks)
    dev_name, dev = data.primary_dev
    outcome = finetune(model, data.train, dev, task, config, context.device)
    model.load_state_dict(outcome.best_state)
    fp32 = {name: outcome.best if name == dev_name else
            evaluate(model, split, task, config.eval_batch_size, context.device) for name, split in data.dev.items()}
    model.to("cpu").eval()
    int8_model, _converted = to_int8(make_permanent(_copy(model)))
    int8 = {name: evaluate(int8_model, split, task, config.eval_batch_size, "cpu") for name, split in data.dev.items()}
    verdict = fp32[dev_name].verdict
    record = {"seed": seed, "dev_fp32": _metrics_record(fp32), "dev_int8": _metrics_record(int8),
              "best_step": outcome.best_step, "train_steps": outcome.steps,
              "evaluations": outcome.evaluations, "train_seconds": outcome.train_seconds,
              "learning": {"fp32": split_verdicts(fp32), "int8": split_verdicts(int8)},
              "learned": verdict.learned, "not_learned_reason": dataclasses.replace(verdict, split=dev_name).reason}
    return model, record


def _copy(model):
    import copy

    return copy.deepcopy(model)


def save_ticket(plain, directory: str, vocab_file: str, info: dict) -> None:
    """The ticket (pruning made permanent: zeros stored) as a Hugging Face directory + ticket.json."""
    from transformer.checkpoint import save_hf_directory

    with quiet_transformers():
        save_hf_directory(plain, directory, vocab_file, overwrite=True)
    with atomic_write(os.path.join(directory, TICKET_INFO)) as handle:
        json.dump(info, handle, indent=2, sort_keys=True)
        handle.write("\n")


def masks_for_round(context: Context, round_index: int, target_total: int | None) -> dict[str, torch.Tensor]:
    """Round 0: dense. Round r: the magnitude pruning of round r-1's saved ticket to
    ``target_total`` pruned weights. Written to masks/round_RR.safetensors."""
    if round_index == 0:
        model, _ = load_classifier_model(context.pretrained_dir, context.task.num_labels)
        masks = dense_masks(model, context.options.prune_pooler)
        total = prunable_count(model, context.options.prune_pooler)
    else:
        previous_dir = context.ticket_dir(round_index - 1)
        if not os.path.isfile(os.path.join(previous_dir, "config.json")):
            raise UserError(f"{previous_dir}: round {round_index - 1}'s ticket is missing; cannot compute round "
                            f"{round_index}'s masks (restore it or use another --output_dir)")
        previous_masks, _ = load_masks(context.mask_path(round_index - 1))
        model, _ = load_classifier_model(previous_dir, context.task.num_labels)
        total = prunable_count(model, context.options.prune_pooler)
        masks = prune_by_magnitude(model, previous_masks, target_total)
    save_masks(context.mask_path(round_index), masks, {
        "round": round_index, "pruned_params": pruned_count(masks), "encoder_params": total,
        "prune_fraction": context.options.prune_fraction, "schedule": context.options.schedule,
        "seed": context.options.seeds[0]})
    return masks


# --------------------------------------------------------------------------------------
# Rounds
# --------------------------------------------------------------------------------------


def _mean_metrics(per_seed: list[dict], key: str) -> dict:
    splits = per_seed[0][key]
    return {split: {metric: float(np.mean([seed[key][split][metric] for seed in per_seed]))
                    for metric in values} for split, values in splits.items()}


def _std(values: list[float]) -> float | None:
    return float(np.std(values, ddof=1)) if len(values) > 1 else None


def _latency_fields(latency: dict | None) -> dict:
    fields = {}
    for precision, backend in (("fp32", "torch_fp32"), ("int8", "torch_dynamic_int8")):
        stats = latency[backend] if latency else None
        fields[f"latency_ms_{precision}"] = stats["median_ms"] if stats else None
        fields[f"latency_p10_ms_{precision}"] = stats["p10_ms"] if stats else None
        fields[f"latency_p90_ms_{precision}"] = stats["p90_ms"] if stats else None
        fields[f"latency_spread_pct_{precision}"] = (
            100.0 * (stats["p90_ms"] - stats["p10_ms"]) / stats["median_ms"] if stats else None)
    return fields


def run_round(context: Context, round_index: int, target_total: int | None) -> dict:
    """One round, start to finish; returns its record (not yet appended)."""
    wall_start, cpu_start = time.perf_counter(), time.process_time()
    masks = masks_for_round(context, round_index, target_total)
    per_seed, ticket = [], None
    for position, seed in enumerate(context.options.seeds):
        model, record = finetune_ticket(context, masks, seed)
        per_seed.append(record)
        if position == 0:
            ticket = model
        else:
            del model
    dev_name = next(iter(context.task.dev_files))
    encoder_params = sum(mask.numel() for mask in masks.values())
    pruned = pruned_count(masks)
    plain = make_permanent(_copy(ticket))
    total_params = sum(param.numel() for param in plain.parameters())
    nonzero = int(sum(int(torch.count_nonzero(param)) for param in plain.parameters()))
    primaries = {precision: [seed[f"dev_{precision}"][dev_name]["primary"] for seed in per_seed]
                 for precision in ("fp32", "int8")}
    ticket_dir = context.ticket_dir(round_index)
    record = {
        "round": round_index,
        "task_name": context.task.name,
        "dev_split": dev_name,
        "model": context.options.model,
        "arch": context.settings["arch"],
        "arch_summary": arch_summary(context.settings["arch"]),
        "seeds": list(context.options.seeds),
        "n_seeds": len(context.options.seeds),
        "mask_seed": context.options.seeds[0],
        "prune_fraction": context.options.prune_fraction,
        "schedule": context.options.schedule,
        "target_sparsity": context.options.target_sparsity,
        "pruned_set": "encoder Linear weights" + (" + pooler dense weight" if context.options.prune_pooler else ""),
        "pruned_params": pruned,
        "encoder_params": encoder_params,
        "sparsity_pct": 100.0 * pruned / encoder_params,
        "total_params": total_params,
        "nonzero_params": nonzero,
        "sparsity_pct_total": 100.0 * (total_params - nonzero) / total_params,
        "dev_fp32": _mean_metrics(per_seed, "dev_fp32"),
        "dev_int8": _mean_metrics(per_seed, "dev_int8"),
        "dev_primary_fp32": float(np.mean(primaries["fp32"])),
        "dev_primary_fp32_std": _std(primaries["fp32"]),
        "dev_primary_int8": float(np.mean(primaries["int8"])),
        "dev_primary_int8_std": _std(primaries["int8"]),
        "per_seed": per_seed,
        # a round whose fine-tunes did not learn (fp32, primary split; evaluation.learning) cannot be selected
        "learned": all(seed["learned"] for seed in per_seed),
        "not_learned_seeds": [seed["seed"] for seed in per_seed if not seed["learned"]],
        "not_learned_reason": next((seed["not_learned_reason"] for seed in per_seed if not seed["learned"]), None),
        "max_seq_length": context.max_seq_length,
        "train_examples": len(context.data.train),
        "dev_examples": {name: len(split) for name, split in context.data.dev.items()},
        "hparams": context.settings["hparams"],
        "device": str(context.device),
        "mask_file": os.path.relpath(context.mask_path(round_index), context.output_dir),
        "ticket_dir": os.path.relpath(ticket_dir, context.output_dir),
    }
    record.update(storage_sizes(plain, masks))
    save_ticket(plain, ticket_dir, context.vocab_file,
                {key: record[key] for key in ("round", "task_name", "arch", "mask_seed", "pruned_params",
                                              "encoder_params", "sparsity_pct", "dev_primary_fp32", "mask_file")})
    latency = time_hf_model(plain, context.protocol) if context.protocol is not None else None
    record.update(_latency_fields(latency))
    record["latency"] = latency
    record["latency_kernel"] = "dense: the pruned zeros are multiplied like any weight"
    record["round_wall_seconds"] = time.perf_counter() - wall_start
    record["round_cpu_seconds"] = time.process_time() - cpu_start
    return record


def _goal(context: Context, records: list[dict]) -> int | None:
    """Pruned weights of the next round, or None when the run is finished."""
    options = context.options
    next_round = len(records)
    if next_round == 0:
        return 0
    if options.rounds is not None and next_round > options.rounds:
        return None
    last = records[-1]
    total = last["encoder_params"]
    if options.target_sparsity is not None and last["pruned_params"] >= int(options.target_sparsity * total + 0.5):
        return None
    if last["pruned_params"] >= total:
        return None
    return next_pruned_total(last["pruned_params"], total, options.prune_fraction, options.target_sparsity,
                             options.schedule)


def run(options: RunOptions) -> list[dict]:
    """The whole IMP run (resuming an existing one); returns every round's record."""
    context, records = prepare(options)
    with output_lock(context.output_dir, "ticket output directory"):
        with atomic_write(os.path.join(context.output_dir, SETTINGS_NAME)) as handle:
            json.dump(context.settings, handle, indent=2, sort_keys=True)
            handle.write("\n")
        if context.supernet_arch is not None:
            _extract_pretrained(context)
        if records:
            logger.info("resuming: %d round(s) done (last sparsity %.1f %%)", len(records), records[-1]["sparsity_pct"])
        planned = None if options.rounds is None else options.rounds + 1
        progress = progress_bar(total=planned, initial=len(records), desc="ticket rounds", unit="round", every=0)
        while (goal := _goal(context, records)) is not None:
            record = run_round(context, len(records), goal)
            append_jsonl(context.records_path, record)
            records.append(record)
            progress.update(1)
            logger.info("round %d: sparsity %.1f %% of %d encoder weights, dev %s fp32 %.4f int8 %.4f, "
                        "latency fp32 %s int8 %s ms, %.0f s CPU", record["round"], record["sparsity_pct"],
                        record["encoder_params"], record["dev_split"], record["dev_primary_fp32"],
                        record["dev_primary_int8"], _fmt(record["latency_ms_fp32"]), _fmt(record["latency_ms_int8"]),
                        record["round_cpu_seconds"])
            if not record["learned"]:
                logger.warning("round %d did not learn (seed(s) %s): %s; it cannot be selected", record["round"],
                               ", ".join(map(str, record["not_learned_seeds"])), record["not_learned_reason"])
        progress.close()
    return records


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"
