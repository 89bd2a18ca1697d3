"""SPO, sequential preference optimisation (ALGORITHMS.md §2): the stage margin.

Stage k trains objective k's labels with the stage k−1 model π_{k−1} as the DPO anchor and the
margin of the earlier stages' implicit rewards,

    L_k = −log σ(β_k·h_{π/π_{k−1}}(x, y_w, y_l) − Σ_{j<k} w_j·β_j·h_{π_j/π_{j−1}}(x, y_w, y_l)),

π_0 = π_ref. This is the closed form of maximising r_k + Σ_{j<k} w_j·r̂_j − β_k·KL(π‖π_{k−1}) with
r̂_j = β_j·log(π_j/π_{j−1}), stage j's implicit reward against its own anchor; with w = 1 and one
β the margin telescopes to β·h_{π_{k−1}/π_ref}, the paper's stage-2 form. A pair that the earlier
models rank against objective k's label has a negative margin, so its logit starts higher and
its gradient weight σ(margin − β_k·h) is smaller: SPO leans less on pairs that conflict with
what was learned before. Everything in the margin is frozen, so it is computed once per dataset.
"""

import torch

from orchestrator.errors import MoaError


def spo_margins(
    stage_logps: list[torch.Tensor],
    signs: torch.Tensor,
    objective: int,
    betas: list[float],
    weights: list[float],
) -> torch.Tensor:
    """The margins [N, m] of the stage after `stage_logps`, for the DPO kernel.

    stage_logps: [log π_0, …, log π_{k−1}], each [N, 2], the summed response log-probs of every
    pair's responses (a, b) under π_ref and the models the earlier stages ended with. signs
    [N, m] are the pairs' labels; only column `objective` (the stage's) is filled, in the
    orientation of the response it prefers; ties get 0. betas[j−1], weights[j−1]: β_j and w_j of
    stage j = 1 … k−1.
    """
    stages = len(stage_logps) - 1
    if stages < 1:
        raise MoaError("an SPO margin needs π_ref's and at least one earlier stage's log-probs")
    if len(betas) < stages or len(weights) < stages:
        raise MoaError(f"{stages} earlier stages need {stages} betas and margin weights")
    shape = stage_logps[0].shape
    if any(logps.shape != shape for logps in stage_logps) or shape != (signs.shape[0], 2):
        raise MoaError(
            f"every stage's log-probs must have shape [{signs.shape[0]}, 2] (pairs, responses)"
        )
    total = torch.zeros(shape[0], dtype=torch.float64)
    for j in range(1, stages + 1):
        rewards = (stage_logps[j] - stage_logps[j - 1]).double()  # log π_j/π_{j−1} of a and b
        total += weights[j - 1] * betas[j - 1] * (rewards[:, 0] - rewards[:, 1])
    margins = torch.zeros(signs.shape, dtype=torch.float32)
    margins[:, objective] = (signs[:, objective].double() * total).float()
    return margins
