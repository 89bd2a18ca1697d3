import numpy as np
import pytest
import torch

from orchestrator.algorithms.sipo_selection import (
    candidate_preferences,
    conflicting_pairs,
    improvement_pairs,
    pareto_improvement,
)
from orchestrator.data.schema import PairDataset, PreferencePair
from orchestrator.errors import MoaError

ORIGINALS = np.array([[0.5, 0.1], [0.2, 0.6]])  # y_a wins on helpful, y_b on harmless


@pytest.mark.parametrize(
    ("candidates", "expected"),
    [
        ([[0.6, 0.7]], 0),  # beats both on both judges
        ([[0.6, 0.6]], None),  # only ties y_b on harmless: not strictly better
        ([[0.9, 0.5], [0.51, 0.61]], 1),  # the first loses to y_b on harmless
        ([[0.4, 0.9], [0.9, 0.2]], None),  # each beats one original only
        ([[0.6, 0.7], [0.7, 0.6]], 0),  # equal sums: the first
    ],
)
def test_pareto_improvement_keeps_the_best_strict_improvement(candidates, expected):
    assert pareto_improvement(np.array(candidates), ORIGINALS) == expected


def test_largest_summed_reward_wins_among_survivors():
    candidates = np.array([[0.6, 0.7], [0.9, 0.65], [0.7, 0.8]])  # sums 1.3, 1.55, 1.5
    assert pareto_improvement(candidates, ORIGINALS) == 1


def test_three_judges():
    originals = np.array([[1.0, 0.0, 0.5], [0.0, 1.0, 0.5]])
    candidates = np.array([[1.1, 1.1, 0.5], [1.1, 1.1, 0.6]])
    assert pareto_improvement(candidates, originals) == 1


def test_mismatched_shapes_are_refused():
    with pytest.raises(MoaError, match=r"\[K, m\]"):
        pareto_improvement(np.zeros((3, 2)), np.zeros((2, 3)))


def test_candidate_preferences_are_the_lattice_without_vertices():
    assert torch.allclose(
        candidate_preferences(2),
        torch.tensor([[0.2, 0.8], [0.4, 0.6], [0.6, 0.4], [0.8, 0.2]], dtype=torch.float64),
    )
    three = candidate_preferences(3)
    assert three.shape == (18, 3)  # 21 lattice points of 5 divisions, 3 vertices dropped
    assert torch.allclose(three.sum(dim=1), torch.ones(18, dtype=torch.float64))
    assert (three.max(dim=1).values < 1).all()


def test_conflicting_pairs_and_the_pairs_an_improvement_makes():
    agree = PreferencePair("p", "a1", "b1", {"helpful": "a", "harmless": "a"})
    conflict = PreferencePair("q", "a2", "b2", {"helpful": "a", "harmless": "b"})
    tie = PreferencePair("r", "a3", "b3", {"helpful": "tie", "harmless": "b"})
    dataset = PairDataset(("helpful", "harmless"), [agree, conflict, tie])
    assert conflicting_pairs(dataset) == [conflict]

    made = improvement_pairs(conflict, "better", dataset.objectives)
    assert [(p.prompt, p.response_a, p.response_b) for p in made] == [
        ("q", "better", "a2"),
        ("q", "better", "b2"),
    ]
    assert all(p.signs(dataset.objectives) == [1, 1] for p in made)
