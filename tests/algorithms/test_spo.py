import math

import pytest
import torch

from orchestrator.algorithms.spo import spo_margins
from orchestrator.errors import MoaError
from orchestrator.objectives import per_objective_dpo_losses, preference_loss

# Three pairs, two objectives; rows are log-probs of (a, b).
REF = torch.tensor([[-10.0, -12.0], [-8.0, -8.5], [-20.0, -19.0]])
STAGE_1 = torch.tensor([[-9.0, -13.0], [-8.2, -8.0], [-20.0, -19.0]])
STAGE_2 = torch.tensor([[-8.5, -13.5], [-8.0, -8.4], [-19.0, -19.5]])
SIGNS = torch.tensor([[1, 1], [1, 1], [1, -1]])  # objective 1 prefers b in pair 3


def test_stage_two_margin_is_w_beta_h_of_stage_one_against_the_reference():
    margins = spo_margins([REF, STAGE_1], SIGNS, objective=1, betas=[0.1], weights=[0.5])
    # h_{π1/ref}(a, b) by hand: pair 1: (−9+10) − (−13+12) = 2; pair 2: (−0.2) − (0.5) = −0.7;
    # pair 3: 0 − 0 = 0. Objective 1 prefers a, a, b: h is taken in that orientation.
    expected = [0.5 * 0.1 * 2.0, 0.5 * 0.1 * -0.7, -(0.5 * 0.1 * 0.0)]
    assert margins[:, 1].tolist() == pytest.approx(expected, abs=1e-6)
    assert margins[:, 0].tolist() == [0.0, 0.0, 0.0]  # only the stage's objective has a margin


def test_stage_three_margin_sums_every_earlier_stage():
    margins = spo_margins(
        [REF, STAGE_1, STAGE_2], SIGNS, objective=0, betas=[0.1, 0.2], weights=[1.0, 0.5]
    )
    h1 = [2.0, -0.7, 0.0]  # h_{π1/ref}(a, b)
    # h_{π2/π1}(a, b): pair 1: 0.5 − (−0.5) = 1; pair 2: 0.2 − (−0.4) = 0.6; pair 3: 1 − (−0.5)
    h2 = [1.0, 0.6, 1.5]
    expected = [1.0 * 0.1 * x + 0.5 * 0.2 * y for x, y in zip(h1, h2, strict=True)]
    assert margins[:, 0].tolist() == pytest.approx(expected, abs=1e-6)


def test_with_one_beta_and_unit_weights_the_margin_telescopes_to_the_last_stage():
    telescoped = spo_margins(
        [REF, STAGE_1, STAGE_2], SIGNS, objective=0, betas=[0.1, 0.1], weights=[1.0, 1.0]
    )
    direct = spo_margins([REF, STAGE_2], SIGNS, objective=0, betas=[0.1], weights=[1.0])
    assert torch.allclose(telescoped, direct)


def test_ties_get_no_margin():
    signs = torch.tensor([[1, 0], [1, 1], [1, -1]])
    margins = spo_margins([REF, STAGE_1], signs, objective=1, betas=[0.1], weights=[1.0])
    assert margins[0, 1] == 0.0


def test_conflicting_pairs_get_smaller_gradient_weights_than_agreeing_ones():
    # Two pairs that the stage-2 objective labels the same way (a ≻ b) and the policy starts at
    # the anchor (h = 0). Stage 1's model agrees on pair 1 and disagrees on pair 2.
    ref = torch.tensor([[-10.0, -10.0], [-10.0, -10.0]])
    stage_1 = torch.tensor([[-9.0, -11.0], [-11.0, -9.0]])
    signs = torch.tensor([[1, 1], [-1, 1]])  # objective 0's labels agree with stage 1's model
    margins = spo_margins([ref, stage_1], signs, objective=1, betas=[0.1], weights=[1.0])
    policy_a = stage_1[:, 0].clone().requires_grad_(True)
    policy_b = stage_1[:, 1].clone()
    losses = preference_loss(
        policy_a, policy_b, stage_1[:, 0], stage_1[:, 1], beta=0.1, margin=margins[:, 1]
    )
    losses.sum().backward()
    weights = -policy_a.grad / 0.1  # dL/dh = −β·σ(margin − β·h)
    # margins ±w·β·h_{π1/ref} = ±0.1·2: the weights are σ(0.2) and σ(−0.2)
    assert weights.tolist() == pytest.approx([1 / (1 + math.exp(-0.2)), 1 / (1 + math.exp(0.2))])
    assert weights[1] < 0.5 < weights[0]  # plain DPO would weigh both 0.5


def test_the_margin_goes_into_the_dpo_kernel_per_objective():
    margins = spo_margins([REF, STAGE_1], SIGNS, objective=1, betas=[0.1], weights=[1.0])
    policy = STAGE_1 + torch.tensor([[0.3, -0.1], [0.0, 0.2], [0.1, 0.0]])
    losses = per_objective_dpo_losses(
        policy[:, 0], policy[:, 1], STAGE_1[:, 0], STAGE_1[:, 1], SIGNS, beta=0.1, margins=margins
    )
    h = (policy[:, 0] - STAGE_1[:, 0]) - (policy[:, 1] - STAGE_1[:, 1])
    signed = SIGNS[:, 1] * h
    expected = -torch.nn.functional.logsigmoid(0.1 * signed - margins[:, 1]).mean()
    assert losses[1].item() == pytest.approx(expected.item())
    plain = -torch.nn.functional.logsigmoid(0.1 * SIGNS[:, 0] * h).mean()
    assert losses[0].item() == pytest.approx(plain.item())


@pytest.mark.parametrize(
    ("logps", "betas", "message"),
    [
        ([REF], [0.1], "at least one earlier stage"),
        ([REF, STAGE_1, STAGE_2], [0.1], "2 earlier stages need 2 betas"),
        ([REF, STAGE_1[:2]], [0.1], r"shape \[3, 2\]"),
    ],
)
def test_bad_inputs_are_refused(logps, betas, message):
    with pytest.raises(MoaError, match=message):
        spo_margins(logps, SIGNS, objective=0, betas=betas, weights=[1.0, 1.0])
