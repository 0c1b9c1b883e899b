"""Direct Preference Optimization loss (Rafailov et al., 2023; the report's equation 6).

With the policy's and the frozen reference's summed log-probabilities of the chosen
answer ``y_w`` and the rejected answer ``y_l``:

    h      = beta * [(log pi(y_w|x) - log pi_ref(y_w|x)) - (log pi(y_l|x) - log pi_ref(y_l|x))]
    sigmoid:  L = -(1 - eps) * log sigma(h) - eps * log sigma(-h)      (eps: label smoothing,
              the "conservative DPO" of Mitchell, 2023; eps = 0 is the paper's loss)
    ipo:      L = (h / beta - 1 / (2 beta))^2                            (Azar et al., 2023)

The implicit rewards ``beta * (log pi - log pi_ref)`` of each answer are returned too;
their difference (chosen - rejected) is the "reward margin" the trainer reports.
Training uses TRL's DPOTrainer, which implements the same equations; this module is
the readable reference and is tested against hand-computed values.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F


def dpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    reference_chosen_logps: torch.Tensor,
    reference_rejected_logps: torch.Tensor,
    beta: float = 0.1,
    label_smoothing: float = 0.0,
    loss_type: Literal["sigmoid", "ipo"] = "sigmoid",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-pair DPO losses and the implicit rewards of the chosen and rejected answers.

    All inputs are ``(B,)`` sums of token log-probabilities over each answer.
    Returns ``(losses (B,), chosen_rewards (B,), rejected_rewards (B,))``; average the
    losses for the batch loss.
    """
    if beta <= 0:
        raise ValueError(f"beta must be positive, got {beta}")
    chosen_logratio = policy_chosen_logps - reference_chosen_logps
    rejected_logratio = policy_rejected_logps - reference_rejected_logps
    logits = chosen_logratio - rejected_logratio
    if loss_type == "sigmoid":
        losses = -(1 - label_smoothing) * F.logsigmoid(beta * logits) - label_smoothing * F.logsigmoid(-beta * logits)
    elif loss_type == "ipo":
        losses = (logits - 1 / (2 * beta)) ** 2
    else:
        raise ValueError(f"unknown DPO loss_type {loss_type!r}; allowed: sigmoid, ipo")
    chosen_rewards = beta * chosen_logratio.detach()
    rejected_rewards = beta * rejected_logratio.detach()
    return losses, chosen_rewards, rejected_rewards
