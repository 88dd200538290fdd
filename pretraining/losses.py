"""The knowledge-distillation loss of the original (AutoTinyBERT / Bigger&Faster), last layer only:

    loss = MSE(student last-layer attention scores, teacher's)          (pre-softmax)
         + MSE(dense_fit(student last hidden state), teacher last hidden state)

Padding is excluded *properly*: the score MSE averages over (query, key) pairs where both tokens
are real, the hidden-state MSE over real tokens. The original instead added the mask to the
scores and zeroed every entry <= -100 in both tensors, which kept padded query rows in the mean
and diluted it by the padding fraction (and, with its swapped mask argument, masked nothing).
Both scores arrive unmasked (``last_attention_scores`` is taken before the mask is added).

Training reduces by *counts*, not by per-batch means: ``kd_loss_sums`` gives each part's sum of
squared differences and ``kd_counts`` the number of terms, so that the loop can divide the sums of
all micro-batches and ranks of a step by the step's total count (a token-weighted mean that is
the same whatever the batch is split into).
"""

from __future__ import annotations

import torch

Tensor = torch.Tensor


def attention_kd_sum(student_scores: Tensor, teacher_scores: Tensor, attention_mask: Tensor) -> Tensor:
    """Sum of squared differences of ``[batch, heads, seq, seq]`` scores over real (query, key) pairs."""
    if student_scores.shape != teacher_scores.shape:
        raise ValueError(f"attention scores differ in shape: student {tuple(student_scores.shape)}, "
                         f"teacher {tuple(teacher_scores.shape)} (the head counts must match)")
    real = attention_mask.to(torch.bool)
    pairs = (real[:, None, :, None] & real[:, None, None, :]).to(torch.float32)  # [B, 1, S, S]
    return ((student_scores.float() - teacher_scores.float()).pow(2) * pairs).sum()


def hidden_kd_sum(student_hidden: Tensor, teacher_hidden: Tensor, attention_mask: Tensor) -> Tensor:
    """Sum of squared differences of ``[batch, seq, width]`` hidden states over real tokens."""
    if student_hidden.shape != teacher_hidden.shape:
        raise ValueError(f"hidden states differ in shape: student {tuple(student_hidden.shape)} (after dense_fit), "
                         f"teacher {tuple(teacher_hidden.shape)}")
    real = attention_mask.to(torch.float32)[:, :, None]
    return ((student_hidden.float() - teacher_hidden.float()).pow(2) * real).sum()


def kd_counts(attention_mask: Tensor, heads: int, width: int) -> tuple[float, float]:
    """Terms in ``(attention_kd_sum, hidden_kd_sum)``: real (query, key) pairs x heads, real tokens x width."""
    tokens = attention_mask.to(torch.float64).sum(dim=1)
    return float((tokens * tokens).sum()) * heads, float(tokens.sum()) * width


def kd_loss_sums(student_scores: Tensor, teacher_scores: Tensor, student_hidden: Tensor, teacher_hidden: Tensor,
                 attention_mask: Tensor) -> tuple[Tensor, Tensor]:
    """``(attention-score sum, hidden-state sum)`` of squared differences (divide by ``kd_counts``)."""
    return (attention_kd_sum(student_scores, teacher_scores, attention_mask),
            hidden_kd_sum(student_hidden, teacher_hidden, attention_mask))


def kd_losses(student_scores: Tensor, teacher_scores: Tensor, student_hidden: Tensor, teacher_hidden: Tensor,
              attention_mask: Tensor) -> tuple[Tensor, Tensor]:
    """``(attention-score loss, hidden-state loss)`` of one batch (means); the KD objective is their sum."""
    att_sum, rep_sum = kd_loss_sums(student_scores, teacher_scores, student_hidden, teacher_hidden, attention_mask)
    att_count, rep_count = kd_counts(attention_mask, student_scores.shape[1], student_hidden.shape[-1])
    return att_sum / max(att_count, 1.0), rep_sum / max(rep_count, 1.0)
