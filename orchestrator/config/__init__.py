"""Run configuration: the sections (sections.py), the whole config and what each recipe reads of
it (run.py), YAML and dotted overrides and the one way to derive a config (loading.py), and a
sweep's search space (sweep_space.py). Imports nothing of the package but objectives/ (λ
validation) and errors."""

from orchestrator.config.loading import field_value, load_config, parse_overrides, with_fields
from orchestrator.config.run import TRAINING, RunConfig

__all__ = [
    "TRAINING",
    "RunConfig",
    "field_value",
    "load_config",
    "parse_overrides",
    "with_fields",
]
