"""A sweep's trials compared: the Pareto sets of trials over (hypervolume, inner product) and
over (hypervolume, compute), the best trial, the table and the picture."""

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from orchestrator.config import RunConfig
from orchestrator.evaluation.front import Front
from orchestrator.evaluation.metrics import non_dominated
from orchestrator.evaluation.report import save_figure
from orchestrator.evaluation.run_front import split_prompts

# Each Pareto set: its name in a trial's row, and its two axes, each (metric, sign): the sign
# turns the axis into one where larger is better.
PARETO_SETS = {
    "pareto_hv_ip": (("hypervolume", 1.0), ("inner_product", 1.0)),
    "pareto_hv_compute": (("hypervolume", 1.0), ("compute", -1.0)),
}


def mark_pareto_sets(trials: list[dict]) -> None:
    """Set each row's PARETO_SETS flags: no other evaluated trial is at least as good on both
    axes and better on one. Trials without an evaluation (failed early) are in neither set."""
    evaluated = [row for row in trials if _evaluated(row)]
    for name, axes in PARETO_SETS.items():
        for row in trials:
            row[name] = False
        if not evaluated:
            continue
        points = np.array([[sign * row[key] for key, sign in axes] for row in evaluated])
        for row, keep in zip(evaluated, non_dominated(points), strict=True):
            row[name] = bool(keep)


def best_trial(trials: list[dict], metric: str) -> dict:
    """The evaluated trial with the highest `metric`; the other metric breaks ties."""
    other = "inner_product" if metric == "hypervolume" else "hypervolume"
    return max((row for row in trials if _evaluated(row)), key=lambda r: (r[metric], r[other]))


def render_sweep(cfg: RunConfig, trials: list[dict], best: dict, test_front: Front) -> str:
    keys = list(cfg.tune.space)
    finished = sum(row["status"] == "finished" for row in trials)
    validation = split_prompts(cfg, "validation", cfg.eval.coarse_num_prompts)
    measured = test_front.metrics()
    lines = [
        "# Sweep",
        "",
        f"{len(trials)} trials ({finished} finished; the rest stopped early or failed), each up "
        f"to {cfg.train.max_steps} steps of {cfg.global_batch} pairs unless the sweep varies "
        f"them; hypervolume and inner product of the λ grid of {cfg.eval.coarse_grid_divisions} "
        f"divisions over {len(validation)} validation prompts, at the trial's last "
        f"evaluation. Compute: wall time × workers. Best by {cfg.tune.metric}: trial "
        f"{best['trial']} → best.yaml.",
        "",
        f"The chosen model (trial {best['trial']}'s best adapter) measured on "
        f"{len(split_prompts(cfg, 'test'))} test prompts over the λ grid of "
        f"{len(test_front.preferences)} points: hypervolume {measured['hypervolume']:.4f}, "
        f"inner product {measured['inner_product']:.4f} → best_front/.",
        "",
        "![trials](pareto.png)",
        "",
        "| trial | " + " | ".join(keys) + " | status | steps | hypervolume ↑ | inner product ↑ | "
        "compute (s) ↓ | Pareto HV–IP | Pareto HV–compute |",
        "|---" * (len(keys) + 8) + "|",
    ]
    for row in trials:
        cells = [row["trial"] + (" (best)" if row is best else "")]
        cells += [_value(row["params"][key]) for key in keys]
        cells += [row["status"], str(row["step"])]
        cells += [_number(row[name], 4) for name in ("hypervolume", "inner_product")]
        cells += [_number(row["compute"], 0)]
        cells += ["✓" if row[name] else "" for name in PARETO_SETS]
        lines.append("| " + " | ".join(cells) + " |")
    failed = [row for row in trials if row["status"] == "error"]
    if failed:
        lines += ["", "Failed trials:"] + [f"- {row['trial']}: {row['error']}" for row in failed]
    return "\n".join(lines) + "\n"


def plot_sweep(path: Path, trials: list[dict], metric: str) -> None:
    """Hypervolume against inner product and against compute, one point per evaluated trial,
    each Pareto set joined and its trials named."""
    evaluated = [row for row in trials if _evaluated(row)]
    fig = Figure(figsize=(10.4, 4.6))
    axes = fig.subplots(1, 2)
    for ax, (name, ((y_key, _), (x_key, x_sign))) in zip(axes, PARETO_SETS.items(), strict=True):
        xs = np.array([row[x_key] for row in evaluated])
        ys = np.array([row[y_key] for row in evaluated])
        ax.scatter(xs, ys, color="tab:gray", s=22, label="trial")
        front = [i for i, row in enumerate(evaluated) if row[name]]
        front.sort(key=lambda i: xs[i] * x_sign)
        ax.plot(xs[front], ys[front], "o-", color="tab:blue", label="Pareto set")
        for i in front:
            ax.annotate(evaluated[i]["trial"], (xs[i], ys[i]), fontsize=7, xytext=(3, 3),
                        textcoords="offset points")  # fmt: skip
        ax.set_xlabel("compute (worker-seconds)" if x_key == "compute" else "inner product")
        ax.set_ylabel("hypervolume")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8, loc="lower right")
    save_figure(fig, path, f"Sweep: {len(evaluated)} trials (best by {metric})")


def _evaluated(row: dict) -> bool:
    return row["hypervolume"] is not None and row["inner_product"] is not None


def _value(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _number(value: float | None, digits: int) -> str:
    return "—" if value is None else f"{value:.{digits}f}"
