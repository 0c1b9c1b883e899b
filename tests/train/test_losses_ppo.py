"""PPO losses against values worked out by hand (the arithmetic is in the comments)."""

from __future__ import annotations

import math

import pytest
import torch

from simplesafe.train.losses.ppo import (
    adaptive_kl_coef,
    clipped_policy_loss,
    clipped_value_loss,
    entropy_from_logits,
    gae_advantages,
    kl_estimate,
    kl_penalized_rewards,
    masked_mean,
    token_logprobs,
    whiten,
)


def t(x):
    return torch.tensor(x, dtype=torch.float64)


def test_gae_tiny_trajectory_by_hand():
    # one episode of 3 tokens, gamma=0.9, lambda=0.5
    r, v = t([[1.0, 0.0, 2.0]]), t([[0.5, 1.0, 1.5]])
    m = t([[1, 1, 1]])
    # delta_2 = 2 + 0.9*0 - 1.5 = 0.5                      A_2 = 0.5
    # delta_1 = 0 + 0.9*1.5 - 1.0 = 0.35                   A_1 = 0.35 + 0.45*0.5 = 0.575
    # delta_0 = 1 + 0.9*1.0 - 0.5 = 1.4                    A_0 = 1.4 + 0.45*0.575 = 1.65875
    adv, ret = gae_advantages(r, v, m, gamma=0.9, lam=0.5)
    torch.testing.assert_close(adv, t([[1.65875, 0.575, 0.5]]))
    torch.testing.assert_close(ret, t([[2.15875, 1.575, 2.0]]))


def test_gae_stops_at_the_end_of_each_response():
    # row 2 ends after 2 tokens: its last value must not bootstrap from the padding
    r = t([[0.0, 0.0, 1.0], [0.0, 1.0, 9.0]])
    v = t([[0.0, 0.0, 0.0], [0.0, 0.0, 9.0]])
    m = t([[1, 1, 1], [1, 1, 0]])
    adv, ret = gae_advantages(r, v, m, gamma=1.0, lam=1.0)
    # gamma = lambda = 1 and V = 0: the advantage is the reward-to-go
    torch.testing.assert_close(adv, t([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]]))
    torch.testing.assert_close(ret, adv)


def test_gae_lambda_zero_is_one_step_td():
    r, v, m = t([[1.0, 2.0]]), t([[3.0, 4.0]]), t([[1, 1]])
    adv, _ = gae_advantages(r, v, m, gamma=0.5, lam=0.0)
    # A_0 = 1 + 0.5*4 - 3 = 0 ; A_1 = 2 + 0 - 4 = -2
    torch.testing.assert_close(adv, t([[0.0, -2.0]]))


def test_clipped_policy_loss_by_hand():
    adv = t([[1.0, -1.0, 2.0]])
    old = t([[0.0, 0.0, 0.0]])
    new = torch.log(t([[1.5, 0.5, 1.1]]))  # ratios 1.5, 0.5, 1.1
    m = t([[1, 1, 1]])
    # token 0: A=1,  ratio 1.5 -> max(-1.5, -1.2) = -1.2 (clipped active)
    # token 1: A=-1, ratio 0.5 -> max(0.5, 0.8)   =  0.8 (clipped active)
    # token 2: A=2,  ratio 1.1 -> max(-2.2, -2.2) = -2.2 (inside the clip range)
    loss, stats = clipped_policy_loss(new, old, adv, m, clip_eps=0.2)
    assert loss.item() == pytest.approx((-1.2 + 0.8 - 2.2) / 3)
    assert stats["clipfrac"].item() == pytest.approx(2 / 3)
    assert stats["ratio"].item() == pytest.approx((1.5 + 0.5 + 1.1) / 3)


def test_clipped_policy_loss_ignores_masked_tokens_and_has_the_right_gradient():
    adv = t([[1.0, 100.0]])
    old = t([[0.0, 0.0]])
    new = t([[0.0, 5.0]]).requires_grad_(True)
    loss, _ = clipped_policy_loss(new, old, adv, t([[1, 0]]), clip_eps=0.2)
    loss.backward()
    # only token 0 counts: loss = -A * exp(logp - old) -> d/dlogp = -A * ratio = -1
    assert loss.item() == pytest.approx(-1.0)
    torch.testing.assert_close(new.grad, t([[-1.0, 0.0]]))


def test_clipped_value_loss_by_hand():
    v, old, ret = t([[1.0, 0.0]]), t([[0.0, 0.0]]), t([[2.0, -1.0]])
    # token 0: clipped value 0.2; (1-2)^2 = 1 vs (0.2-2)^2 = 3.24 -> 3.24 (clipped active)
    # token 1: unchanged 0;       (0+1)^2 = 1 vs 1              -> 1
    loss, stats = clipped_value_loss(v, old, ret, t([[1, 1]]), clip_range=0.2)
    assert loss.item() == pytest.approx(0.5 * (3.24 + 1.0) / 2)
    assert stats["clipfrac"].item() == pytest.approx(0.5)


def test_kl_estimators_by_hand():
    logp, ref = t([math.log(0.5)]), t([math.log(0.25)])
    # logr = log(0.25/0.5) = -log 2
    ln2 = math.log(2)
    assert kl_estimate(logp, ref, "k1").item() == pytest.approx(ln2)
    assert kl_estimate(logp, ref, "k2").item() == pytest.approx(0.5 * ln2 ** 2)
    assert kl_estimate(logp, ref, "k3").item() == pytest.approx((0.5 - 1) + ln2)
    assert kl_estimate(ref, logp, "abs").item() == pytest.approx(ln2)
    with pytest.raises(ValueError):
        kl_estimate(logp, ref, "k9")


def test_k1_and_k3_are_unbiased_estimates_of_the_true_kl():
    p = t([0.7, 0.2, 0.1])
    q = t([0.4, 0.4, 0.2])
    true_kl = float((p * (p / q).log()).sum())
    # the expectation under p of each estimator, computed exactly over the 3 outcomes
    for est in ("k1", "k3"):
        expected = float((p * kl_estimate(p.log(), q.log(), est)).sum())
        assert expected == pytest.approx(true_kl)
    assert (kl_estimate(p.log(), q.log(), "k3") >= 0).all()


def test_kl_penalized_rewards_put_the_score_on_the_last_response_token():
    kl = t([[0.1, 0.2, 0.3], [0.5, 0.5, 7.0]])
    m = t([[1, 1, 1], [1, 1, 0]])
    r = kl_penalized_rewards(t([1.0, -2.0]), kl, m, beta=0.5)
    torch.testing.assert_close(r, t([[-0.05, -0.1, -0.15 + 1.0], [-0.25, -0.25 - 2.0, 0.0]]))


def test_whiten_by_hand():
    x = t([[1.0, 2.0, 3.0, 99.0]])
    m = t([[1, 1, 1, 0]])
    # mean 2, unbiased variance ((1 + 0 + 1) / 3) * 3/2 = 1
    torch.testing.assert_close(whiten(x, m, eps=0.0), t([[-1.0, 0.0, 1.0, 0.0]]))
    torch.testing.assert_close(whiten(x, m, shift_mean=False, eps=0.0), t([[1.0, 2.0, 3.0, 0.0]]))
    assert masked_mean(x, m).item() == pytest.approx(2.0)


def test_entropy_and_token_logprobs():
    uniform = torch.zeros(1, 1, 4)
    assert entropy_from_logits(uniform).item() == pytest.approx(math.log(4))
    peaked = torch.tensor([[[100.0, 0.0, 0.0]]])
    assert entropy_from_logits(peaked).item() == pytest.approx(0.0, abs=1e-6)
    lp = token_logprobs(torch.log(torch.tensor([[[0.2, 0.8]]])), torch.tensor([[1]]))
    assert lp.item() == pytest.approx(math.log(0.8), rel=1e-5)


def test_adaptive_kl_controller_moves_towards_the_target():
    # KL twice the target: error clipped to +0.2; beta * (1 + 0.2 * 8 / 80) = 0.1 * 1.02
    assert adaptive_kl_coef(0.1, 12.0, 6.0, horizon=80, n_steps=8) == pytest.approx(0.102)
    # KL below the target: beta shrinks by the proportional error (3/6 - 1 = -0.5 -> -0.2)
    assert adaptive_kl_coef(0.1, 3.0, 6.0, horizon=80, n_steps=8) == pytest.approx(0.098)
    # at the target: unchanged
    assert adaptive_kl_coef(0.1, 6.0, 6.0, horizon=80, n_steps=8) == pytest.approx(0.1)
