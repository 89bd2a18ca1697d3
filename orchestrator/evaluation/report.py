"""A front for people: front.json (numbers), front.png (picture) and report.md on disk, and the
summary lines every command prints."""

import itertools
import json
import math
import os
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Polygon

from orchestrator.atomic import atomic_write_text
from orchestrator.evaluation.front import Front
from orchestrator.evaluation.metrics import non_dominated


def write_front(out_dir: str | os.PathLike, front: Front, title: str = "Pareto front") -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "front.json", json.dumps(front.to_dict(), indent=2))
    plot_front(out / "front.png", front, title)
    atomic_write_text(out / "report.md", render_report(front, title))
    return out


def plot_front(path: Path, front: Front, title: str = "Pareto front") -> None:
    save_figure(front_figure(front), path, title)


def front_figure(front: Front) -> Figure:
    """2 objectives: the front, a line along its λ grid, with its λ labels. 3 or more: the λ grid
    is a simplex lattice that no line walks without zigzagging, so points only. For 3, a triangle
    of λ per objective coloured by its score shows where on the simplex each objective is won;
    for every m ≥ 3, the pairwise projections of the scores coloured by λ_x − λ_y show which way
    each point leans between the two. The base model's point, when the front has it, is a red
    star."""
    m = len(front.objectives)
    if m == 2:
        fig, [ax] = _panel_grid(1)
        _two_objective_panel(ax, front)
        return fig
    pairs = list(itertools.combinations(range(m), 2))
    triangles = m if m == 3 else 0  # a ternary view of λ exists for 3 objectives only
    fig, axes = _panel_grid(triangles + len(pairs))
    for k in range(triangles):
        _ternary_panel(axes[k], front, k)
    for ax, (i, j) in zip(axes[triangles:], pairs, strict=True):
        _projection_panel(ax, front, i, j)
    axes[triangles].legend(fontsize=8)
    return fig


def plot_fronts(path: Path, fronts: dict[str, Front], title: str) -> None:
    save_figure(fronts_figure(fronts), path, title)


def fronts_figure(fronts: dict[str, Front]) -> Figure:
    """Several fronts of the same objectives in one picture (every pairwise projection), each in
    its own colour; with 2 objectives its non-dominated points joined, with more a marker of its
    own and no lines (they would zigzag across the λ lattice)."""
    objectives = next(iter(fronts.values())).objectives
    pairs = list(itertools.combinations(range(len(objectives)), 2))
    fig, axes = _panel_grid(len(pairs))
    for ax, (i, j) in zip(axes, pairs, strict=True):
        for colour, (label, front) in enumerate(fronts.items()):
            marker = "o"
            if len(objectives) == 2:
                keep = non_dominated(front.points)
                best = front.points[keep][np.argsort(front.points[keep, i])]
                ax.plot(best[:, i], best[:, j], color=f"C{colour}", alpha=0.6)
            else:
                marker = METHOD_MARKERS[colour % len(METHOD_MARKERS)]
            points = front.points
            ax.scatter(
                points[:, i], points[:, j], color=f"C{colour}", s=18, marker=marker, label=label
            )
        ax.set_xlabel(objectives[i])
        ax.set_ylabel(objectives[j])
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8, loc="lower left")
    return fig


METHOD_MARKERS = ("o", "s", "^", "D", "v", "P", "X")
# Where λ = e_1, e_2, e_3 sit in the ternary view: an equilateral triangle.
TRIANGLE_CORNERS = np.array([[0.0, 0.0], [1.0, 0.0], [0.5, np.sqrt(3) / 2]])


def ternary_xy(preferences: np.ndarray) -> np.ndarray:
    """[N, 2]: each λ of 3 objectives as a point of the triangle (the λ-weighted mean of the
    corners)."""
    return preferences @ TRIANGLE_CORNERS


def _panel_grid(count: int) -> tuple[Figure, list[Axes]]:
    """A figure of `count` panels, three to a row."""
    columns = min(count, 3)
    rows = math.ceil(count / columns)
    fig = Figure(figsize=(5.2 * columns, 4.6 * rows))
    return fig, [fig.add_subplot(rows, columns, k + 1) for k in range(count)]


def _two_objective_panel(ax: Axes, front: Front) -> None:
    ax.plot(front.points[:, 0], front.points[:, 1], color="0.75", zorder=1)
    keep = non_dominated(front.points)
    ax.scatter(
        front.points[keep, 0],
        front.points[keep, 1],
        c="tab:blue",
        zorder=2,
        label="Panacea at λ (non-dominated)",
    )
    if (~keep).any():
        ax.scatter(
            front.points[~keep, 0],
            front.points[~keep, 1],
            c="tab:blue",
            alpha=0.35,
            zorder=2,
            label="dominated",
        )
    for point, label in _point_labels(front):
        ax.annotate(label, point, fontsize=8, xytext=(4, 4), textcoords="offset points")
    ax.set_title(f"labels: weight λ of {front.objectives[0]}", fontsize=9)
    _score_axes(ax, front, 0, 1)
    ax.legend(fontsize=8, loc="lower left")


def _ternary_panel(ax: Axes, front: Front, k: int) -> None:
    """λ on the triangle, coloured by objective k's score."""
    ax.add_patch(Polygon(TRIANGLE_CORNERS, fill=False, edgecolor="0.6"))
    xy = ternary_xy(front.preferences)
    dots = ax.scatter(xy[:, 0], xy[:, 1], c=front.points[:, k], s=90, edgecolors="0.3")
    ax.figure.colorbar(dots, ax=ax, label=f"{front.objectives[k]} score")
    centre = TRIANGLE_CORNERS.mean(axis=0)
    for corner, name in zip(TRIANGLE_CORNERS, front.objectives, strict=True):
        outward = corner + 0.1 * (corner - centre) / np.linalg.norm(corner - centre)
        ax.text(*outward, name, ha="center", va="center", fontsize=9)
    ax.set_title(f"{front.objectives[k]} score at each λ (corner: all weight on it)", fontsize=9)
    ax.set_xlim(-0.2, 1.2)
    ax.set_ylim(-0.1, 0.98)
    ax.set_aspect("equal")
    ax.axis("off")


def _projection_panel(ax: Axes, front: Front, i: int, j: int) -> None:
    """Scores of objectives i and j, each point coloured by λ_i − λ_j; dominated ones faded."""
    lean = front.preferences[:, i] - front.preferences[:, j]
    keep = non_dominated(front.points)
    style = {"cmap": "coolwarm", "vmin": -1, "vmax": 1, "edgecolors": "0.3", "zorder": 2}
    dots = ax.scatter(
        front.points[keep, i],
        front.points[keep, j],
        c=lean[keep],
        label="Panacea at λ (non-dominated)",
        **style,
    )
    if (~keep).any():
        ax.scatter(
            front.points[~keep, i],
            front.points[~keep, j],
            c=lean[~keep],
            alpha=0.35,
            label="dominated",
            **style,
        )
    ax.figure.colorbar(dots, ax=ax, label=f"λ {front.objectives[i]} − λ {front.objectives[j]}")
    _score_axes(ax, front, i, j)


def _score_axes(ax: Axes, front: Front, i: int, j: int) -> None:
    """Axis labels, grid and the base model's star."""
    if front.base_point is not None:
        ax.scatter(
            front.base_point[i],
            front.base_point[j],
            marker="*",
            s=180,
            c="tab:red",
            zorder=3,
            label="base model",
        )
    ax.set_xlabel(front.objectives[i])
    ax.set_ylabel(front.objectives[j])
    ax.grid(alpha=0.3)


def save_figure(fig: Figure, path: Path, title: str) -> None:
    """Title, lay out and write the figure atomically (a half-written PNG is never seen)."""
    fig.suptitle(title)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=120)
    os.replace(tmp, path)


def read_front(path: str | os.PathLike) -> Front:
    return Front.from_dict(json.loads(Path(path).read_text()))


def _point_labels(front: Front) -> list[tuple[np.ndarray, str]]:
    """One label per distinct point, the weight of the first objective; neighbouring λ that land
    on the same point share a label ("0.0–0.3")."""
    labels: list[tuple[np.ndarray, list[np.ndarray]]] = []
    for lam, point in zip(front.preferences, front.points, strict=True):
        if labels and np.array_equal(labels[-1][0], point):
            labels[-1][1].append(lam)
        else:
            labels.append((point, [lam]))

    return [
        (point, f"{lams[0][0]:.1f}" if len(lams) == 1 else f"{lams[0][0]:.1f}–{lams[-1][0]:.1f}")
        for point, lams in labels
    ]


def render_report(front: Front, title: str = "Pareto front") -> str:
    metrics = front.metrics()
    lines = [
        f"# {title}",
        "",
        "![front](front.png)",
        "",
        "| λ | " + " | ".join(front.objectives) + " |",
    ]
    lines.append("|" + "---|" * (len(front.objectives) + 1))
    for lam, point in zip(front.preferences, front.points, strict=True):
        lam_text = "(" + ", ".join(f"{x:.2f}" for x in lam) + ")"
        lines.append(f"| {lam_text} | " + " | ".join(f"{x:.3f}" for x in point) + " |")
    lines += ["", "| metric | value |", "|---|---|"]
    lines += [f"| {name} | {value:.4f} |" for name, value in metrics.items()]
    if front.base_point is not None:
        scores = ", ".join(
            f"{name} {x:.3f}" for name, x in zip(front.objectives, front.base_point, strict=True)
        )
        lines += ["", f"Base model (adapter off): {scores}."]
    lines += ["", f"Reference point: {front.reference_point}."]
    if front.samples:
        lines += ["", "## Sample answers", ""]
        for sample in front.samples:
            lam_text = ", ".join(f"{x:.2f}" for x in sample["preference"])
            lines += [f"**λ = ({lam_text})** — {sample['prompt']}", "", f"> {sample['answer']}", ""]
    return "\n".join(lines) + "\n"


def summary_lines(front: Front) -> list[str]:
    """The front's figures as every command prints them: hypervolume (and the base model's),
    inner product, sparsity and spacing, and each objective's steerability."""
    metrics = front.metrics()
    base = ""
    if "base_hypervolume" in metrics:
        base = f", base model {metrics['base_hypervolume']:.3f}"
    steerability = ", ".join(
        f"{name} {metrics[f'spearman_{name}']:+.3f}" for name in front.objectives
    )
    return [
        f"hypervolume: front {metrics['hypervolume']:.3f}{base} "
        f"(reference point {front.reference_point})",
        f"inner product {metrics['inner_product']:.3f}, sparsity {metrics['sparsity']:.3f}, "
        f"spacing {metrics['spacing']:.3f}",
        f"steerability (Spearman of λ_i with score i): {steerability}",
    ]
