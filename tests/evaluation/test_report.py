import numpy as np
import pytest
import torch
from matplotlib.collections import PathCollection
from matplotlib.patches import Polygon

from orchestrator.evaluation.front import Front
from orchestrator.evaluation.metrics import non_dominated
from orchestrator.evaluation.report import (
    front_figure,
    fronts_figure,
    plot_front,
    plot_fronts,
    ternary_xy,
)
from orchestrator.objectives.grid import simplex_grid

DOMINATED = 7  # λ = (0.25, 0.5, 0.25), pulled below its lattice neighbours


def lattice_front() -> Front:
    """3 objectives on the λ lattice of 4 divisions (15 points), scores 0.2 + 0.6·λ except one
    dominated point; distinct in every pairwise projection."""
    grid = simplex_grid(3, 4, dtype=torch.float64).numpy()
    points = 0.2 + 0.6 * grid
    points[DOMINATED] -= 0.2
    return Front(("a", "b", "c"), grid, points, [0.0] * 3, base_point=np.array([0.3, 0.4, 0.5]))


def lattice_scatters(ax) -> list[PathCollection]:
    """The axes' scatter collections with colour values (not the base model's star)."""
    return [
        c for c in ax.collections if isinstance(c, PathCollection) and c.get_array() is not None
    ]


def ternary_panels(fig):
    return [ax for ax in fig.axes if any(isinstance(p, Polygon) for p in ax.patches)]


def projection_panels(fig, front):
    return [ax for ax in fig.axes if ax.get_xlabel() in front.objectives]


def value_at(collections, xy) -> float:
    """The colour value of the one scatter point at `xy`."""
    found = [
        value
        for c in collections
        for offset, value in zip(c.get_offsets(), c.get_array(), strict=True)
        if np.allclose(offset, xy)
    ]
    assert len(found) == 1
    return found[0]


def test_three_objective_front_draws_no_line_across_the_lattice():
    front = lattice_front()
    fig = front_figure(front)
    for ax in fig.axes:
        assert all(len(line.get_xdata()) <= 1 for line in ax.lines)
    panels = ternary_panels(fig) + projection_panels(fig, front)
    assert len(panels) == 6  # a triangle per objective and the 3 pairwise projections
    for ax in panels:
        assert sum(len(c.get_offsets()) for c in lattice_scatters(ax)) == len(front.preferences)


def test_ternary_panels_place_each_lambda_and_colour_it_by_that_objectives_score():
    front = lattice_front()
    panels = ternary_panels(front_figure(front))
    assert len(panels) == 3
    for k, ax in enumerate(panels):
        [dots] = lattice_scatters(ax)
        assert np.allclose(dots.get_offsets(), ternary_xy(front.preferences))
        assert np.allclose(dots.get_array(), front.points[:, k])
        assert dots.colorbar.ax.get_ylabel() == f"{front.objectives[k]} score"
        corners = next(p for p in ax.patches if isinstance(p, Polygon)).get_xy()[:3]
        for vertex, name in enumerate(front.objectives):
            # λ = e_vertex is drawn on the triangle's corner, the one labelled with its name.
            [row] = np.flatnonzero(front.preferences[:, vertex] == 1.0)
            assert np.allclose(dots.get_offsets()[row], corners[vertex])
            nearest = min(
                ax.texts, key=lambda t: np.linalg.norm(np.array(t.get_position()) - corners[vertex])
            )
            assert nearest.get_text() == name
        assert np.allclose(ternary_xy(np.full((1, 3), 1 / 3)), corners.mean(axis=0))


def test_projections_colour_each_point_by_the_lean_of_its_lambda():
    front = lattice_front()
    fig = front_figure(front)
    pairs = [(0, 1), (0, 2), (1, 2)]
    for ax, (i, j) in zip(projection_panels(fig, front), pairs, strict=True):
        assert (ax.get_xlabel(), ax.get_ylabel()) == (front.objectives[i], front.objectives[j])
        dots = lattice_scatters(ax)
        for lam, point in zip(front.preferences, front.points, strict=True):
            assert value_at(dots, point[[i, j]]) == pytest.approx(lam[i] - lam[j])
        [faded] = [c for c in dots if c.get_label() == "dominated"]
        assert np.allclose(faded.get_offsets(), front.points[[DOMINATED]][:, [i, j]])
        [star] = [c for c in ax.collections if c.get_label() == "base model"]
        assert np.allclose(star.get_offsets(), [front.base_point[[i, j]]])


def test_two_objective_front_is_still_a_line_through_the_grid_in_order():
    grid = simplex_grid(2, 4, dtype=torch.float64).numpy()
    points = np.c_[np.sqrt(grid[:, 0]), np.sqrt(grid[:, 1])]
    front = Front(("helpful", "harmless"), grid, points, [0.0, 0.0], base_point=np.ones(2) / 2)
    [ax] = front_figure(front).axes
    [line] = ax.lines
    assert np.allclose(line.get_xydata(), front.points)
    assert [t.get_text() for t in ax.texts] == ["0.0", "0.2", "0.5", "0.8", "1.0"]
    assert ax.get_legend_handles_labels()[1] == ["Panacea at λ (non-dominated)", "base model"]


def test_fronts_of_three_objectives_are_markers_per_method_without_lines():
    panacea = lattice_front()
    spo = Front(panacea.objectives, panacea.preferences, panacea.points - 0.1, [0.0] * 3)
    fig = fronts_figure({"Panacea": panacea, "SPO": spo})
    assert len(fig.axes) == 3
    for ax in fig.axes:
        assert len(ax.lines) == 0
        methods = [c for c in ax.collections if isinstance(c, PathCollection)]
        assert [c.get_label() for c in methods] == ["Panacea", "SPO"]
        assert all(len(c.get_offsets()) == len(panacea.points) for c in methods)
        markers = [c.get_paths()[0].vertices for c in methods]
        assert not np.array_equal(*markers)


def test_fronts_of_two_objectives_still_join_each_methods_non_dominated_points():
    grid = simplex_grid(2, 4, dtype=torch.float64).numpy()
    points = np.c_[np.sqrt(grid[:, 0]), np.sqrt(grid[:, 1])]
    points[2] -= 0.3  # dominated: left off the line
    front = Front(("helpful", "harmless"), grid, points, [0.0, 0.0])
    [ax] = fronts_figure({"Panacea": front}).axes
    [line] = ax.lines
    assert np.allclose(line.get_xydata(), points[non_dominated(points)])


def test_plots_are_written_as_png_files(tmp_path):
    front = lattice_front()
    plot_front(tmp_path / "front.png", front)
    plot_fronts(tmp_path / "fronts.png", {"Panacea": front}, "fronts")
    for name in ("front.png", "fronts.png"):
        data = (tmp_path / name).read_bytes()
        assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 1000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["front.png", "fronts.png"]
