"""What we pass a model's forward beyond token ids: attention masks of our own making (packed
pairs, decoder slots), and which logits to compute.

A 4D mask [B, 1, queries, keys] of booleans (True: may attend) goes to SDPA as it is, and to eager
attention as an additive bias (0 or the dtype's lowest value). Other implementations (flash
attention's varlen kernels) take no such mask: they are refused with the one that works.
"""

import inspect

import torch
from torch import nn

from orchestrator.errors import MoaError
from orchestrator.model.svd_lora import unwrap

MASKED_IMPLEMENTATIONS = ("sdpa", "eager")


def check_masked_attention(model: nn.Module, needed_by: str) -> None:
    attention = getattr(model.config, "_attn_implementation", "sdpa")
    if attention not in MASKED_IMPLEMENTATIONS:
        raise MoaError(
            f"{needed_by} needs sdpa or eager attention; the model uses {attention!r} "
            "(load it with attn_implementation='sdpa')"
        )


def as_model_mask(model: nn.Module, allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """`allowed` [B, 1, Q, K] (bool) in the form `model`'s attention implementation takes."""
    if getattr(model.config, "_attn_implementation", "sdpa") != "eager":
        return allowed
    bias = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device)
    return bias.masked_fill(~allowed, torch.finfo(dtype).min)


def accepts_logits_to_keep(model: nn.Module) -> bool:
    """Whether the model's forward computes logits at chosen positions only (`logits_to_keep`)."""
    return "logits_to_keep" in inspect.signature(unwrap(model).forward).parameters
