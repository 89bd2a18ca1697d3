import math

import pytest
import torch

from orchestrator.algorithms.modpo import main_objective, modpo_beta, modpo_margins
from orchestrator.errors import MoaError
from orchestrator.objectives import per_objective_dpo_losses


def log_sigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x))


def test_main_objective_is_the_heaviest_and_the_first_on_ties():
    assert main_objective([0.25, 0.75]) == 1
    assert main_objective([0.5, 0.5]) == 0
    assert main_objective([0.2, 0.4, 0.4]) == 1


def test_modpo_loss_on_hand_made_values():
    # Two pairs, three objectives, λ = (0.5, 0.3, 0.2): main objective 0, margins from
    # objectives 1 and 2.
    lam = [0.5, 0.3, 0.2]
    signs = torch.tensor([[1, -1, 1], [-1, 1, 1]])
    rewards = torch.tensor(  # [pair, response a/b, objective]
        [[[0.0, 0.4, -0.2], [0.0, 0.1, 0.3]], [[0.0, -0.3, 0.5], [0.0, 0.2, 0.1]]]
    )
    policy = torch.tensor([[-10.0, -12.0], [-7.0, -6.0]])
    reference = torch.tensor([[-10.5, -11.0], [-7.5, -6.2]])
    beta = 0.1

    margins = modpo_margins(rewards, signs, lam)
    losses = per_objective_dpo_losses(
        policy[:, 0],
        policy[:, 1],
        reference[:, 0],
        reference[:, 1],
        signs,
        beta=modpo_beta(beta, lam),
        margins=margins,
    )

    # By hand: L = −log σ((β·h − Σ_{j≠0} λ_j·(r_j(y_w) − r_j(y_l))) / λ_0).
    # Pair 1: objective 0 prefers a. h = (−10 + 10.5) − (−12 + 11) = 1.5;
    #   Σ = 0.3·(0.4 − 0.1) + 0.2·(−0.2 − 0.3) = 0.09 − 0.1 = −0.01.
    # Pair 2: objective 0 prefers b. h = (−6 + 6.2) − (−7 + 7.5) = −0.3;
    #   Σ = 0.3·(0.2 + 0.3) + 0.2·(0.1 − 0.5) = 0.15 − 0.08 = 0.07.
    pair_1 = -log_sigmoid((0.1 * 1.5 + 0.01) / 0.5)
    pair_2 = -log_sigmoid((0.1 * -0.3 - 0.07) / 0.5)
    assert losses[0].item() == pytest.approx((pair_1 + pair_2) / 2, rel=1e-6)
    assert margins[:, 1:].abs().sum() == 0  # only the main objective is trained with a margin


def test_at_a_vertex_modpo_is_plain_dpo():
    signs = torch.tensor([[1, -1]])
    rewards = torch.tensor([[[0.3, 0.9], [0.1, -0.4]]])
    assert modpo_margins(rewards, signs, [1.0, 0.0]).abs().sum() == 0
    assert modpo_beta(0.1, [1.0, 0.0]) == 0.1


def test_bad_shapes_are_refused():
    with pytest.raises(MoaError, match=r"shape \[1, 2, 2\]"):
        modpo_margins(torch.zeros(1, 2, 3), torch.tensor([[1, -1]]), [0.5, 0.5])
