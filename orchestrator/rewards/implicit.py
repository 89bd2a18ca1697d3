"""The implicit rewards of a steerable model, SIPO's default judges (ALGORITHMS.md §3, step 4).

r_i(x, y) = β (log π_{λ=e_i}(y | x) − log π_ref(y | x)): objective i's reward is how much more
likely the model steered fully to objective i makes the response than the reference does. The
reference is the base model (the adapter switched off), as in Panacea's DPO loss.
"""

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from orchestrator.data.encoding import encode_prompt, encode_response, pad_batch
from orchestrator.model.svd_lora import adapter_disabled, preference, svd_lora_config
from orchestrator.objectives.losses import sequence_logprobs


@torch.no_grad()
def implicit_rewards(
    model: nn.Module,
    tokenizer,
    prompts: Sequence[str],
    responses: Sequence[str],
    *,
    beta: float = 0.1,
    max_prompt_tokens: int = 256,
    max_response_tokens: int = 512,
    batch_size: int = 32,
) -> np.ndarray:
    """[N, m] rewards of each (prompt, response) under each of the m objectives."""
    m = svd_lora_config(model).num_objectives
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    rows = [
        (
            encode_prompt(tokenizer, prompt, max_prompt_tokens),
            encode_response(tokenizer, response, max_response_tokens),
        )
        for prompt, response in zip(prompts, responses, strict=True)
    ]
    rewards = []
    try:
        for start in range(0, len(rows), batch_size):
            batch = pad_batch(rows[start : start + batch_size], tokenizer.pad_token_id)
            batch = {name: tensor.to(device) for name, tensor in batch.items()}
            with adapter_disabled(model):
                reference = _logprobs(model, batch)
            steered = [_logprobs_at(model, batch, torch.eye(m)[i]) for i in range(m)]
            rewards.append(beta * (torch.stack(steered, dim=-1) - reference.unsqueeze(-1)))
    finally:
        model.train(was_training)
    return torch.cat(rewards).cpu().numpy().astype(np.float64)


def _logprobs_at(model: nn.Module, batch: dict, lam: torch.Tensor) -> torch.Tensor:
    with preference(model, lam):
        return _logprobs(model, batch)


def _logprobs(model: nn.Module, batch: dict) -> torch.Tensor:
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return sequence_logprobs(logits, batch["input_ids"], batch["loss_mask"])[0]
