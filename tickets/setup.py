"""What a BERT-Tickets run is, checked before the first byte is written: its options (``RunOptions``),
its files (``Context``), the model it prunes (a plain BERT or an arch of a supernet), the fine-tune
recipe per round, and the agreement of an existing output directory with these settings (a resume)."""

from __future__ import annotations

import dataclasses
import json
import os

import torch

from evaluation.candidate import TaskData
from evaluation.data import encode_examples, load_tokenizer
from evaluation.finetune import FinetuneConfig
from evaluation.recipe import RecipeSettings
from glue.tasks import TaskSpec, get_task, read_split
from tickets.pruning import SCHEDULES
from tickets.report import RECORDS_NAME
from tickets.timing import ticket_protocol
from utils import UserError, load_arch_argument, make_arch, read_jsonl

SETTINGS_NAME = "settings.json"
MASKS_DIR = "masks"
SUBNETWORKS_DIR = "subnetworks"
PRETRAINED_DIR = "pretrained"
TICKET_INFO = "ticket.json"
# Settings a resumed run may change: how far to go, and where to compute.
RESUMABLE_CHANGES = ("rounds", "target_sparsity", "no_cuda", "num_threads")


@dataclasses.dataclass
class RunOptions:
    """Everything a ticket run needs (the command line's flags)."""

    model: str
    data_dir: str
    task_name: str
    output_dir: str
    arch: str | None = None
    rounds: int | None = None
    prune_fraction: float = 0.1
    target_sparsity: float | None = None
    schedule: str = "remaining"
    prune_pooler: bool = False
    seeds: tuple[int, ...] = (42,)
    # the fine-tune of every round, as the evaluator takes it (None: the task's table); 3 epochs: BERT-Tickets'
    recipe: RecipeSettings = dataclasses.field(default_factory=lambda: RecipeSettings(num_train_epochs=3.0))
    do_lower_case: bool = False
    latency: bool = True
    latency_runs: int = 20
    latency_warmup: int = 5
    latency_rounds: int = 4
    latency_threads: int = 1
    latency_seq_len: int = 128
    latency_timer: str = "wall"
    no_cuda: bool = False
    num_threads: int = 0


@dataclasses.dataclass
class Context:
    """A checked run: task data tokenised, the rewind source known, the output layout."""

    options: RunOptions
    settings: dict
    task: TaskSpec
    data: TaskData
    finetune_configs: dict[int, FinetuneConfig]
    max_seq_length: int
    protocol: object | None
    device: torch.device
    supernet_arch: dict | None  # set when --model is a supernet (extracted into pretrained/)
    vocab_file: str

    @property
    def output_dir(self) -> str:
        return self.options.output_dir

    @property
    def pretrained_dir(self) -> str:
        return os.path.join(self.output_dir, PRETRAINED_DIR) if self.supernet_arch else self.options.model

    @property
    def records_path(self) -> str:
        return os.path.join(self.output_dir, RECORDS_NAME)

    def mask_path(self, round_index: int) -> str:
        return os.path.join(self.output_dir, MASKS_DIR, f"round_{round_index:02d}.safetensors")

    def ticket_dir(self, round_index: int) -> str:
        return os.path.join(self.output_dir, SUBNETWORKS_DIR, f"round_{round_index:02d}")


# --------------------------------------------------------------------------------------
# Checks (everything before the first byte is written)
# --------------------------------------------------------------------------------------


def _check_options(options: RunOptions) -> None:
    for flag, value in (("--prune_fraction", options.prune_fraction), ("--target_sparsity", options.target_sparsity)):
        if value is not None and not 0.0 < value < 1.0:
            raise UserError(f"{flag}: must be in (0, 1), got {value}")
    if options.schedule not in SCHEDULES:
        raise UserError(f"--schedule: unknown schedule {options.schedule!r}; choose one of {', '.join(SCHEDULES)}")
    if options.rounds is None and options.target_sparsity is None:
        raise UserError("give --rounds N and/or --target_sparsity S (where pruning stops)")
    if options.rounds is not None and options.rounds < 0:
        raise UserError(f"--rounds: must be >= 0, got {options.rounds}")
    if not options.seeds:
        raise UserError("--seeds: no seed given")
    if len(set(options.seeds)) != len(options.seeds):
        raise UserError(f"--seeds: repeated seed in {list(options.seeds)}")
    if options.recipe.num_train_epochs <= 0:  # the recipe checked the rest of its numbers when it was made
        raise UserError(f"--num_train_epochs: must be > 0, got {options.recipe.num_train_epochs}")


def _model_source(options: RunOptions) -> tuple[dict, dict | None]:
    """(the model's config.json, the arch to extract when --model is a supernet)."""
    from transformer.checkpoint import is_supernet_dir
    from transformer.config import SuperBertConfig
    from transformer.hf_converter import check_hf_compatible

    config = SuperBertConfig.load(options.model)  # one line for: no dir, no config.json, not BERT
    with open(os.path.join(options.model, "config.json"), encoding="utf-8") as handle:
        raw = json.load(handle)
    weights = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
    if not any(os.path.isfile(os.path.join(options.model, name)) for name in weights):
        raise UserError(f"--model: {options.model} has no model.safetensors or pytorch_model.bin (no weights)")
    if not is_supernet_dir(options.model):
        if options.arch is not None:
            raise UserError(f"--arch: {options.model} is a plain BERT directory; --arch selects a sub-model "
                            "of a supernet directory only")
        return raw, None
    if options.arch in (None, "largest"):
        arch = config.largest_arch()
    else:
        arch = load_arch_argument(options.arch)
    from transformer.modeling_super import check_arch_fits

    check_arch_fits(arch, config, where="--arch")
    try:
        check_hf_compatible(arch)
    except UserError as err:
        raise UserError(f"--arch: {err}") from None
    return raw, arch


def _arch_of_config(config: dict) -> dict:
    return make_arch(config["num_hidden_layers"], config["hidden_size"], config["intermediate_size"],
                     config["num_attention_heads"], config["hidden_size"])


def _settings(options: RunOptions, arch: dict, max_seq: int, configs: dict[int, FinetuneConfig], protocol) -> dict:
    """The identity of a run (written to settings.json; a resume must match all but RESUMABLE_CHANGES)."""
    first = configs[options.seeds[0]]
    hparams = {key: value for key, value in dataclasses.asdict(first).items() if key != "seed"}
    return {
        "model": os.path.abspath(options.model),
        "arch": arch,
        "task_name": options.task_name.lower(),
        "data_dir": os.path.abspath(options.data_dir),
        "seeds": list(options.seeds),
        "prune_fraction": options.prune_fraction,
        "schedule": options.schedule,
        "prune_pooler": options.prune_pooler,
        "max_seq_length": max_seq,
        "max_train_examples": options.recipe.max_train_examples,
        "max_eval_examples": options.recipe.max_eval_examples,
        "do_lower_case": options.do_lower_case,
        "hparams": hparams,
        "latency_protocol": None if protocol is None else protocol.to_record(),
        "rounds": options.rounds,
        "target_sparsity": options.target_sparsity,
        "no_cuda": options.no_cuda,
        "num_threads": options.num_threads,
    }


def _check_output_dir(options: RunOptions, settings: dict) -> list[dict]:
    """The finished rounds of an existing run of the same settings; refuse anything else."""
    from utils import LOCK_NAME

    directory = options.output_dir
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise UserError(f"--output_dir: {directory} exists and is not a directory")
    settings_path = os.path.join(directory, SETTINGS_NAME)
    if not os.path.isfile(settings_path):
        if os.path.isdir(directory) and set(os.listdir(directory)) - {LOCK_NAME}:
            raise UserError(f"--output_dir: {directory} is not empty and holds no ticket run ({SETTINGS_NAME}); "
                            "choose another directory")
        return []
    try:
        with open(settings_path, encoding="utf-8") as handle:
            previous = json.load(handle)
    except json.JSONDecodeError as err:
        raise UserError(f"{settings_path}: not valid JSON ({err.msg})") from None
    current = json.loads(json.dumps(settings))
    for key in sorted(set(previous) | set(current)):
        if key in RESUMABLE_CHANGES:
            continue
        if previous.get(key) != current.get(key):
            raise UserError(f"--output_dir: {directory} was started with {key}={json.dumps(previous.get(key))[:200]}, "
                            f"this run has {json.dumps(current.get(key))[:200]}; use another --output_dir to change it")
    records_path = os.path.join(directory, RECORDS_NAME)
    records = read_jsonl(records_path, with_line_numbers=True) if os.path.isfile(records_path) else []
    for expected, (line, record) in enumerate(records):
        if record.get("round") != expected:
            raise UserError(f"{records_path}:{line}: expected round {expected}, found {record.get('round')!r}")
    return [record for _, record in records]


def prepare(options: RunOptions) -> tuple[Context, list[dict]]:
    """Check every input and tokenise the task; returns the context and the finished rounds.
    Writes nothing."""
    _check_options(options)
    task = get_task(options.task_name)
    raw_config, supernet_arch = _model_source(options)
    tokenizer = load_tokenizer(options.model, options.do_lower_case)
    if len(tokenizer) > raw_config["vocab_size"]:
        raise UserError(f"--model: {options.model}/vocab.txt has {len(tokenizer)} tokens, more than the model's "
                        f"vocab_size {raw_config['vocab_size']}")
    # the recipe by the evaluator's rule: the task's original values where the options leave them open
    recipe = options.recipe.recipe_for(task)
    max_seq = recipe.max_seq_length
    if max_seq > raw_config.get("max_position_embeddings", 512):
        raise UserError(f"--max_seq_length {max_seq} exceeds the model's max_position_embeddings "
                        f"{raw_config.get('max_position_embeddings')}")
    splits = {"train": read_split(task, options.data_dir, "train", recipe.max_train_examples)}
    for name in task.dev_files:
        splits[name] = read_split(task, options.data_dir, name, recipe.max_eval_examples)
    configs = {seed: recipe.for_seed(seed) for seed in options.seeds}
    protocol = None
    if options.latency:
        from types import SimpleNamespace

        limits = SimpleNamespace(vocab_size=raw_config["vocab_size"],
                                 max_position_embeddings=raw_config.get("max_position_embeddings", 512))
        protocol = ticket_protocol(limits, runs=options.latency_runs, warmup=options.latency_warmup,
                                   rounds=options.latency_rounds, threads=options.latency_threads,
                                   seq_len=options.latency_seq_len, timer=options.latency_timer)
    arch = supernet_arch or _arch_of_config(raw_config)
    settings = _settings(options, arch, max_seq, configs, protocol)
    records = _check_output_dir(options, settings)
    if options.num_threads > 0:
        torch.set_num_threads(options.num_threads)
    data = TaskData(task, encode_examples(tokenizer, splits["train"], task, max_seq),
                    {name: encode_examples(tokenizer, splits[name], task, max_seq) for name in task.dev_files})
    device = torch.device("cuda" if torch.cuda.is_available() and not options.no_cuda else "cpu")
    context = Context(options, settings, task, data, configs, max_seq, protocol, device, supernet_arch,
                      os.path.join(options.model, "vocab.txt"))
    return context, records
