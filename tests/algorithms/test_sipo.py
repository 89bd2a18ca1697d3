"""One SIPO round's data path on hand-made pairs, answers and rewards."""

import numpy as np
import pytest
import torch

from orchestrator.algorithms.sipo import (
    candidate_plan,
    keep_rewrites,
    pairs_to_improve,
    review_prompt,
    rewrite_prompt,
    select_improvements,
)
from orchestrator.data.schema import PairDataset, PreferencePair
from orchestrator.errors import MoaError

OBJECTIVES = ("helpful", "harmless")


def pair(i: int, labels=("a", "b")) -> PreferencePair:
    return PreferencePair(f"q{i}", f"a{i}", f"b{i}", dict(zip(OBJECTIVES, labels, strict=True)))


def test_only_conflicting_pairs_are_improved_and_a_sample_is_seeded():
    dataset = PairDataset(
        OBJECTIVES, [pair(i, ("a", "b") if i % 2 else ("a", "a")) for i in range(20)]
    )
    assert [p.prompt for p in pairs_to_improve(dataset, None, 0, 1)] == [
        f"q{i}" for i in range(1, 20, 2)
    ]
    sample = pairs_to_improve(dataset, 4, seed=0, round_number=1)
    assert len(sample) == 4 and all(p.is_conflicting(OBJECTIVES) for p in sample)
    assert sample == pairs_to_improve(dataset, 4, seed=0, round_number=1)  # deterministic
    order = [int(p.prompt[1:]) for p in sample]
    assert order == sorted(order)  # in dataset order
    others = {tuple(p.prompt for p in pairs_to_improve(dataset, 4, 0, r)) for r in range(2, 8)}
    assert len(others) > 1  # each round draws its own sample


def test_candidate_plan_answers_every_pair_at_every_lambda():
    lambdas = torch.tensor([[0.2, 0.8], [0.8, 0.2]], dtype=torch.float64)
    assert candidate_plan(2, lambdas, per_preference=2) == [
        (0, (0.2, 0.8)),
        (0, (0.2, 0.8)),
        (0, (0.8, 0.2)),
        (0, (0.8, 0.2)),
        (1, (0.2, 0.8)),
        (1, (0.2, 0.8)),
        (1, (0.8, 0.2)),
        (1, (0.8, 0.2)),
    ]


def test_selection_keeps_the_pareto_better_candidate_with_the_largest_sum():
    pairs = [pair(0), pair(1), pair(2)]
    lam, other = (0.5, 0.5), (0.8, 0.2)
    plan = [(0, lam), (0, lam), (0, other), (1, lam), (1, lam), (2, lam)]
    answers = ["c0", "c1", "c2", "c3", "c4", "c5"]
    # Originals (a, b) per pair: a wins helpful, b wins harmless; the best of both is (2, 2).
    originals = np.array([[[2.0, 1.0], [1.0, 2.0]]] * 3)
    rewards = np.array(
        [
            [2.5, 2.1],  # pair 0: beats both on both: sum 4.6
            [3.0, 1.9],  # pair 0: not better on harmless than b → out
            [2.2, 2.9],  # pair 0: beats both, sum 5.1 → kept
            [2.0, 3.0],  # pair 1: ties a on helpful → out (strict)
            [1.0, 1.0],  # pair 1: worse → out
            [9.0, 9.0],  # pair 2: kept
        ]
    )
    selection = select_improvements(pairs, plan, answers, rewards, originals, OBJECTIVES)
    assert selection.kept == [2, None, 5]
    assert selection.survivors == 2
    assert [(p.prompt, p.response_a, p.response_b) for p in selection.new_pairs] == [
        ("q0", "c2", "a0"),
        ("q0", "c2", "b0"),
        ("q2", "c5", "a2"),
        ("q2", "c5", "b2"),
    ]
    assert all(p.signs(OBJECTIVES) == [1, 1] for p in selection.new_pairs)
    assert selection.new_pairs.objectives == OBJECTIVES
    # Each new pair carries the λ its candidate was generated at, also through pairs.jsonl.
    assert [p.preference for p in selection.new_pairs] == [other, other, lam, lam]
    again = [PreferencePair.from_record(p.to_record()) for p in selection.new_pairs]
    assert again == list(selection.new_pairs)


def test_selection_checks_shapes():
    with pytest.raises(MoaError, match="one answer and 2 rewards per planned candidate"):
        select_improvements(
            [pair(0)], [(0, (0.5, 0.5))], ["x"], np.zeros((2, 2)), np.zeros((1, 2, 2)), OBJECTIVES
        )
    with pytest.raises(MoaError, match=r"original rewards \[1, 2, 2\]"):
        select_improvements(
            [pair(0)], [(0, (0.5, 0.5))], ["x"], np.zeros((1, 2)), np.zeros((2, 2)), OBJECTIVES
        )


def test_a_rewrite_replaces_its_candidate_unless_it_is_no_better_on_every_judge():
    candidates = np.array([[1.0, 1.0], [1.0, 1.0], [1.0, 1.0]])
    rewrites = np.array([[1.5, 0.2], [1.0, 1.0], [0.9, 0.8]])
    assert keep_rewrites(candidates, rewrites).tolist() == [True, False, False]


def test_review_and_rewrite_prompts_name_the_objectives_and_quote_the_answer():
    review = review_prompt("How do I swim?", "Practise.", OBJECTIVES)
    assert review.startswith("How do I swim?") and "Practise." in review
    assert "helpful, harmless" in review
    rewrite = rewrite_prompt("How do I swim?", "Practise.", "Add steps.", OBJECTIVES)
    assert "Practise." in rewrite and "Add steps." in rewrite and "helpful, harmless" in rewrite
