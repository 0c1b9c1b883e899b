"""Bradley-Terry and DPO losses against values computed by hand."""

from __future__ import annotations

import math

import pytest
import torch

from simplesafe.train.losses import bradley_terry_loss, dpo_loss, pairwise_accuracy


def _nls(x: float) -> float:
    """-log sigma(x) written out."""
    return math.log(1.0 + math.exp(-x))


def test_bradley_terry_unweighted_is_mean_of_neg_log_sigmoid():
    c, r = torch.tensor([2.0, 0.0, -1.0]), torch.tensor([1.0, 0.0, 1.0])
    expected = (_nls(1.0) + _nls(0.0) + _nls(-2.0)) / 3
    assert bradley_terry_loss(c, r).item() == pytest.approx(expected, rel=1e-6)
    # log 2 at a tie: the textbook value
    assert bradley_terry_loss(torch.zeros(1), torch.zeros(1)).item() == pytest.approx(math.log(2), rel=1e-6)


def test_bradley_terry_weights_and_margin():
    c, r = torch.tensor([2.0, 0.5]), torch.tensor([1.0, 1.0])
    w = torch.tensor([1 / 3, 1.0])  # 1/C(3,2) for a question with 3 answers, 1/C(2,2) for one with 2
    m = torch.tensor([0.5, 0.0])
    expected = ((1 / 3) * _nls(2.0 - 1.0 - 0.5) + 1.0 * _nls(0.5 - 1.0)) / (1 / 3 + 1.0)
    assert bradley_terry_loss(c, r, weights=w, margin=m).item() == pytest.approx(expected, rel=1e-6)
    # a float margin is the same for every pair
    expected_f = (_nls(1.0 - 0.25) + _nls(-0.5 - 0.25)) / 2
    assert bradley_terry_loss(c, r, margin=0.25).item() == pytest.approx(expected_f, rel=1e-6)


def test_bradley_terry_weight_zero_ignores_pair_and_gradient_sign():
    c = torch.tensor([1.0, -5.0], requires_grad=True)
    r = torch.tensor([0.0, 0.0])
    loss = bradley_terry_loss(c, r, weights=torch.tensor([1.0, 0.0]))
    assert loss.item() == pytest.approx(_nls(1.0), rel=1e-6)
    loss.backward()
    assert c.grad[0] < 0 and c.grad[1] == 0  # raising the chosen reward lowers the loss


def test_bradley_terry_rejects_bad_shapes_and_negative_weights():
    with pytest.raises(ValueError):
        bradley_terry_loss(torch.zeros(2), torch.zeros(3))
    with pytest.raises(ValueError):
        bradley_terry_loss(torch.zeros(2), torch.zeros(2), weights=torch.tensor([1.0, -1.0]))


def test_pairwise_accuracy_counts_ties_half():
    assert pairwise_accuracy(torch.tensor([1.0, 0.0, 2.0, 3.0]), torch.tensor([0.0, 0.0, 3.0, 1.0])) == pytest.approx(0.625)
    assert pairwise_accuracy(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0]), torch.tensor([3.0, 1.0])) == pytest.approx(0.75)


def test_dpo_sigmoid_loss_and_rewards_by_hand():
    pc, pr = torch.tensor([-10.0, -4.0]), torch.tensor([-12.0, -3.0])
    rc, rr = torch.tensor([-11.0, -4.0]), torch.tensor([-11.0, -5.0])
    beta = 0.5
    losses, cr, rj = dpo_loss(pc, pr, rc, rr, beta=beta)
    # pair 1: chosen log-ratio 1, rejected log-ratio -1 -> h = 0.5 * 2 = 1
    # pair 2: chosen log-ratio 0, rejected log-ratio 2 -> h = 0.5 * -2 = -1
    assert losses.tolist() == pytest.approx([_nls(1.0), _nls(-1.0)], rel=1e-6)
    assert cr.tolist() == pytest.approx([0.5, 0.0])
    assert rj.tolist() == pytest.approx([-0.5, 1.0])
    # policy equal to reference: loss log 2, zero margin
    l0, c0, r0 = dpo_loss(rc, rr, rc, rr, beta=0.1)
    assert l0.tolist() == pytest.approx([math.log(2)] * 2, rel=1e-6)
    assert (c0 - r0).abs().max().item() == 0


def test_dpo_label_smoothing_and_ipo_by_hand():
    one = torch.tensor([0.0])
    losses, _, _ = dpo_loss(torch.tensor([1.0]), one, one, one, beta=1.0, label_smoothing=0.2)
    assert losses.item() == pytest.approx(0.8 * _nls(1.0) + 0.2 * _nls(-1.0), rel=1e-6)
    losses, _, _ = dpo_loss(torch.tensor([1.0]), one, one, one, beta=0.25, loss_type="ipo")
    assert losses.item() == pytest.approx((1.0 - 1 / (2 * 0.25)) ** 2, rel=1e-6)
    with pytest.raises(ValueError):
        dpo_loss(one, one, one, one, loss_type="hinge-ish")
