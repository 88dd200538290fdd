"""The elastic (weight-sharing) BERT supernet.

Every sub-architecture in the search space runs by *slicing* the supernet's shared weights:

* layers: the first ``sample_layer_num`` encoder layers;
* hidden size, FFN size, vocabulary width: prefix slices (``weight[:out, :in]``);
* qkv size and heads -- the one slicing rule used everywhere (pre-training, candidate
  evaluation, extraction): sub-head ``i`` is super-head ``i`` truncated to its first
  ``qkv / heads`` dimensions. With heads fixed (the KD setting) this keeps every head's
  identity when qkv shrinks; with head dim fixed (the MLM setting) it keeps the first heads.

Module and parameter names follow Hugging Face ``BertModel`` exactly, so conversion in either
direction is by name (``transformer/hf_converter.py``). The slicing primitives
(``transformer.elastic``) and the modules' slicing methods below are the only place that decides which
weights a sub-model uses; the extractor calls them too, which is why an extracted sub-model reproduces
the sliced supernet.
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F
from torch import nn

from transformer.config import SuperBertConfig
from transformer.elastic import (  # noqa: F401 (check_arch_fits, LayerArch: importers take them from here too)
    ElasticEmbedding,
    ElasticLayerNorm,
    ElasticLinear,
    LayerArch,
    check_arch_fits,
    head_slice_cols,
    head_slice_rows,
    layer_archs,
)

Tensor = torch.Tensor


# --------------------------------------------------------------------------------------
# Modules (names mirror Hugging Face BERT)
# --------------------------------------------------------------------------------------


class SuperBertEmbeddings(nn.Module):
    def __init__(self, config: SuperBertConfig):
        super().__init__()
        self.word_embeddings = ElasticEmbedding(config.vocab_size, config.hidden_size)
        self.position_embeddings = ElasticEmbedding(config.max_position_embeddings, config.hidden_size)
        self.token_type_embeddings = ElasticEmbedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = ElasticLayerNorm(config.hidden_size, config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids: Tensor, token_type_ids: Tensor, hidden: int) -> Tensor:
        positions = torch.arange(input_ids.shape[1], device=input_ids.device).unsqueeze(0)
        x = (self.word_embeddings(input_ids, hidden) + self.position_embeddings(positions, hidden)
             + self.token_type_embeddings(token_type_ids, hidden))
        return self.dropout(self.LayerNorm(x))


class SuperBertSelfAttention(nn.Module):
    def __init__(self, config: SuperBertConfig):
        super().__init__()
        self.super_heads = config.num_attention_heads
        self.query = ElasticLinear(config.hidden_size, config.qkv_size)
        self.key = ElasticLinear(config.hidden_size, config.qkv_size)
        self.value = ElasticLinear(config.hidden_size, config.qkv_size)
        self.dropout_p = config.attention_probs_dropout_prob

    def sliced_projection(self, name: str, layer: LayerArch) -> tuple[Tensor, Tensor]:
        """Weight and bias of ``query``/``key``/``value`` for ``layer`` (the head rule)."""
        module = getattr(self, name)
        weight = head_slice_rows(module.weight[:, :layer.hidden], self.super_heads, layer.heads, layer.head_dim)
        bias = head_slice_rows(module.bias, self.super_heads, layer.heads, layer.head_dim)
        return weight, bias

    def _heads(self, x: Tensor, name: str, layer: LayerArch) -> Tensor:
        batch, seq = x.shape[:2]
        out = F.linear(x, *self.sliced_projection(name, layer))
        return out.view(batch, seq, layer.heads, layer.head_dim).transpose(1, 2)

    def forward(self, x: Tensor, additive_mask: Tensor, layer: LayerArch,
                return_scores: bool = False) -> tuple[Tensor, Tensor | None]:
        q, k, v = (self._heads(x, name, layer) for name in ("query", "key", "value"))
        dropout_p = self.dropout_p if self.training else 0.0
        if return_scores:
            # Pre-softmax scores (before the mask is added) are what KD matches against the teacher.
            scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(layer.head_dim)
            probs = F.dropout(torch.softmax(scores + additive_mask, dim=-1), dropout_p, self.training)
            context = torch.matmul(probs, v)
        else:
            scores = None
            context = F.scaled_dot_product_attention(q, k, v, attn_mask=additive_mask, dropout_p=dropout_p)
        batch, _, seq, _ = context.shape
        return context.transpose(1, 2).reshape(batch, seq, layer.qkv), scores


class SuperBertSelfOutput(nn.Module):
    """Attention output projection (qkv -> hidden), dropout, residual LayerNorm."""

    def __init__(self, config: SuperBertConfig):
        super().__init__()
        self.super_heads = config.num_attention_heads
        self.dense = ElasticLinear(config.qkv_size, config.hidden_size)
        self.LayerNorm = ElasticLayerNorm(config.hidden_size, config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def sliced_dense(self, layer: LayerArch) -> tuple[Tensor, Tensor]:
        weight = head_slice_cols(self.dense.weight[:layer.hidden], self.super_heads, layer.heads, layer.head_dim)
        return weight, self.dense.bias[:layer.hidden]

    def forward(self, context: Tensor, residual: Tensor, layer: LayerArch) -> Tensor:
        return self.LayerNorm(self.dropout(F.linear(context, *self.sliced_dense(layer))) + residual)


class SuperBertAttention(nn.Module):
    def __init__(self, config: SuperBertConfig):
        super().__init__()
        self.self = SuperBertSelfAttention(config)
        self.output = SuperBertSelfOutput(config)


class SuperBertIntermediate(nn.Module):
    def __init__(self, config: SuperBertConfig):
        super().__init__()
        self.dense = ElasticLinear(config.hidden_size, config.intermediate_size)


class SuperBertOutput(nn.Module):
    def __init__(self, config: SuperBertConfig):
        super().__init__()
        self.dense = ElasticLinear(config.intermediate_size, config.hidden_size)
        self.LayerNorm = ElasticLayerNorm(config.hidden_size, config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)


class SuperBertLayer(nn.Module):
    def __init__(self, config: SuperBertConfig):
        super().__init__()
        self.attention = SuperBertAttention(config)
        self.intermediate = SuperBertIntermediate(config)
        self.output = SuperBertOutput(config)

    def forward(self, x: Tensor, additive_mask: Tensor, layer: LayerArch,
                return_scores: bool = False) -> tuple[Tensor, Tensor | None]:
        context, scores = self.attention.self(x, additive_mask, layer, return_scores)
        x = self.attention.output(context, x, layer)
        inner = F.gelu(F.linear(x, *self.intermediate.dense.sliced(layer.hidden, layer.ffn)))
        out = self.output.dropout(F.linear(inner, *self.output.dense.sliced(layer.ffn, layer.hidden)))
        return self.output.LayerNorm(out + x), scores


class SuperBertEncoder(nn.Module):
    def __init__(self, config: SuperBertConfig):
        super().__init__()
        self.layer = nn.ModuleList(SuperBertLayer(config) for _ in range(config.num_hidden_layers))


class SuperBertPooler(nn.Module):
    def __init__(self, config: SuperBertConfig):
        super().__init__()
        self.dense = ElasticLinear(config.hidden_size, config.hidden_size)

    def forward(self, hidden_states: Tensor) -> Tensor:
        hidden = hidden_states.shape[-1]
        return torch.tanh(F.linear(hidden_states[:, 0], *self.dense.sliced(hidden, hidden)))


@dataclasses.dataclass
class SuperBertModelOutput:
    last_hidden_state: Tensor
    pooler_output: Tensor | None = None
    last_attention_scores: Tensor | None = None  # pre-softmax, unmasked: [batch, heads, seq, seq]


def init_weights(module: nn.Module, std: float) -> None:
    """BERT initialisation: N(0, std) weights, zero biases, unit LayerNorm."""
    for sub in module.modules():
        if isinstance(sub, (ElasticLinear, ElasticEmbedding)):
            nn.init.normal_(sub.weight, mean=0.0, std=std)
        if isinstance(sub, ElasticLinear):
            nn.init.zeros_(sub.bias)
        if isinstance(sub, ElasticLayerNorm):
            nn.init.ones_(sub.weight)
            nn.init.zeros_(sub.bias)


class SuperBertPreTrainedModel(nn.Module):
    """Common base: holds the config and the active arch (``set_sample_config``)."""

    def __init__(self, config: SuperBertConfig):
        super().__init__()
        self.config = config
        self.active_arch = config.largest_arch()

    def set_sample_config(self, arch: dict) -> dict:
        """Select the sub-architecture the next forward passes run (validated against the supernet)."""
        self.active_arch = check_arch_fits(arch, self.config)
        return self.active_arch


class SuperBertModel(SuperBertPreTrainedModel):
    """Embeddings, encoder and pooler of the supernet."""

    def __init__(self, config: SuperBertConfig, add_pooling_layer: bool = True):
        super().__init__(config)
        self.embeddings = SuperBertEmbeddings(config)
        self.encoder = SuperBertEncoder(config)
        self.pooler = SuperBertPooler(config) if add_pooling_layer else None
        init_weights(self, config.initializer_range)

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None, token_type_ids: Tensor | None = None,
                arch: dict | None = None, return_last_scores: bool = False) -> SuperBertModelOutput:
        arch = self.active_arch if arch is None else arch
        layers = layer_archs(arch)
        hidden = arch["sample_hidden_size"]
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        x = self.embeddings(input_ids, token_type_ids, hidden)
        # [batch, 1, 1, seq] additive mask: 0 where attended, the dtype's minimum on padding.
        additive_mask = (1.0 - attention_mask[:, None, None, :].to(x.dtype)) * torch.finfo(x.dtype).min
        scores = None
        for index, layer in enumerate(layers):
            want_scores = return_last_scores and index == len(layers) - 1
            x, scores = self.encoder.layer[index](x, additive_mask, layer, want_scores)
        pooled = self.pooler(x) if self.pooler is not None else None
        return SuperBertModelOutput(x, pooled, scores)


class SuperBertLMPredictionHead(nn.Module):
    """MLM head: dense + gelu + LayerNorm, decoder tied to the (sliced) word embeddings."""

    def __init__(self, config: SuperBertConfig):
        super().__init__()
        self.transform = nn.Module()
        self.transform.dense = ElasticLinear(config.hidden_size, config.hidden_size)
        self.transform.LayerNorm = ElasticLayerNorm(config.hidden_size, config.layer_norm_eps)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))

    def forward(self, hidden_states: Tensor, word_embeddings: ElasticEmbedding) -> Tensor:
        hidden = hidden_states.shape[-1]
        x = F.gelu(F.linear(hidden_states, *self.transform.dense.sliced(hidden, hidden)))
        x = self.transform.LayerNorm(x)
        return F.linear(x, word_embeddings.sliced(hidden), self.bias)


class SuperBertOnlyMLMHead(nn.Module):
    def __init__(self, config: SuperBertConfig):
        super().__init__()
        self.predictions = SuperBertLMPredictionHead(config)


@dataclasses.dataclass
class PreTrainingOutput:
    loss: Tensor | None = None
    mlm_logits: Tensor | None = None  # [n_masked, vocab] when labels were given, else [batch, seq, vocab]
    kd_hidden: Tensor | None = None  # last hidden state projected to the teacher's width
    kd_scores: Tensor | None = None  # last layer's pre-softmax attention scores


class SuperBertForPreTraining(SuperBertPreTrainedModel):
    """The supernet as pre-trained: MLM head (``cls``) and the KD projection (``dense_fit``)."""

    def __init__(self, config: SuperBertConfig):
        super().__init__(config)
        self.bert = SuperBertModel(config, add_pooling_layer=True)
        self.cls = SuperBertOnlyMLMHead(config)
        self.dense_fit = ElasticLinear(config.hidden_size, config.kd_hidden_size)
        init_weights(self, config.initializer_range)

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None, token_type_ids: Tensor | None = None,
                labels: Tensor | None = None, mlm: bool = True, kd: bool = False) -> PreTrainingOutput:
        """``labels``: token ids at masked positions, negative elsewhere (ignored)."""
        out = self.bert(input_ids, attention_mask, token_type_ids, arch=self.active_arch, return_last_scores=kd)
        result = PreTrainingOutput()
        if mlm:
            hidden_states = out.last_hidden_state
            if labels is not None:
                selected = labels >= 0  # logits only where a token is masked (saves the vocab matmul)
                hidden_states = hidden_states[selected]
            result.mlm_logits = self.cls.predictions(hidden_states, self.bert.embeddings.word_embeddings)
            if labels is not None:
                result.loss = F.cross_entropy(result.mlm_logits.float(), labels[selected])
        if kd:
            hidden = out.last_hidden_state.shape[-1]
            result.kd_hidden = F.linear(out.last_hidden_state, *self.dense_fit.sliced(hidden, self.config.kd_hidden_size))
            result.kd_scores = out.last_attention_scores
        return result


class SuperBertForSequenceClassification(SuperBertPreTrainedModel):
    """pooler -> dropout -> classifier (hidden -> num_labels), as BertForSequenceClassification."""

    def __init__(self, config: SuperBertConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.bert = SuperBertModel(config, add_pooling_layer=True)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.classifier = ElasticLinear(config.hidden_size, config.num_labels)
        init_weights(self, config.initializer_range)

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None,
                token_type_ids: Tensor | None = None) -> Tensor:
        pooled = self.bert(input_ids, attention_mask, token_type_ids, arch=self.active_arch).pooler_output
        hidden = pooled.shape[-1]
        return F.linear(self.dropout(pooled), *self.classifier.sliced(hidden, self.num_labels))


def count_active_parameters(model: SuperBertPreTrainedModel, arch: dict) -> int:
    """Parameters of the sliced sub-model: embeddings + encoder + pooler (the original's count)."""
    config = model.config
    hidden = arch["sample_hidden_size"]
    total = (config.vocab_size + config.max_position_embeddings + config.type_vocab_size) * hidden + 2 * hidden
    for layer in layer_archs(arch):
        total += 3 * (hidden * layer.qkv + layer.qkv)  # query, key, value
        total += layer.qkv * hidden + hidden + 2 * hidden  # attention output + LayerNorm
        total += hidden * layer.ffn + layer.ffn  # intermediate
        total += layer.ffn * hidden + hidden + 2 * hidden  # output + LayerNorm
    return total + hidden * hidden + hidden  # pooler
