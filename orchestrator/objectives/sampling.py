"""Preference vectors λ for training: uniform on the simplex, vertices with extra probability."""

import hashlib

import torch

from orchestrator.errors import MoaError


class PreferenceSampler:
    """Draws λ as a deterministic function of (seed, step), independent of global RNG state.

    A resumed run therefore re-draws the same λ for the same step. Each row is a vertex e_i
    (i uniform) with probability vertex_probability, otherwise Dirichlet(1, …, 1), i.e. uniform
    on the simplex, from normalised Exponential(1) draws. Samples are float32 on the CPU.
    """

    def __init__(self, num_objectives: int, vertex_probability: float = 0.0, seed: int = 0):
        if isinstance(num_objectives, bool) or not isinstance(num_objectives, int):
            raise MoaError(f"num_objectives must be an integer >= 1; got {num_objectives!r}")
        if num_objectives < 1:
            raise MoaError(f"num_objectives must be an integer >= 1; got {num_objectives!r}")
        if (
            isinstance(vertex_probability, bool)
            or not isinstance(vertex_probability, int | float)
            or not 0.0 <= vertex_probability <= 1.0
        ):
            raise MoaError(
                f"vertex_probability must be a number in [0, 1]; got {vertex_probability!r}"
            )
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise MoaError(f"seed must be an integer; got {seed!r}")
        self.num_objectives = num_objectives
        self.vertex_probability = float(vertex_probability)
        self.seed = seed

    def sample(self, step: int, rows: int | None = None) -> torch.Tensor:
        """λ for this step: [m], or [rows, m] for rows >= 1; sample(s) equals sample(s, 1)[0]."""
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise MoaError(f"step must be an integer >= 0; got {step!r}")
        if rows is not None and (isinstance(rows, bool) or not isinstance(rows, int) or rows < 1):
            raise MoaError(f"rows must be None or an integer >= 1; got {rows!r}")
        n, m = (1 if rows is None else rows), self.num_objectives
        if m == 1:
            lam = torch.ones(n, 1)
        else:
            gen = torch.Generator().manual_seed(_mix(self.seed, step))
            # All three streams are always drawn, so non-vertex λ do not depend on the probability.
            is_vertex = torch.rand(n, generator=gen, dtype=torch.float64) < self.vertex_probability
            vertex = torch.randint(0, m, (n,), generator=gen)
            uniform = torch.rand(n, m, generator=gen, dtype=torch.float64)
            exponential = -torch.log1p(-uniform)  # −log(1 − U), U in [0, 1): never infinite
            dirichlet = exponential / exponential.sum(dim=-1, keepdim=True)
            one_hot = torch.nn.functional.one_hot(vertex, m).to(torch.float64)
            lam = torch.where(is_vertex.unsqueeze(-1), one_hot, dirichlet).float()
        return lam[0] if rows is None else lam


def _mix(seed: int, step: int) -> int:
    """A 63-bit generator seed from (seed, step); nearby steps give unrelated streams."""
    digest = hashlib.sha256(f"orchestrator.PreferenceSampler:{seed}:{step}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1
