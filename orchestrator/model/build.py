"""The model a run config describes: its base model and tokenizer with a fresh SVD-LoRA adapter,
or with the adapter training starts from (adapter.init_from)."""

from orchestrator.config import RunConfig
from orchestrator.model.adapter_io import load_adapter
from orchestrator.model.loading import load_model, load_tokenizer
from orchestrator.model.svd_lora import inject_svd_lora


def build_model(cfg: RunConfig, device: str | None = None):
    """(tokenizer, base model with the run's SVD-LoRA adapter) on `device` (default
    model.device). A run at a fixed λ records it in the adapter (SVDLoRAConfig.trained_at)."""
    tokenizer = load_tokenizer(cfg.model.name_or_path)
    model = load_model(cfg.model.name_or_path, cfg.model.dtype, device or cfg.model.device)
    inject_svd_lora(
        model,
        len(cfg.data.objectives),
        cfg.adapter.rank,
        cfg.adapter.alpha,
        cfg.adapter.target_modules,
        objective_names=cfg.data.objectives,
        init_std=cfg.adapter.init_std,
        seed=cfg.train.seed,
        trained_at=cfg.fixed_preference,
    )
    if cfg.adapter.init_from is not None:
        load_adapter(model, cfg.adapter.init_from)
    return tokenizer, model
