"""A front for people: front.json (numbers), front.png (picture) and report.md on disk, and the
summary lines every command prints."""

import itertools
import json
import os
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

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
    """2 objectives: the front with its λ labels; more: every pairwise projection. The base
    model's point, when the front has it, is a red star."""
    pairs = list(itertools.combinations(range(len(front.objectives)), 2))
    fig = Figure(figsize=(5.2 * len(pairs), 4.6))
    axes = fig.subplots(1, len(pairs), squeeze=False)
    keep = non_dominated(front.points)
    for ax, (i, j) in zip(axes[0], pairs, strict=True):
        ax.plot(front.points[:, i], front.points[:, j], color="0.75", zorder=1)
        ax.scatter(
            front.points[keep, i],
            front.points[keep, j],
            c="tab:blue",
            zorder=2,
            label="Panacea at λ (non-dominated)",
        )
        if (~keep).any():
            ax.scatter(
                front.points[~keep, i],
                front.points[~keep, j],
                c="tab:blue",
                alpha=0.35,
                zorder=2,
                label="dominated",
            )
        if len(front.objectives) == 2:
            for point, label in _point_labels(front):
                ax.annotate(label, point, fontsize=8, xytext=(4, 4), textcoords="offset points")
            ax.set_title(f"labels: weight λ of {front.objectives[0]}", fontsize=9)
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
    axes[0][0].legend(fontsize=8, loc="lower left")
    save_figure(fig, path, title)


def plot_fronts(path: Path, fronts: dict[str, Front], title: str) -> None:
    """Several fronts of the same objectives in one picture (every pairwise projection), each in
    its own colour with its non-dominated points joined."""
    objectives = next(iter(fronts.values())).objectives
    pairs = list(itertools.combinations(range(len(objectives)), 2))
    fig = Figure(figsize=(5.2 * len(pairs), 4.6))
    axes = fig.subplots(1, len(pairs), squeeze=False)
    for ax, (i, j) in zip(axes[0], pairs, strict=True):
        for colour, (label, front) in enumerate(fronts.items()):
            keep = non_dominated(front.points)
            best = front.points[keep][np.argsort(front.points[keep, i])]
            ax.plot(best[:, i], best[:, j], color=f"C{colour}", alpha=0.6)
            points = front.points
            ax.scatter(points[:, i], points[:, j], color=f"C{colour}", s=18, label=label)
        ax.set_xlabel(objectives[i])
        ax.set_ylabel(objectives[j])
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8, loc="lower left")
    save_figure(fig, path, title)


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
