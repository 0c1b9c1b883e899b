"""Bradley-Terry reward-model loss with per-pair weights and an optional margin.

Under the Bradley-Terry model (Bradley & Terry, 1952) the probability that answer
``y_w`` is preferred to ``y_l`` is ``sigma(r(x, y_w) - r(x, y_l))``; the reward model is
fitted by minimising the negative log-likelihood (the report's equation 2; Ouyang et
al., 2022, InstructGPT, eq. 1):

    loss_i = -log sigma(r_chosen_i - r_rejected_i - m_i)
    L      = sum_i w_i * loss_i / sum_i w_i

``w_i`` is the pair's weight: curation gives each question's kept pairs a total weight of
1 (``1 / C(K, 2)`` per pair when all pairs of ``K`` ranked answers are kept, ``1 / n`` when
n are kept), so each question counts once however many pairs it yields (InstructGPT's
remedy for over-fitting to questions with many answers). ``m_i`` is an
optional margin (Touvron et al., 2023, Llama 2, eq. 2): the chosen reward must beat the
rejected one by at least ``m_i`` before the loss flattens. With all weights 1 and no
margin this is the plain mean used by TRL's RewardTrainer.

Pure tensor functions, no I/O; tested against hand-computed values.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def bradley_terry_loss(
    chosen_rewards: torch.Tensor,
    rejected_rewards: torch.Tensor,
    weights: torch.Tensor | None = None,
    margin: torch.Tensor | float | None = None,
) -> torch.Tensor:
    """Weighted mean of ``-log sigma(r_chosen - r_rejected - margin)`` over the pairs.

    Args:
        chosen_rewards: ``(B,)`` scalar rewards of the preferred answers.
        rejected_rewards: ``(B,)`` rewards of the other answers.
        weights: ``(B,)`` non-negative pair weights (default: all 1).
        margin: ``(B,)`` or a float, subtracted from the reward difference (default: 0).
    """
    chosen_rewards = chosen_rewards.reshape(-1)
    rejected_rewards = rejected_rewards.reshape(-1)
    if chosen_rewards.shape != rejected_rewards.shape:
        raise ValueError(f"chosen {tuple(chosen_rewards.shape)} and rejected {tuple(rejected_rewards.shape)} differ")
    diff = chosen_rewards - rejected_rewards
    if margin is not None:
        diff = diff - (margin if isinstance(margin, float) else margin.reshape(-1).to(diff))
    # logsigmoid is the numerically stable form of log(sigma(x))
    losses = -F.logsigmoid(diff)
    if weights is None:
        return losses.mean()
    weights = weights.reshape(-1).to(losses)
    if weights.shape != losses.shape:
        raise ValueError(f"weights {tuple(weights.shape)} do not match the {losses.shape[0]} pairs")
    if (weights < 0).any():
        raise ValueError("pair weights must be non-negative")
    return (weights * losses).sum() / weights.sum().clamp_min(torch.finfo(losses.dtype).tiny)


def pairwise_accuracy(chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor,
                      weights: torch.Tensor | None = None) -> float:
    """Share of pairs where the chosen answer gets the higher reward (ties count half), optionally weighted."""
    diff = (chosen_rewards.reshape(-1) - rejected_rewards.reshape(-1)).float()
    correct = (diff > 0).float() + 0.5 * (diff == 0).float()
    if weights is None:
        return float(correct.mean())
    w = weights.reshape(-1).float()
    return float((w * correct).sum() / w.sum())
