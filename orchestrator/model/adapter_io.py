"""Saving, loading, merging and exporting SVD-LoRA adapters."""

import copy
import hashlib
import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load, save_file
from torch import nn

from orchestrator.atomic import atomic_directory
from orchestrator.errors import MoaError
from orchestrator.model.svd_lora import (
    SVDLoRAConfig,
    adapter_parameters,
    has_svd_lora,
    inject_svd_lora,
    preference,
    svd_lora_config,
    svd_lora_layers,
    unwrap,
)
from orchestrator.objectives.preference import PreferenceLike, validate_preference

ADAPTER_WEIGHTS = "adapter.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_FORMAT = "svd-lora/1"


def save_adapter(model: nn.Module, directory: str | os.PathLike) -> Path:
    """Write the adapter tensors (safetensors) and its config (JSON); base weights are not saved."""
    config = svd_lora_config(model)
    tensors = adapter_tensors(model)
    with atomic_directory(directory) as tmp:
        save_file(tensors, tmp / ADAPTER_WEIGHTS, metadata={"format": ADAPTER_FORMAT})
        payload = {"format": ADAPTER_FORMAT, **config.to_dict()}
        (tmp / ADAPTER_CONFIG).write_text(json.dumps(payload, indent=2))
    return Path(directory)


def adapter_version(directory: str | os.PathLike) -> str:
    """A short content hash of a saved adapter's tensors: equal adapters, equal versions."""
    return _version(_weights_bytes(directory))


def _weights_bytes(directory: str | os.PathLike) -> bytes:
    weights = Path(directory) / ADAPTER_WEIGHTS
    if not weights.is_file():
        raise MoaError(f"no SVD-LoRA adapter at {directory}: {ADAPTER_WEIGHTS} is missing")
    return weights.read_bytes()


def _version(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:12]


def read_adapter_config(directory: str | os.PathLike) -> SVDLoRAConfig:
    path = Path(directory) / ADAPTER_CONFIG
    if not path.is_file():
        raise MoaError(f"no SVD-LoRA adapter at {directory}: {ADAPTER_CONFIG} is missing")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise MoaError(f"{path} is not valid JSON: {err}") from None
    if not isinstance(data, dict) or data.get("format") != ADAPTER_FORMAT:
        raise MoaError(f"{path} is not an SVD-LoRA adapter config (format {ADAPTER_FORMAT!r})")
    try:
        return SVDLoRAConfig.from_dict(data)
    except TypeError as err:
        raise MoaError(f"{path} lacks a field of the SVD-LoRA config: {err}") from None


def load_adapter(model: nn.Module, directory: str | os.PathLike) -> nn.Module:
    """Load a saved adapter into `model`, injecting SVD-LoRA first if the model has none."""
    config, tensors, _ = read_adapter(directory)
    return load_adapter_tensors(model, config, tensors, source=f"adapter at {directory}")


def read_adapter(
    directory: str | os.PathLike,
) -> tuple[SVDLoRAConfig, dict[str, torch.Tensor], str]:
    """(config, tensors, version) of a saved adapter, its tensors file read once."""
    config = read_adapter_config(directory)
    data = _weights_bytes(directory)
    try:
        tensors = load(data)
    except (SafetensorError, OSError) as err:
        raise MoaError(
            f"could not read the adapter tensors in {Path(directory) / ADAPTER_WEIGHTS}: {err}"
        ) from None
    return config, tensors, _version(data)


def load_adapter_tensors(
    model: nn.Module,
    config: SVDLoRAConfig,
    tensors: dict[str, torch.Tensor],
    source: str = "the adapter",
) -> nn.Module:
    """Copy adapter tensors (as save_adapter names them) into `model`, injecting SVD-LoRA with
    `config` first if the model has none."""
    if not has_svd_lora(model):
        inject_from_config(model, config)
    current = svd_lora_config(model)
    for field in ("num_objectives", "rank", "alpha", "target_modules"):
        if getattr(current, field) != getattr(config, field):
            raise MoaError(
                f"{source} has {field}={getattr(config, field)!r} but the model's "
                f"adapter has {field}={getattr(current, field)!r}"
            )
    params = adapter_parameters(model)
    if set(tensors) != set(params):
        missing, extra = sorted(set(params) - set(tensors)), sorted(set(tensors) - set(params))
        raise MoaError(
            f"{source} does not fit this model: missing {missing[:3]}, unexpected {extra[:3]}"
        )
    with torch.no_grad():
        for name, param in params.items():
            if tensors[name].shape != param.shape:
                raise MoaError(
                    f"adapter tensor {name} has shape {list(tensors[name].shape)}, "
                    f"the model expects {list(param.shape)}"
                )
            param.copy_(tensors[name])
    return model


def inject_from_config(model: nn.Module, config: SVDLoRAConfig) -> nn.Module:
    """Inject a fresh SVD-LoRA adapter shaped as `config` describes."""
    return inject_svd_lora(
        model,
        config.num_objectives,
        config.rank,
        config.alpha,
        config.target_modules,
        objective_names=config.objective_names,
        init_std=config.init_std,
        trained_at=config.trained_at,
    )


def adapter_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """The adapter's tensors on the CPU, as save_adapter writes them."""
    return {name: p.detach().cpu().contiguous() for name, p in adapter_parameters(model).items()}


def merge_preference(
    model: nn.Module, pref: PreferenceLike, *, normalize: bool = False
) -> nn.Module:
    """A plain copy of the model with W0 + ΔW(λ) merged into every adapted layer.

    The steerable model is left untouched; the copy has no adapter and no λ.
    """
    lam = _single_preference(model, pref, normalize)
    merged = copy.deepcopy(unwrap(model))
    with preference(merged, lam), torch.no_grad():
        for name, layer in list(svd_lora_layers(merged)):
            base = layer.base
            base.weight += layer.delta_weight().to(base.weight.dtype)
            parent_name, _, child = name.rpartition(".")
            setattr(merged.get_submodule(parent_name), child, base)
    del merged.svd_lora_config
    return merged.requires_grad_(True)  # a plain model, as from_pretrained gives it


def export_lora(
    model: nn.Module, pref: PreferenceLike, out_dir: str | os.PathLike, *, normalize: bool = False
) -> Path:
    """Write a standard PEFT LoRA adapter equal to the model at the fixed λ.

    For fixed λ the SVD-LoRA branch is a rank-(k+m) LoRA with A = Vᵀ and B = (α/k)·U·diag(σ, sλ);
    lora_alpha = r makes PEFT's own scaling 1. Load with `PeftModel.from_pretrained(base, out_dir)`.
    """
    from peft import LoraConfig  # here: importing peft costs every process ~2.5 s

    lam = _single_preference(model, pref, normalize)
    config = svd_lora_config(model)
    tensors = {}
    with preference(model, lam), torch.no_grad():
        for name, layer in svd_lora_layers(model):
            prefix = f"base_model.model.{name}"
            tensors[f"{prefix}.lora_A.weight"] = layer.lora_v.detach().cpu().contiguous()
            b = layer.lora_u * layer.singular_values()
            tensors[f"{prefix}.lora_B.weight"] = b.detach().cpu().contiguous()
    width = config.rank + config.num_objectives
    lora_config = LoraConfig(
        r=width,
        lora_alpha=width,
        target_modules=list(config.target_modules),
        lora_dropout=0.0,
        bias="none",
        task_type="CAUSAL_LM",
        base_model_name_or_path=config.base_model,
    )
    with atomic_directory(out_dir) as tmp:
        lora_config.save_pretrained(tmp)
        save_file(tensors, tmp / "adapter_model.safetensors", metadata={"format": "pt"})
        (tmp / "preference.json").write_text(json.dumps({"preference": lam.tolist()}))
    return Path(out_dir)


def _single_preference(model: nn.Module, pref: PreferenceLike, normalize: bool) -> torch.Tensor:
    lam = validate_preference(pref, svd_lora_config(model).num_objectives, normalize=normalize)
    if lam.dim() != 1:
        raise MoaError(
            f"a merged or exported model takes one preference of shape [m]; got {list(lam.shape)}"
        )
    return lam
