import pytest
import torch

from orchestrator.errors import MoaError
from orchestrator.objectives import PreferenceSampler


def is_vertex(lam: torch.Tensor) -> torch.Tensor:
    return (lam == 1.0).any(dim=-1) & ((lam == 0.0).sum(dim=-1) == lam.shape[-1] - 1)


def test_deterministic_in_seed_and_step():
    a, b = PreferenceSampler(3, 0.2, seed=7), PreferenceSampler(3, 0.2, seed=7)
    assert torch.equal(a.sample(5), b.sample(5))
    assert torch.equal(a.sample(5, rows=8), b.sample(5, rows=8))
    assert torch.equal(a.sample(5), a.sample(5))  # no hidden state advances
    assert torch.equal(a.sample(5), a.sample(5, rows=1)[0])


def test_different_steps_and_seeds_differ():
    sampler = PreferenceSampler(3)
    draws = torch.stack([sampler.sample(step) for step in range(50)])
    assert len({tuple(row.tolist()) for row in draws}) == 50
    assert not torch.equal(
        PreferenceSampler(3, seed=0).sample(1), PreferenceSampler(3, seed=1).sample(1)
    )


def test_shape_dtype_and_simplex():
    lam = PreferenceSampler(4, 0.3).sample(0, rows=1000)
    assert lam.shape == (1000, 4) and lam.dtype == torch.float32
    assert (lam >= 0).all()
    torch.testing.assert_close(lam.sum(dim=-1), torch.ones(1000))
    assert PreferenceSampler(4).sample(3).shape == (4,)


def test_single_objective_is_always_one():
    sampler = PreferenceSampler(1, 0.5)
    assert torch.equal(sampler.sample(0), torch.tensor([1.0]))
    assert torch.equal(sampler.sample(9, rows=3), torch.ones(3, 1))


def test_vertex_probability_extremes():
    assert is_vertex(PreferenceSampler(3, 1.0).sample(0, rows=500)).all()
    assert not is_vertex(PreferenceSampler(3, 0.0).sample(0, rows=500)).any()
    # Each vertex is drawn about equally often.
    counts = PreferenceSampler(3, 1.0).sample(1, rows=3000).sum(dim=0)
    assert ((counts - 1000).abs() < 100).all()


def test_vertex_frequency_over_steps():
    sampler = PreferenceSampler(3, 0.3, seed=11)
    draws = torch.stack([sampler.sample(step) for step in range(4000)])
    assert abs(is_vertex(draws).float().mean().item() - 0.3) < 0.03


def test_dirichlet_one_is_uniform_on_the_simplex():
    lam = PreferenceSampler(3, 0.0, seed=3).sample(0, rows=20000)
    torch.testing.assert_close(lam.mean(dim=0), torch.full((3,), 1 / 3), atol=0.01, rtol=0)
    # Marginal of λ_1 under Dirichlet(1, 1, 1) is Beta(1, 2): CDF 1 − (1 − x)².
    # Normalised uniform numbers would give about 0.83 and 0.25 here.
    for x in (0.5, 0.2):
        frequency = (lam[:, 0] < x).float().mean().item()
        assert frequency == pytest.approx(1 - (1 - x) ** 2, abs=0.02)


def test_independent_of_global_rng():
    sampler = PreferenceSampler(3, 0.3, seed=5)
    torch.manual_seed(0)
    first = sampler.sample(2, rows=4)
    torch.manual_seed(12345)
    torch.rand(10)
    assert torch.equal(sampler.sample(2, rows=4), first)
    state = torch.get_rng_state()
    sampler.sample(3, rows=4)
    assert torch.equal(torch.get_rng_state(), state)  # global stream not consumed


@pytest.mark.parametrize(
    ("args", "name"),
    [((0,), "num_objectives"), ((2, -0.1), "vertex_probability"), ((2, 1.5), "vertex_probability")],
)
def test_constructor_errors(args, name):
    with pytest.raises(MoaError, match=name):
        PreferenceSampler(*args)


def test_sample_errors():
    sampler = PreferenceSampler(2)
    with pytest.raises(MoaError, match="rows"):
        sampler.sample(0, rows=0)
    with pytest.raises(MoaError, match="step"):
        sampler.sample(-1)
