"""Gradient checkpointing for the trained model, whatever mode it runs in.

Transformers checkpoints its decoder layers only in training mode; our trainers run the model in
eval mode (no dropout, so a step's loss is a function of its data). `checkpoint_layers` makes each
decoder layer keep only its inputs in the forward pass and run again in the backward pass
(torch.utils.checkpoint, non-reentrant), whenever gradients are on. The layer runs again with the
SVD-LoRA λ set at that time, so the backward must run at the forward's λ (the trainer keeps it set
through both).
"""

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint
from transformers.modeling_layers import GradientCheckpointingLayer

from orchestrator.errors import MoaError
from orchestrator.model.svd_lora import unwrap


def checkpoint_layers(model: nn.Module) -> int:
    """Checkpoint every decoder layer of `model` (a transformers model); returns how many."""
    layers = [m for m in unwrap(model).modules() if isinstance(m, GradientCheckpointingLayer)]
    if not layers:
        raise MoaError(
            f"train.gradient_checkpointing needs a transformers model with decoder layers it can "
            f"checkpoint; {type(unwrap(model)).__name__} has none"
        )
    for layer in layers:
        if getattr(layer, "checkpointed", False):
            continue
        run = layer.forward

        def forward(*args, _run=run, **kwargs):
            if torch.is_grad_enabled():
                return checkpoint(_run, *args, use_reentrant=False, **kwargs)
            return _run(*args, **kwargs)

        layer.forward = forward
        layer.checkpointed = True
    return len(layers)
