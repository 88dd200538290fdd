"""Supernet checkpoint directories in ``save_pretrained`` shape: ``config.json`` (with
``model_type: superbert``), ``model.safetensors`` and ``vocab.txt``.

``load_supernet`` also accepts a plain Hugging Face BERT directory (converted by name through
``hf_converter``), so every stage's ``--model`` takes either kind. ``save_hf_directory`` writes an
extracted plain model's directory the same atomic way.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile

import torch

from transformer.config import CONFIG_NAME, SuperBertConfig
from transformer.modeling_super import SuperBertForPreTraining, SuperBertForSequenceClassification
from utils import UserError, get_logger

logger = get_logger(__name__)

WEIGHTS_NAME = "model.safetensors"
VOCAB_NAME = "vocab.txt"


def save_supernet(model, directory: str, vocab_file: str | None = None, extra_files: dict | None = None) -> None:
    """Write a supernet directory atomically (a temporary sibling directory renamed into place)."""
    from safetensors.torch import save_file

    directory = os.path.abspath(directory)
    parent = os.path.dirname(directory)
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix="." + os.path.basename(directory) + ".", dir=parent)
    try:
        model.config.save(staging)
        state = {key: value.detach().contiguous().cpu() for key, value in model.state_dict().items()}
        save_file(state, os.path.join(staging, WEIGHTS_NAME), metadata={"format": "pt"})
        if vocab_file:
            shutil.copyfile(vocab_file, os.path.join(staging, VOCAB_NAME))
        for name, payload in (extra_files or {}).items():
            if isinstance(payload, (bytes, bytearray)):
                with open(os.path.join(staging, name), "wb") as handle:
                    handle.write(payload)
            else:
                torch.save(payload, os.path.join(staging, name))
        if os.path.exists(directory):
            old = directory + ".old"
            shutil.rmtree(old, ignore_errors=True)
            os.replace(directory, old)
            os.replace(staging, directory)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, directory)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def is_supernet_dir(directory: str) -> bool:
    path = os.path.join(directory, CONFIG_NAME)
    if not os.path.isfile(path):
        return False
    with open(path, encoding="utf-8") as handle:
        try:
            return json.load(handle).get("model_type") == "superbert"
        except json.JSONDecodeError:
            return False


def load_supernet(directory: str, model_class=SuperBertForPreTraining, num_labels: int | None = None):
    """Load a supernet (ours) or a plain HF BERT directory as ``model_class``.

    ``SuperBertForSequenceClassification`` gets the encoder weights and a fresh classifier
    (``num_labels`` outputs) unless the checkpoint already holds a matching classifier.
    """
    from transformer.hf_converter import load_safetensors, read_hf_state_dict, supernet_from_hf

    config = SuperBertConfig.load(directory)  # one-line errors for missing/non-BERT dirs
    if num_labels is not None:
        config.num_labels = num_labels
    if is_supernet_dir(directory):
        path = os.path.join(directory, WEIGHTS_NAME)
        state = load_safetensors(path) if os.path.isfile(path) else read_hf_state_dict(directory)
    else:
        state = supernet_from_hf(directory, config).state_dict()
    model = model_class(config)
    own = model.state_dict()
    usable = {key: value for key, value in state.items() if key in own and own[key].shape == value.shape}
    missing = sorted(set(own) - set(usable))
    model.load_state_dict(usable, strict=False)
    expected_fresh = ("classifier.",) if model_class is SuperBertForSequenceClassification else ()
    unexpected_missing = [key for key in missing if not key.startswith(expected_fresh)]
    if unexpected_missing:
        raise UserError(f"{directory}: checkpoint lacks {len(unexpected_missing)} supernet tensor(s), "
                        f"e.g. {unexpected_missing[0]}")
    return model


def vocab_path(directory: str) -> str | None:
    path = os.path.join(directory, VOCAB_NAME)
    return path if os.path.isfile(path) else None


def save_hf_directory(hf_model, output: str, vocab_file: str | None, overwrite: bool = False,
                      tokenizer=None) -> None:
    """``save_pretrained`` into a staging directory, then rename: no half-written output. With a
    ``tokenizer``, its files (vocab.txt, tokenizer.json, tokenizer_config.json with the casing) go
    along, so ``AutoTokenizer.from_pretrained(output)`` rebuilds the evaluation's tokenizer."""
    output = os.path.abspath(output)
    if os.path.exists(output) and os.listdir(output) and not overwrite:
        raise UserError(f"--output: {output} exists and is not empty (pass --overwrite to replace it)")
    parent = os.path.dirname(output)
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix="." + os.path.basename(output) + ".", dir=parent)
    try:
        hf_model.save_pretrained(staging, safe_serialization=True)
        if vocab_file:
            shutil.copyfile(vocab_file, os.path.join(staging, "vocab.txt"))
        if tokenizer is not None:
            tokenizer.save_pretrained(staging)
            if not vocab_file:  # transformers 5 writes tokenizer.json only; our readers take vocab.txt
                ordered = sorted(tokenizer.get_vocab().items(), key=lambda item: item[1])
                with open(os.path.join(staging, "vocab.txt"), "w", encoding="utf-8") as handle:
                    handle.write("".join(token + "\n" for token, _ in ordered))
        if os.path.exists(output):
            shutil.rmtree(output)
        os.replace(staging, output)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
