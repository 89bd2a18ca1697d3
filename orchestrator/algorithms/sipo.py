"""One SIPO round's data path (ALGORITHMS.md §3): the conflicting pairs to improve, the
candidates to generate for them, the review and rewrite prompts, and the new pairs that the
judges' rewards select.

Pure functions of pairs, answers and rewards; recipes/sipo.py runs them on Ray
(generation pool, judges, Ray Train) round after round.
"""

import random
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from orchestrator.algorithms.sipo_selection import (
    conflicting_pairs,
    improvement_pairs,
    pareto_improvement,
)
from orchestrator.data.schema import PairDataset, PreferencePair
from orchestrator.errors import MoaError


def pairs_to_improve(
    dataset: PairDataset, max_pairs: int | None, seed: int, round_number: int
) -> list[PreferencePair]:
    """The dataset's conflicting pairs, or a seeded sample of `max_pairs` of them (in order)."""
    pairs = conflicting_pairs(dataset)
    if max_pairs is None or len(pairs) <= max_pairs:
        return pairs
    chosen = random.Random(f"sipo:{seed}:{round_number}").sample(range(len(pairs)), max_pairs)
    return [pairs[i] for i in sorted(chosen)]


def candidate_plan(
    num_pairs: int, preferences: torch.Tensor, per_preference: int = 1
) -> list[tuple[int, tuple[float, ...]]]:
    """(pair index, λ) of every candidate: each pair answered `per_preference` times at each λ."""
    return [
        (pair, tuple(lam))
        for pair in range(num_pairs)
        for lam in preferences.tolist()
        for _ in range(per_preference)
    ]


def rows_by_pair(plan: Sequence[tuple[int, tuple[float, ...]]], num_pairs: int) -> list[list[int]]:
    """For each pair, the rows of the plan that answer it."""
    rows: list[list[int]] = [[] for _ in range(num_pairs)]
    for row, (pair, _) in enumerate(plan):
        rows[pair].append(row)
    return rows


def review_prompt(prompt: str, answer: str, objectives: Sequence[str]) -> str:
    """Asks the model to critique its answer against every objective."""
    goals = ", ".join(objectives)
    return (
        f"{prompt}\n\nDraft answer: {answer}\n\n"
        f"Review the draft answer. Say how it could be more {goals} at once."
    )


def rewrite_prompt(prompt: str, answer: str, review: str, objectives: Sequence[str]) -> str:
    """Asks the model to revise its answer following the review."""
    goals = ", ".join(objectives)
    return (
        f"{prompt}\n\nDraft answer: {answer}\n\nReview: {review}\n\n"
        f"Rewrite the draft answer following the review, so that it is more {goals}."
    )


def keep_rewrites(candidate_rewards: np.ndarray, rewrite_rewards: np.ndarray) -> np.ndarray:
    """[N] whether each rewrite replaces its candidate: unless it is no better on every judge."""
    return (np.asarray(rewrite_rewards) > np.asarray(candidate_rewards)).any(axis=1)


@dataclass
class RoundSelection:
    new_pairs: PairDataset  # (ŷ ≻ response a) and (ŷ ≻ response b) for every improved pair
    kept: list[int | None]  # per pair: the row (into the plan) of its kept candidate, or None

    @property
    def survivors(self) -> int:
        return sum(row is not None for row in self.kept)


def select_improvements(
    pairs: Sequence[PreferencePair],
    plan: Sequence[tuple[int, tuple[float, ...]]],
    answers: Sequence[str],
    candidate_rewards: np.ndarray,
    original_rewards: np.ndarray,
    objectives: Sequence[str],
) -> RoundSelection:
    """Per pair, the candidate that beats both original responses on every judge with the largest
    summed reward (sipo_selection.pareto_improvement), and the two pairs it becomes.

    candidate_rewards [len(plan), m]; original_rewards [len(pairs), 2, m] (responses a and b).
    """
    candidate_rewards = np.asarray(candidate_rewards, dtype=np.float64)
    original_rewards = np.asarray(original_rewards, dtype=np.float64)
    m = len(objectives)
    if candidate_rewards.shape != (len(plan), m) or len(answers) != len(plan):
        raise MoaError(
            f"need one answer and {m} rewards per planned candidate ({len(plan)}); got "
            f"{len(answers)} answers and rewards {list(candidate_rewards.shape)}"
        )
    if original_rewards.shape != (len(pairs), 2, m):
        raise MoaError(
            f"need original rewards [{len(pairs)}, 2, {m}]; got {list(original_rewards.shape)}"
        )
    rows_of = rows_by_pair(plan, len(pairs))
    kept, new_pairs = [], []
    for pair, rows in zip(pairs, rows_of, strict=True):
        i = len(kept)
        choice = pareto_improvement(candidate_rewards[rows], original_rewards[i]) if rows else None
        kept.append(None if choice is None else rows[choice])
        if choice is not None:
            row = rows[choice]
            new_pairs += improvement_pairs(pair, answers[row], objectives, plan[row][1])
    return RoundSelection(PairDataset(tuple(objectives), new_pairs), kept)
