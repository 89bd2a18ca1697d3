"""The fixed grid of preference vectors λ at which a steerable model is evaluated."""

import operator

import torch

from orchestrator.errors import MoaError


def simplex_grid(
    num_objectives: int, divisions: int, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Return every λ with entries in {0, 1/divisions, …, 1} summing to 1, as [N, m] of `dtype`.

    Rows come from the integer compositions of `divisions` into `num_objectives` non-negative
    parts, in lexicographically ascending order: for m=2, divisions=10 the rows are (0, 1),
    (0.1, 0.9), …, (1, 0). There are C(divisions + m − 1, m − 1) rows.
    """
    m = _positive_int("num_objectives", num_objectives)
    d = _positive_int("divisions", divisions)
    return (torch.tensor(_compositions(d, m), dtype=torch.float64) / d).to(dtype)


def _compositions(total: int, parts: int) -> list[tuple[int, ...]]:
    if parts == 1:
        return [(total,)]
    return [
        (first, *rest)
        for first in range(total + 1)
        for rest in _compositions(total - first, parts - 1)
    ]


def _positive_int(name: str, value: object) -> int:
    """Accept Python and numpy integers (not bools) that are at least 1."""
    if not isinstance(value, bool):
        try:
            number = operator.index(value)
        except TypeError:
            pass
        else:
            if number >= 1:
                return number
    raise MoaError(f"{name} must be an integer >= 1; got {value!r}")
