"""Conversion between the supernet and plain Hugging Face BERT models, in both directions.

* supernet + arch -> plain ``transformers`` BERT (``BertModel`` / ``BertForMaskedLM`` /
  ``BertForSequenceClassification``): the weights are taken through the supernet's own slicing
  methods, so the extracted model computes exactly what the sliced supernet computes.
* plain HF BERT directory -> supernet: by parameter name. A smaller BERT fills the slots the
  same slicing rule reads (found by running the extraction on a supernet of position indices),
  so HF -> supernet -> HF is the identity.
"""

from __future__ import annotations

import json
import os

import torch

from transformer.config import SuperBertConfig
from transformer.modeling_super import (
    SuperBertForPreTraining,
    SuperBertForSequenceClassification,
    SuperBertModel,
    SuperBertPreTrainedModel,
    check_arch_fits,
    layer_archs,
)
from utils import ArchError, UserError, get_logger, is_homogeneous, load_weights_only

logger = get_logger(__name__)

HEADS = ("none", "mlm", "cls")
# Names the original AutoTinyBERT / TF-era checkpoints use for the same tensors.
_LEGACY_RENAMES = ((".gamma", ".weight"), (".beta", ".bias"))


def _base(model: SuperBertPreTrainedModel) -> SuperBertModel:
    return model if isinstance(model, SuperBertModel) else model.bert


# --------------------------------------------------------------------------------------
# supernet -> Hugging Face
# --------------------------------------------------------------------------------------


def check_hf_compatible(arch: dict) -> None:
    """A plain HF BERT has one width for hidden and attention, and identical layers."""
    if not is_homogeneous(arch):
        raise ArchError("this arch cannot be a plain Hugging Face BERT: its layers differ in size, "
                        "and BertConfig has one FFN/qkv/head setting for all layers")
    hidden, qkv = arch["sample_hidden_size"], arch["sample_qkv_sizes"][0]
    if qkv != hidden:
        raise ArchError(f"this arch cannot be a plain Hugging Face BERT: qkv size {qkv} != hidden size {hidden} "
                        "(BertConfig ties the attention width to hidden_size); it runs only inside the supernet")


def arch_to_bert_config(arch: dict, config: SuperBertConfig | None = None, **overrides):
    """The ``transformers.BertConfig`` of an arch (vocab, positions etc. from the supernet config)."""
    from transformers import BertConfig

    check_hf_compatible(arch)
    config = config or SuperBertConfig()
    values = dict(
        vocab_size=config.vocab_size,
        hidden_size=arch["sample_hidden_size"],
        num_hidden_layers=arch["sample_layer_num"],
        num_attention_heads=arch["sample_num_attention_heads"][0],
        intermediate_size=arch["sample_intermediate_sizes"][0],
        hidden_act=config.hidden_act,
        hidden_dropout_prob=config.hidden_dropout_prob,
        attention_probs_dropout_prob=config.attention_probs_dropout_prob,
        max_position_embeddings=config.max_position_embeddings,
        type_vocab_size=config.type_vocab_size,
        initializer_range=config.initializer_range,
        layer_norm_eps=config.layer_norm_eps,
        pad_token_id=config.pad_token_id,
        num_labels=config.num_labels,
    )
    values.update(overrides)
    bert_config = BertConfig(**values)
    bert_config.bigger_and_faster_arch = arch  # travels in config.json: the arch this model is
    return bert_config


def extract_state_dict(model: SuperBertPreTrainedModel, arch: dict, head: str = "none") -> dict[str, torch.Tensor]:
    """The sub-model's weights under Hugging Face names (``bert.``-prefixed unless ``head='none'``)."""
    return _sliced_state(model, check_arch_fits(arch, model.config), head)


def _sliced_state(model: SuperBertPreTrainedModel, arch: dict, head: str) -> dict[str, torch.Tensor]:
    """``extract_state_dict`` for an arch already checked against ``model``."""
    if head not in HEADS:
        raise UserError(f"--head: unknown head {head!r}; choose one of {', '.join(HEADS)}")
    bert = _base(model)
    hidden = arch["sample_hidden_size"]
    emb = bert.embeddings
    state = {
        "embeddings.word_embeddings.weight": emb.word_embeddings.sliced(hidden),
        "embeddings.position_embeddings.weight": emb.position_embeddings.sliced(hidden),
        "embeddings.token_type_embeddings.weight": emb.token_type_embeddings.sliced(hidden),
    }
    state["embeddings.LayerNorm.weight"], state["embeddings.LayerNorm.bias"] = emb.LayerNorm.sliced(hidden)
    for index, layer in enumerate(layer_archs(arch)):
        module = bert.encoder.layer[index]
        prefix = f"encoder.layer.{index}."
        for name in ("query", "key", "value"):
            weight, bias = module.attention.self.sliced_projection(name, layer)
            state[f"{prefix}attention.self.{name}.weight"], state[f"{prefix}attention.self.{name}.bias"] = weight, bias
        pairs = {
            "attention.output.dense": module.attention.output.sliced_dense(layer),
            "attention.output.LayerNorm": module.attention.output.LayerNorm.sliced(hidden),
            "intermediate.dense": module.intermediate.dense.sliced(hidden, layer.ffn),
            "output.dense": module.output.dense.sliced(layer.ffn, hidden),
            "output.LayerNorm": module.output.LayerNorm.sliced(hidden),
        }
        for name, (weight, bias) in pairs.items():
            state[f"{prefix}{name}.weight"], state[f"{prefix}{name}.bias"] = weight, bias
    if head in ("none", "cls"):
        if bert.pooler is None:
            raise UserError("the supernet has no pooler; extract with --head mlm")
        state["pooler.dense.weight"], state["pooler.dense.bias"] = bert.pooler.dense.sliced(hidden, hidden)
    if head != "none":
        state = {f"bert.{key}": value for key, value in state.items()}
    if head == "mlm":
        if not isinstance(model, SuperBertForPreTraining):
            raise UserError("--head mlm needs a pre-training supernet (with an MLM head)")
        predictions = model.cls.predictions
        dense_w, dense_b = predictions.transform.dense.sliced(hidden, hidden)
        ln_w, ln_b = predictions.transform.LayerNorm.sliced(hidden)
        state.update({
            "cls.predictions.transform.dense.weight": dense_w, "cls.predictions.transform.dense.bias": dense_b,
            "cls.predictions.transform.LayerNorm.weight": ln_w, "cls.predictions.transform.LayerNorm.bias": ln_b,
            "cls.predictions.bias": predictions.bias, "cls.predictions.decoder.weight": state["bert.embeddings.word_embeddings.weight"],
            "cls.predictions.decoder.bias": predictions.bias,
        })
    if head == "cls":
        if isinstance(model, SuperBertForSequenceClassification):
            state["classifier.weight"], state["classifier.bias"] = model.classifier.sliced(hidden, model.num_labels)
        else:
            logger.info("the supernet has no classifier; the extracted classifier is freshly initialised")
    return {key: value.detach().clone().contiguous() for key, value in state.items()}


def to_hf_model(model: SuperBertPreTrainedModel, arch: dict, head: str = "none", **config_overrides):
    """A plain ``transformers`` BERT holding the sliced weights of ``arch`` (eval mode, fp32)."""
    from transformers import BertForMaskedLM, BertForSequenceClassification, BertModel

    arch = check_arch_fits(arch, model.config)
    if head == "cls" and isinstance(model, SuperBertForSequenceClassification):
        config_overrides.setdefault("num_labels", model.num_labels)
    bert_config = arch_to_bert_config(arch, model.config, **config_overrides)
    hf_class = {"none": BertModel, "mlm": BertForMaskedLM, "cls": BertForSequenceClassification}[head]
    hf_model = hf_class(bert_config)
    state = _sliced_state(model, arch, head)
    missing, unexpected = hf_model.load_state_dict(state, strict=False)
    missing = [key for key in missing if not (head == "cls" and key.startswith("classifier."))]
    if missing or unexpected:
        raise RuntimeError(f"extraction does not match {hf_class.__name__}: missing {missing}, unexpected {unexpected}")
    return hf_model.eval()


# --------------------------------------------------------------------------------------
# Hugging Face -> supernet
# --------------------------------------------------------------------------------------


def load_safetensors(path: str) -> dict[str, torch.Tensor]:
    """``safetensors.torch.load_file`` with a one-line error naming a truncated or corrupt file."""
    import safetensors
    from safetensors.torch import load_file

    try:
        return load_file(path)
    except (safetensors.SafetensorError, OSError) as err:
        raise UserError(f"{path}: not a readable safetensors file ({err}); it may be truncated -- copy or save it "
                        "again") from None


def read_hf_state_dict(directory: str) -> dict[str, torch.Tensor]:
    """Load a checkpoint directory's tensors (safetensors, sharded safetensors or a
    ``pytorch_model.bin`` read with ``weights_only=True``), with legacy names normalised."""
    candidates = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
    path = next((os.path.join(directory, name) for name in candidates
                 if os.path.isfile(os.path.join(directory, name))), None)
    if path is None:
        raise UserError(f"{directory}: no model.safetensors or pytorch_model.bin; not a checkpoint directory")
    if path.endswith(".index.json"):
        with open(path, encoding="utf-8") as handle:
            shards = sorted(set(json.load(handle)["weight_map"].values()))
        state = {}
        for shard in shards:
            state.update(load_safetensors(os.path.join(directory, shard)))
    elif path.endswith(".safetensors"):
        state = load_safetensors(path)
    else:
        state = load_weights_only(path, "state dict")  # a corrupt or pickled-object file: one line
    normalised = {}
    for key, value in state.items():
        for old, new in _LEGACY_RENAMES:
            if key.endswith(old):
                key = key[: -len(old)] + new
        normalised[key] = value
    return normalised


def _supernet_key(key: str) -> str | None:
    """Map a HF / AutoTinyBERT parameter name to the supernet's; None when it has no home."""
    if key.startswith("bert.dense_fit."):
        return key[len("bert."):]
    if key.startswith(("embeddings.", "encoder.", "pooler.")):
        key = "bert." + key
    if key.startswith("cls.predictions.decoder."):
        return None  # tied to the word embeddings / cls.predictions.bias
    if key.startswith(("cls.seq_relationship.", "classifier.")) or key.endswith(("position_ids", "token_type_ids")):
        return None
    return key


def _slot_indices(supernet: SuperBertForPreTraining, arch: dict) -> dict[str, tuple[str, torch.Tensor]]:
    """For each HF tensor name of ``arch``, the supernet parameter and flat positions it reads.

    Computed by running ``extract_state_dict`` on a float64 supernet whose every parameter holds
    its own element indices: the reverse direction reuses the forward slicing rule unchanged.
    """
    shadow = SuperBertForPreTraining(supernet.config).double()
    with torch.no_grad():
        for param in shadow.parameters():
            param.copy_(torch.arange(param.numel(), dtype=torch.float64).view_as(param))
    tensors = extract_state_dict(shadow, arch, head="mlm")
    # the pooler is not part of BertForMaskedLM; take it from the bare-model extraction
    tensors.update({f"bert.{key}": value for key, value in extract_state_dict(shadow, arch, head="none").items()
                    if key.startswith("pooler.")})
    slots = {}
    for hf_key, positions in tensors.items():
        target = _supernet_key(hf_key)
        if target is not None:
            slots[hf_key] = (target, positions.long())
    return slots


def load_hf_into_supernet(supernet: SuperBertForPreTraining, hf_dir: str) -> list[str]:
    """Copy a plain HF BERT directory's weights into ``supernet`` by name; returns the supernet
    parameters it did not cover (e.g. the KD projection), which keep their initialisation."""
    from transformers import BertConfig

    try:
        hf_config = BertConfig.from_pretrained(hf_dir, local_files_only=True)
    except (OSError, ValueError) as err:
        raise UserError(f"{hf_dir}: not a Hugging Face BERT directory ({str(err).splitlines()[0]})") from None
    if hf_config.model_type != "bert":
        raise UserError(f"{hf_dir}: model_type {hf_config.model_type!r} is not BERT")
    arch = {
        "sample_layer_num": hf_config.num_hidden_layers,
        "sample_hidden_size": hf_config.hidden_size,
        "sample_intermediate_sizes": [hf_config.intermediate_size] * hf_config.num_hidden_layers,
        "sample_num_attention_heads": [hf_config.num_attention_heads] * hf_config.num_hidden_layers,
        "sample_qkv_sizes": [hf_config.hidden_size] * hf_config.num_hidden_layers,
    }
    if hf_config.vocab_size != supernet.config.vocab_size:
        raise UserError(f"{hf_dir}: vocab size {hf_config.vocab_size} != the supernet's {supernet.config.vocab_size}")
    try:
        check_arch_fits(arch, supernet.config, where=f"{hf_dir} does not fit the supernet")
    except ArchError as err:
        raise UserError(str(err)) from None
    state = read_hf_state_dict(hf_dir)
    slots = _slot_indices(supernet, arch)
    params = dict(supernet.named_parameters())
    covered = set()
    with torch.no_grad():
        for key, value in state.items():
            hf_key = key if key.startswith(("bert.", "cls.")) else "bert." + key
            if key.startswith("bert.dense_fit."):
                target = params["dense_fit." + key.split(".", 2)[2]]
                target[tuple(slice(0, n) for n in value.shape)].copy_(value)
                covered.add("dense_fit." + key.split(".", 2)[2])
                continue
            if hf_key not in slots:
                continue
            target_name, positions = slots[hf_key]
            if positions.shape != value.shape:
                raise UserError(f"{hf_dir}: tensor {key} has shape {tuple(value.shape)}, config says {tuple(positions.shape)}")
            params[target_name].view(-1)[positions.reshape(-1)] = value.reshape(-1).to(params[target_name].dtype)
            covered.add(target_name)
    return sorted(set(params) - covered)


def supernet_from_hf(hf_dir: str, config: SuperBertConfig | None = None) -> SuperBertForPreTraining:
    """A supernet initialised from a plain HF BERT directory. Without ``config`` the supernet has
    the HF model's own shape (qkv = hidden)."""
    from transformers import BertConfig

    if config is None:
        try:
            hf_config = BertConfig.from_pretrained(hf_dir, local_files_only=True)
        except (OSError, ValueError) as err:
            raise UserError(f"{hf_dir}: not a Hugging Face BERT directory ({str(err).splitlines()[0]})") from None
        config = SuperBertConfig.from_dict(hf_config.to_dict(), where=hf_dir)
    supernet = SuperBertForPreTraining(config)
    uncovered = load_hf_into_supernet(supernet, hf_dir)
    if uncovered:
        logger.info("initialised from %s; %d tensor(s) keep their fresh initialisation: %s", hf_dir, len(uncovered),
                    ", ".join(uncovered[:6]) + (" ..." if len(uncovered) > 6 else ""))
    return supernet


def write_submodel_into_supernet(supernet: SuperBertForSequenceClassification, arch: dict,
                                 state: dict[str, torch.Tensor]) -> int:
    """The inverse of ``extract_state_dict(supernet, arch, head='cls')``: copy a (fine-tuned)
    sub-model's HF-named tensors back into the supernet positions the slicing rule reads them
    from, classifier and pooler included; returns the number of tensors written.

    Used to reproduce the original evaluator's whole-supernet fake-quant on a fine-tuned
    sub-model. Positions come from the same index-shadow trick as ``_slot_indices``.
    """
    arch = check_arch_fits(arch, supernet.config)
    shadow = SuperBertForSequenceClassification(supernet.config).double()
    with torch.no_grad():
        for param in shadow.parameters():
            param.copy_(torch.arange(param.numel(), dtype=torch.float64).view_as(param))
    positions = extract_state_dict(shadow, arch, head="cls")
    params = dict(supernet.named_parameters())
    missing = sorted(set(positions) - set(state))
    if missing:
        raise RuntimeError(f"write_submodel_into_supernet: the sub-model lacks {len(missing)} tensor(s), e.g. {missing[0]}")
    with torch.no_grad():
        for key, index in positions.items():
            target = params[key]
            target.view(-1)[index.long().reshape(-1)] = state[key].reshape(-1).to(target.dtype, copy=False)
    return len(positions)
