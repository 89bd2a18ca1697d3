"""What a training step optimises, as pure functions of tensors (no models, Ray or data loading):
per-objective losses, their aggregation, the preference vector λ (its validation and per-step
sampling) and the learning-rate schedule."""

from orchestrator.objectives.aggregation import (
    AGGREGATION_METHODS,
    aggregate,
    aggregation_weights,
)
from orchestrator.objectives.losses import (
    non_tie_counts,
    per_objective_dpo_losses,
    per_objective_sft_losses,
    preference_loss,
    response_logprobs,
    sequence_logprobs,
)
from orchestrator.objectives.sampling import PreferenceSampler

__all__ = [
    "AGGREGATION_METHODS",
    "PreferenceSampler",
    "aggregate",
    "aggregation_weights",
    "non_tie_counts",
    "per_objective_dpo_losses",
    "per_objective_sft_losses",
    "preference_loss",
    "response_logprobs",
    "sequence_logprobs",
]
