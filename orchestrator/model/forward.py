"""What we pass a model's forward beyond token ids: attention masks of our own making (packed
pairs, decoder slots), which logits to compute, and the final hidden states in place of logits
(so that the output head runs on the response tokens a chunk at a time).

A 4D mask [B, 1, queries, keys] of booleans (True: may attend) goes to SDPA as it is, and to eager
attention as an additive bias (0 or the dtype's lowest value). Other implementations (flash
attention's varlen kernels) take no such mask: they are refused with the one that works.
"""

import contextlib
import inspect

import torch
from torch import nn

from orchestrator.errors import MoaError
from orchestrator.model.svd_lora import adapter_disabled, unwrap

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


# The most logits [tokens × vocabulary] one chunk of the output head computes at once.
LOGIT_CHUNK_ELEMENTS = 2**25


def logit_chunk_tokens(head: nn.Module) -> int:
    """How many tokens' logits the output head `head` computes at once (≥ 1)."""
    return max(1, LOGIT_CHUNK_ELEMENTS // _vocabulary(head))


def _vocabulary(head: nn.Module) -> int:
    return getattr(head.weight, "ds_shape", head.weight.shape)[0]  # ZeRO-3 keeps a slice here


@contextlib.contextmanager
def hidden_states_as_logits(model: nn.Module):
    """`model`'s forward returns its final hidden states as `.logits` for the duration: its output
    head is an identity. Yields the head, or None (nothing changed) when the head is not where
    the logits come from as they are: a model that post-processes them (Gemma 2's softcapping,
    Cohere's logit_scale) or computes them another way. Checked once per model, on four tokens."""
    base = unwrap(model)
    head = base.get_output_embeddings()
    usable = head is not None and _logits_are_head_outputs(base, head)
    if usable:
        base.set_output_embeddings(nn.Identity())
    try:
        yield head if usable else None
    finally:
        if usable:
            base.set_output_embeddings(head)


def _logits_are_head_outputs(base: nn.Module, head: nn.Module) -> bool:
    known = getattr(base, "_moa_logits_are_head_outputs", None)
    if known is None:
        spread = _vocabulary(head) // 5  # four tokens across the vocabulary
        ids = torch.tensor([[1, 2, 3, 4]], device=head.weight.device) * spread
        was_training = base.training
        base.eval()
        try:
            with torch.no_grad(), adapter_disabled(base):
                logits = base(input_ids=ids, use_cache=False).logits
                base.set_output_embeddings(nn.Identity())
                hidden = base(input_ids=ids, use_cache=False).logits
                base.set_output_embeddings(head)
                known = hidden.shape[-1] != logits.shape[-1] and torch.equal(head(hidden), logits)
        finally:
            base.set_output_embeddings(head)
            base.train(was_training)
        base._moa_logits_are_head_outputs = known
    return known
