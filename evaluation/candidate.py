"""Evaluate one candidate arch: extract -> fine-tune -> evaluate fp32 -> score it with its scheme.

The scheme comes from the registry (``quantize_utils.SCHEMES``): the fitness scheme of the search
(``torch_fp32`` for the AutoTinyBERT baseline, ``torch_dynamic_int8`` for Bigger&Faster,
``ort_dynamic_int8`` for an ONNX Runtime deployment) plus optional *extra* schemes scored on the same
fine-tuned weights (the fp32 search's winner quantized: "AutoTinyBERT + int8 PTQ"). Every int8 scheme
is applied to the *extracted, fine-tuned* sub-model exactly as its latency table times it, and
evaluated on every dev split; ``best_acc`` (the fitness) is the fitness scheme's primary metric.
Every scheme on every split also gets a verdict on whether the fine-tune learned
(``evaluation.learning``: ``learning_by_scheme``, and ``learned`` / ``not_learned_reason`` for the
fitness scheme on the primary split).
``fakequant`` (parity only) writes the fine-tuned sub-model back into the supernet, min-max
fake-quantizes every supernet tensor and re-extracts the sub-model, as the original did.
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
from evaluation.learning import set_learned, split_verdicts
from evaluation.results import add_score_views
from glue.tasks import TaskSpec
from quantize_utils import (
    Scheme,
    count_dynamic_int8_linear,
    fake_quantize_model,
    int8_model_size_bytes,
    quantize_dynamic_int8,
    resolve_scheme,
)
from transformer.hf_converter import to_hf_model, write_submodel_into_supernet
from transformer.modeling_super import count_active_parameters
from utils import arch_key, arch_summary, get_logger, load_weights_only

logger = get_logger(__name__)

INT8_WEIGHTS = "model_int8.pt"
FAKEQUANT_WEIGHTS = "model_fakequant.pt"
ONNX_INT8 = "model_int8.onnx"


@dataclasses.dataclass
class TaskData:
    """A task tokenised once: the training split and the dev splits (the first is primary)."""

    task: TaskSpec
    train: EncodedSplit
    dev: dict[str, EncodedSplit]

    @property
    def primary_dev(self) -> tuple[str, EncodedSplit]:
        return next(iter(self.dev.items()))


def reset_classifier(model, seed: int, std: float) -> None:
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


def encoder_parameters(model) -> int:
    """Parameters of the Transformer layers (what dynamic int8 quantizes besides the pooler):
    everything but the embeddings, the pooler and the classifier."""
    return sum(p.numel() for name, p in model.named_parameters() if ".encoder." in f".{name}")


def _as_scheme(scheme) -> Scheme:
    return scheme if isinstance(scheme, Scheme) else resolve_scheme(scheme or "torch_fp32", "--scheme")


def _score(model, scheme: Scheme, supernet, arch: dict, threads: int):
    """``(scored model, info)`` for one scheme on the fine-tuned CPU sub-model."""
    if scheme.needs_supernet:  # the original's parity scheme: ranges from whole supernet tensors
        whole = copy.deepcopy(supernet).cpu()
        write_submodel_into_supernet(whole, arch, model.state_dict())
        fake_quantize_model(whole, inplace=True)
        quantized = to_hf_model(whole, arch, head="cls")
        del whole
        return quantized, {"bits": 8}
    return scheme.scored_model(model, threads)


def evaluate_candidate(supernet, arch: dict, data: TaskData, config: FinetuneConfig, device,
                       scheme="torch_fp32", save_dir: str | None = None, tokenizer=None,
                       extra_schemes=(), threads: int = 1, model_overrides: dict | None = None,
                       keep_classifier: bool = False) -> dict:
    """Run the whole per-arch protocol and return the JSONL record (see ``evaluation.results``).

    ``scheme`` (a ``Scheme`` or a name the registry resolves) gives the fitness; ``extra_schemes``
    are scored on the same fine-tuned weights and recorded under ``metrics_by_scheme``.
    ``model_overrides``: ``BertConfig`` fields of the fine-tuned sub-model (a recipe's dropout).
    ``keep_classifier``: start from the supernet's own classifier slice (a task supernet,
    ``evaluation.task_supernet``) instead of a fresh one."""
    started = time.perf_counter()
    scheme = _as_scheme(scheme)
    extras = [s for s in (_as_scheme(x) for x in extra_schemes) if s.name != scheme.name and s.quantized]
    task = data.task
    torch.manual_seed(config.seed)  # dropout masks
    model = to_hf_model(supernet, arch, head="cls", **(model_overrides or {}))
    if not keep_classifier:
        reset_classifier(model, config.seed, supernet.config.initializer_range)
    dev_name, dev = data.primary_dev
    outcome = finetune(model, data.train, dev, task, config, device)
    model.load_state_dict(outcome.best_state)
    # the primary dev set was evaluated on exactly these weights during training; the others now
    fp32 = {name: outcome.best if name == dev_name else evaluate(model, split, task, config.eval_batch_size, device)
            for name, split in data.dev.items()}
    model.to("cpu").eval()
    total = count_active_parameters(supernet, arch)
    record = {
        "task_name": task.name,
        "arch": arch,
        "arch_key": arch_key(arch),
        "arch_summary": arch_summary(arch),
        "seed": config.seed,
        "scheme": scheme.name,
        "primary_dev": dev_name,
        "parameter_size": total,
        "encoder_parameter_size": encoder_parameters(model),
        "size_mb_fp32": int8_model_size_bytes(model) / 2**20,
        "best_step": outcome.best_step,
        "train_steps": outcome.steps,
        "evaluations": outcome.evaluations,
        "train_seconds": outcome.train_seconds,
        "paused_seconds": outcome.paused_seconds,
        "hparams": dataclasses.asdict(config),
        "device": str(device),
        "time_per_batch_infer_fp32_ms": fp32[dev_name].time_per_batch_ms,
        "metrics_by_scheme": {"torch_fp32": _metrics_record(fp32)},
        "best_by_scheme": {"torch_fp32": fp32[dev_name].primary},
        "time_per_batch_ms_by_scheme": {"torch_fp32": fp32[dev_name].time_per_batch_ms},
        "learning_by_scheme": {"torch_fp32": split_verdicts(fp32)},
    }
    reported, scored = fp32, {}
    for current in ([scheme] if scheme.quantized else []) + extras:
        quantized, info = _score(model, current, supernet, arch, threads)
        results = _eval_all(quantized, data, config.eval_batch_size, "cpu")
        scored[current.name] = quantized
        record["metrics_by_scheme"][current.name] = _metrics_record(results)
        record["best_by_scheme"][current.name] = results[dev_name].primary
        record["learning_by_scheme"][current.name] = split_verdicts(results)
        record.setdefault("size_mb_by_scheme", {})[current.name] = info.get("size_mb_int8")
        record["time_per_batch_ms_by_scheme"][current.name] = results[dev_name].time_per_batch_ms
        if current.runtime == "torch" and not current.needs_supernet:
            # what is really int8 in that file: the Linear weights; embeddings and norms stay fp32
            record.setdefault("int8_linear_modules_by_scheme", {})[current.name] = count_dynamic_int8_linear(quantized)
        if current.name == scheme.name:
            reported = results
            record.update({key: value for key, value in info.items() if key != "size_mb_int8"})
            if "size_mb_int8" in info:
                record["size_mb_int8"] = info["size_mb_int8"]
            if current.name in record.get("int8_linear_modules_by_scheme", {}):
                record["int8_linear_modules"] = record["int8_linear_modules_by_scheme"][current.name]
            record["time_per_batch_infer_int8_ms"] = results[dev_name].time_per_batch_ms
    add_score_views(record)
    if set_learned(record)["learned"] is False:
        logger.warning("%s seed %d %s did not learn: %s", task.name, config.seed, arch_summary(arch),
                       record["not_learned_reason"])
    record["time_per_batch_infer_ms"] = reported[dev_name].time_per_batch_ms
    record["infer_cnt"] = reported[dev_name].batches
    if save_dir is not None:
        record["saved_model"] = save_models(model, scored, save_dir, _model_dir_name(task.name, config.seed, arch),
                                            tokenizer)
    record["elapsed_seconds"] = time.perf_counter() - started
    return record


def save_models(model, scored: dict, save_dir: str, name: str, tokenizer=None) -> str:
    """``save_pretrained`` of the fine-tuned fp32 sub-model (+ vocab.txt) and, next to it, each
    scored int8 model: ``model_int8.pt`` (PyTorch dynamic int8 state dict; ``load_saved_int8``
    rebuilds it), ``model_int8.onnx`` (ONNX Runtime int8, self-contained: ``InferenceSession``
    loads it with the tokenizer files of the directory), ``model_fakequant.pt``."""
    from transformer.checkpoint import save_hf_directory

    directory = os.path.join(save_dir, name)
    save_hf_directory(model, directory, None, overwrite=True, tokenizer=tokenizer)
    for scheme_name, quantized in scored.items():
        scheme = resolve_scheme(scheme_name)
        if scheme.runtime == "onnxruntime":
            quantized.save(os.path.join(directory, ONNX_INT8))
            continue
        filename = FAKEQUANT_WEIGHTS if scheme.needs_supernet else INT8_WEIGHTS
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
        model.load_state_dict(load_weights_only(fake_path, "saved model's weights"))
        return model
    quantized, _ = quantize_dynamic_int8(model)
    quantized.load_state_dict(load_weights_only(os.path.join(directory, INT8_WEIGHTS), "saved int8 weights"))
    return quantized
