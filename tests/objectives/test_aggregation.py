import math

import pytest
import torch

from orchestrator.errors import MoaError
from orchestrator.objectives import AGGREGATION_METHODS, aggregate


def t(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32)


LOSSES = t(0.7, 0.2, 1.5)
PREF = t(0.5, 0.3, 0.2)  # weighted: 0.35, 0.06, 0.30


def test_methods_listed():
    assert AGGREGATION_METHODS == ("ls", "tche", "stch")


def test_ls_is_the_dot_product():
    out = aggregate(LOSSES, PREF, "ls")
    assert out.shape == ()
    assert out.item() == pytest.approx(0.35 + 0.06 + 0.30, abs=1e-6)


def test_tche_is_the_largest_weighted_loss():
    assert aggregate(LOSSES, PREF, "tche").item() == pytest.approx(0.35, abs=1e-6)


def test_tche_gradient_goes_to_the_argmax_only():
    losses = LOSSES.clone().requires_grad_()
    aggregate(losses, PREF, "tche").backward()
    torch.testing.assert_close(losses.grad, t(0.5, 0.0, 0.0))


def test_zero_weight_objective_drops_out():
    pref = t(0.6, 0.4, 0.0)
    losses = t(0.5, 1.0, 1e6)
    assert aggregate(losses, pref, "tche").item() == pytest.approx(0.4, abs=1e-6)
    # Below the ideal point the weighted terms are negative and a 0 term would win the max.
    ideal = t(1.0, 2.0, 0.0)
    out = aggregate(losses, pref, "tche", ideal=ideal)  # terms −0.3, −0.4, (0)
    assert out.item() == pytest.approx(-0.3, abs=1e-6)
    stch = aggregate(losses, pref, "stch", ideal=ideal, mu=1e-4)
    assert stch.item() == pytest.approx(-0.3, abs=1e-3)
    # STCH with a large μ: a 0 term would add exp(0) to the sum.
    want = math.log(math.exp(-0.3) + math.exp(-0.4))
    assert aggregate(losses, pref, "stch", ideal=ideal, mu=1.0).item() == pytest.approx(want)
    # Even an infinite loss of a dropped objective leaves every method finite, gradients too.
    inf_losses = t(0.5, 1.0, math.inf).requires_grad_()
    for method in AGGREGATION_METHODS:
        out = aggregate(inf_losses, pref, method)
        assert math.isfinite(out.item())
        (grad,) = torch.autograd.grad(out, inf_losses)
        assert torch.isfinite(grad).all() and grad[2] == 0
    assert aggregate(inf_losses, pref, "ls").item() == pytest.approx(0.7, abs=1e-6)


def test_stch_hand_value():
    mu = 0.1
    want = mu * math.log(math.exp(0.35 / mu) + math.exp(0.06 / mu) + math.exp(0.30 / mu))
    assert aggregate(LOSSES, PREF, "stch", mu=mu).item() == pytest.approx(want, abs=1e-5)


def test_stch_tends_to_tche_and_upper_bounds_it():
    gen = torch.Generator().manual_seed(0)
    losses = torch.rand(50, 4, generator=gen) * 3
    exponential = -torch.log(torch.rand(50, 4, generator=gen))
    pref = exponential / exponential.sum(dim=-1, keepdim=True)
    tche = aggregate(losses, pref, "tche")
    torch.testing.assert_close(aggregate(losses, pref, "stch", mu=1e-4), tche, atol=1e-3, rtol=0)
    for mu in (1e-2, 0.1, 1.0):
        assert (aggregate(losses, pref, "stch", mu=mu) >= tche - 1e-6).all()
    # The gap is at most μ·log m
    assert (aggregate(losses, pref, "stch", mu=0.1) <= tche + 0.1 * math.log(4) + 1e-6).all()


def test_ideal_point_shifts():
    ideal = t(0.5, 0.0, 1.0)  # shifted weighted: 0.1, 0.06, 0.1
    assert aggregate(LOSSES, PREF, "tche", ideal=ideal).item() == pytest.approx(0.1, abs=1e-6)
    assert aggregate(LOSSES, PREF, "tche", ideal=t(0.0, 0.0, 0.0)).item() == pytest.approx(0.35)
    # LS: the ideal point is a constant offset and is not used
    assert aggregate(LOSSES, PREF, "ls", ideal=ideal).item() == pytest.approx(0.71, abs=1e-6)


def test_batched_inputs():
    losses = torch.stack([LOSSES, t(1.0, 2.0, 3.0)])
    out = aggregate(losses, PREF, "ls")  # one λ for every row
    torch.testing.assert_close(out, t(0.71, 0.5 + 0.6 + 0.6))
    pref = torch.stack([PREF, t(0.0, 1.0, 0.0)])  # one λ per row
    torch.testing.assert_close(aggregate(losses, pref, "tche"), t(0.35, 2.0))
    torch.testing.assert_close(aggregate(losses, pref, "ls"), t(0.71, 2.0))
    assert aggregate(losses, pref, "stch").shape == (2,)


def test_errors():
    with pytest.raises(MoaError, match="ls, tche, stch"):
        aggregate(LOSSES, PREF, "max")
    with pytest.raises(MoaError, match="mu"):
        aggregate(LOSSES, PREF, "stch", mu=0.0)
    with pytest.raises(MoaError, match="mu"):
        aggregate(LOSSES, PREF, "stch", mu=-1.0)
    with pytest.raises(MoaError, match="pref"):
        aggregate(LOSSES, t(0.5, 0.5), "ls")
    with pytest.raises(MoaError, match="ideal"):
        aggregate(LOSSES, PREF, "tche", ideal=t(0.0, 0.0))
