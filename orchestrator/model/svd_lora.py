"""SVD-LoRA: a low-rank adapter whose last m singular values are the preference vector λ (Panacea).

For a frozen linear layer W0 (n_out × n_in) the adapted weight is

    W(λ) = W0 + (α / k) · U · diag(σ_1..σ_k, s·λ_1..s·λ_m) · Vᵀ

with U (n_out × (k+m)), V (n_in × (k+m)), σ (k) and the per-layer scalar s trainable, and λ written
in at run time. λ lives in a non-persistent buffer (never a parameter: it must not be trained, saved
with the weights or partitioned by ZeRO-3). It may be one vector for the batch, [m], or one per row,
[B, m]: row b of the batch then sees exactly the weights W(λ_b).

The adapter tensors and λ stay in float32 whatever the base model's dtype (as PEFT keeps LoRA
weights): small AdamW updates and λ = 0.1 survive, which bf16 would round away.
"""

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from orchestrator.errors import MoaError
from orchestrator.objectives.preference import PreferenceLike, validate_preference

ADAPTER_PREFIX = "lora_"
# The attention and MLP projections of Llama-family decoders (Llama, Qwen, Mistral, Gemma, Phi-3…).
DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class SVDLoRAConfig:
    num_objectives: int
    rank: int
    alpha: float
    target_modules: tuple[str, ...]  # the full names of the adapted modules
    objective_names: tuple[str, ...] | None = None
    init_std: float = 0.02
    base_model: str | None = None  # the base model's name or path, for the record
    # The one λ a fixed-λ model was trained at (a DPO expert, a DPS or MODPO model, an SPO stage);
    # None for a λ-conditioned model. At any other λ its untrained U/V columns switch on.
    trained_at: tuple[float, ...] | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "SVDLoRAConfig":
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        for key in ("target_modules", "objective_names", "trained_at"):
            if known.get(key) is not None:
                known[key] = tuple(known[key])
        return cls(**known)


class SVDLoRALinear(nn.Module):
    """A frozen nn.Linear plus the λ-conditioned SVD-LoRA branch."""

    def __init__(
        self,
        base: nn.Linear,
        rank: int,
        num_objectives: int,
        alpha: float,
        init_std: float = 0.02,
        generator: torch.Generator | None = None,
    ):
        super().__init__()
        self.base = base
        self.base.requires_grad_(False)
        self.rank = rank
        self.num_objectives = num_objectives
        self.scaling = alpha / rank
        width = rank + num_objectives
        kwargs = {"dtype": torch.float32, "device": base.weight.device}
        # U (n_out × width) and Vᵀ (width × n_in): Vᵀ is stored transposed so the forward pass is
        # two F.linear calls, exactly like a plain LoRA adapter.
        u = torch.randn(base.out_features, width, generator=generator) * init_std
        v = torch.randn(width, base.in_features, generator=generator) * init_std
        self.lora_u = nn.Parameter(u.to(**kwargs))
        self.lora_v = nn.Parameter(v.to(**kwargs))
        self.lora_sigma = nn.Parameter(torch.zeros(rank, **kwargs))
        self.lora_scale = nn.Parameter(torch.zeros(1, **kwargs))
        self.register_buffer("preference", None, persistent=False)
        self.adapter_enabled = True
        # A frozen copy of (U, Vᵀ, σ, s), kept out of parameters and state dicts: the anchor a
        # run that starts from a trained adapter can be regularised toward (see freeze_anchor).
        self.anchor: tuple[torch.Tensor, ...] | None = None
        self.use_anchor = False

    def adapter_weights(self) -> tuple[torch.Tensor, ...]:
        """(U, Vᵀ, σ, s) in use: the trainable ones, or the frozen anchor's in `anchored`."""
        if self.use_anchor:
            return self.anchor
        return self.lora_u, self.lora_v, self.lora_sigma, self.lora_scale

    def singular_values(self) -> torch.Tensor:
        """(α/k) · [σ, s·λ]: shape [k+m], [B, k+m] when λ is given per row, or [B, T, k+m]
        per token."""
        lam = self.preference
        if lam is None:
            raise MoaError(
                "this SVD-LoRA model has no preference set: call set_preference(model, pref) "
                "or use `with preference(model, pref):` before running it"
            )
        _, _, sigma, scale = self.adapter_weights()
        sigma = sigma.expand(*lam.shape[:-1], self.rank)
        return torch.cat([sigma, scale * lam], dim=-1) * self.scaling

    def delta_weight(self) -> torch.Tensor:
        """ΔW(λ) = (α/k) · U · diag · Vᵀ for the one λ currently set."""
        diag = self.singular_values()
        if diag.dim() != 1:
            raise MoaError(
                "delta_weight needs a single preference vector of shape [m], not per row"
            )
        u, v, _, _ = self.adapter_weights()
        return (u * diag) @ v

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x)
        if not self.adapter_enabled:
            return out
        diag = self.singular_values()
        if diag.dim() == 2:
            if x.dim() < 2 or x.shape[0] != diag.shape[0]:
                raise MoaError(
                    f"per-row preference has {diag.shape[0]} rows but the batch has "
                    f"{x.shape[0] if x.dim() > 1 else 1}; set one λ per batch row"
                )
            diag = diag.view(diag.shape[0], *([1] * (x.dim() - 2)), diag.shape[-1])
        elif diag.dim() == 3 and x.shape[:2] != diag.shape[:2]:
            raise MoaError(
                f"per-token preference has shape {list(diag.shape[:2])} but the batch "
                f"{list(x.shape[:2])}; set one λ per token"
            )
        u, v, _, _ = self.adapter_weights()
        x = x.to(v.dtype)
        return out + F.linear(F.linear(x, v) * diag, u).to(out.dtype)

    def extra_repr(self) -> str:
        return f"rank={self.rank}, num_objectives={self.num_objectives}, scaling={self.scaling:g}"


def inject_svd_lora(
    model: nn.Module,
    num_objectives: int,
    rank: int = 8,
    alpha: float = 64.0,
    target_modules: Sequence[str] | None = None,
    *,
    objective_names: Sequence[str] | None = None,
    init_std: float = 0.02,
    seed: int = 0,
    trained_at: Sequence[float] | None = None,
) -> nn.Module:
    """Replace the target linear layers of `model` in place by SVD-LoRA layers; freeze the rest.

    `target_modules`: names matched against each module's full name or its last components
    (e.g. "q_proj" or "self_attn.q_proj"), like PEFT. Default: the attention and MLP projections
    of a Llama-family model (DEFAULT_TARGETS); for other architectures, every nn.Linear except
    the output embedding.
    Initialisation gives ΔW = 0 (σ = s = 0), so the model starts exactly at the base model.
    """
    if has_svd_lora(model):
        raise MoaError("this model already has an SVD-LoRA adapter; inject once per model")
    if num_objectives < 1:
        raise MoaError(f"num_objectives must be ≥ 1; got {num_objectives}")
    if rank < 1:
        raise MoaError(f"rank must be ≥ 1; got {rank}")
    if alpha <= 0:
        raise MoaError(f"alpha must be > 0; got {alpha}")
    if objective_names is not None and len(objective_names) != num_objectives:
        raise MoaError(
            f"objective_names has {len(objective_names)} names for {num_objectives} objectives"
        )
    if trained_at is not None:
        validate_preference(trained_at, num_objectives)
        trained_at = tuple(float(x) for x in trained_at)
    names = _resolve_targets(model, target_modules)
    model.requires_grad_(False)
    generator = torch.Generator().manual_seed(seed)
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        layer = SVDLoRALinear(
            getattr(parent, child), rank, num_objectives, alpha, init_std, generator
        )
        setattr(parent, child, layer)
    model.svd_lora_config = SVDLoRAConfig(
        num_objectives=num_objectives,
        rank=rank,
        alpha=float(alpha),
        target_modules=tuple(names),
        objective_names=tuple(objective_names) if objective_names else None,
        init_std=init_std,
        base_model=getattr(getattr(model, "config", None), "_name_or_path", None) or None,
        trained_at=trained_at,
    )
    return model


def _resolve_targets(model: nn.Module, target_modules: Sequence[str] | None) -> list[str]:
    output_embeddings = getattr(model, "get_output_embeddings", lambda: None)()
    linears = [
        name
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and module is not output_embeddings
    ]
    if target_modules is None:
        names = [n for n in linears if n.rpartition(".")[2] in DEFAULT_TARGETS] or linears
    else:
        names = [
            name
            for name in linears
            if any(name == t or name.endswith("." + t) for t in target_modules)
        ]
        unmatched = [
            t for t in target_modules if not any(n == t or n.endswith("." + t) for n in names)
        ]
        if unmatched:
            raise MoaError(
                f"target_modules {unmatched} match no nn.Linear of the model; "
                f"linear layers look like {linears[:4]}"
            )
    if not names:
        raise MoaError("the model has no nn.Linear layers to adapt; pass target_modules")
    return names


def has_svd_lora(model: nn.Module) -> bool:
    return getattr(unwrap(model), "svd_lora_config", None) is not None


def svd_lora_config(model: nn.Module) -> SVDLoRAConfig:
    config = getattr(unwrap(model), "svd_lora_config", None)
    if config is None:
        raise MoaError("this model has no SVD-LoRA adapter; call inject_svd_lora(model, ...) first")
    return config


def svd_lora_layers(model: nn.Module) -> Iterator[tuple[str, SVDLoRALinear]]:
    for name, module in unwrap(model).named_modules():
        if isinstance(module, SVDLoRALinear):
            yield name, module


def adapter_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """The trainable adapter tensors (U, Vᵀ, σ, s of every layer) by full name."""
    return {
        name: param
        for name, param in unwrap(model).named_parameters()
        if name.rpartition(".")[2].startswith(ADAPTER_PREFIX)
    }


def set_preference(model: nn.Module, pref: PreferenceLike, *, normalize: bool = False) -> None:
    """Write λ ([m] for the whole batch, or [B, m] one per row) into every SVD-LoRA layer."""
    lam = validate_preference(pref, svd_lora_config(model).num_objectives, normalize=normalize)
    _write_preference(model, lam)


@contextmanager
def preference_kept(model: nn.Module):
    """Run a block that may set λ, then restore whatever preference was set before."""
    layers = [layer for _, layer in svd_lora_layers(model)]
    previous = [layer.preference for layer in layers]
    try:
        yield model
    finally:
        for layer, lam in zip(layers, previous, strict=True):
            layer.preference = lam


@contextmanager
def preference(model: nn.Module, pref: PreferenceLike, *, normalize: bool = False):
    """Run a block at λ, then restore whatever preference was set before."""
    with preference_kept(model):
        set_preference(model, pref, normalize=normalize)
        yield model


@contextmanager
def token_preferences(model: nn.Module, per_sequence: PreferenceLike, owners: torch.Tensor):
    """Run a block with λ per token: token (r, t) at per_sequence[owners[r, t]] ([S, m] and an
    [R, T] index), for rows that pack several sequences, each at its own λ."""
    lam = validate_preference(per_sequence, svd_lora_config(model).num_objectives)
    if lam.dim() != 2:
        raise MoaError(f"per-sequence preferences must have shape [S, m]; got {list(lam.shape)}")
    with preference_kept(model):
        _write_preference(model, lam.to(owners.device)[owners])
        yield model


@contextmanager
def adapter_disabled(model: nn.Module):
    """Run a block on the base model alone (the DPO reference π_ref)."""
    layers = [layer for _, layer in svd_lora_layers(model)]
    states = [layer.adapter_enabled for layer in layers]
    for layer in layers:
        layer.adapter_enabled = False
    try:
        yield model
    finally:
        for layer, state in zip(layers, states, strict=True):
            layer.adapter_enabled = state


def freeze_anchor(model: nn.Module) -> None:
    """Keep a frozen copy of the adapter as it is now: `anchored(model)` runs the model with it
    while training moves the trainable tensors (SIPO's re-alignment anchors on the policy it
    starts from). The copy is not a parameter, so optimizers, state dicts and saves skip it."""
    for _, layer in svd_lora_layers(model):
        layer.anchor = tuple(
            t.detach().clone()
            for t in (layer.lora_u, layer.lora_v, layer.lora_sigma, layer.lora_scale)
        )


@contextmanager
def anchored(model: nn.Module):
    """Run a block with the adapter frozen by freeze_anchor instead of the trainable one."""
    layers = [layer for _, layer in svd_lora_layers(model)]
    if any(layer.anchor is None for layer in layers):
        raise MoaError("this model has no anchor adapter: call freeze_anchor(model) first")
    for layer in layers:
        layer.use_anchor = True
    try:
        yield model
    finally:
        for layer in layers:
            layer.use_anchor = False


def _write_preference(model: nn.Module, lam: torch.Tensor) -> None:
    for _, layer in svd_lora_layers(model):
        layer.preference = lam.to(layer.lora_scale.device)


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside a DDP / DeepSpeed wrapper."""
    return getattr(model, "module", model)
