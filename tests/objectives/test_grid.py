import math

import numpy as np
import pytest
import torch

from orchestrator.errors import MoaError
from orchestrator.objectives.grid import simplex_grid


def _compositions(grid: torch.Tensor, divisions: int) -> list[tuple[int, ...]]:
    return [tuple(row) for row in torch.round(grid.double() * divisions).long().tolist()]


def test_two_objectives_ten_divisions_first_weight_ascends():
    grid = simplex_grid(2, 10)
    expected = torch.tensor([[i / 10, 1 - i / 10] for i in range(11)], dtype=torch.float32)
    assert grid.dtype == torch.float32
    assert grid.shape == (11, 2)
    torch.testing.assert_close(grid, expected)
    assert grid[0].tolist() == [0.0, 1.0]
    assert grid[-1].tolist() == [1.0, 0.0]


def test_three_objectives_four_divisions_has_fifteen_rows():
    assert simplex_grid(3, 4).shape == (15, 3)


def test_one_division_gives_the_corners_in_lexicographic_order():
    expected = [[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]
    assert simplex_grid(3, 1).tolist() == expected


def test_one_objective_is_the_single_weight_one():
    assert simplex_grid(1, 5).tolist() == [[1.0]]


@pytest.mark.parametrize(("m", "d"), [(2, 1), (2, 7), (3, 4), (3, 10), (4, 6), (5, 3)])
def test_rows_are_all_compositions_once_in_ascending_order_and_sum_to_one(m, d):
    grid = simplex_grid(m, d)
    # Stars and bars: compositions of d into m non-negative parts.
    assert grid.shape == (math.comb(d + m - 1, m - 1), m)
    ints = _compositions(grid, d)
    np.testing.assert_allclose(grid.double().numpy() * d, np.array(ints), atol=1e-5)
    assert all(sum(row) == d and min(row) >= 0 for row in ints)
    assert ints == sorted(set(ints))
    assert (grid.double().sum(dim=1) - 1).abs().max().item() < 1e-6


def test_accepts_numpy_integers():
    assert simplex_grid(np.int64(2), np.int32(4)).shape == (5, 2)


@pytest.mark.parametrize(
    ("m", "d", "bad"),
    [
        (0, 10, "num_objectives"),
        (-1, 10, "num_objectives"),
        (2.0, 10, "num_objectives"),
        (True, 10, "num_objectives"),
        (2, 0, "divisions"),
        (2, -3, "divisions"),
        (2, 2.5, "divisions"),
        (2, "10", "divisions"),
    ],
)
def test_invalid_arguments_raise_naming_the_argument(m, d, bad):
    with pytest.raises(MoaError, match=rf"{bad} must be an integer >= 1"):
        simplex_grid(m, d)
