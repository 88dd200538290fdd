"""The knowledge-distillation loss of the original (AutoTinyBERT / Bigger&Faster), last layer only:

    loss = MSE(student last-layer attention scores, teacher's)          (pre-softmax)
         + MSE(dense_fit(student last hidden state), teacher last hidden state)

Padding is excluded *properly*: the score MSE averages over (query, key) pairs where both tokens
are real, the hidden-state MSE over real tokens. The original instead added the mask to the
scores and zeroed every entry <= -100 in both tensors, which kept padded query rows in the mean
and diluted it by the padding fraction (and, with its swapped mask argument, masked nothing).
Both scores arrive unmasked (``last_attention_scores`` is taken before the mask is added).
"""

from __future__ import annotations

import torch

Tensor = torch.Tensor


def attention_kd_loss(student_scores: Tensor, teacher_scores: Tensor, attention_mask: Tensor) -> Tensor:
    """Mean squared difference of ``[batch, heads, seq, seq]`` scores over real (query, key) pairs."""
    if student_scores.shape != teacher_scores.shape:
        raise ValueError(f"attention scores differ in shape: student {tuple(student_scores.shape)}, "
                         f"teacher {tuple(teacher_scores.shape)} (the head counts must match)")
    real = attention_mask.to(torch.bool)
    pairs = (real[:, None, :, None] & real[:, None, None, :]).to(torch.float32)  # [B, 1, S, S]
    squared = (student_scores.float() - teacher_scores.float()).pow(2) * pairs
    return squared.sum() / (pairs.sum() * student_scores.shape[1]).clamp_min(1.0)


def hidden_kd_loss(student_hidden: Tensor, teacher_hidden: Tensor, attention_mask: Tensor) -> Tensor:
    """Mean squared difference of ``[batch, seq, width]`` hidden states over real tokens."""
    if student_hidden.shape != teacher_hidden.shape:
        raise ValueError(f"hidden states differ in shape: student {tuple(student_hidden.shape)} (after dense_fit), "
                         f"teacher {tuple(teacher_hidden.shape)}")
    real = attention_mask.to(torch.float32)[:, :, None]
    squared = (student_hidden.float() - teacher_hidden.float()).pow(2) * real
    return squared.sum() / (real.sum() * student_hidden.shape[-1]).clamp_min(1.0)


def kd_losses(student_scores: Tensor, teacher_scores: Tensor, student_hidden: Tensor, teacher_hidden: Tensor,
              attention_mask: Tensor) -> tuple[Tensor, Tensor]:
    """``(attention-score loss, hidden-state loss)``; the KD objective is their sum."""
    return (attention_kd_loss(student_scores, teacher_scores, attention_mask),
            hidden_kd_loss(student_hidden, teacher_hidden, attention_mask))
