"""Scalarise per-objective losses with a preference vector λ: LS, Tchebycheff, smooth Tche."""

import torch

from orchestrator.errors import MoaError

AGGREGATION_METHODS = ("ls", "tche", "stch")


def aggregate(
    losses: torch.Tensor,
    pref: torch.Tensor,
    method: str = "ls",
    ideal: torch.Tensor | None = None,
    mu: float = 0.1,
) -> torch.Tensor:
    """One loss to minimise from per-objective losses [..., m] and λ [..., m] (broadcastable).

    - "ls":   Σ_i λ_i L_i (the ideal point is a constant here, so it is not used).
    - "tche": max_i λ_i (L_i − z*_i) over the objectives with λ_i > 0.
    - "stch": μ · logsumexp_i(λ_i (L_i − z*_i) / μ) over λ_i > 0; ≥ tche, → tche as μ → 0.
    Objectives with λ_i = 0 drop out of every method (even an infinite loss). ideal z* [m]
    defaults to 0. λ is assumed already validated (non-negative, not all zero).
    Returns the broadcast leading shape [...] (a scalar for 1-D inputs).
    """
    if method not in AGGREGATION_METHODS:
        raise MoaError(f"method must be one of {', '.join(AGGREGATION_METHODS)}; got {method!r}")
    if not mu > 0:
        raise MoaError(f"mu (smoothing of stch) must be a positive number; got {mu!r}")
    pref = torch.as_tensor(pref, device=losses.device)
    if losses.dim() == 0 or pref.dim() == 0 or pref.shape[-1] != losses.shape[-1]:
        raise MoaError(
            f"losses and pref must both end in the objective dimension m; got losses "
            f"{list(losses.shape)} and pref {list(pref.shape)}"
        )
    if method == "ls":
        # where, not a plain product: 0 · inf would be NaN for a dropped-out objective.
        return torch.where(pref > 0, pref * losses, 0.0).sum(dim=-1)
    if ideal is not None:
        ideal = torch.as_tensor(ideal, device=losses.device)
        if ideal.shape != losses.shape[-1:]:
            raise MoaError(
                f"ideal must have shape [{losses.shape[-1]}] (one value per objective); got "
                f"{list(ideal.shape)}"
            )
        losses = losses - ideal
    # Objectives with λ_i = 0 must drop out: their term 0 would otherwise win the max whenever
    # every other loss is below its ideal point. Masking them to −inf removes them from both.
    weighted = torch.where(pref > 0, pref * losses, float("-inf"))
    if method == "tche":
        return weighted.amax(dim=-1)
    return mu * torch.logsumexp(weighted / mu, dim=-1)


def aggregation_weights(
    losses: torch.Tensor,
    pref: torch.Tensor,
    method: str = "ls",
    ideal: torch.Tensor | None = None,
    mu: float = 0.1,
) -> torch.Tensor:
    """∂ aggregate / ∂ L_i at `losses` [m], detached.

    When the per-objective losses of one step are split over micro-batches (or ranks),
    Σ_i w_i · L_i(part) summed over the parts has exactly the gradient of aggregate(L) at the
    step's losses, even for the non-linear Tchebycheff methods. For LS the weights are λ.
    """
    with torch.enable_grad():
        point = losses.detach().clone().requires_grad_(True)
        (weights,) = torch.autograd.grad(aggregate(point, pref, method, ideal, mu), point)
    return weights
