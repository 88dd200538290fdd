"""The weight-sharing fitness: the whole supernet fine-tuned once on the task, every arch scored from its slice.

A recipe with ``sandwich_epochs`` (``--sandwich_epochs``) does not start each arch from the pre-trained
supernet. The supernet is first fine-tuned on the task, classifier included: every step trains, on one
batch, the largest and the smallest arch of the search space and ``SANDWICH_RANDOM_ARCHS`` archs drawn
from it (the sandwich rule of slimmable networks and BigNAS), their gradients summed. Each arch then
starts from its slice of that task supernet, head included; with ``--num_train_epochs 0`` it is scored
as it is (about a second an arch instead of a fine-tune each). One task supernet per (task, seed,
settings, space) serves every search of a run through the evaluation cache. Why, and what it ranks
like: BENCHMARKS.md, "a weight-sharing fitness".
"""

from __future__ import annotations

import random
import time

import torch
from torch import nn
from transformers import get_linear_schedule_with_warmup

from evaluation.data import EncodedSplit
from evaluation.finetune import apply_update, make_optimizer, task_loss, training_autocast
from evaluation.recipe import Recipe
from glue.tasks import TaskSpec
from utils import get_logger, wait_while_timing
from utils.progress import progress

logger = get_logger(__name__)

SANDWICH_RANDOM_ARCHS = 2  # drawn per step besides the largest and the smallest


def _size_order(arch: dict) -> tuple:
    return (arch["sample_layer_num"], arch["sample_hidden_size"], arch["sample_intermediate_sizes"][0],
            arch["sample_num_attention_heads"][0], arch["sample_qkv_sizes"][0])


def set_dropout(model: nn.Module, probability: float) -> None:
    """Hidden and attention dropout of every layer of a supernet."""
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = probability
    for layer in model.bert.encoder.layer:
        layer.attention.self.dropout_p = probability


def train_task_supernet(supernet, train: EncodedSplit, space, recipe: Recipe, seed: int, task: TaskSpec):
    """Fine-tune ``supernet`` (a ``SuperBertForSequenceClassification``, in place) on ``train`` of ``task`` with the
    sandwich rule over ``space`` for ``recipe.sandwich_epochs`` epochs, with the recipe's optimiser,
    schedule, batch and dropout; a fresh classifier per seed. Returns the training's CPU seconds."""
    from evaluation.candidate import reset_classifier  # the same fresh head a fine-tune of one arch gets

    tune = recipe.finetune
    torch.manual_seed(seed)
    if recipe.dropout is not None:
        set_dropout(supernet, recipe.dropout)
    reset_classifier(supernet, seed, supernet.config.initializer_range)
    archs = list(space.grid())
    largest, smallest = max(archs, key=_size_order), min(archs, key=_size_order)
    draw = random.Random(seed)
    generator = torch.Generator().manual_seed(seed)
    steps = max(1, int(round(train.num_batches(tune.train_batch_size) * recipe.sandwich_epochs)))
    optimizer = make_optimizer(supernet, tune.learning_rate, tune.weight_decay)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(round(tune.warmup_proportion * steps)), steps)
    supernet.train()
    autocast = training_autocast(tune.train_dtype, torch.device("cpu"))
    started, step = time.process_time(), 0
    bar = progress(total=steps, desc=f"task supernet, seed {seed}", unit="step")
    while step < steps:
        for batch in train.train_batches(tune.train_batch_size, generator):
            wait_while_timing()  # a latency job on this machine times alone
            inputs = {key: batch[key] for key in ("input_ids", "attention_mask", "token_type_ids")}
            optimizer.zero_grad(set_to_none=True)
            for arch in [largest, smallest] + [draw.choice(archs) for _ in range(SANDWICH_RANDOM_ARCHS)]:
                supernet.set_sample_config(arch)
                with autocast:
                    logits = supernet(**inputs)
                task_loss(logits.float(), batch["labels"], task).backward()  # gradients summed over the archs
            apply_update(supernet, optimizer, scheduler, tune.max_grad_norm)
            step += 1
            bar.update(1)
            if step >= steps:
                break
    bar.close()
    supernet.set_sample_config(largest)
    supernet.eval()
    return time.process_time() - started
