"""A reward model on preference pairs: both responses of every pair scored in one forward pass,
and how often the preferred response scores higher (pairwise accuracy). The Bradley–Terry loss
itself is objectives.losses.bradley_terry_losses."""

import torch


def pair_rewards(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(rewards of the responses a, of the responses b), each [B, m], from a collate_pairs batch
    (its 2B rows: the B responses a, then the B responses b)."""
    rewards = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).float()
    half = rewards.shape[0] // 2
    return rewards[:half], rewards[half:]


def correct_orders(
    rewards_a: torch.Tensor, rewards_b: torch.Tensor, signs: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """([m] pairs whose preferred response scores strictly higher, [m] pairs that are not ties)."""
    counted = signs != 0
    right = (signs * (rewards_a - rewards_b) > 0) & counted
    return right.sum(dim=0), counted.sum(dim=0)
