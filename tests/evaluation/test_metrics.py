import math

import numpy as np
import pytest
import torch
from pymoo.indicators.hv import HV

from orchestrator.errors import MoaError
from orchestrator.evaluation.metrics import (
    hypervolume,
    inner_product,
    non_dominated,
    spacing,
    sparsity,
)

STAIRS = [(1.0, 3.0), (2.0, 2.0), (3.0, 1.0)]


# --- non_dominated ------------------------------------------------------------------------


def test_non_dominated_marks_dominated_points_and_keeps_duplicates():
    # (1, 1) is dominated by all; (1, 2) by (1, 3) (equal in x, greater in y);
    # the two copies of (2, 2) do not dominate each other, so both stay.
    points = [(1, 3), (2, 2), (3, 1), (1, 1), (1, 2), (2, 2)]
    mask = non_dominated(points)
    assert mask.dtype == bool
    assert mask.tolist() == [True, True, True, False, False, True]


def test_non_dominated_one_objective_keeps_all_copies_of_the_maximum():
    assert non_dominated([[1.0], [3.0], [3.0], [2.0]]).tolist() == [False, True, True, False]


def test_non_dominated_accepts_tensors_and_empty_input():
    assert non_dominated(torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.0, 0.0]])).tolist() == [
        True,
        True,
        False,
    ]
    assert non_dominated([]).shape == (0,)


# --- hypervolume: hand-computed ------------------------------------------------------------


def test_hypervolume_2d_staircase():
    # Strips from the right: (3,1) gives 3·1, (2,2) adds 2·(2−1), (1,3) adds 1·(3−2): 3+2+1 = 6.
    assert hypervolume(STAIRS, [0.0, 0.0]) == pytest.approx(6.0, abs=1e-12)


def test_hypervolume_2d_with_shifted_reference():
    # Relative to (0.5, 0.5): (0.5,2.5), (1.5,1.5), (2.5,0.5) → 2.5·0.5 + 1.5·1 + 0.5·1 = 3.25.
    assert hypervolume(STAIRS, [0.5, 0.5]) == pytest.approx(3.25, abs=1e-12)


def test_hypervolume_ignores_dominated_and_out_of_reference_points():
    # (1,1) and (2,2.0) are dominated; (5,-1) is below the reference in y; (4,0) only touches it.
    points = [*STAIRS, (1.0, 1.0), (5.0, -1.0), (4.0, 0.0), (2.0, 2.0)]
    assert hypervolume(points, [0.0, 0.0]) == pytest.approx(6.0, abs=1e-12)


def test_hypervolume_duplicates_count_once():
    assert hypervolume([*STAIRS, *STAIRS], [0.0, 0.0]) == pytest.approx(6.0, abs=1e-12)
    a3 = [(2.0, 1.0, 1.0), (1.0, 2.0, 1.0), (2.0, 1.0, 1.0)]
    # Boxes 2 + 2 minus their overlap (1,1,1) = 3.
    assert hypervolume(a3, [0.0, 0.0, 0.0]) == pytest.approx(3.0, abs=1e-12)


def test_hypervolume_nothing_better_than_the_reference_is_zero():
    assert hypervolume(STAIRS, [3.0, 3.0]) == 0.0
    assert hypervolume([], [0.0, 0.0]) == 0.0
    assert hypervolume(np.empty((0, 3)), [0.0, 0.0, 0.0]) == 0.0


def test_hypervolume_one_objective_is_best_minus_reference():
    assert hypervolume([[2.0], [5.0], [-1.0]], [1.0]) == pytest.approx(4.0, abs=1e-12)


def test_hypervolume_3d_three_boxes_by_inclusion_exclusion():
    # Boxes of volume 2 each; every pairwise and the triple intersection is the unit cube:
    # 3·2 − 3·1 + 1 = 4.
    points = [(2, 1, 1), (1, 2, 1), (1, 1, 2)]
    assert hypervolume(points, [0, 0, 0]) == pytest.approx(4.0, abs=1e-12)
    # Same with side 3: 3·3 − 3·1 + 1 = 7.
    points = [(3, 1, 1), (1, 3, 1), (1, 1, 3)]
    assert hypervolume(points, [0, 0, 0]) == pytest.approx(7.0, abs=1e-12)


def test_hypervolume_3d_with_offset_reference_and_a_dominated_point():
    # Relative to (1,1,1): boxes (2,1,1) = 2 and (1,2,3) = 6, overlap (1,1,1) = 1 → 7.
    # (2,2,2) is dominated by (3,2,2); (0,5,5) lies below the reference in x.
    points = [(3, 2, 2), (2, 3, 4), (2, 2, 2), (0, 5, 5)]
    assert hypervolume(points, [1, 1, 1]) == pytest.approx(7.0, abs=1e-12)


def test_hypervolume_3d_two_boxes():
    # (2,2,1) = 4, (1,1,3) = 3, overlap (1,1,1) = 1 → 6.
    assert hypervolume([(2, 2, 1), (1, 1, 3)], [0, 0, 0]) == pytest.approx(6.0, abs=1e-12)


def test_hypervolume_4d():
    # One box relative to (1,1,1,1): 1·2·3·4 = 24.
    assert hypervolume([(2, 3, 4, 5)], [1, 1, 1, 1]) == pytest.approx(24.0, abs=1e-12)
    # Two boxes of volume 2 overlapping in the unit hypercube: 2 + 2 − 1 = 3.
    assert hypervolume([(2, 1, 1, 1), (1, 2, 1, 1)], [0, 0, 0, 0]) == pytest.approx(3.0)


def test_hypervolume_accepts_numpy_and_torch_and_returns_float():
    for points, ref in [
        (np.array(STAIRS), np.zeros(2)),
        (torch.tensor(STAIRS), torch.zeros(2)),
        (torch.tensor(STAIRS, dtype=torch.bfloat16, requires_grad=True), [0, 0]),
    ]:
        value = hypervolume(points, ref)
        assert type(value) is float
        assert value == pytest.approx(6.0, abs=1e-12)


# --- hypervolume: cross-check against pymoo (which minimises) -------------------------------


@pytest.mark.parametrize(("m", "n"), [(2, 60), (3, 40), (4, 25)])
@pytest.mark.parametrize("seed", range(4))
def test_hypervolume_matches_pymoo_on_random_points(m, n, seed):
    rng = np.random.default_rng(seed)
    points = rng.uniform(-0.2, 1.0, size=(n, m))
    reference = rng.uniform(-0.1, 0.2, size=m)
    inside = points[(points > reference).all(axis=1)]
    expected = HV(ref_point=-reference)(-inside) if len(inside) else 0.0
    assert expected > 0
    assert hypervolume(points, reference) == pytest.approx(expected, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("m", [3, 4])
def test_hypervolume_matches_pymoo_when_every_point_is_non_dominated(m):
    # Points on the positive unit sphere: a concave front, none dominated.
    rng = np.random.default_rng(7)
    points = np.abs(rng.normal(size=(40, m)))
    points /= np.linalg.norm(points, axis=1, keepdims=True)
    assert non_dominated(points).all()
    expected = HV(ref_point=np.zeros(m))(-points)
    assert hypervolume(points, np.zeros(m)) == pytest.approx(expected, rel=1e-9)


# --- hypervolume: validation --------------------------------------------------------------


@pytest.mark.parametrize(
    ("points", "reference", "message"),
    [
        (STAIRS, [0.0, 0.0, 0.0], "points must have 3 columns"),
        (STAIRS, [[0.0, 0.0]], "reference must be a vector"),
        (STAIRS, [], "reference must be a vector"),
        ([1.0, 2.0], [0.0, 0.0], r"points must have shape \[N, m\]"),
        (np.ones((2, 2, 2)), [0.0, 0.0], r"points must have shape \[N, m\]"),
        ([(1.0, float("nan"))], [0.0, 0.0], "points must be finite"),
        (STAIRS, [0.0, float("-inf")], "reference must be finite"),
        ([("a", "b")], [0.0, 0.0], "points must be numbers"),
    ],
)
def test_hypervolume_rejects_bad_shapes_and_values(points, reference, message):
    with pytest.raises(MoaError, match=message):
        hypervolume(points, reference)


# --- inner_product ------------------------------------------------------------------------


def test_inner_product_is_the_mean_of_row_dot_products():
    # ⟨(1,0),(2,3)⟩ = 2, ⟨(0.5,0.5),(4,6)⟩ = 5 → mean 3.5.
    value = inner_product([[1.0, 0.0], [0.5, 0.5]], torch.tensor([[2.0, 3.0], [4.0, 6.0]]))
    assert type(value) is float
    assert value == pytest.approx(3.5, abs=1e-12)


def test_inner_product_rejects_mismatched_shapes_and_empty_input():
    with pytest.raises(MoaError, match="same shape"):
        inner_product([[1.0, 0.0]], [[2.0, 3.0], [4.0, 6.0]])
    with pytest.raises(MoaError, match="same shape"):
        inner_product([[1.0, 0.0, 0.0]], [[2.0, 3.0]])
    with pytest.raises(MoaError, match=r"preferences must have shape \[N, m\]"):
        inner_product([1.0, 0.0], [[2.0, 3.0]])
    with pytest.raises(MoaError, match="at least one"):
        inner_product(np.empty((0, 2)), np.empty((0, 2)))


# --- sparsity -----------------------------------------------------------------------------


def test_sparsity_of_an_even_front():
    # Each objective sorted is 1,2,3: gaps² 1+1 per objective, 4 in all, divided by n−1 = 2.
    assert sparsity(STAIRS) == pytest.approx(2.0, abs=1e-12)


def test_sparsity_of_an_uneven_front_ignores_dominated_points():
    # Front (0,4),(1,3),(4,0); (0,0) is dominated. x sorted 0,1,4: 1+9; y sorted 0,3,4: 9+1.
    # (10 + 10) / (3 − 1) = 10.
    assert sparsity([(0, 4), (1, 3), (4, 0), (0, 0)]) == pytest.approx(10.0, abs=1e-12)


def test_sparsity_counts_duplicates():
    # Front (0,2),(2,0),(2,0): x sorted 0,2,2 → 4; y sorted 0,0,2 → 4; 8 / 2 = 4.
    assert sparsity([(0, 2), (2, 0), (2, 0)]) == pytest.approx(4.0, abs=1e-12)


def test_sparsity_is_zero_below_two_front_points():
    assert sparsity([(1.0, 1.0)]) == 0.0
    assert sparsity([(1.0, 1.0), (0.0, 0.0)]) == 0.0
    assert sparsity([]) == 0.0


# --- spacing ------------------------------------------------------------------------------


def test_spacing_of_an_uneven_front():
    # L1 distances: a=(0,4)–b=(1,3): 2, a–c=(4,0): 8, b–c: 6 → nearest 2, 2, 6, mean 10/3.
    # Σ (10/3 − d)² = 16/9 + 16/9 + 64/9 = 32/3; / (n−1) = 16/3; sqrt → 4/√3.
    value = spacing([(0, 4), (1, 3), (4, 0), (0, 1)])
    assert type(value) is float
    assert value == pytest.approx(4 / math.sqrt(3), abs=1e-12)


def test_spacing_of_an_evenly_spaced_front_is_zero():
    assert spacing([(0, 3), (1, 2), (2, 1), (3, 0)]) == pytest.approx(0.0, abs=1e-12)


def test_spacing_counts_duplicates_at_distance_zero():
    # Front (0,4),(0,4),(4,0): nearest 0, 0, 8; mean 8/3; Σ = 64/9·2 + 256/9 = 384/9;
    # / 2 = 64/3; sqrt → 8/√3.
    assert spacing([(0, 4), (0, 4), (4, 0)]) == pytest.approx(8 / math.sqrt(3), abs=1e-12)


def test_spacing_is_zero_below_two_front_points():
    assert spacing([(1.0, 2.0)]) == 0.0
    assert spacing([(1.0, 2.0), (0.0, 0.0)]) == 0.0
    assert spacing([]) == 0.0
