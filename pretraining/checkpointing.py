"""Checkpoints of a pre-training run, and what a resumed run needs to continue bit for bit.

``OUTPUT_DIR/step_{n}/`` (every ``--save_steps``; the last K kept) and ``OUTPUT_DIR/epoch_{e}/``
(after each epoch) are supernet directories (``save_supernet``: config.json, model.safetensors,
vocab.txt) plus

* ``training_state.pt``: optimizer, scheduler, grad-scaler and every rank's RNG state (python,
  numpy, torch, CUDA) -- plain tensors, numbers and lists only, read back with
  ``torch.load(weights_only=True)``;
* ``trainer_state.json``: the data position (epoch, optimizer step within it), the global step
  and the settings that give the position its meaning (world size, batch size, accumulation).

A directory appears only complete (``save_supernet`` writes a staging directory and renames it).
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil

import numpy as np
import torch

from transformer.checkpoint import save_supernet
from utils import UserError, atomic_write, get_logger, read_jsonl

logger = get_logger(__name__)

STATE_FILE = "training_state.pt"
TRAINER_FILE = "trainer_state.json"
LOSS_LOG = "loss_log.jsonl"
LOSS_PLOT = "loss_curve.png"
FINAL_DIR = "final"
CHECKPOINT_PATTERN = re.compile(r"^(step|epoch)_(\d+)$")


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


def list_checkpoints(output_dir: str) -> list[tuple[int, int, str]]:
    """``(global_step, kind_rank, path)`` of every complete checkpoint, oldest first
    (at equal steps an epoch checkpoint sorts after the step one)."""
    if not os.path.isdir(output_dir):
        return []
    found = []
    for name in os.listdir(output_dir):
        match = CHECKPOINT_PATTERN.match(name)
        path = os.path.join(output_dir, name)
        if not match or not os.path.isfile(os.path.join(path, STATE_FILE)):
            continue
        try:
            info = read_trainer_info(path)
        except UserError:
            continue
        found.append((int(info["global_step"]), 1 if match.group(1) == "epoch" else 0, path))
    return sorted(found)


def latest_checkpoint(output_dir: str) -> str | None:
    checkpoints = list_checkpoints(output_dir)
    return checkpoints[-1][2] if checkpoints else None


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


def save_checkpoint(path: str, model, vocab_file: str, training_state: dict, info: dict) -> None:
    info_bytes = (json.dumps(info, indent=2, sort_keys=True) + "\n").encode()
    save_supernet(model, path, vocab_file, extra_files={STATE_FILE: training_state, TRAINER_FILE: info_bytes})


def load_training_state(path: str) -> dict:
    file = os.path.join(path, STATE_FILE)
    try:
        return torch.load(file, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UserError(f"{path}: no {STATE_FILE}; not a training checkpoint") from None
    except Exception as err:  # a corrupt file or one holding arbitrary objects
        raise UserError(f"{file}: cannot be read as weights-only training state ({err.__class__.__name__})") from None


def prune_step_checkpoints(output_dir: str, keep: int) -> None:
    """Delete all but the newest ``keep`` ``step_*`` checkpoints (epoch checkpoints stay)."""
    if keep <= 0:
        return
    steps = [path for _, kind, path in list_checkpoints(output_dir) if kind == 0]
    for path in steps[:-keep]:
        shutil.rmtree(path, ignore_errors=True)


def remove_run(output_dir: str) -> None:
    """Clear a previous run's checkpoints, final model, loss log and plot (``--overwrite_output_dir``)."""
    if not os.path.isdir(output_dir):
        return
    for name in os.listdir(output_dir):
        path = os.path.join(output_dir, name)
        if CHECKPOINT_PATTERN.match(name) or name == FINAL_DIR:
            shutil.rmtree(path, ignore_errors=True)
        elif name in (LOSS_LOG, LOSS_PLOT):
            os.unlink(path)


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
