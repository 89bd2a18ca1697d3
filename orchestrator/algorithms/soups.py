"""DPO soups / Rewarded Soups: one DPO expert per objective, their weights interpolated by λ.

The soup at λ is W0 + Σ_i λ_i·ΔW_i, ΔW_i the expert's full low-rank update (the product, not its
factors interpolated separately: averaging U and V apart would add cross terms U_i·V_jᵀ that no
expert learned). Expert i was trained at λ = e_i, so ΔW_i is its SVD-LoRA update at e_i. At a
vertex the soup is exactly that expert.
"""

import os
from collections.abc import Sequence
from contextlib import contextmanager

import torch
from torch import nn

from orchestrator.errors import MoaError
from orchestrator.model.adapter_io import load_adapter
from orchestrator.model.svd_lora import adapter_disabled, preference, svd_lora_layers

Deltas = dict[str, torch.Tensor]  # adapted layer name → ΔW (n_out × n_in)


@torch.no_grad()
def expert_deltas(model: nn.Module, experts: Sequence[str | os.PathLike]) -> list[Deltas]:
    """ΔW_i of each expert adapter (expert i at λ = e_i), in objective order. Loads each adapter
    into `model` in turn; the model is left with the last one."""
    deltas = []
    for i, directory in enumerate(experts):
        load_adapter(model, directory)
        vertex = [float(j == i) for j in range(len(experts))]
        with preference(model, vertex):
            deltas.append({name: layer.delta_weight() for name, layer in svd_lora_layers(model)})
    return deltas


def soup_delta(deltas: Sequence[Deltas], lam: Sequence[float]) -> Deltas:
    """Σ_i λ_i·ΔW_i, layer by layer."""
    if len(deltas) != len(lam):
        raise MoaError(f"a soup of {len(deltas)} experts needs {len(deltas)} weights; got {lam}")
    return {name: sum(w * d[name] for w, d in zip(lam, deltas, strict=True)) for name in deltas[0]}


@contextmanager
def merged(model: nn.Module, delta: Deltas):
    """Run a block on W0 + ΔW: the update added into the base weights, the adapter switched off;
    the base weights are restored afterwards."""
    layers = dict(svd_lora_layers(model))
    if set(delta) != set(layers):
        raise MoaError("the update's layers are not this model's adapted layers")
    originals = {name: layer.base.weight.detach().clone() for name, layer in layers.items()}
    try:
        with torch.no_grad():
            for name, layer in layers.items():
                layer.base.weight += delta[name].to(layer.base.weight.dtype)
        with adapter_disabled(model):
            yield model
    finally:
        with torch.no_grad():
            for name, layer in layers.items():
                layer.base.weight.copy_(originals[name])
