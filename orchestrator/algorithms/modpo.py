"""MODPO, multi-objective DPO (Zhou et al. 2023): one model per λ, trained on one objective's
labels with the other objectives' reward differences as a margin,

    L = −log σ( (β·h_{π/π_ref}(x, y_w, y_l) − Σ_{j≠k} λ_j·(r_j(x, y_w) − r_j(x, y_l))) / λ_k ),

k the main objective. The other objectives' rewards r_j are the implicit rewards of their DPO
experts, β·log(π_j/π_ref), as in the paper's practical recipe. Written as the DPO kernel
−log σ(β'·h − margin): β' = β/λ_k and margin = Σ_{j≠k} λ_j·Δr_j / λ_k. The main objective is the
one λ weighs most (the first on ties), so λ_k ≥ 1/m never vanishes; at a vertex e_k the margin is
0 and MODPO is DPO on objective k, the expert itself.
"""

import torch

from orchestrator.errors import MoaError


def main_objective(preference: list[float]) -> int:
    """The objective whose labels MODPO trains on at λ: the heaviest (the first on ties)."""
    return max(range(len(preference)), key=lambda i: (preference[i], -i))


def modpo_beta(beta: float, preference: list[float]) -> float:
    """β' = β / λ_k, the DPO kernel's β for MODPO's main objective k."""
    return beta / preference[main_objective(preference)]


def modpo_margins(
    rewards: torch.Tensor, signs: torch.Tensor, preference: list[float]
) -> torch.Tensor:
    """The margins [N, m] of MODPO at λ for the DPO kernel.

    rewards [N, 2, m]: each objective's reward r_j of each pair's responses (a, b); signs [N, m]
    the pairs' labels. Only the main objective's column is filled, in the orientation of the
    response it prefers: s_k · Σ_{j≠k} λ_j·(r_j(a) − r_j(b)) / λ_k; ties get 0.
    """
    m = signs.shape[1]
    if rewards.shape != (signs.shape[0], 2, m) or len(preference) != m:
        raise MoaError(
            f"rewards must have shape [{signs.shape[0]}, 2, {m}] and the preference {m} weights; "
            f"got {list(rewards.shape)} and {preference}"
        )
    k = main_objective(preference)
    others = torch.tensor([0.0 if j == k else w for j, w in enumerate(preference)])
    differences = (rewards[:, 0] - rewards[:, 1]).double()  # [N, m]: r_j(a) − r_j(b)
    margin = differences @ others.double() / preference[k]
    margins = torch.zeros(signs.shape, dtype=torch.float32)
    margins[:, k] = (signs[:, k].double() * margin).float()
    return margins
