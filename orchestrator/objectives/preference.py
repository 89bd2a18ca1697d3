"""Validation of preference vectors λ: points of the simplex, one weight per objective."""

from collections.abc import Sequence

import torch

from orchestrator.errors import MoaError

SUM_TOLERANCE = 1e-6

PreferenceLike = Sequence[float] | Sequence[Sequence[float]] | torch.Tensor


def validate_preference(
    pref: PreferenceLike, num_objectives: int, *, normalize: bool = False
) -> torch.Tensor:
    """Return λ as a float32 tensor of shape [m] or [B, m], or raise MoaError naming the problem.

    Accepted: non-negative finite weights, not all zero, summing to 1 (within 1e-6). With
    `normalize=True` any non-negative, finite, not-all-zero vector is rescaled to sum to 1.
    """
    try:
        lam = torch.as_tensor(pref, dtype=torch.float64).detach().cpu()
    except (TypeError, ValueError) as err:
        raise MoaError(
            f"preference must be a list of {num_objectives} numbers or a [batch, "
            f"{num_objectives}] array of them; got {pref!r}"
        ) from err
    if lam.dim() not in (1, 2) or lam.shape[-1] != num_objectives or lam.numel() == 0:
        raise MoaError(
            f"preference must have shape [{num_objectives}] or [batch, {num_objectives}] "
            f"(one weight per objective); got shape {list(lam.shape)}"
        )
    if not torch.isfinite(lam).all():
        raise MoaError(f"preference weights must be finite numbers; got {_show(lam)}")
    if (lam < 0).any():
        raise MoaError(f"preference weights must be non-negative; got {_show(lam)}")
    sums = lam.sum(dim=-1)
    if (sums == 0).any():
        raise MoaError(f"preference weights must not all be zero; got {_show(lam)}")
    if normalize:
        lam = lam / sums.unsqueeze(-1)
    elif ((sums - 1).abs() > SUM_TOLERANCE).any():
        raise MoaError(
            f"preference weights must sum to 1 (within {SUM_TOLERANCE:g}); got {_show(lam)} "
            "— pass normalize=True to rescale"
        )
    return lam.float()


def _show(lam: torch.Tensor) -> str:
    return str(lam.tolist())
