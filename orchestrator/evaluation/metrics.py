"""Pareto-front metrics over evaluated points, one point per preference λ, all for MAXIMISATION.

Every function accepts a list, numpy array or torch tensor of shape [N, m] (N points, m
objectives). Point p dominates q when p ≥ q in every objective and p > q in at least one.
Exact duplicates do not dominate each other, so `non_dominated` keeps every copy, and the
sparsity and spacing of a front with duplicates count each copy (at distance 0 from its twin).
"""

from collections.abc import Sequence

import numpy as np
import torch

from orchestrator.errors import MoaError

ArrayLike = Sequence[Sequence[float]] | np.ndarray | torch.Tensor


def non_dominated(points: ArrayLike) -> np.ndarray:
    """Return a bool mask [N]: True where no other point dominates the point (duplicates kept)."""
    return _non_dominated_mask(_as_points(points))


def hypervolume(points: ArrayLike, reference: Sequence[float] | np.ndarray | torch.Tensor) -> float:
    """Return the exact volume of the region dominated by `points` and bounded below by `reference`.

    That region is the union over points p of the boxes [reference, p]. A point not strictly
    better than the reference in every objective adds nothing. Empty input gives 0.0.
    """
    ref = _as_array(reference, "reference")
    if ref.ndim != 1 or ref.size == 0:
        raise MoaError(
            f"reference must be a vector with one value per objective; got shape {list(ref.shape)}"
        )
    pts = _as_points(points, num_objectives=ref.size)
    pts = pts[(pts > ref).all(axis=1)] - ref
    return _hypervolume_from_origin(np.unique(pts, axis=0))


def inner_product(preferences: ArrayLike, points: ArrayLike) -> float:
    """Return the mean over rows of ⟨λ_row, point_row⟩: does the model follow the preference?"""
    pts = _as_points(points)
    prefs = _as_points(preferences, name="preferences")
    if prefs.shape != pts.shape:
        raise MoaError(
            "preferences must have the same shape [N, m] as points (one λ per point); got "
            f"{list(prefs.shape)} for preferences and {list(pts.shape)} for points"
        )
    if len(pts) == 0:
        raise MoaError("inner_product needs at least one (preference, point) pair; got none")
    return float(np.mean(np.sum(prefs * pts, axis=1)))


def sparsity(points: ArrayLike) -> float:
    """Return the PGMORL sparsity of the non-dominated set P of n points (lower is better).

    S = 1/(n−1) · Σ_j Σ_{i=1}^{n−1} (P̃_j(i) − P̃_j(i+1))², where P̃_j is objective j's values
    over P sorted. 0.0 when n < 2.
    """
    front = _front(points)
    if len(front) < 2:
        return 0.0
    gaps = np.diff(np.sort(front, axis=0), axis=0)
    return float(np.sum(gaps**2) / (len(front) - 1))


def spacing(points: ArrayLike) -> float:
    """Return Schott's spacing of the non-dominated set P of n points (lower is better).

    d_i = min_{j≠i} Σ_k |p_ik − p_jk| (L1 distance to the nearest other point), d̄ their mean,
    result sqrt(Σ_i (d̄ − d_i)² / (n−1)). 0.0 when n < 2.
    """
    front = _front(points)
    n = len(front)
    if n < 2:
        return 0.0
    distances = np.abs(front[:, None, :] - front[None, :, :]).sum(axis=2)
    np.fill_diagonal(distances, np.inf)
    nearest = distances.min(axis=1)
    return float(np.sqrt(np.sum((nearest.mean() - nearest) ** 2) / (n - 1)))


def _front(points: ArrayLike) -> np.ndarray:
    pts = _as_points(points)
    return pts[_non_dominated_mask(pts)]


def _non_dominated_mask(pts: np.ndarray) -> np.ndarray:
    # dominates[i, j]: point i dominates point j.
    ge = (pts[:, None, :] >= pts[None, :, :]).all(axis=2)
    gt = (pts[:, None, :] > pts[None, :, :]).any(axis=2)
    return ~(ge & gt).any(axis=0)


def _hypervolume_from_origin(pts: np.ndarray) -> float:
    """Exact hypervolume of points that are all > 0, with the reference at the origin."""
    n, m = pts.shape
    if n == 0:
        return 0.0
    if m == 1:
        return float(pts[:, 0].max())
    if m == 2:
        # Sweep x from largest to smallest: each point adds a strip of width x above the
        # highest y seen so far.
        order = np.argsort(-pts[:, 0], kind="stable")
        highest = np.maximum.accumulate(pts[order, 1])
        return float(np.sum(pts[order, 0] * np.diff(highest, prepend=0.0)))
    # HSO slicing on the last objective: between consecutive levels z_k > z_{k+1}, the slice's
    # cross-section is the (m−1)-D hypervolume of the points reaching at least z_k.
    pts = pts[_non_dominated_mask(pts)]
    pts = pts[np.argsort(-pts[:, -1], kind="stable")]
    levels = np.append(pts[:, -1], 0.0)
    volume = 0.0
    for k in range(len(pts)):
        height = levels[k] - levels[k + 1]
        if height > 0:
            volume += height * _hypervolume_from_origin(pts[: k + 1, :-1])
    return volume


def _as_array(value: object, name: str) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().double().numpy()
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise MoaError(f"{name} must be numbers (a list, numpy array or torch tensor)") from err
    if not np.isfinite(array).all():
        raise MoaError(f"{name} must be finite numbers; got {array.tolist()}")
    return array


def _as_points(
    points: object, *, num_objectives: int | None = None, name: str = "points"
) -> np.ndarray:
    """Return `points` as a float64 [N, m] array; an empty input is N = 0."""
    array = _as_array(points, name)
    if array.size == 0 and array.ndim == 1:
        array = array.reshape(0, num_objectives or 0)
    if array.ndim != 2 or (len(array) > 0 and array.shape[1] == 0):
        raise MoaError(
            f"{name} must have shape [N, m] (one row per point, one column per objective); "
            f"got shape {list(array.shape)}"
        )
    if num_objectives is not None and array.shape[1] != num_objectives:
        raise MoaError(
            f"{name} must have {num_objectives} columns, one per objective of the reference; "
            f"got shape {list(array.shape)}"
        )
    return array
