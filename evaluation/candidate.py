"""Evaluate one candidate arch: extract -> fine-tune -> evaluate fp32 -> (ptq) quantize -> evaluate int8.

``quant_scheme``:

* ``None``: the fp32 baseline (``superbert_run_en_classifier_fp.py``); ``best_acc`` is fp32.
* ``torch_dynamic`` (default of the ptq evaluator): the fine-tuned sub-model gets exactly the
  latency tables' int8 scheme, PyTorch dynamic int8 on every ``nn.Linear`` (the count is
  checked), and is evaluated again on CPU; ``best_acc`` is the int8 metric.
* ``fakequant``: the original's parity scheme -- the fine-tuned sub-model is written back into
  the supernet, every supernet tensor is min-max fake-quantized (ranges from whole tensors) and
  the sub-model is re-extracted and evaluated; ``best_acc`` is that metric.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import re
import time

import torch

from evaluation.data import EncodedSplit
from evaluation.finetune import EvalResult, FinetuneConfig, evaluate, finetune
from glue.tasks import TaskSpec
from quantize_utils import fake_quantize_model, int8_model_size_bytes, quantize_dynamic_int8, select_quantized_engine
from transformer.hf_converter import to_hf_model, write_submodel_into_supernet
from transformer.modeling_super import count_active_parameters
from utils import arch_key, arch_summary

INT8_WEIGHTS = "model_int8.pt"
FAKEQUANT_WEIGHTS = "model_fakequant.pt"


@dataclasses.dataclass
class TaskData:
    """A task tokenised once: the training split and the dev splits (the first is primary)."""

    task: TaskSpec
    train: EncodedSplit
    dev: dict[str, EncodedSplit]

    @property
    def primary_dev(self) -> tuple[str, EncodedSplit]:
        return next(iter(self.dev.items()))


def _reset_classifier(model, seed: int, std: float) -> None:
    """A fresh classifier per (arch, seed), independent of evaluation order (so a resumed run
    equals an uninterrupted one)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        weight = model.classifier.weight
        weight.copy_(torch.randn(weight.shape, generator=generator) * std)
        model.classifier.bias.zero_()


def _eval_all(model, data: TaskData, batch_size: int, device) -> dict[str, EvalResult]:
    return {name: evaluate(model, split, data.task, batch_size, device) for name, split in data.dev.items()}


def _metrics_record(results: dict[str, EvalResult]) -> dict:
    return {name: dict(result.metrics, primary=result.primary) for name, result in results.items()}


def _model_dir_name(task: str, seed: int, arch: dict) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{task}_seed{seed}_{arch_summary(arch)}")


def evaluate_candidate(supernet, arch: dict, data: TaskData, config: FinetuneConfig, device,
                       quant_scheme: str | None, save_dir: str | None = None,
                       vocab_file: str | None = None) -> dict:
    """Run the whole per-arch protocol and return the JSONL record (see ``evaluation.results``)."""
    started = time.perf_counter()
    task = data.task
    torch.manual_seed(config.seed)  # dropout masks
    model = to_hf_model(supernet, arch, head="cls")
    _reset_classifier(model, config.seed, supernet.config.initializer_range)
    dev_name, dev = data.primary_dev
    outcome = finetune(model, data.train, dev, task, config, device)
    model.load_state_dict(outcome.best_state)
    # the primary dev set was evaluated on exactly these weights during training; the others now
    fp32 = {name: outcome.best if name == dev_name else evaluate(model, split, task, config.eval_batch_size, device)
            for name, split in data.dev.items()}
    model.to("cpu").eval()
    record = {
        "task_name": task.name,
        "arch": arch,
        "arch_key": arch_key(arch),
        "arch_summary": arch_summary(arch),
        "seed": config.seed,
        "scheme": quant_scheme or "fp32",
        "parameter_size": count_active_parameters(supernet, arch),
        "size_mb_fp32": int8_model_size_bytes(model) / 2**20,
        "metrics_fp32": _metrics_record(fp32),
        "best_fp32": fp32[dev_name].primary,
        "best_step": outcome.best_step,
        "train_steps": outcome.steps,
        "evaluations": outcome.evaluations,
        "train_seconds": outcome.train_seconds,
        "hparams": dataclasses.asdict(config),
        "device": str(device),
        "time_per_batch_infer_fp32_ms": fp32[dev_name].time_per_batch_ms,
    }
    reported = fp32
    quantized = None
    if quant_scheme == "torch_dynamic":
        quantized, converted = quantize_dynamic_int8(model)
        reported = _eval_all(quantized, data, config.eval_batch_size, "cpu")
        record.update(engine=select_quantized_engine(), converted_linear=converted,
                      size_mb_int8=int8_model_size_bytes(quantized) / 2**20)
    elif quant_scheme == "fakequant":
        whole = copy.deepcopy(supernet).cpu()
        write_submodel_into_supernet(whole, arch, model.state_dict())
        fake_quantize_model(whole, inplace=True)
        quantized = to_hf_model(whole, arch, head="cls")
        del whole
        reported = _eval_all(quantized, data, config.eval_batch_size, "cpu")
        record.update(bits=8)
    elif quant_scheme is not None:
        raise ValueError(f"unknown quant scheme {quant_scheme!r}")
    if quantized is not None:
        record["metrics_int8"] = _metrics_record(reported)
        record["best_int8"] = reported[dev_name].primary
        record["time_per_batch_infer_int8_ms"] = reported[dev_name].time_per_batch_ms
    record["best_acc"] = reported[dev_name].primary
    record["time_per_batch_infer_ms"] = reported[dev_name].time_per_batch_ms
    record["infer_cnt"] = reported[dev_name].batches
    if save_dir is not None:
        record["saved_model"] = save_models(model, quantized, quant_scheme, save_dir,
                                            _model_dir_name(task.name, config.seed, arch), vocab_file)
    record["elapsed_seconds"] = time.perf_counter() - started
    return record


def save_models(model, quantized, quant_scheme: str | None, save_dir: str, name: str, vocab_file: str | None) -> str:
    """``save_pretrained`` of the fine-tuned fp32 sub-model (+ vocab.txt), and next to it the
    int8 model's state dict (``model_int8.pt``; ``model_fakequant.pt`` for fakequant).
    ``load_saved_int8`` rebuilds the int8 model."""
    from submodel_extractor import save_hf_directory

    directory = os.path.join(save_dir, name)
    save_hf_directory(model, directory, vocab_file, overwrite=True)
    if quantized is not None:
        filename = INT8_WEIGHTS if quant_scheme == "torch_dynamic" else FAKEQUANT_WEIGHTS
        tmp = os.path.join(directory, "." + filename + ".tmp")
        torch.save(quantized.state_dict(), tmp)
        os.replace(tmp, os.path.join(directory, filename))
    return directory


def load_saved_int8(directory: str):
    """The int8 model saved by ``save_models``: the fp32 HF model, dynamically quantized, with
    the saved int8 weights loaded (``weights_only=True``)."""
    from transformers import BertForSequenceClassification

    model = BertForSequenceClassification.from_pretrained(directory, local_files_only=True).eval()
    fake_path = os.path.join(directory, FAKEQUANT_WEIGHTS)
    if os.path.isfile(fake_path):
        model.load_state_dict(torch.load(fake_path, map_location="cpu", weights_only=True))
        return model
    quantized, _ = quantize_dynamic_int8(model)
    quantized.load_state_dict(torch.load(os.path.join(directory, INT8_WEIGHTS), map_location="cpu",
                                         weights_only=True))
    return quantized
