"""SIPO's choice of training data: which pairs to improve, at which λ to answer them, which
answer to keep, and the pairs it becomes (ALGORITHMS.md §3, steps 1, 2, 5 and 6).

Pure functions of scores and pairs; the rounds (generation, judging, re-alignment) call them.
"""

from collections.abc import Sequence

import numpy as np
import torch

from orchestrator.data.schema import PairDataset, PreferencePair
from orchestrator.errors import MoaError
from orchestrator.objectives.grid import simplex_grid


def conflicting_pairs(dataset: PairDataset) -> list[PreferencePair]:
    """The pairs on which some objective prefers response a and another response b."""
    return [pair for pair in dataset if pair.is_conflicting(dataset.objectives)]


def candidate_preferences(num_objectives: int, divisions: int = 5) -> torch.Tensor:
    """The λ at which candidates are generated: the simplex lattice of `divisions` without its
    vertices. For two objectives and 5 divisions: (0.2, 0.8), (0.4, 0.6), (0.6, 0.4), (0.8, 0.2)."""
    grid = simplex_grid(num_objectives, divisions, dtype=torch.float64)
    return grid[grid.max(dim=1).values < 1]


def pareto_improvement(candidates: np.ndarray, originals: np.ndarray) -> int | None:
    """The index of the candidate to keep, or None.

    candidates [K, m] and originals [2, m]: each judge's reward of every candidate and of both
    original responses. A candidate survives only if it beats both originals on every judge
    (strictly); among the survivors the one with the largest summed reward is kept (the first
    one on a tie).
    """
    candidates, originals = np.asarray(candidates, float), np.asarray(originals, float)
    if candidates.ndim != 2 or originals.shape != (2, candidates.shape[1]):
        raise MoaError(
            f"need candidate rewards [K, m] and the originals' [2, m]; got "
            f"{list(candidates.shape)} and {list(originals.shape)}"
        )
    survives = (candidates > originals.max(axis=0)).all(axis=1)
    if not survives.any():
        return None
    sums = np.where(survives, candidates.sum(axis=1), -np.inf)
    return int(np.argmax(sums))


def improvement_pairs(
    pair: PreferencePair,
    answer: str,
    objectives: Sequence[str],
    generated_at: Sequence[float] | None = None,
) -> list[PreferencePair]:
    """(ŷ ≻ response a) and (ŷ ≻ response b), preferred by every objective; each carries the λ
    ŷ was generated at, `generated_at`, as its preference."""
    labels = dict.fromkeys(objectives, "a")
    lam = None if generated_at is None else tuple(generated_at)
    return [
        PreferencePair(pair.prompt, answer, pair.response_a, labels, preference=lam),
        PreferencePair(pair.prompt, answer, pair.response_b, labels, preference=lam),
    ]
