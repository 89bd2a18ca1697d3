"""Multi-objective alignment: one language model steerable to any trade-off by a preference λ."""

from orchestrator.errors import MoaError
from orchestrator.evaluation.metrics import hypervolume
from orchestrator.model.adapter_io import export_lora, load_adapter, merge_preference, save_adapter
from orchestrator.model.generate import SamplingParams, generate
from orchestrator.model.svd_lora import (
    adapter_disabled,
    inject_svd_lora,
    preference,
    set_preference,
)
from orchestrator.objectives import PreferenceSampler, aggregate

__all__ = [
    "MoaError",
    "PreferenceSampler",
    "SamplingParams",
    "adapter_disabled",
    "aggregate",
    "export_lora",
    "generate",
    "hypervolume",
    "inject_svd_lora",
    "load_adapter",
    "merge_preference",
    "preference",
    "save_adapter",
    "set_preference",
]
