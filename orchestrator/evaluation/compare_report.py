"""A comparison of methods for people: each method's mean front over seeds, and the table of
hypervolume, inner product, sparsity, spacing, wall time, parameters and models (mean ± std)."""

import statistics

import numpy as np

from orchestrator.config import RunConfig
from orchestrator.data.sources import dataset_name
from orchestrator.evaluation.front import Front
from orchestrator.evaluation.run_front import split_prompts

LABELS = {
    "panacea_ls": "Panacea (LS)",
    "panacea_tche": "Panacea (Tche)",
    "spo": "SPO",
    "sipo": "SIPO",
    "dpo_soups": "DPO soups",
    "dps": "DPS",
    "modpo": "MODPO",
}


def mean_front(fronts: list[Front]) -> Front:
    """The points of fronts on the same grid, averaged λ by λ."""
    first = fronts[0]
    points = np.mean([front.points for front in fronts], axis=0)
    return Front(first.objectives, first.preferences, points, first.reference_point)


METRICS = ("hypervolume", "inner_product", "sparsity", "spacing", "seconds")


def summarise(results: list[dict], methods: list[str]) -> list[dict]:
    """Per method: mean and standard deviation over seeds of each metric (None where a method's
    front has a single distinct point), models and trainable parameters."""
    table = []
    for method in methods:
        rows = [r for r in results if r["method"] == method]
        entry = {"method": method, "seeds": len(rows)}
        for name in METRICS:
            values = [r[name] for r in rows if r[name] is not None]
            entry[name] = statistics.fmean(values) if values else None
            entry[f"{name}_std"] = statistics.stdev(values) if len(values) > 1 else None
        entry["models"] = rows[0]["models"]
        entry["trainable_parameters"] = rows[0]["trainable_parameters"]
        table.append(entry)
    return table


def render_table(table: list[dict], cfg: RunConfig) -> str:
    seeds = ", ".join(str(s) for s in cfg.compare.seeds)
    lines = [
        "# Method comparison",
        "",
        f"Data: {dataset_name(cfg.data)}, objectives {cfg.data.objectives}; every model trained "
        f"{cfg.train.max_steps} steps of {cfg.global_batch} pairs; λ grid of "
        f"{cfg.compare.grid_divisions} divisions, {len(split_prompts(cfg, 'test'))} test "
        "prompts per λ; "
        f"mean ± standard deviation over seeds {seeds}.",
        "",
        "![fronts](fronts.png)",
        "",
        "| method | hypervolume ↑ | inner product ↑ | sparsity ↓ | spacing ↓ | wall time (s) | "
        "trainable parameters | models to cover the front |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for entry in table:
        cells = [LABELS[entry["method"]]]
        cells += [_mean_std(entry, name) for name in METRICS]
        cells += [f"{entry['trainable_parameters']:,}", str(entry["models"])]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "Sparsity and spacing are left out (—) for a method whose front is one point (SPO: one "
        "model, the same answers at every λ). Wall time counts the training of every model a "
        "method needs, shared experts included, not the evaluation.",
    ]
    return "\n".join(lines) + "\n"


def _mean_std(entry: dict, name: str) -> str:
    mean, std = entry[name], entry[f"{name}_std"]
    if mean is None:
        return "—"
    digits = 0 if name == "seconds" else 4
    return f"{mean:.{digits}f}" + ("" if std is None else f" ± {std:.{digits}f}")
