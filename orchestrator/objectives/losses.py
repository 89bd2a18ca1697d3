"""Sequence log-probs and the DPO-family losses, as pure functions of tensors.

Shapes: B pairs (or sequences), T tokens, V vocabulary, m objectives. Log-probs are summed over
response tokens only; everything returned as a loss is differentiable w.r.t. the policy inputs.
"""

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from orchestrator.errors import MoaError


def sequence_logprobs(
    logits: torch.Tensor, input_ids: torch.Tensor, loss_mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum of log p(token) over the masked tokens of each sequence, and how many there are.

    logits [B, T, V] come from a causal LM run on input_ids [B, T]; loss_mask [B, T] is non-zero
    on the tokens whose log-prob counts (response tokens including EOS). Position t's logits
    predict token t + 1, so the mask of position 0 is ignored (nothing predicts it).
    Returns (logp [B], count [B]), both float32.
    """
    if logits.dim() != 3:
        raise MoaError(f"logits must have shape [batch, seq, vocab]; got {list(logits.shape)}")
    if input_ids.shape != logits.shape[:2] or loss_mask.shape != logits.shape[:2]:
        raise MoaError(
            f"input_ids and loss_mask must have shape {list(logits.shape[:2])} (the first two "
            f"dims of logits); got {list(input_ids.shape)} and {list(loss_mask.shape)}"
        )
    mask = loss_mask[:, 1:] != 0
    # Only the masked positions go through cross_entropy (and the float32 cast): prompt and
    # padding rows of the logits are never copied.
    token_nll = F.cross_entropy(
        logits[:, :-1][mask].float(), input_ids[:, 1:][mask].long(), reduction="none"
    )
    token_logp = torch.zeros(mask.shape, dtype=torch.float32, device=logits.device)
    token_logp = token_logp.masked_scatter(mask, -token_nll)
    return token_logp.sum(dim=-1), mask.sum(dim=-1).float()


def response_logprobs(
    logits: torch.Tensor,
    targets: torch.Tensor,
    owners: torch.Tensor,
    count: int,
    head: Callable[[torch.Tensor], torch.Tensor] | None = None,
    chunk: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum of log p(token) per response, and how many tokens it has, from the logits [N, V] that
    predict each response token: targets [N] the tokens, owners [N] their responses (0 ≤ owner
    < count). Returns (logp [count], length [count]), both float32.

    With `head`, `logits` are the final hidden states [N, H] and head(hidden) the logits; with
    `chunk` too, the head and log-softmax run on `chunk` tokens at a time and, when gradients
    flow, each chunk's logits are computed again in the backward pass instead of being kept, so
    no more than chunk × V logits exist at once."""
    head = head or (lambda x: x)
    chunk = chunk or max(len(targets), 1)
    token_logp = []
    for start in range(0, len(targets), chunk):
        part = (logits[start : start + chunk], targets[start : start + chunk])
        if chunk < len(targets) and torch.is_grad_enabled():
            token_logp.append(checkpoint(_token_logprobs, head, *part, use_reentrant=False))
        else:
            token_logp.append(_token_logprobs(head, *part))
    logps = torch.zeros(count, dtype=torch.float32, device=logits.device)
    logps = logps.index_add(0, owners, torch.cat(token_logp))
    return logps, torch.bincount(owners, minlength=count).float()


def _token_logprobs(head, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return -F.cross_entropy(head(hidden).float(), targets.long(), reduction="none")


def preference_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    anchor_chosen: torch.Tensor,
    anchor_rejected: torch.Tensor,
    *,
    beta: float,
    margin: float | torch.Tensor = 0.0,
    nll_weight: float = 0.0,
    chosen_lengths: torch.Tensor | None = None,
) -> torch.Tensor:
    """The one DPO-family kernel, per pair (no reduction).

    L = −log σ(β·h − margin) + nll_weight · (−policy_chosen / chosen_lengths), with
    h = (policy_chosen − anchor_chosen) − (policy_rejected − anchor_rejected).
    DPO: anchor = reference, margin 0, nll_weight 0. MODPO/SPO: a margin. SIPO re-alignment:
    anchor = the current policy, nll_weight > 0. All inputs are summed sequence log-probs of the
    same shape (usually [B]); margin is a float or broadcastable tensor. Lengths below 1 are
    treated as 1, so an empty response gives NLL 0 rather than NaN.
    """
    if not beta > 0:
        raise MoaError(f"beta must be a positive number; got {beta!r}")
    if not nll_weight >= 0:
        raise MoaError(f"nll_weight must be a non-negative number; got {nll_weight!r}")
    h = (policy_chosen - anchor_chosen) - (policy_rejected - anchor_rejected)
    loss = -F.logsigmoid(beta * h - margin)
    if nll_weight > 0:
        if chosen_lengths is None:
            raise MoaError(
                "chosen_lengths (response token counts of the chosen responses) is required "
                "when nll_weight > 0"
            )
        loss = loss + nll_weight * (-policy_chosen / chosen_lengths.clamp(min=1))
    return loss


def per_objective_dpo_losses(
    policy_a: torch.Tensor,
    policy_b: torch.Tensor,
    reference_a: torch.Tensor,
    reference_b: torch.Tensor,
    signs: torch.Tensor,
    *,
    beta: float,
    nll_weight: float = 0.0,
    lengths_a: torch.Tensor | None = None,
    lengths_b: torch.Tensor | None = None,
    normalizer: torch.Tensor | None = None,
    margins: torch.Tensor | None = None,
) -> torch.Tensor:
    """DPO loss of each objective on one shared batch of pairs (a, b): shape [m].

    signs [B, m]: +1 where objective i prefers a, −1 where it prefers b, 0 for a tie. Objective
    i's loss is the mean of preference_loss over its non-tie pairs; with nll_weight 0 that is
    mean −log σ(β·s_i·h − margin). An objective with only ties gets 0, still attached to the graph.
    margins [B, m] (default 0): subtracted from objective i's logit, in the orientation of the
    response objective i prefers (MODPO's and SPO's margins).
    lengths_a/lengths_b are required when nll_weight > 0. `normalizer` [m]: divide the sums by
    these counts instead of this batch's non-tie counts, e.g. by the non-tie pairs of a whole
    optimizer step, so that the losses of its micro-batches add up to the step's mean.
    """
    batch = policy_a.shape[0] if policy_a.dim() == 1 else None
    if batch is None or signs.dim() != 2 or signs.shape[0] != batch:
        raise MoaError(
            f"signs must have shape [batch, objectives] and the log-probs shape [batch]; got "
            f"signs {list(signs.shape)} and log-probs {list(policy_a.shape)}"
        )
    if margins is not None and margins.shape != signs.shape:
        raise MoaError(
            f"margins must have the shape of signs {list(signs.shape)}; got {list(margins.shape)}"
        )
    if not ((signs == 1) | (signs == 0) | (signs == -1)).all():
        raise MoaError("signs must hold only +1 (prefers a), -1 (prefers b) or 0 (tie)")
    a_first = signs > 0

    def pick(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a, b = a.unsqueeze(-1), b.unsqueeze(-1)
        return torch.where(a_first, a, b), torch.where(a_first, b, a)

    policy_chosen, policy_rejected = pick(policy_a, policy_b)
    reference_chosen, reference_rejected = pick(reference_a, reference_b)
    chosen_lengths = None
    if nll_weight > 0:
        if lengths_a is None or lengths_b is None:
            raise MoaError("lengths_a and lengths_b are required when nll_weight > 0")
        chosen_lengths, _ = pick(lengths_a, lengths_b)
    losses = preference_loss(
        policy_chosen,
        policy_rejected,
        reference_chosen,
        reference_rejected,
        beta=beta,
        margin=0.0 if margins is None else margins,
        nll_weight=nll_weight,
        chosen_lengths=chosen_lengths,
    )
    return _mean_over_non_ties(losses, signs, normalizer)


def per_objective_sft_losses(
    policy_a: torch.Tensor,
    policy_b: torch.Tensor,
    lengths_a: torch.Tensor,
    lengths_b: torch.Tensor,
    signs: torch.Tensor,
    normalizer: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-token NLL of the response each objective prefers, averaged over its non-tie pairs: [m].

    signs [B, m] and normalizer as in per_objective_dpo_losses; an all-tie objective gets 0,
    still attached to the graph. Lengths below 1 are treated as 1.
    """
    if signs.dim() != 2 or signs.shape[0] != policy_a.shape[0]:
        raise MoaError(
            f"signs must have shape [batch, objectives] matching the log-probs [batch]; got "
            f"signs {list(signs.shape)} and log-probs {list(policy_a.shape)}"
        )
    nll_a = (-policy_a / lengths_a.clamp(min=1)).unsqueeze(-1)
    nll_b = (-policy_b / lengths_b.clamp(min=1)).unsqueeze(-1)
    return _mean_over_non_ties(torch.where(signs > 0, nll_a, nll_b), signs, normalizer)


def bradley_terry_losses(
    rewards_a: torch.Tensor,
    rewards_b: torch.Tensor,
    signs: torch.Tensor,
    normalizer: torch.Tensor | None = None,
) -> torch.Tensor:
    """[m] per objective: −log σ(s·(r_a − r_b)) summed over the pairs that are not ties (s = +1
    prefers a, −1 prefers b, 0 tie), divided by `normalizer` [m] (the global batch's non-tie
    counts) or by this batch's. rewards_a, rewards_b and signs are [B, m]."""
    losses = -F.logsigmoid(signs * (rewards_a - rewards_b))
    return _mean_over_non_ties(losses, signs, normalizer)


def non_tie_counts(signs: torch.Tensor) -> torch.Tensor:
    """[m] pairs per objective that are not ties (at least 1, so it can divide)."""
    return (signs != 0).sum(dim=0).clamp(min=1)


def _mean_over_non_ties(
    losses: torch.Tensor, signs: torch.Tensor, normalizer: torch.Tensor | None = None
) -> torch.Tensor:
    """Column sums of losses [B, m] over rows where signs != 0, divided by `normalizer` or by
    the number of such rows; 0 (with a grad_fn) where there are none."""
    counted = signs != 0
    total = torch.where(counted, losses, torch.zeros_like(losses)).sum(dim=0)
    counts = non_tie_counts(signs) if normalizer is None else normalizer
    return total / counts.to(device=losses.device, dtype=losses.dtype)
