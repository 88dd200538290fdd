"""Checkpoints of a pre-training run, and what a resumed run needs to continue bit for bit.

``OUTPUT_DIR/step_{n}/`` (every ``--save_steps``; the last K kept) and ``OUTPUT_DIR/epoch_{e}/``
(after each epoch) are supernet directories (``save_supernet``: config.json, model.safetensors,
vocab.txt) plus

* ``training_state.pt``: optimizer, scheduler, grad-scaler and every rank's RNG state (python,
  numpy, torch, CUDA) -- plain tensors, numbers and lists only, read back with
  ``torch.load(weights_only=True)``;
* ``trainer_state.json``: the data position (epoch, optimizer step within it), the global step
  and the settings that give the position its meaning (world size, batch size, accumulation).

``OUTPUT_DIR/final/`` is the finished supernet, with ``trainer_state.json`` of the last step (no
``training_state.pt``: it is not a checkpoint). Every directory also carries the files of
``supernet_extra_files`` (the held-out split of the shards, ``data_split.json``).

A directory appears only complete (``save_supernet`` writes a staging directory and renames it).
A run killed mid-save leaves ``.<name>.<random>/`` staging or ``<name>.old/`` directories;
``remove_stale_staging`` (called by the run that holds the output lock) clears them.
``newest_intact_checkpoint`` reads checkpoints newest first and falls back past unreadable ones.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import re
import shutil

import numpy as np
import torch

from transformer.checkpoint import load_supernet, save_supernet
from utils import (SPACE_FILE, SearchSpace, UserError, atomic_write, get_logger, load_weights_only, read_jsonl,
                   space_record)

logger = get_logger(__name__)

STATE_FILE = "training_state.pt"
TRAINER_FILE = "trainer_state.json"
DATA_SPLIT_FILE = "data_split.json"
LOSS_LOG = "loss_log.jsonl"
LOSS_PLOT = "loss_curve.png"
QUALITY_JSON = "subnet_quality.json"
QUALITY_PLOT = "subnet_quality.png"
FINAL_DIR = "final"
CHECKPOINT_PATTERN = re.compile(r"^(step|epoch)_(\d+)$")
# What a killed save_supernet / atomic_write / plot leaves in the output directory.
STALE_PATTERNS = (re.compile(r"^\.(?:(?:step|epoch)_\d+|final)\..+$"),  # staging directories
                  re.compile(r"^\.(?:loss_log\.jsonl|vocab\.txt|subnet_quality\.json)\..+\.tmp$"),
                  re.compile(r"^(?:loss_curve|subnet_quality)\.png\.tmp\.png$"))
OLD_PATTERN = re.compile(r"^((?:step|epoch)_\d+|final)\.old$")


def supernet_extra_files(roles: dict[str, SearchSpace], data_split: dict) -> dict[str, bytes]:
    """THE place that decides which files, besides config.json / model.safetensors / vocab.txt,
    every supernet directory written by pre-training carries (step_N/, epoch_E/ and final/):
    ``space.json`` (``roles``: the sampler space it was trained for, under ``supernet``, and the
    search / latency spaces of its family when known -- later stages default to them) and the
    held-out split of the shards."""
    return {SPACE_FILE: (json.dumps(space_record(roles), indent=2, sort_keys=True) + "\n").encode(),
            DATA_SPLIT_FILE: (json.dumps(data_split, indent=2, sort_keys=True) + "\n").encode()}


def read_data_split(directory: str) -> dict | None:
    """The held-out split a supernet directory records (None for directories made before it)."""
    path = os.path.join(directory, DATA_SPLIT_FILE)
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as handle:
            split = json.load(handle)
    except json.JSONDecodeError as err:
        raise UserError(f"{path}: not valid JSON ({err.msg})") from None
    if not isinstance(split, dict) or "heldout_fraction" not in split:
        raise UserError(f"{path}: no heldout_fraction")
    return split


# --------------------------------------------------------------------------------------
# RNG state (as plain lists/tensors, so that weights_only loading accepts it)
# --------------------------------------------------------------------------------------


def capture_rng() -> dict:
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": [version, list(internal), gauss],
        "numpy": [name, keys.tolist(), int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


# --------------------------------------------------------------------------------------
# Checkpoint directories
# --------------------------------------------------------------------------------------


def _checkpoint_names(output_dir: str) -> list[str]:
    if not os.path.isdir(output_dir):
        return []
    return [name for name in os.listdir(output_dir)
            if CHECKPOINT_PATTERN.match(name) and os.path.isfile(os.path.join(output_dir, name, STATE_FILE))]


def list_checkpoints(output_dir: str) -> list[tuple[int, int, str]]:
    """``(global_step, kind_rank, path)`` of every checkpoint whose trainer state reads, oldest first
    (at equal steps an epoch checkpoint sorts after the step one)."""
    found = []
    for name in _checkpoint_names(output_dir):
        path = os.path.join(output_dir, name)
        try:
            info = read_trainer_info(path)
        except UserError:
            continue
        found.append((int(info["global_step"]), 1 if name.startswith("epoch") else 0, path))
    return sorted(found)


def latest_checkpoint(output_dir: str) -> str | None:
    checkpoints = list_checkpoints(output_dir)
    return checkpoints[-1][2] if checkpoints else None


@dataclasses.dataclass
class Checkpoint:
    """A checkpoint read whole: a resumed run uses exactly what was checked."""

    path: str
    info: dict
    state: dict
    model: torch.nn.Module

    @property
    def global_step(self) -> int:
        return int(self.info["global_step"])


def load_checkpoint(path: str) -> Checkpoint:
    """Read trainer state, training state and weights; a ``UserError`` names what is unreadable."""
    info = read_trainer_info(path)
    state = load_training_state(path)
    try:
        model = load_supernet(path)
    except UserError:
        raise
    except Exception as err:  # a truncated or corrupt safetensors file
        raise UserError(f"{path}: the weights cannot be read ({err.__class__.__name__}: {err})") from None
    return Checkpoint(path, info, state, model)


def newest_intact_checkpoint(output_dir: str, warn: bool = True) -> Checkpoint | None:
    """The newest checkpoint that reads completely; an unreadable one is skipped with a one-line
    warning. None when there is no checkpoint at all; a ``UserError`` when none is intact."""
    candidates = []
    failures = []
    for name in _checkpoint_names(output_dir):
        path = os.path.join(output_dir, name)
        try:
            info = read_trainer_info(path)
        except UserError as err:
            failures.append(str(err))
            if warn:
                logger.warning("%s; falling back to an older checkpoint", err)
            continue
        candidates.append((int(info["global_step"]), 1 if name.startswith("epoch") else 0, path))
    for _, _, path in sorted(candidates, reverse=True):
        try:
            return load_checkpoint(path)
        except UserError as err:
            failures.append(str(err))
            if warn:
                logger.warning("%s; falling back to an older checkpoint", err)
    if failures:
        raise UserError(f"--resume: no intact checkpoint in {output_dir} ({'; '.join(failures)}); "
                        "pass --overwrite_output_dir to start over")
    return None


def read_trainer_info(path: str) -> dict:
    file = os.path.join(path, TRAINER_FILE)
    try:
        with open(file, encoding="utf-8") as handle:
            info = json.load(handle)
    except FileNotFoundError:
        raise UserError(f"{path}: no {TRAINER_FILE}; not a training checkpoint") from None
    except json.JSONDecodeError as err:
        raise UserError(f"{file}: not valid JSON ({err.msg})") from None
    if not isinstance(info, dict) or "global_step" not in info:
        raise UserError(f"{file}: no global_step")
    return info


def _info_bytes(info: dict) -> bytes:
    return (json.dumps(info, indent=2, sort_keys=True) + "\n").encode()


def save_checkpoint(path: str, model, vocab_file: str, training_state: dict, info: dict,
                    extra_files: dict[str, bytes]) -> None:
    save_supernet(model, path, vocab_file,
                  extra_files={**extra_files, STATE_FILE: training_state, TRAINER_FILE: _info_bytes(info)})


def save_final(path: str, model, vocab_file: str, info: dict, extra_files: dict[str, bytes]) -> None:
    """The finished supernet, with the trainer state of its last step (no training state)."""
    save_supernet(model, path, vocab_file, extra_files={**extra_files, TRAINER_FILE: _info_bytes(info)})


def read_final_info(output_dir: str) -> dict | None:
    """``final/trainer_state.json`` when the run finished (None before, or for older runs)."""
    try:
        return read_trainer_info(os.path.join(output_dir, FINAL_DIR))
    except UserError:
        return None


def load_training_state(path: str) -> dict:
    file = os.path.join(path, STATE_FILE)
    if not os.path.exists(file):
        raise UserError(f"{path}: no {STATE_FILE}; not a training checkpoint")
    return load_weights_only(file, "training state")  # a corrupt file or one holding arbitrary objects: one line


def prune_step_checkpoints(output_dir: str, keep: int) -> None:
    """Delete all but the newest ``keep`` ``step_*`` checkpoints (epoch checkpoints stay)."""
    if keep <= 0:
        return
    steps = [path for _, kind, path in list_checkpoints(output_dir) if kind == 0]
    for path in steps[:-keep]:
        shutil.rmtree(path, ignore_errors=True)


def remove_run(output_dir: str) -> None:
    """Clear a previous run's checkpoints, final model, loss log, plots and quality report
    (``--overwrite_output_dir``, or a restart of a run interrupted before its first checkpoint)."""
    if not os.path.isdir(output_dir):
        return
    remove_stale_staging(output_dir)
    for name in os.listdir(output_dir):
        path = os.path.join(output_dir, name)
        if CHECKPOINT_PATTERN.match(name) or name == FINAL_DIR:
            shutil.rmtree(path, ignore_errors=True)
        elif name in (LOSS_LOG, LOSS_PLOT, QUALITY_JSON, QUALITY_PLOT):
            os.unlink(path)


def remove_stale_staging(output_dir: str) -> list[str]:
    """Clear what killed saves left behind (call only while holding the output lock): staging
    directories and temporary files are removed; ``X.old`` is renamed back to ``X`` when the kill
    came between the two renames of ``save_supernet`` (``X`` missing), else removed."""
    if not os.path.isdir(output_dir):
        return []
    removed = []
    for name in sorted(os.listdir(output_dir)):
        path = os.path.join(output_dir, name)
        old = OLD_PATTERN.match(name)
        if old and os.path.isdir(path):
            target = os.path.join(output_dir, old.group(1))
            if os.path.exists(target):
                shutil.rmtree(path, ignore_errors=True)
            else:
                os.replace(path, target)
            removed.append(name)
        elif any(pattern.match(name) for pattern in STALE_PATTERNS):
            if os.path.isdir(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                os.unlink(path)
            removed.append(name)
    if removed:
        logger.info("%s: cleared %d item(s) left by an interrupted save (%s)", output_dir, len(removed),
                    ", ".join(removed))
    return removed


def has_run(output_dir: str) -> bool:
    if not os.path.isdir(output_dir):
        return False
    return any(CHECKPOINT_PATTERN.match(name) or name in (LOSS_LOG, FINAL_DIR) for name in os.listdir(output_dir))


# --------------------------------------------------------------------------------------
# The loss log
# --------------------------------------------------------------------------------------


def truncate_loss_log(path: str, last_step: int) -> int:
    """Keep the rows of steps ``<= last_step`` (a resumed run re-logs the later ones)."""
    if not os.path.isfile(path):
        return 0
    records = [record for record in read_jsonl(path) if int(record.get("step", 0)) <= last_step]
    with atomic_write(path) as handle:
        for record in records:
            handle.write(json.dumps(record, sort_keys=True) + "\n")
    return len(records)


def plot_loss_curve(log_path: str, png_path: str) -> None:
    """Loss per step (and its parts) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_jsonl(log_path) if os.path.isfile(log_path) else []
    if not records:
        return
    steps = [record["step"] for record in records]
    figure, axis = plt.subplots(figsize=(7, 4))
    parts = [(key, label) for key, label in (("mlm_loss", "MLM"), ("kd_att_loss", "KD attention"),
                                             ("kd_rep_loss", "KD hidden")) if key in records[0]]
    axis.plot(steps, [record["loss"] for record in records], label="total", linewidth=1.2)
    if len(parts) > 1:  # with one objective its curve is the total
        for key, label in parts:
            axis.plot(steps, [record.get(key) for record in records], label=label, linewidth=0.8)
    axis.set_xlabel("optimizer step")
    axis.set_ylabel("loss")
    axis.set_title("supernet pre-training")
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    tmp = png_path + ".tmp.png"
    figure.savefig(tmp, dpi=110)
    plt.close(figure)
    os.replace(tmp, png_path)
