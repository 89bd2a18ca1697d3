"""Multi-objective alignment: one language model steerable to any trade-off by a preference λ.

The public API is importable from here. Names load on first use, so that `import orchestrator`
(and the CLI, and light modules like the built-in task) do not pay for torch and transformers.
"""

import importlib

_EXPORTS = {
    "MoaError": "orchestrator.errors",
    "load_config": "orchestrator.config",
    "with_fields": "orchestrator.config",
    "resume_panacea": "orchestrator.recipes.panacea",
    "run_panacea": "orchestrator.recipes.panacea",
    "resume_sipo": "orchestrator.recipes.sipo",
    "run_sipo": "orchestrator.recipes.sipo",
    "hypervolume": "orchestrator.evaluation.metrics",
    "export_lora": "orchestrator.model.adapter_io",
    "load_adapter": "orchestrator.model.adapter_io",
    "merge_preference": "orchestrator.model.adapter_io",
    "save_adapter": "orchestrator.model.adapter_io",
    "SamplingParams": "orchestrator.model.generate",
    "generate": "orchestrator.model.generate",
    "adapter_disabled": "orchestrator.model.svd_lora",
    "inject_svd_lora": "orchestrator.model.svd_lora",
    "preference": "orchestrator.model.svd_lora",
    "set_preference": "orchestrator.model.svd_lora",
    "PreferenceSampler": "orchestrator.objectives",
    "aggregate": "orchestrator.objectives",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'orchestrator' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
