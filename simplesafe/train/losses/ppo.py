"""PPO losses for language models, as small pure functions on tensors.

Everything here is a function of tensors shaped ``(batch, response_len)``; ``mask`` is 1
on the response tokens that count (up to and including the first EOS) and 0 on padding.
No models, no I/O: :mod:`simplesafe.train.ppo` calls these in its loop, and
``tests/train/test_losses_ppo.py`` checks each against hand-computed values.

Per-token reward with a KL penalty (Ziegler et al., 2019, eq. 2; Ouyang et al., 2022, eq. 2)::

    r_t = -beta * KL_t                    for every response token t
    r_T += score(x, y)                    at the last response token T

where ``KL_t`` estimates KL(pi || pi_ref) from the sampled token (Schulman, 2020,
"Approximating KL divergence"), with ``logr = log pi_ref(y_t) - log pi(y_t)``::

    k1 = -logr       k2 = logr^2 / 2       k3 = (exp(logr) - 1) - logr       abs = |logr|

Generalised advantage estimation (Schulman et al., 2016)::

    delta_t = r_t + gamma * V_{t+1} - V_t          (V = 0 after the last token)
    A_t     = delta_t + gamma * lambda * A_{t+1}
    R_t     = A_t + V_t                            (the value target)

Clipped surrogate objective (Schulman et al., 2017, eq. 7), minimised as a loss::

    rho_t  = exp(log pi(y_t) - log pi_old(y_t))
    L_clip = mean_t max(-A_t * rho_t, -A_t * clip(rho_t, 1 - eps, 1 + eps))

Clipped value loss (as in OpenAI's baselines and Ziegler et al.'s lm-human-preferences)::

    V_clip = V_old + clip(V - V_old, -eps_v, eps_v)
    L_V    = 0.5 * mean_t max((V - R)^2, (V_clip - R)^2)

Adaptive KL coefficient (Ziegler et al., 2019, section 2.2)::

    e_t      = clip(KL_t / KL_target - 1, -0.2, 0.2)
    beta_t+1 = beta_t * (1 + e_t * n_steps / horizon)
"""

from __future__ import annotations

from typing import Literal

import torch

KLEstimator = Literal["k1", "k2", "k3", "abs"]


def masked_mean(values: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of ``values`` where ``mask`` is 1 (over all elements, or along ``dim``)."""
    mask = mask.to(values.dtype)
    if dim is None:
        return (values * mask).sum() / mask.sum().clamp(min=1.0)
    return (values * mask).sum(dim) / mask.sum(dim).clamp(min=1.0)


def masked_var(values: torch.Tensor, mask: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    """Variance of the masked elements; ``unbiased`` applies Bessel's correction n / (n - 1)."""
    mean = masked_mean(values, mask)
    var = masked_mean((values - mean) ** 2, mask)
    if unbiased:
        n = mask.sum()
        if n < 2:
            raise ValueError("the unbiased variance needs at least two unmasked values")
        var = var * n / (n - 1)
    return var


def whiten(values: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8) -> torch.Tensor:
    """Normalise the masked elements to zero mean and unit variance (advantage whitening).

    With ``shift_mean=False`` only the scale changes (used for rewards, whose sign matters).
    Masked positions come back as 0.
    """
    mean, var = masked_mean(values, mask), masked_var(values, mask)
    out = (values - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        out = out + mean
    return out * mask.to(values.dtype)


def kl_estimate(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, estimator: KLEstimator = "k1") -> torch.Tensor:
    """Per-token estimate of KL(pi || pi_ref) from tokens sampled from pi (Schulman, 2020).

    ``k1`` is unbiased but can be negative per token; ``k3`` is unbiased and never negative;
    ``k2`` is biased with low variance; ``abs`` is |k1|.
    """
    logr = ref_logprobs - logprobs
    if estimator == "k1":
        return -logr
    if estimator == "k2":
        return 0.5 * logr ** 2
    if estimator == "k3":
        return torch.expm1(logr) - logr
    if estimator == "abs":
        return logr.abs()
    raise ValueError(f"unknown KL estimator {estimator!r}; allowed: k1, k2, k3, abs")


def last_token_index(mask: torch.Tensor) -> torch.Tensor:
    """Index of the last 1 in each row of a prefix mask (0 for an all-zero row)."""
    return (mask.long().sum(dim=1) - 1).clamp(min=0)


def kl_penalized_rewards(scores: torch.Tensor, kl: torch.Tensor, mask: torch.Tensor, beta: float) -> torch.Tensor:
    """Per-token rewards: ``-beta * kl`` on every response token, plus the sequence score on the last one."""
    rewards = -beta * kl * mask.to(kl.dtype)
    idx = last_token_index(mask)
    rows = torch.arange(rewards.shape[0], device=rewards.device)
    rewards[rows, idx] += scores.to(rewards.dtype) * (mask.sum(dim=1) > 0).to(rewards.dtype)
    return rewards


def gae_advantages(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor,
                   gamma: float = 1.0, lam: float = 0.95) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over response tokens; returns ``(advantages, returns)``.

    ``mask`` must be a prefix mask (ones then zeros) per row: the episode ends at its last
    1, so the bootstrap value beyond it is 0. Masked positions come back as 0.
    """
    mask = mask.to(values.dtype)
    values = values * mask
    rewards = rewards * mask
    T = rewards.shape[1]
    advantages = torch.zeros_like(rewards)
    last = torch.zeros(rewards.shape[0], dtype=rewards.dtype, device=rewards.device)
    for t in reversed(range(T)):
        next_value = values[:, t + 1] if t + 1 < T else torch.zeros_like(last)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        last = (delta + gamma * lam * last) * mask[:, t]
        advantages[:, t] = last
    returns = (advantages + values) * mask
    return advantages, returns


def clipped_policy_loss(logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor,
                        mask: torch.Tensor, clip_eps: float = 0.2) -> tuple[torch.Tensor, dict]:
    """PPO-clip surrogate loss (Schulman et al., 2017) and its diagnostics.

    Returns ``(loss, stats)`` with ``stats`` = ``clipfrac`` (share of tokens where the clipped
    term was the active one), ``approx_kl`` (k3 estimate of KL(pi_old || pi)) and ``ratio``
    (mean probability ratio), all as detached scalars.
    """
    log_ratio = logprobs - old_logprobs
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_eps, 1.0 + clip_eps)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    with torch.no_grad():
        stats = {
            "clipfrac": masked_mean((clipped > unclipped).to(logprobs.dtype), mask),
            "approx_kl": masked_mean(torch.expm1(log_ratio) - log_ratio, mask),
            "ratio": masked_mean(ratio, mask),
        }
    return loss, stats


def clipped_value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor,
                       mask: torch.Tensor, clip_range: float = 0.2) -> tuple[torch.Tensor, dict]:
    """Clipped squared-error value loss and the share of tokens where clipping was active."""
    clipped_values = old_values + torch.clamp(values - old_values, -clip_range, clip_range)
    err = (values - returns) ** 2
    err_clipped = (clipped_values - returns) ** 2
    loss = 0.5 * masked_mean(torch.maximum(err, err_clipped), mask)
    with torch.no_grad():
        stats = {"clipfrac": masked_mean((err_clipped > err).to(values.dtype), mask)}
    return loss, stats


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of the categorical distribution at each position: ``logsumexp(l) - sum softmax(l) * l``."""
    logits = logits.float()
    probs = torch.softmax(logits, dim=-1)
    return torch.logsumexp(logits, dim=-1) - (probs * logits).sum(dim=-1)


def token_logprobs(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """``log softmax(logits)[tokens]`` at each position (logits already aligned with tokens)."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    return torch.gather(logp, -1, tokens.unsqueeze(-1)).squeeze(-1)


def adaptive_kl_coef(beta: float, current_kl: float, target_kl: float, horizon: float, n_steps: int) -> float:
    """One update of Ziegler et al.'s proportional KL controller; returns the new coefficient."""
    error = min(max(current_kl / target_kl - 1.0, -0.2), 0.2)
    return beta * (1.0 + error * n_steps / horizon)
